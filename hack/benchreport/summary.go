package main

import (
	"cmp"
	"fmt"
	"slices"
)

// configNames are the data plane's configurations, in the order of the
// report, with the names the report gives them.
var configNames = []struct{ key, name, short string }{
	{"direct", "direct to the backend", "direct"},
	{"bare", "bare Go httputil.ReverseProxy", "bare Go\nReverseProxy"},
	{"toolgate", "toolgate, no policy", "toolgate\nno policy"},
	{"memory", "toolgate, policy in memory", "toolgate\nmemory policy"},
	{"redis", "toolgate, policy on Redis", "toolgate\nRedis policy"},
}

// proxyNames are hack/streams' proxies, in the order of the report.
var proxyNames = []struct{ key, name string }{
	{"toolgate", "toolgate"},
	{"bare", "bare Go httputil.ReverseProxy"},
	{"nginx", "nginx"},
}

// ConfigMedians are one data-plane configuration's medians over rounds,
// and the lowest and highest requests per second.
type ConfigMedians struct {
	Key, Name, Short          string
	RPS, P50Micros, P99Micros float64
	MinRPS, MaxRPS            float64
	Rounds                    int
}

// dataplaneMedians are the medians of each configuration that ran, in
// the order of configNames.
func dataplaneMedians(d *Dataplane) []ConfigMedians {
	var out []ConfigMedians
	for _, c := range configNames {
		var rps, p50, p99 []float64
		for _, s := range d.Samples {
			if s.Config == c.key {
				rps, p50, p99 = append(rps, s.RPS), append(p50, s.P50Micros), append(p99, s.P99Micros)
			}
		}
		if len(rps) == 0 {
			continue
		}
		out = append(out, ConfigMedians{
			Key: c.key, Name: c.name, Short: c.short,
			RPS: median(rps), P50Micros: median(p50), P99Micros: median(p99),
			MinRPS: slices.Min(rps), MaxRPS: slices.Max(rps), Rounds: len(rps),
		})
	}
	return out
}

// StreamPoint is a proxy's median memory with a number of open streams
// (or sessions), and the median over runs of what one stream added to it
// since 0 within the same run.
type StreamPoint struct {
	Streams          int
	RSSMiB, HeapMiB  float64
	Goroutines       float64
	RSSKiBPerStream  float64 // 0 at 0 streams
	HeapKiBPerStream float64
}

// StreamSeries is one proxy's points of one scenario, by streams.
type StreamSeries struct {
	Key, Name string
	Points    []StreamPoint
}

// streamSeries are the proxies' points of scenario ("streams" or
// "sessions"), in the order of proxyNames.
func streamSeries(samples []StreamSample, scenario string) []StreamSeries {
	var out []StreamSeries
	for _, p := range proxyNames {
		base := map[int]StreamSample{} // run -> the sample at 0 streams
		byLevel := map[int][]StreamSample{}
		for _, s := range samples {
			if s.Proxy != p.key || s.Scenario != scenario {
				continue
			}
			if s.Streams == 0 {
				base[s.Run] = s
			}
			byLevel[s.Streams] = append(byLevel[s.Streams], s)
		}
		if len(byLevel) == 0 {
			continue
		}
		series := StreamSeries{Key: p.key, Name: p.name}
		for level, ss := range byLevel {
			var rss, heap, gor, rssPer, heapPer []float64
			for _, s := range ss {
				rss, heap, gor = append(rss, s.RSSKiB/1024), append(heap, s.HeapInuseKiB/1024), append(gor, s.Goroutines)
				if b, ok := base[s.Run]; ok && level > 0 {
					rssPer = append(rssPer, (s.RSSKiB-b.RSSKiB)/float64(level))
					heapPer = append(heapPer, (s.HeapInuseKiB-b.HeapInuseKiB)/float64(level))
				}
			}
			series.Points = append(series.Points, StreamPoint{
				Streams: level, RSSMiB: median(rss), HeapMiB: median(heap), Goroutines: median(gor),
				RSSKiBPerStream: median(rssPer), HeapKiBPerStream: median(heapPer),
			})
		}
		slices.SortFunc(series.Points, func(a, b StreamPoint) int { return cmp.Compare(a.Streams, b.Streams) })
		out = append(out, series)
	}
	return out
}

// pointAt is the series' point at streams, if it has one.
func (s StreamSeries) pointAt(streams int) (StreamPoint, bool) {
	for _, p := range s.Points {
		if p.Streams == streams {
			return p, true
		}
	}
	return StreamPoint{}, false
}

// Ratio is one line of the table of ratios: a measured figure beside its
// baseline, and measured / baseline.
type Ratio struct {
	Group              string
	What               string // "measured / baseline", and the quantity
	Measured, Baseline float64
	Unit               string // how the figures are written: see formatValue
}

// Value is Measured / Baseline.
func (r Ratio) Value() float64 { return r.Measured / r.Baseline }

