package filter_test

import (
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/toolgate/toolgate/internal/testmetrics"

	"github.com/toolgate/toolgate/filter"
	"github.com/toolgate/toolgate/filter/limiter"
)

// seriesOfServer counts the series of reg labelled with server.
func seriesOfServer(t *testing.T, reg prometheus.Gatherer, server string) int {
	t.Helper()
	return testmetrics.SeriesWithLabel(t, reg, "server", server)
}

// reloadFixture is one Shared that served servers team-a/kept and
// team-a/dropped, one tools/call each, before a reload kept only the first.
type reloadFixture struct {
	reg          *prometheus.Registry
	shared       *filter.Shared
	kept         filter.Policy
	dropped      filter.Policy
	oldDropped   http.Handler // the filter of the configuration before the reload
	seriesBefore int          // series of team-a/dropped before the reload
}

func newReloadFixture(t *testing.T) *reloadFixture {
	t.Helper()
	fx := &reloadFixture{
		reg:     prometheus.NewRegistry(),
		kept:    filter.Policy{Server: "team-a/kept", Global: limit(10, time.Hour)},
		dropped: filter.Policy{Server: "team-a/dropped", Global: limit(10, time.Hour)},
	}
	shared, err := filter.NewShared(filter.SharedOptions{Store: limiter.NewMemory(limiter.MemoryOptions{}), Registerer: fx.reg})
	if err != nil {
		t.Fatalf("NewShared: %v", err)
	}
	fx.shared = shared
	fx.oldDropped = fx.serve(t, fx.dropped)
	fx.serve(t, fx.kept)
	fx.seriesBefore = seriesOfServer(t, fx.reg, "dropped")

	// The reload: new Filters for the new configuration, then Retain.
	fx.serve(t, fx.kept)
	fx.shared.Retain(slices.Values([]*filter.Policy{&fx.kept}))
	return fx
}

// serve builds the filter of policy, sends it one tools/call and returns it.
func (fx *reloadFixture) serve(t *testing.T, policy filter.Policy) http.Handler {
	t.Helper()
	f, err := filter.New(policy, fx.shared)
	if err != nil {
		t.Fatalf("New %s: %v", policy.Server, err)
	}
	h := f.Wrap(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	postCall(t, h)
	return h
}

func postCall(t *testing.T, h http.Handler) {
	t.Helper()
	r := httptest.NewRequest(http.MethodPost, "/mcp", strings.NewReader(call(1, "t")))
	r.Header.Set("Content-Type", "application/json")
	r.Header.Set("Accept", "application/json, text/event-stream")
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	if w.Code != http.StatusOK {
		t.Fatalf("tools/call: status %d: %s", w.Code, w.Body)
	}
}

func TestRetainDeletesTheSeriesOfServersTheConfigurationNoLongerHas(t *testing.T) {
	allowed := func(server string) map[string]string {
		return map[string]string{"namespace": "team-a", "server": server, "scope": "global", "result": "allowed"}
	}
	tests := []struct {
		name  string
		after func(t *testing.T, fx *reloadFixture)
		check func(t *testing.T, fx *reloadFixture)
	}{
		{
			name: "the dropped server has no series left",
			check: func(t *testing.T, fx *reloadFixture) {
				if fx.seriesBefore == 0 {
					t.Fatal("the dropped server had no series before the reload: the test proves nothing")
				}
				if n := seriesOfServer(t, fx.reg, "dropped"); n != 0 {
					t.Errorf("%d series of the dropped server remain", n)
				}
			},
		},
		{
			name: "the kept server keeps its series and counts",
			check: func(t *testing.T, fx *reloadFixture) {
				if n := seriesOfServer(t, fx.reg, "kept"); n != fx.seriesBefore {
					t.Errorf("the kept server has %d series, want %d as before the reload", n, fx.seriesBefore)
				}
				if got := metricValue(t, fx.reg, filter.MetricDecisions, allowed("kept")); got != 2 {
					t.Errorf("allowed decisions of the kept server = %v, want 2 (one per configuration)", got)
				}
			},
		},
		{
			name: "a request the old filter of the dropped server still serves brings no series back",
			after: func(t *testing.T, fx *reloadFixture) {
				postCall(t, fx.oldDropped)
			},
			check: func(t *testing.T, fx *reloadFixture) {
				if n := seriesOfServer(t, fx.reg, "dropped"); n != 0 {
					t.Errorf("%d series of the dropped server came back", n)
				}
			},
		},
		{
			name: "a dropped server that comes back starts its series from zero",
			after: func(t *testing.T, fx *reloadFixture) {
				if _, err := filter.New(fx.dropped, fx.shared); err != nil {
					t.Fatalf("New: %v", err)
				}
				fx.shared.Retain(slices.Values([]*filter.Policy{&fx.kept, &fx.dropped}))
			},
			check: func(t *testing.T, fx *reloadFixture) {
				if n := seriesOfServer(t, fx.reg, "dropped"); n != fx.seriesBefore {
					t.Errorf("the returning server has %d series, want %d", n, fx.seriesBefore)
				}
				if got := metricValue(t, fx.reg, filter.MetricDecisions, allowed("dropped")); got != 0 {
					t.Errorf("allowed decisions of the returning server = %v, want 0", got)
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fx := newReloadFixture(t)
			if tt.after != nil {
				tt.after(t, fx)
			}
			tt.check(t, fx)
		})
	}
}
