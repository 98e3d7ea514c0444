package conformance

import (
	"fmt"

	. "github.com/onsi/ginkgo/v2"
)

// Labels of the specs that only one way of running the suite can serve.
// The runner selects them with -ginkgo.label-filter (the Makefile targets
// do); a spec that is selected where it cannot run fails and says why,
// rather than being skipped.
const (
	// labelPods: toolgate runs as pods of a real cluster (--pods, make e2e).
	labelPods = "pods"
	// labelProcesses: the spec starts, stops or adds toolgate processes
	// of its own (make test; not with --pods, where the cluster runs them).
	labelProcesses = "processes"
	// labelOwnAPIServer: the spec needs the suite's own API server
	// (envtest), whose every object it may touch.
	labelOwnAPIServer = "own-apiserver"
	// labelUpgrade: the spec replaces the cluster's toolgate with the
	// previous release and upgrades it to this checkout's chart
	// (--previous-release, which runs it alone: make e2e, on the local
	// cluster).
	labelUpgrade = "upgrade"
)

// Label filters of the two ways of running the suite.
const (
	// filterProcesses is what runs with no --pods: toolgate as processes
	// on this machine (make test).
	filterProcesses = "!" + labelPods
	// filterPods is what runs with --pods (make e2e).
	filterPods = "!" + labelProcesses + " && !" + labelOwnAPIServer + " && !" + labelUpgrade
	// filterUpgrade is what runs with --pods and --previous-release (make
	// e2e, after the run of filterPods).
	filterUpgrade = labelUpgrade
)

// defaultLabelFilter is the filter of the mode the flags ask for, used when
// the runner gives none: plain `go test ./conformance` runs every spec that
// its mode can serve.
func defaultLabelFilter() string {
	switch {
	case flags.PreviousRelease != "":
		return filterUpgrade
	case flags.Pods:
		return filterPods
	case flags.Kubeconfig() != "":
		return filterProcesses + " && !" + labelOwnAPIServer
	default:
		return filterProcesses
	}
}

func requirePods() {
	if !world.Pods() {
		Fail(fmt.Sprintf("this spec (label %q) needs toolgate deployed in a real cluster: run it with --pods (make e2e), or leave it out with -ginkgo.label-filter=%q", labelPods, filterProcesses))
	}
}

func requireUpgrade() {
	if !world.Pods() || flags.PreviousRelease == "" {
		Fail(fmt.Sprintf("this spec (label %q) replaces toolgate in a real cluster with the previous release and upgrades it: run it alone with --pods and --previous-release \"$(hack/previous-release.sh)\" (make e2e), or leave it out with -ginkgo.label-filter=%q", labelUpgrade, filterPods))
	}
}

func requireProcesses() {
	if world.Pods() {
		Fail(fmt.Sprintf("this spec (label %q) starts and stops toolgate processes of its own, which --pods does not run: leave it out with -ginkgo.label-filter=%q", labelProcesses, filterPods))
	}
}

func requireOwnAPIServer() {
	if !world.Local() {
		Fail(fmt.Sprintf("this spec (label %q) needs the suite's own API server: run it without --kubeconfig, or leave it out with -ginkgo.label-filter='!%s'", labelOwnAPIServer, labelOwnAPIServer))
	}
}
