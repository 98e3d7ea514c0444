package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// The files make bench writes into its results folder, each by one
// benchmark; the types below read the fields the report uses, named as
// the benchmarks write them.
const (
	machineFile   = "machine.json"   // benchreport machine
	dataplaneFile = "dataplane.json" // hack/dataplane -results
	streamsFile   = "streams.json"   // hack/streams -results
	scaleFile     = "scale.json"     // hack/scale -results
	limitsFile    = "limits.tsv"     // RESULTS= hack/bench-limits.sh
	authzFile     = "authz.tsv"      // RESULTS= hack/bench-authz.sh
	commandsFile  = "commands.txt"   // make bench: each command it ran
	stepsFile     = "steps.tsv"      // make bench: each step and its seconds
)

// resultFiles are the files of the results folder, copied into the
// report's data/.
var resultFiles = []string{machineFile, dataplaneFile, streamsFile, scaleFile, limitsFile, authzFile, commandsFile, stepsFile}

// Results are everything one run of make bench measured. A benchmark that
// did not run leaves its field nil, and the report goes without it.
type Results struct {
	Machine   Machine
	Dataplane *Dataplane
	Streams   []StreamSample
	Scale     *Scale
	Limits    map[string]float64 // benchmark -> median ns/op
	Authz     map[string]float64 // benchmark -> median ns/op
	Commands  []string
	Steps     []Step
}

// Dataplane is hack/dataplane's results.
type Dataplane struct {
	Connections     int
	Users           int
	DurationSeconds float64
	Rounds          int
	Samples         []DataplaneSample
}

// DataplaneSample is one run of one configuration.
type DataplaneSample struct {
	Config    string
	Round     int
	Requests  int
	RPS       float64
	P50Micros float64
	P99Micros float64
}

// StreamSample is one measurement of hack/streams: a proxy with a number
// of open streams (scenario "streams") or sessions ("sessions").
type StreamSample struct {
	Scenario      string
	Proxy         string
	Run           int
	Streams       int
	RSSKiB        float64
	HeapInuseKiB  float64
	StackInuseKiB float64
	Goroutines    float64
}

// Scale is hack/scale's results.
type Scale struct {
	Gateways, HTTPRoutes, MCPServers, Clients int
	WatchedGateways                           int
	UnrelatedSecrets, UnrelatedSlices, Churn  int

	RSSBaseMiB, RSSUnrelatedMiB   float64
	HeapBaseMiB, HeapUnrelatedMiB float64

	CPUPerUnrelatedEventMillis float64
	// CPUPerEditMillis and the config stream's translations per edit by
	// scope ("all", "some"): absent from results of older versions.
	CPUPerEditMillis            float64
	SnapshotTranslationsPerEdit map[string]float64
	SnapshotGatewaysPerEdit     map[string]float64

	EditToAllClientsP50Millis, EditToAllClientsP99Millis float64
	EditsByRoutes                                        []EditsAt

	RestRequestsPerMinute map[string]float64
}

// EditsAt is the edit-to-all-clients latency with a number of HTTPRoutes.
type EditsAt struct {
	HTTPRoutes           int
	P50Millis, P99Millis float64
}

// Step is one step of make bench and how long it took.
type Step struct {
	Name    string
	Seconds float64
}

// load reads the results folder dir. machine.json is required; every
// other file is read when it is there, and must then hold what the report
// needs.
func load(dir string) (*Results, error) {
	r := &Results{}
	if err := readJSON(dir, machineFile, &r.Machine); err != nil {
		return nil, err
	}
	var d Dataplane
	switch err := readJSON(dir, dataplaneFile, &d); {
	case err == nil:
		if len(d.Samples) == 0 {
			return nil, fmt.Errorf("%s: no samples", dataplaneFile)
		}
		for _, s := range d.Samples {
			if s.Config == "" || s.RPS <= 0 {
				return nil, fmt.Errorf("%s: a sample without a configuration or requests per second: %+v", dataplaneFile, s)
			}
		}
		r.Dataplane = &d
	case !errors.Is(err, fs.ErrNotExist):
		return nil, err
	}
	switch err := readJSON(dir, streamsFile, &r.Streams); {
	case err == nil:
		if len(r.Streams) == 0 {
			return nil, fmt.Errorf("%s: no samples", streamsFile)
		}
		for _, s := range r.Streams {
			if s.Proxy == "" || s.RSSKiB <= 0 {
				return nil, fmt.Errorf("%s: a sample without a proxy or RSS: %+v", streamsFile, s)
			}
		}
	case !errors.Is(err, fs.ErrNotExist):
		return nil, err
	}
	var s Scale
	switch err := readJSON(dir, scaleFile, &s); {
	case err == nil:
		if s.HTTPRoutes == 0 || s.WatchedGateways == 0 || s.RSSBaseMiB <= 0 {
			return nil, fmt.Errorf("%s: no HTTPRoutes, no watched Gateways or no memory measured", scaleFile)
		}
		r.Scale = &s
	case !errors.Is(err, fs.ErrNotExist):
		return nil, err
	}
	var err error
	if r.Limits, err = readMedians(dir, limitsFile); err != nil {
		return nil, err
	}
	if r.Authz, err = readMedians(dir, authzFile); err != nil {
		return nil, err
	}
	if b, err := os.ReadFile(filepath.Join(dir, commandsFile)); err == nil {
		r.Commands = slices.DeleteFunc(strings.Split(string(b), "\n"), func(s string) bool { return strings.TrimSpace(s) == "" })
	} else if !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	if r.Steps, err = readSteps(dir); err != nil {
		return nil, err
	}
	return r, nil
}

func readJSON(dir, name string, v any) error {
	b, err := os.ReadFile(filepath.Join(dir, name))
	if err != nil {
		return err
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	return nil
}

// readMedians reads a bench script's tab-separated medians: a header,
// then one line a benchmark with its median ns/op in the second column.
// A missing file is nil.
func readMedians(dir, name string) (map[string]float64, error) {
	b, err := os.ReadFile(filepath.Join(dir, name))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) < 2 || !strings.HasPrefix(lines[0], "benchmark\tns/op") {
		return nil, fmt.Errorf("%s: want a header 'benchmark<TAB>ns/op...' and a line a benchmark", name)
	}
	out := map[string]float64{}
	for i, line := range lines[1:] {
		f := strings.Split(line, "\t")
		if len(f) < 2 {
			return nil, fmt.Errorf("%s:%d: want benchmark<TAB>ns/op, got %q", name, i+2, line)
		}
		ns, err := strconv.ParseFloat(f[1], 64)
		if err != nil || ns <= 0 {
			return nil, fmt.Errorf("%s:%d: ns/op %q: want a positive number", name, i+2, f[1])
		}
		out[f[0]] = ns
	}
	return out, nil
}

// readSteps reads steps.tsv: one line a step, its name and seconds.
func readSteps(dir string) ([]Step, error) {
	b, err := os.ReadFile(filepath.Join(dir, stepsFile))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var steps []Step
	for i, line := range strings.Split(strings.TrimRight(string(b), "\n"), "\n") {
		name, secs, ok := strings.Cut(line, "\t")
		s, err := strconv.ParseFloat(secs, 64)
		if !ok || err != nil {
			return nil, fmt.Errorf("%s:%d: want name<TAB>seconds, got %q", stepsFile, i+1, line)
		}
		steps = append(steps, Step{Name: name, Seconds: s})
	}
	return steps, nil
}
