package main

import (
	"bytes"
	"fmt"
	"runtime"
	"slices"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

// The release binaries are checked end to end by hack/release's test (the
// version and commit stamped with -ldflags, the metric on the proxy's and
// the controller's /metrics); these check the pieces in this process.

func TestBuildInfoIsOneSeriesNamingVersionCommitAndGo(t *testing.T) {
	reg := prometheus.NewRegistry()
	for range 2 {
		// The controller's registry is process-wide: a second registration
		// is not an error.
		if err := registerBuildInfo(reg); err != nil {
			t.Fatal(err)
		}
	}
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, f := range families {
		for _, m := range f.GetMetric() {
			s := f.GetName() + "{"
			for _, l := range m.GetLabel() {
				s += l.GetName() + "=" + l.GetValue() + ","
			}
			got = append(got, fmt.Sprintf("%s} %v", s, m.GetGauge().GetValue()))
		}
	}
	want := []string{"toolgate_build_info{commit=" + commitString() + ",goversion=" + runtime.Version() + ",version=" + versionString() + ",} 1"}
	if !slices.Equal(got, want) {
		t.Errorf("the registry holds %q, want %q", got, want)
	}
}

func TestVersionCommandNamesVersionCommitAndGo(t *testing.T) {
	var stdout, stderr bytes.Buffer
	if err := run([]string{"version"}, &stdout, &stderr); err != nil {
		t.Fatal(err)
	}
	want := "toolgate " + versionString() + " (commit " + commitString() + ", " + runtime.Version() + ")\n"
	if got := stdout.String(); got != want {
		t.Errorf("toolgate version printed %q, want %q", got, want)
	}
}
