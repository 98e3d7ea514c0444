package main

import (
	"fmt"
	"math"
	"os"
	"path/filepath"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
)

// The charts' files in the report's folder.
const (
	rpsChartFile     = "dataplane-rps.svg"
	streamsChartFile = "streams-memory.svg"
	editsChartFile   = "edits-routes.svg"
)

// chartWidth and chartHeight are every chart's size.
const (
	chartWidth  = 6 * vg.Inch
	chartHeight = 3.6 * vg.Inch
)

// rpsChart is a bar a data-plane configuration: its median requests per
// second, with a bar from the lowest to the highest round when there
// were several.
func rpsChart(meds []ConfigMedians, d *Dataplane) (*plot.Plot, error) {
	p := plot.New()
	p.Title.Text = fmt.Sprintf("Requests per second, median of %d round(s) of %gs, %d connections", d.Rounds, d.DurationSeconds, d.Connections)
	p.Y.Label.Text = "requests/s"
	values := make(plotter.Values, len(meds))
	names := make([]string, len(meds))
	spread := rangeBars{}
	for i, m := range meds {
		values[i], names[i] = m.RPS, m.Short
		spread.x, spread.y = append(spread.x, float64(i)), append(spread.y, m.RPS)
		spread.lo, spread.hi = append(spread.lo, m.MinRPS), append(spread.hi, m.MaxRPS)
	}
	bars, err := plotter.NewBarChart(values, vg.Points(36))
	if err != nil {
		return nil, err
	}
	bars.Color = plotutil.Color(0)
	bars.LineStyle.Width = 0
	p.Add(bars)
	if d.Rounds > 1 {
		e, err := plotter.NewYErrorBars(spread)
		if err != nil {
			return nil, err
		}
		p.Add(e)
	}
	p.NominalX(names...)
	p.Add(plotter.NewGrid())
	p.Y.Min = 0
	p.Y.Max *= 1.08
	p.Y.Tick.Marker = thousandsTicks{}
	return p, nil
}

// rangeBars are bars from lo to hi through (x, y): the spread of rounds.
type rangeBars struct{ x, y, lo, hi []float64 }

func (r rangeBars) Len() int                        { return len(r.x) }
func (r rangeBars) XY(i int) (float64, float64)     { return r.x[i], r.y[i] }
func (r rangeBars) YError(i int) (float64, float64) { return r.y[i] - r.lo[i], r.hi[i] - r.y[i] }

// streamsChart is each proxy's resident memory against the idle event
// streams it holds open.
func streamsChart(series []StreamSeries) (*plot.Plot, error) {
	p := plot.New()
	p.Title.Text = "Proxy memory against open event streams"
	p.X.Label.Text = "open idle event streams"
	p.Y.Label.Text = "resident memory (MiB)"
	var lines []any
	for _, s := range series {
		xys := make(plotter.XYs, len(s.Points))
		for i, pt := range s.Points {
			xys[i] = plotter.XY{X: float64(pt.Streams), Y: pt.RSSMiB}
		}
		lines = append(lines, s.Name, xys)
	}
	if err := plotutil.AddLinePoints(p, lines...); err != nil {
		return nil, err
	}
	lineAxes(p)
	return p, nil
}

// editsChart is the time from an HTTPRoute edit to its Gateway's new
// snapshot at every client, p50 and p99, against the number of routes.
func editsChart(edits []EditsAt, clients int) (*plot.Plot, error) {
	p := plot.New()
	p.Title.Text = fmt.Sprintf("HTTPRoute edit to new snapshot at all %d clients of its Gateway", clients)
	p.X.Label.Text = "HTTPRoutes (and MCPServers) in the cluster"
	p.Y.Label.Text = "milliseconds"
	p50, p99 := make(plotter.XYs, len(edits)), make(plotter.XYs, len(edits))
	for i, e := range edits {
		p50[i] = plotter.XY{X: float64(e.HTTPRoutes), Y: e.P50Millis}
		p99[i] = plotter.XY{X: float64(e.HTTPRoutes), Y: e.P99Millis}
	}
	if err := plotutil.AddLinePoints(p, "p50", p50, "p99", p99); err != nil {
		return nil, err
	}
	lineAxes(p)
	return p, nil
}

// lineAxes sets the axes of a line chart: from 0, room above the lines
// for the legend at the top left, and ticks with thousands.
func lineAxes(p *plot.Plot) {
	p.Add(plotter.NewGrid())
	p.Legend.Top, p.Legend.Left = true, true
	p.X.Min, p.Y.Min = 0, 0
	p.Y.Max *= 1.3
	p.X.Tick.Marker, p.Y.Tick.Marker = thousandsTicks{}, thousandsTicks{}
}

// thousandsTicks are gonum's default ticks, labelled as whole numbers
// with thousands (8,000 rather than 8000.00) when they are whole.
type thousandsTicks struct{}

func (thousandsTicks) Ticks(lo, hi float64) []plot.Tick {
	ticks := plot.DefaultTicks{}.Ticks(lo, hi)
	for _, t := range ticks {
		if t.Label != "" && t.Value != math.Trunc(t.Value) {
			return ticks
		}
	}
	for i, t := range ticks {
		if t.Label != "" {
			ticks[i].Label = thousands(t.Value)
		}
	}
	return ticks
}

// saveSVG writes p as an SVG file.
func saveSVG(p *plot.Plot, path string) error {
	w, err := p.WriterTo(chartWidth, chartHeight, "svg")
	if err != nil {
		return fmt.Errorf("%s: %w", filepath.Base(path), err)
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := w.WriteTo(f); err != nil {
		_ = f.Close()
		return fmt.Errorf("%s: %w", filepath.Base(path), err)
	}
	return f.Close()
}
