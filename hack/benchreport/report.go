package main

import (
	"cmp"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"gonum.org/v1/plot"
)

// Report is the report of one run: its Markdown, the charts it links
// and its table of ratios.
type Report struct {
	Markdown string
	Charts   map[string]func() (*plot.Plot, error) // file name -> the chart
	Ratios   []Ratio
}

// render writes the report of r, finished at finished.
func render(r *Results, finished time.Time) (*Report, error) {
	rep := &Report{Charts: map[string]func() (*plot.Plot, error){}, Ratios: ratios(r)}
	if len(rep.Ratios) == 0 {
		return nil, fmt.Errorf("the results hold no benchmark: nothing to report")
	}
	var b strings.Builder
	m := r.Machine
	b.WriteString("# Benchmarks\n\n")
	b.WriteString("Written by `make bench` (see [How it was run](#how-it-was-run)); do not edit: run it again.\n")
	if m.Quick {
		b.WriteString("\n**A quick run (`BENCH_QUICK=1`): small sizes and few rounds, for development. Its figures say little.**\n")
	}
	fmt.Fprintf(&b, "\nMeasured on %s UTC, in %s, at commit `%s`, on this machine, with whatever else ran on it:\n\n",
		m.Started.UTC().Format("2006-01-02 15:04"), duration(finished.Sub(m.Started)), shortCommit(m.Commit))
	b.WriteString("| | |\n|---|---|\n")
	row := func(k, v string) {
		if v != "" {
			fmt.Fprintf(&b, "| %s | %s |\n", k, v)
		}
	}
	cpu := fmt.Sprintf("%s, %d logical CPUs", cmp.Or(m.CPU, "unknown"), m.Cores)
	if m.Virtual {
		cpu += " (a virtual machine)"
	}
	row("CPU", cpu)
	if m.MemoryMiB > 0 {
		row("Memory", fmt.Sprintf("%.1f GiB", float64(m.MemoryMiB)/1024))
	}
	row("OS", m.OS)
	if m.Kernel != "" {
		row("Kernel", "Linux "+m.Kernel)
	}
	row("Load average at the start (1, 5, 15 min)", m.LoadAverage)
	row("Go", m.Go)
	row("Redis", m.Redis)
	row("nginx", m.Nginx)
	b.WriteString("\nEvery party of a benchmark (load, proxy, backend, Redis, API server) runs on this machine and shares its cores: the ratios travel to other machines better than the absolute figures do.\n")

	b.WriteString("\n## Ratios\n\nEach line sets a figure beside its baseline; the ratio is measured / baseline (for requests or calls per second, above 1 is faster; for latency and memory, below 1 is less).\n\n")
	b.WriteString(markdownTable(rep.Ratios))

	if d := r.Dataplane; d != nil {
		meds := dataplaneMedians(d)
		rep.Charts[rpsChartFile] = func() (*plot.Plot, error) { return rpsChart(meds, d) }
		b.WriteString("\n## The data plane: requests per second\n\n")
		fmt.Fprintf(&b, "`hack/dataplane`: one small MCP `tools/call` POST after another on each of %d connections, from a load generator in a process of its own, for %gs after a warmup, in %d round(s) that take the configurations in alternating order; medians of the rounds. The backend answers at once. The bare proxy is `httputil.ReverseProxy` keeping as many idle backend connections as toolgate; toolgate runs standalone, its access log off as the bare proxy has none; its policy is OIDC tokens of %d users and three token buckets (global, per user, per user on the tool) that never run out; on Redis its decisions may wait up to 2 s (`--store-timeout 2s`) rather than be shed with 503 on a busy machine. Any answer but 200 fails the race. The bar of each configuration spans its rounds.\n\n",
			d.Connections, d.DurationSeconds, d.Rounds, d.Users)
		fmt.Fprintf(&b, "![Requests per second per configuration](%s)\n\n", rpsChartFile)
		b.WriteString("| configuration | requests/s | p50 | p99 | / direct | / bare Go proxy |\n|---|--:|--:|--:|--:|--:|\n")
		var direct, bare float64
		for _, c := range meds {
			switch c.Key {
			case "direct":
				direct = c.RPS
			case "bare":
				bare = c.RPS
			}
		}
		for _, c := range meds {
			fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s |\n", c.Name, thousands(c.RPS),
				formatValue(c.P50Micros, "µs"), formatValue(c.P99Micros, "µs"), ratioOrDash(c.RPS, direct), ratioOrDash(c.RPS, bare))
		}
	}

	if len(r.Streams) > 0 {
		series := streamSeries(r.Streams, "streams")
		rep.Charts[streamsChartFile] = func() (*plot.Plot, error) { return streamsChart(series) }
		runs := 0
		for _, s := range r.Streams {
			runs = max(runs, s.Run)
		}
		b.WriteString("\n## Proxy memory against open event streams\n\n")
		fmt.Fprintf(&b, "`hack/streams`: a proxy holding idle MCP event streams (GET, `Accept: text/event-stream`, authenticated on toolgate's MCPServer route), the backend and the clients in processes of their own; the proxy's resident memory (RSS) with each number of streams open, and what one stream adds to it: (RSS at N − RSS at 0) / N. Medians of %d run(s). nginx runs as one process (`master_process off`, `proxy_buffering off`); the bare Go proxy is `httputil.ReverseProxy` with `FlushInterval: -1`.\n\n", runs)
		fmt.Fprintf(&b, "![Proxy memory against open event streams](%s)\n\n", streamsChartFile)
		b.WriteString("| proxy | open streams | RSS | RSS per stream | Go heap per stream | goroutines |\n|---|--:|--:|--:|--:|--:|\n")
		for _, s := range series {
			for _, p := range s.Points {
				per, heap, gor := "", "", ""
				if p.Streams > 0 {
					per = formatValue(p.RSSKiBPerStream, "KiB")
					if s.Key != "nginx" {
						heap = formatValue(p.HeapKiBPerStream, "KiB")
					}
				}
				if s.Key != "nginx" {
					gor = thousands(p.Goroutines)
				}
				fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s |\n", s.Name, thousands(float64(p.Streams)), formatValue(p.RSSMiB, "MiB"), per, heap, gor)
			}
		}
		if sessions := streamSeries(r.Streams, "sessions"); len(sessions) > 0 {
			b.WriteString("\nWith MCP sessions (an `initialize`, then an event stream, each):\n\n")
			b.WriteString("| proxy | sessions | RSS | RSS per session |\n|---|--:|--:|--:|\n")
			for _, s := range sessions {
				for _, p := range s.Points {
					if p.Streams > 0 {
						fmt.Fprintf(&b, "| %s | %s | %s | %s |\n", s.Name, thousands(float64(p.Streams)), formatValue(p.RSSMiB, "MiB"), formatValue(p.RSSKiBPerStream, "KiB"))
					}
				}
			}
		}
	}

	if s := r.Scale; s != nil {
		b.WriteString("\n## The controller: edit to served against routes\n\n")
		fmt.Fprintf(&b, "`hack/scale`: the controller (the toolgate binary) on a real API server (envtest), with up to %s Gateways of %d HTTPRoutes each, every route with its MCPServer, Service and EndpointSlice, and %d config-stream clients reading %d Gateways' snapshots as proxies do. An edit of an HTTPRoute is timed until every client of its Gateway has applied the new snapshot.",
			thousands(float64(s.Gateways)), s.HTTPRoutes/max(s.Gateways, 1), s.Clients, s.WatchedGateways)
		if len(s.EditsByRoutes) > 0 {
			clients := s.Clients / max(s.WatchedGateways, 1)
			rep.Charts[editsChartFile] = func() (*plot.Plot, error) { return editsChart(s.EditsByRoutes, clients) }
			b.WriteString(" The routes are created in steps, and edits are timed at each, before any unrelated object exists.\n\n")
			fmt.Fprintf(&b, "![Edit to served latency against routes](%s)\n\n", editsChartFile)
			b.WriteString("| HTTPRoutes | p50 | p99 |\n|--:|--:|--:|\n")
			for _, e := range s.EditsByRoutes {
				fmt.Fprintf(&b, "| %s | %s | %s |\n", thousands(float64(e.HTTPRoutes)), formatValue(e.P50Millis, "ms"), formatValue(e.P99Millis, "ms"))
			}
		} else {
			b.WriteString("\n")
		}
		fmt.Fprintf(&b, "\nThen %s Secrets and %s EndpointSlices nothing refers to arrive, and %s updates of those:\n\n",
			thousands(float64(s.UnrelatedSecrets)), thousands(float64(s.UnrelatedSlices)), thousands(float64(s.Churn)))
		b.WriteString("| | without them | with them |\n|---|--:|--:|\n")
		fmt.Fprintf(&b, "| controller RSS (after a GC) | %s | %s |\n", formatValue(s.RSSBaseMiB, "MiB"), formatValue(s.RSSUnrelatedMiB, "MiB"))
		fmt.Fprintf(&b, "| live heap | %s | %s |\n", formatValue(s.HeapBaseMiB, "MiB"), formatValue(s.HeapUnrelatedMiB, "MiB"))
		if n := len(s.EditsByRoutes); n > 0 {
			last := s.EditsByRoutes[n-1]
			fmt.Fprintf(&b, "| edit to all clients, p50 / p99 | %s / %s | %s / %s |\n", formatValue(last.P50Millis, "ms"), formatValue(last.P99Millis, "ms"),
				formatValue(s.EditToAllClientsP50Millis, "ms"), formatValue(s.EditToAllClientsP99Millis, "ms"))
		} else {
			fmt.Fprintf(&b, "| edit to all clients, p50 / p99 | | %s / %s |\n", formatValue(s.EditToAllClientsP50Millis, "ms"), formatValue(s.EditToAllClientsP99Millis, "ms"))
		}
		writes := 0.0
		for req, n := range s.RestRequestsPerMinute {
			if verb, _, _ := strings.Cut(req, " "); verb == "create" || verb == "update" || verb == "patch" || verb == "delete" {
				writes += n
			}
		}
		fmt.Fprintf(&b, "\nCPU per unrelated event: %s. API writes per minute at rest: %s.\n", formatValue(s.CPUPerUnrelatedEventMillis, "ms"), trimmed(writes))
		if s.CPUPerEditMillis > 0 {
			fmt.Fprintf(&b, "CPU per HTTPRoute edit: %s; per edit, the config stream translated %s Gateways in %s translations of some Gateways, and made %s translations of all of them.\n",
				formatValue(s.CPUPerEditMillis, "ms"), trimmed(s.SnapshotGatewaysPerEdit["some"]), trimmed(s.SnapshotTranslationsPerEdit["some"]), trimmed(s.SnapshotTranslationsPerEdit["all"]))
		}
	}

	if r.Limits != nil || r.Authz != nil {
		b.WriteString("\n## The filter's limits and authorization\n\n")
		b.WriteString("`hack/bench-limits.sh` and `hack/bench-authz.sh`: `go test` benchmarks of the MCP filter alone (no proxy), many callers at once, each benchmark in a process of its own, rounds in alternating order; medians of the rounds. The limits' store is a real Redis.\n\n")
		b.WriteString("| benchmark | time per operation |\n|---|--:|\n")
		for _, set := range []map[string]float64{r.Limits, r.Authz} {
			names := make([]string, 0, len(set))
			for n := range set {
				names = append(names, n)
			}
			slices.Sort(names)
			for _, n := range names {
				fmt.Fprintf(&b, "| `%s` | %s |\n", n, formatValue(set[n]/1000, "µs"))
			}
		}
	}

	b.WriteString("\n## How it was run\n\n")
	b.WriteString("`make bench` runs these in sequence, then `hack/benchreport` writes this folder from their results ([data/](data/)):\n\n```\n")
	for _, c := range r.Commands {
		b.WriteString(c + "\n")
	}
	b.WriteString("```\n")
	if len(r.Steps) > 0 {
		b.WriteString("\n| step | time |\n|---|--:|\n")
		total := 0.0
		for _, s := range r.Steps {
			total += s.Seconds
			fmt.Fprintf(&b, "| %s | %s |\n", s.Name, duration(time.Duration(s.Seconds*float64(time.Second))))
		}
		fmt.Fprintf(&b, "| all | %s |\n", duration(time.Duration(total*float64(time.Second))))
	}
	rep.Markdown = b.String()
	return rep, nil
}

