package gateway

import (
	"fmt"
	"strconv"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// Metrics are the data plane's Prometheus metrics. They live as long as the
// process, outside any snapshot, so a reload keeps their values. Pass the
// same *Metrics to every Server of a process.
//
// Series are labelled by route, and a route's series are deleted when no
// Server's configuration has the route any more (see retainRoutes), so a
// gateway that sees many configurations keeps only the current routes'.
type Metrics struct {
	registry *prometheus.Registry
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
	streams  *prometheus.GaugeVec
	mirrors  *prometheus.CounterVec

	// mu makes "is the route current, then record" one step, so that a
	// request finishing on a removed route cannot bring back the series
	// retainRoutes just deleted. Recording holds it for reading.
	mu sync.RWMutex
	// routesOf holds the route labels of each Server's configuration.
	routesOf map[*Server]map[string]bool
	// current is the union of routesOf; nil until the first retainRoutes,
	// when every route is recorded (Apply calls it before the first
	// snapshot serves).
	current map[string]bool
}

// NewMetrics registers the gateway's metrics on reg and serves reg on the
// admin listener's /metrics, so other components of the process (the MCP
// policy filter) should register there too. A nil reg is a new registry
// with the Go and process collectors.
func NewMetrics(reg *prometheus.Registry) (*Metrics, error) {
	if reg == nil {
		reg = prometheus.NewRegistry()
		reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	}
	m := &Metrics{
		registry: reg,
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "toolgate_gateway_requests_total",
			Help: "Requests served, by HTTPRoute (namespace/name, empty when none matched) and status code.",
		}, []string{"route", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "toolgate_gateway_request_duration_seconds",
			Help:    "Time from a request's arrival to the end of its response, by HTTPRoute. Event streams count until they end.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 300},
		}, []string{"route"}),
		streams: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "toolgate_gateway_active_streams",
			Help: "Responses currently streaming server-sent events to clients, by HTTPRoute.",
		}, []string{"route"}),
		mirrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "toolgate_gateway_mirrored_requests_total",
			Help: "Copies of requests for RequestMirror filters, by result: sent (the mirror answered), failed (it could not be reached or did not answer in time), dropped (not sent: no endpoint, a body over 1 MiB, too many copies in flight).",
		}, []string{"result"}),
	}
	for _, c := range []prometheus.Collector{m.requests, m.duration, m.streams, m.mirrors} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("register gateway metrics: %w", err)
		}
	}
	return m, nil
}

// Registry is the registry the metrics are registered on.
func (m *Metrics) Registry() *prometheus.Registry { return m.registry }

// observe records a finished request. A request that finishes on a route
// the current configurations no longer have is not counted: its series
// were deleted, and counting it would bring them back as a ghost.
func (m *Metrics) observe(route string, code int, seconds float64) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if !m.isCurrent(route) {
		return
	}
	m.requests.WithLabelValues(route, statusLabel(code)).Inc()
	m.duration.WithLabelValues(route).Observe(seconds)
}

// streamStarted and streamEnded count the event streams of a route. A
// stream of a route removed while it runs is no longer counted: its gauge
// went with the route's other series, and its end leaves no -1 behind.
func (m *Metrics) streamStarted(route string) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if m.isCurrent(route) {
		m.streams.WithLabelValues(route).Inc()
	}
}

func (m *Metrics) streamEnded(route string) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if m.isCurrent(route) {
		m.streams.WithLabelValues(route).Dec()
	}
}

// isCurrent reports whether route is one of the current configurations'
// routes; "" (no route matched) always is. The caller holds mu.
func (m *Metrics) isCurrent(route string) bool {
	return m.current == nil || route == "" || m.current[route]
}

// retainRoutes makes the routes of cfg the routes of owner's configuration
// and deletes the series of every route that no Server's configuration has
// any more. Server.Apply calls it once nothing can fail, just before it
// swaps in the new snapshot, so that requests on the new routes are
// counted from their first.
func (m *Metrics) retainRoutes(owner *Server, cfg *Config) {
	routes := map[string]bool{}
	for _, l := range cfg.Listeners {
		for _, vh := range l.VirtualHosts {
			for _, r := range vh.Routes {
				routes[r.Namespace+"/"+r.Name] = true
			}
		}
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.routesOf == nil {
		m.routesOf = map[*Server]map[string]bool{}
	}
	m.routesOf[owner] = routes
	previous := m.current
	m.current = map[string]bool{}
	for _, rs := range m.routesOf {
		for r := range rs {
			m.current[r] = true
		}
	}
	// Only current routes are ever recorded, so the series to delete are
	// those of the routes that were current and are no longer.
	for route := range previous {
		if !m.current[route] {
			for _, vec := range []*prometheus.MetricVec{m.requests.MetricVec, m.duration.MetricVec, m.streams.MetricVec} {
				vec.DeletePartialMatch(prometheus.Labels{"route": route})
			}
		}
	}
}

var statusLabels = func() map[int]string {
	labels := map[int]string{}
	for code := 100; code < 600; code++ {
		labels[code] = strconv.Itoa(code)
	}
	return labels
}()

func statusLabel(code int) string {
	if s, ok := statusLabels[code]; ok {
		return s
	}
	return strconv.Itoa(code)
}
