package gateway

import (
	"net/http"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/toolgate/toolgate/internal/testmetrics"
)

// seriesOfRoute counts the series of reg labelled with route.
func seriesOfRoute(t *testing.T, reg prometheus.Gatherer, route string) int {
	t.Helper()
	return testmetrics.SeriesWithLabel(t, reg, "route", route)
}

// routesConfig is a config with one listener holding the named routes of
// namespace ns.
func routesConfig(names ...string) *Config {
	vh := VirtualHost{}
	for _, name := range names {
		vh.Routes = append(vh.Routes, Route{Namespace: "ns", Name: name})
	}
	return &Config{Listeners: []Listener{httpListener("web", vh)}}
}

func TestRetainRoutesKeepsOnlyTheSeriesOfCurrentRoutes(t *testing.T) {
	one, other := &Server{}, &Server{}
	tests := []struct {
		name string
		// run uses the metrics after routes ns/a and ns/b each served a
		// request and a stream that is still open, as one's configuration.
		run        func(m *Metrics)
		wantSeries map[string]bool // route: whether it has series
	}{
		{
			name:       "a removed route's series are deleted and a kept route's remain",
			run:        func(m *Metrics) { m.retainRoutes(one, routesConfig("a")) },
			wantSeries: map[string]bool{"ns/a": true, "ns/b": false, "": true},
		},
		{
			name: "a request finishing on a removed route brings no series back",
			run: func(m *Metrics) {
				m.retainRoutes(one, routesConfig("a"))
				m.observe("ns/b", http.StatusOK, 0.1)
			},
			wantSeries: map[string]bool{"ns/a": true, "ns/b": false},
		},
		{
			name: "a stream of a removed route ending leaves no gauge behind",
			run: func(m *Metrics) {
				m.retainRoutes(one, routesConfig("a"))
				m.streamEnded("ns/b")
			},
			wantSeries: map[string]bool{"ns/b": false},
		},
		{
			name: "a route another Server still has keeps its series",
			run: func(m *Metrics) {
				m.retainRoutes(other, routesConfig("b"))
				m.retainRoutes(one, routesConfig("a"))
			},
			wantSeries: map[string]bool{"ns/a": true, "ns/b": true},
		},
		{
			name: "a route added by the new configuration is counted from its first request",
			run: func(m *Metrics) {
				m.retainRoutes(one, routesConfig("a", "c"))
				m.observe("ns/c", http.StatusOK, 0.1)
			},
			wantSeries: map[string]bool{"ns/b": false, "ns/c": true},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := NewMetrics(prometheus.NewRegistry())
			if err != nil {
				t.Fatal(err)
			}
			m.retainRoutes(one, routesConfig("a", "b"))
			for _, route := range []string{"ns/a", "ns/b", ""} {
				m.observe(route, http.StatusOK, 0.1)
				m.streamStarted(route)
			}
			tt.run(m)
			for route, want := range tt.wantSeries {
				if got := seriesOfRoute(t, m.Registry(), route) > 0; got != want {
					t.Errorf("route %q has series: %v, want %v", route, got, want)
				}
			}
			if v := gaugeMin(t, m.Registry(), "toolgate_gateway_active_streams"); v < 0 {
				t.Errorf("an active-streams gauge is at %v", v)
			}
		})
	}
}

// gaugeMin is the least value among the series of the named gauge.
func gaugeMin(t *testing.T, reg prometheus.Gatherer, name string) float64 {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	least := 0.0
	for _, mf := range families {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			least = min(least, m.GetGauge().GetValue())
		}
	}
	return least
}

func TestApplyDeletesTheSeriesOfRoutesTheNewConfigurationDrops(t *testing.T) {
	m, err := NewMetrics(prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	s := newServer(t, Options{Metrics: m})
	backend := echoBackend(t, "echo")
	route := func(name, path string) Route {
		return Route{Namespace: "ns", Name: name, Rules: []Rule{{
			Matches:  []Match{{Path: PathMatch{Type: PathMatchPathPrefix, Value: path}}},
			Backends: []Backend{backendOf("echo", 1, backend)},
		}}}
	}
	both := &Config{Listeners: []Listener{httpListener("web", VirtualHost{Routes: []Route{route("a", "/a"), route("b", "/b")}})}}
	mustApply(t, s, both)
	base := gatewayURL(t, s, "web")
	for _, path := range []string{"/a", "/b"} {
		if resp, body := get(t, base+path); resp.StatusCode != http.StatusOK {
			t.Fatalf("GET %s: %d %s", path, resp.StatusCode, body)
		}
	}
	// The gateway records a request after its response is sent: wait
	// until both are recorded.
	for deadline := time.Now().Add(waitLong); seriesOfRoute(t, m.Registry(), "ns/a") == 0 || seriesOfRoute(t, m.Registry(), "ns/b") == 0; {
		if time.Now().After(deadline) {
			t.Fatal("the requests to ns/a and ns/b were never recorded")
		}
		time.Sleep(10 * time.Millisecond)
	}

	mustApply(t, s, &Config{Listeners: []Listener{httpListener("web", VirtualHost{Routes: []Route{route("a", "/a")}})}})

	if n := seriesOfRoute(t, m.Registry(), "ns/b"); n != 0 {
		t.Errorf("route ns/b, removed, still has %d series", n)
	}
	if seriesOfRoute(t, m.Registry(), "ns/a") == 0 {
		t.Error("route ns/a, kept, lost its series")
	}
}
