package controller

import (
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics of the translations that publish snapshots.
const (
	// MetricSnapshotTranslations counts them by scope: "all" Gateways, or
	// "some", those an event could affect.
	MetricSnapshotTranslations = "toolgate_controller_snapshot_translations_total"
	// MetricSnapshotGateways counts the Gateways they translated, by scope.
	MetricSnapshotGateways = "toolgate_controller_snapshot_translated_gateways_total"
	// MetricSnapshotSeconds is how long they took, from reading the caches
	// to the last snapshot published, by scope.
	MetricSnapshotSeconds = "toolgate_controller_snapshot_translation_seconds"
)

// The scopes of a snapshot translation.
const (
	scopeAll  = "all"
	scopeSome = "some"
)

// publisherMetrics are the publisher's metrics; registered nowhere when
// the stream has no Registerer.
type publisherMetrics struct {
	translations *prometheus.CounterVec
	gateways     *prometheus.CounterVec
	seconds      *prometheus.HistogramVec
}

func newPublisherMetrics(reg prometheus.Registerer) (*publisherMetrics, error) {
	m := &publisherMetrics{
		translations: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: MetricSnapshotTranslations,
			Help: "Translations that published Gateways' snapshots, by scope: all Gateways, or some (those an HTTPRoute's or a Gateway's change could affect).",
		}, []string{"scope"}),
		gateways: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: MetricSnapshotGateways,
			Help: "Gateways those translations translated, by scope.",
		}, []string{"scope"}),
		seconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    MetricSnapshotSeconds,
			Help:    "How long a translation that published snapshots took, from reading the caches to the last snapshot published, by scope.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 14),
		}, []string{"scope"}),
	}
	for _, scope := range []string{scopeAll, scopeSome} {
		m.translations.WithLabelValues(scope)
		m.gateways.WithLabelValues(scope)
		m.seconds.WithLabelValues(scope)
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.translations, m.gateways, m.seconds} {
			if err := reg.Register(c); err != nil {
				return nil, fmt.Errorf("register the publisher's metrics: %w", err)
			}
		}
	}
	return m, nil
}

// translated records one translation of gateways Gateways in scope.
func (m *publisherMetrics) translated(scope string, gateways int, took time.Duration) {
	m.translations.WithLabelValues(scope).Inc()
	m.gateways.WithLabelValues(scope).Add(float64(gateways))
	m.seconds.WithLabelValues(scope).Observe(took.Seconds())
}