// writeCharts draws the report's charts into dir.
func (rep *Report) writeCharts(dir string) error {
	names := make([]string, 0, len(rep.Charts))
	for n := range rep.Charts {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, n := range names {
		p, err := rep.Charts[n]()
		if err != nil {
			return fmt.Errorf("%s: %w", n, err)
		}
		if err := saveSVG(p, filepath.Join(dir, n)); err != nil {
			return err
		}
	}
	return nil
}

// duration writes d as 1 h 2 min, 27 min 5 s or 42 s.
func duration(d time.Duration) string {
	d = d.Round(time.Second)
	h, m, s := int(d.Hours()), int(d.Minutes())%60, int(d.Seconds())%60
	switch {
	case h > 0:
		return fmt.Sprintf("%d h %d min", h, m)
	case m > 0:
		return fmt.Sprintf("%d min %d s", m, s)
	default:
		return fmt.Sprintf("%d s", s)
	}
}

// shortCommit is the first 12 hex digits of a commit, and -dirty.
func shortCommit(c string) string {
	if c == "" {
		return "unknown"
	}
	hash, dirty, _ := strings.Cut(c, "-")
	if len(hash) > 12 {
		hash = hash[:12]
	}
	if dirty != "" {
		return hash + "-" + dirty
	}
	return hash
}

func ratioOrDash(v, base float64) string {
	if base <= 0 {
		return "–"
	}
	return formatRatio(v / base)
}