// ratios is the table of ratios of everything that ran.
func ratios(r *Results) []Ratio {
	var out []Ratio
	add := func(group, what string, measured, baseline float64, unit string) {
		if measured > 0 && baseline > 0 {
			out = append(out, Ratio{Group: group, What: what, Measured: measured, Baseline: baseline, Unit: unit})
		}
	}
	if r.Dataplane != nil {
		med := map[string]ConfigMedians{}
		for _, m := range dataplaneMedians(r.Dataplane) {
			med[m.Key] = m
		}
		const g = "Data plane"
		add(g, "requests/s: bare Go ReverseProxy / direct", med["bare"].RPS, med["direct"].RPS, "/s")
		add(g, "requests/s: toolgate, no policy / direct", med["toolgate"].RPS, med["direct"].RPS, "/s")
		add(g, "requests/s: toolgate, no policy / bare Go ReverseProxy", med["toolgate"].RPS, med["bare"].RPS, "/s")
		add(g, "requests/s: toolgate, policy in memory / no policy", med["memory"].RPS, med["toolgate"].RPS, "/s")
		add(g, "requests/s: toolgate, policy on Redis / no policy", med["redis"].RPS, med["toolgate"].RPS, "/s")
		add(g, "p99 latency: toolgate, no policy / bare Go ReverseProxy", med["toolgate"].P99Micros, med["bare"].P99Micros, "µs")
		add(g, "p99 latency: toolgate, policy on Redis / no policy", med["redis"].P99Micros, med["toolgate"].P99Micros, "µs")
	}
	if len(r.Streams) > 0 {
		const g = "Open event streams"
		series := map[string]StreamSeries{}
		top := 0
		for _, s := range streamSeries(r.Streams, "streams") {
			series[s.Key] = s
			top = max(top, s.Points[len(s.Points)-1].Streams)
		}
		at := func(proxy string) StreamPoint { p, _ := series[proxy].pointAt(top); return p }
		what := fmt.Sprintf("RSS per idle stream at %s: toolgate / ", thousands(float64(top)))
		add(g, what+"bare Go ReverseProxy", at("toolgate").RSSKiBPerStream, at("bare").RSSKiBPerStream, "KiB")
		add(g, what+"nginx", at("toolgate").RSSKiBPerStream, at("nginx").RSSKiBPerStream, "KiB")
		sessions := map[string]StreamPoint{}
		n := 0
		for _, s := range streamSeries(r.Streams, "sessions") {
			for _, p := range s.Points {
				if p.Streams > 0 {
					sessions[s.Key], n = p, p.Streams
				}
			}
		}
		what = fmt.Sprintf("proxy RSS with %s sessions: toolgate / ", thousands(float64(n)))
		add(g, what+"bare Go ReverseProxy", sessions["toolgate"].RSSMiB, sessions["bare"].RSSMiB, "MiB")
		add(g, what+"nginx", sessions["toolgate"].RSSMiB, sessions["nginx"].RSSMiB, "MiB")
	}
	if s := r.Scale; s != nil {
		const g = "Controller"
		if n := len(s.EditsByRoutes); n > 1 {
			lo, hi := s.EditsByRoutes[0], s.EditsByRoutes[n-1]
			what := fmt.Sprintf(" %s HTTPRoutes / %s", thousands(float64(hi.HTTPRoutes)), thousands(float64(lo.HTTPRoutes)))
			add(g, "edit to all clients, p50:"+what, hi.P50Millis, lo.P50Millis, "ms")
			add(g, "edit to all clients, p99:"+what, hi.P99Millis, lo.P99Millis, "ms")
		}
		unrelated := thousands(float64(s.UnrelatedSecrets + s.UnrelatedSlices))
		add(g, "controller RSS: with "+unrelated+" unrelated objects / without", s.RSSUnrelatedMiB, s.RSSBaseMiB, "MiB")
		add(g, "controller live heap: with "+unrelated+" unrelated objects / without", s.HeapUnrelatedMiB, s.HeapBaseMiB, "MiB")
		if n := len(s.EditsByRoutes); n > 0 {
			add(g, "edit to all clients, p99: with "+unrelated+" unrelated objects / without", s.EditToAllClientsP99Millis, s.EditsByRoutes[n-1].P99Millis, "ms")
		}
	}
	perSecond := func(ns float64) float64 {
		if ns <= 0 {
			return 0
		}
		return 1e9 / ns
	}
	if l := r.Limits; l != nil {
		const g = "Limits on Redis (filter, calls/s)"
		base := perSecond(l["BenchmarkLimitsOnRedis/buckets"])
		add(g, "buckets and a quota / buckets", perSecond(l["BenchmarkLimitsOnRedis/buckets+quota"]), base, "/s")
		add(g, "buckets and an in-flight cap / buckets", perSecond(l["BenchmarkLimitsOnRedis/buckets+cap"]), base, "/s")
		add(g, "buckets, a quota and a cap / buckets", perSecond(l["BenchmarkLimitsOnRedis/buckets+quota+cap"]), base, "/s")
	}
	if a := r.Authz; a != nil {
		const g = "Authorization (filter, operations/s)"
		base := perSecond(a["BenchmarkAuthorization/rules=0"])
		add(g, "tools/call: 20 rules / none", perSecond(a["BenchmarkAuthorization/rules=20"]), base, "/s")
		add(g, "tools/call: 20 rules on arguments / none", perSecond(a["BenchmarkAuthorization/rules=20-by-arguments"]), base, "/s")
		add(g, "tools/list of 500 tools: filtered / unfiltered", perSecond(a["BenchmarkToolsList/filtered"]), perSecond(a["BenchmarkToolsList/unfiltered"]), "/s")
	}
	return out
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	v = slices.Clone(v)
	slices.Sort(v)
	if len(v)%2 == 1 {
		return v[len(v)/2]
	}
	return (v[len(v)/2-1] + v[len(v)/2]) / 2
}
