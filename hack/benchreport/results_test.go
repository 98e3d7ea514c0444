package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestLoadRefusesResultsTheReportCannotRead(t *testing.T) {
	for _, tc := range []struct {
		name, file, content, wantErr string
	}{
		{"machine.json missing", machineFile, "", "machine.json"},
		{"dataplane.json not JSON", dataplaneFile, "{", "dataplane.json"},
		{"dataplane.json without samples", dataplaneFile, `{"Rounds": 3}`, "dataplane.json: no samples"},
		{"a data-plane sample without requests per second", dataplaneFile, `{"Samples": [{"Config": "direct"}]}`, "dataplane.json: a sample"},
		{"streams.json empty", streamsFile, `[]`, "streams.json: no samples"},
		{"a streams sample without RSS", streamsFile, `[{"Scenario": "streams", "Proxy": "nginx", "Streams": 0}]`, "streams.json: a sample"},
		{"scale.json without routes", scaleFile, `{"RSSBaseMiB": 100}`, "scale.json: no HTTPRoutes"},
		{"limits.tsv without its header", limitsFile, "BenchmarkLimitsOnRedis/buckets\t46748.0\n", "limits.tsv: want a header"},
		{"authz.tsv with a time that is not a number", authzFile, "benchmark\tns/op\nBenchmarkAuthorization/rules=0\tfast\n", "authz.tsv:2: ns/op"},
		{"steps.tsv without seconds", stepsFile, "data plane\n", "steps.tsv:1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := copyFixture(t, tc.file)
			if tc.content != "" {
				if err := os.WriteFile(filepath.Join(dir, tc.file), []byte(tc.content), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			_, err := load(dir)
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("load: %v, want an error with %q", err, tc.wantErr)
			}
		})
	}
}

func TestABenchmarkThatDidNotRunLeavesItsSectionOut(t *testing.T) {
	dir := copyFixture(t, dataplaneFile, streamsFile, limitsFile, authzFile)
	r, err := load(dir)
	if err != nil {
		t.Fatal(err)
	}
	if r.Dataplane != nil || r.Streams != nil || r.Limits != nil || r.Authz != nil || r.Scale == nil {
		t.Fatalf("loaded %+v, want the controller's results alone", r)
	}
	rep, err := render(r, fixtureFinished)
	if err != nil {
		t.Fatal(err)
	}
	for _, gone := range []string{"## The data plane", "## Proxy memory", "## The filter's limits", "**Data plane**", rpsChartFile, streamsChartFile} {
		if strings.Contains(rep.Markdown, gone) {
			t.Errorf("the report has %q, of a benchmark that did not run", gone)
		}
	}
	if !strings.Contains(rep.Markdown, "## The controller") || len(rep.Charts) != 1 {
		t.Errorf("the report lacks the controller's section or its one chart (%d charts)", len(rep.Charts))
	}
	for _, row := range rep.Ratios {
		if row.Group != "Controller" {
			t.Errorf("a ratio of %s, which did not run", row.Group)
		}
	}
}

func TestAReportNeedsAtLeastOneBenchmark(t *testing.T) {
	dir := copyFixture(t, dataplaneFile, streamsFile, scaleFile, limitsFile, authzFile)
	r, err := load(dir)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := render(r, fixtureFinished); err == nil {
		t.Fatal("a report of no benchmark was rendered")
	}
}

