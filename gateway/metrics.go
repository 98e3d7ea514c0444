package gateway

import (
	"fmt"
	"strconv"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// Metrics are the data plane's Prometheus metrics. They live as long as the
// process, outside any snapshot, so a reload keeps their values. Pass the
// same *Metrics to every Server of a process.
type Metrics struct {
	registry *prometheus.Registry
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
	streams  *prometheus.GaugeVec
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
	}
	for _, c := range []prometheus.Collector{m.requests, m.duration, m.streams} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("register gateway metrics: %w", err)
		}
	}
	return m, nil
}

// Registry is the registry the metrics are registered on.
func (m *Metrics) Registry() *prometheus.Registry { return m.registry }

func (m *Metrics) observe(route string, code int, seconds float64) {
	m.requests.WithLabelValues(route, statusLabel(code)).Inc()
	m.duration.WithLabelValues(route).Observe(seconds)
}

func (m *Metrics) streamStarted(route string) { m.streams.WithLabelValues(route).Inc() }

func (m *Metrics) streamEnded(route string) { m.streams.WithLabelValues(route).Dec() }

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
