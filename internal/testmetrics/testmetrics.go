// Package testmetrics reads Prometheus registries in tests.
package testmetrics

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

// SeriesWithLabel counts the series of reg whose label name has value.
func SeriesWithLabel(t testing.TB, reg prometheus.Gatherer, name, value string) int {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	n := 0
	for _, mf := range families {
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == name && l.GetValue() == value {
					n++
				}
			}
		}
	}
	return n
}