func TestPerStreamCostsAreTakenWithinARunThenTheMedian(t *testing.T) {
	samples := []StreamSample{
		{Scenario: "streams", Proxy: "bare", Run: 1, Streams: 0, RSSKiB: 10000},
		{Scenario: "streams", Proxy: "bare", Run: 1, Streams: 100, RSSKiB: 15000},
		{Scenario: "streams", Proxy: "bare", Run: 2, Streams: 0, RSSKiB: 20000},
		{Scenario: "streams", Proxy: "bare", Run: 2, Streams: 100, RSSKiB: 26000},
		{Scenario: "streams", Proxy: "bare", Run: 3, Streams: 0, RSSKiB: 12000},
		{Scenario: "streams", Proxy: "bare", Run: 3, Streams: 100, RSSKiB: 16000},
		{Scenario: "sessions", Proxy: "bare", Run: 1, Streams: 100, RSSKiB: 99999},
	}
	series := streamSeries(samples, "streams")
	if len(series) != 1 || series[0].Key != "bare" || len(series[0].Points) != 2 {
		t.Fatalf("series %+v, want bare's at 0 and 100 streams", series)
	}
	at0, at100 := series[0].Points[0], series[0].Points[1]
	// RSS: medians of 10000, 20000, 12000 and of 15000, 26000, 16000 KiB;
	// per stream: of 50, 60 and 40 KiB.
	if at0.Streams != 0 || at0.RSSMiB != 12000.0/1024 || at100.Streams != 100 || at100.RSSMiB != 16000.0/1024 || at100.RSSKiBPerStream != 50 {
		t.Errorf("points %+v and %+v, want 0 streams at %.2f MiB, 100 at %.2f MiB and 50 KiB a stream", at0, at100, 12000.0/1024, 16000.0/1024)
	}
}

func TestTheMachineIsReadFromProc(t *testing.T) {
	cpu, virtual := parseCPUInfo([]byte("processor\t: 0\nmodel name\t: Intel(R) Xeon(R) Processor\nflags\t\t: fpu vme hypervisor lahf_lm\n\nprocessor\t: 1\nmodel name\t: Intel(R) Xeon(R) Processor\n"))
	if cpu != "Intel(R) Xeon(R) Processor" || !virtual {
		t.Errorf("cpuinfo: %q, virtual %v; want the model and a virtual machine", cpu, virtual)
	}
	if _, virtual := parseCPUInfo([]byte("flags\t: fpu hypervisorx\n")); virtual {
		t.Error("a flag that only starts with hypervisor made a virtual machine")
	}
	if got := parseMemTotalMiB([]byte("MemTotal:       24684156 kB\nMemFree:        20000000 kB\n")); got != 24105 {
		t.Errorf("meminfo: %d MiB, want 24105", got)
	}
	if got := parseOSRelease([]byte("NAME=\"Debian GNU/Linux\"\nPRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\n")); got != "Debian GNU/Linux 12 (bookworm)" {
		t.Errorf("os-release: %q", got)
	}
}

func TestFiguresAreWrittenWithThePrecisionTheirSizeCallsFor(t *testing.T) {
	for _, tc := range []struct {
		v    float64
		unit string
		want string
	}{
		{21345.6, "/s", "21,346/s"},
		{847.2, "/s", "847/s"},
		{1234567, "/s", "1,234,567/s"},
		{812, "µs", "812 µs"},
		{19687, "µs", "19.7 ms"},
		{46.71, "KiB", "46.7 KiB"},
		{4.166, "ms", "4.17 ms"},
		{0.1144, "ms", "0.114 ms"},
		{1024.4, "MiB", "1,024 MiB"},
		{0, "", "0"},
	} {
		if got := formatValue(tc.v, tc.unit); got != tc.want {
			t.Errorf("formatValue(%v, %q) = %q, want %q", tc.v, tc.unit, got, tc.want)
		}
	}
	for v, want := range map[float64]string{0.4732: "0.47×", 1.0: "1.00×", 2.456: "2.46×", 0.00246: "0.0025×"} {
		if got := formatRatio(v); got != want {
			t.Errorf("formatRatio(%v) = %q, want %q", v, got, want)
		}
	}
}

func TestThePrintedTableHasARowARatioUnderItsGroup(t *testing.T) {
	rows := []Ratio{
		{Group: "Data plane", What: "requests/s: bare / direct", Measured: 8000, Baseline: 32000, Unit: "/s"},
		{Group: "Data plane", What: "requests/s: toolgate / bare", Measured: 9000, Baseline: 8000, Unit: "/s"},
		{Group: "Controller", What: "controller RSS: with / without", Measured: 137.3, Baseline: 109.6, Unit: "MiB"},
	}
	want := `measured / baseline               measured  baseline  ratio
Data plane
  requests/s: bare / direct        8,000/s  32,000/s  0.25×
  requests/s: toolgate / bare      9,000/s   8,000/s  1.12×
Controller
  controller RSS: with / without   137 MiB   110 MiB  1.25×
`
	if got := textTable(rows); got != want {
		t.Errorf("the table is\n%s\nwant\n%s", got, want)
	}
}
