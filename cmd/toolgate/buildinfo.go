package main

import (
	"errors"
	"runtime"
	"runtime/debug"

	"github.com/prometheus/client_golang/prometheus"
)

// version and commit are set at build time with
// -ldflags "-X main.version=v0.9.0 -X main.commit=$(git rev-parse HEAD)"
// (make build, make release). Without them, the module version and the
// VCS revision the go command stamps into the binary stand in.
var (
	version = ""
	commit  = ""
)

// versionString is the version this binary was built as: -X main.version,
// else the module's version (a go install of a tag), else "(devel)".
func versionString() string {
	if version != "" {
		return version
	}
	if info, ok := debug.ReadBuildInfo(); ok && info.Main.Version != "" {
		return info.Main.Version
	}
	return "(devel)"
}

// commitString is the commit this binary was built from: -X main.commit,
// else the VCS revision the go command stamped (with -dirty when the tree
// had changes), else "unknown" (go run, go test).
func commitString() string {
	if commit != "" {
		return commit
	}
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return "unknown"
	}
	var revision, modified string
	for _, s := range info.Settings {
		switch s.Key {
		case "vcs.revision":
			revision = s.Value
		case "vcs.modified":
			modified = s.Value
		}
	}
	if revision == "" {
		return "unknown"
	}
	if modified == "true" {
		revision += "-dirty"
	}
	return revision
}

// metricBuildInfo is the constant 1 whose labels say which build runs.
const metricBuildInfo = "toolgate_build_info"

// registerBuildInfo registers toolgate_build_info{version,commit,goversion}
// on reg. Registering it twice on one registry (the controller's is
// process-wide) is not an error.
func registerBuildInfo(reg prometheus.Registerer) error {
	err := reg.Register(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: metricBuildInfo,
		Help: "Always 1; its labels name the toolgate version and commit this process was built from and the Go version that built it.",
		ConstLabels: prometheus.Labels{
			"version":   versionString(),
			"commit":    commitString(),
			"goversion": runtime.Version(),
		},
	}, func() float64 { return 1 }))
	if are := (prometheus.AlreadyRegisteredError{}); errors.As(err, &are) {
		return nil
	}
	return err
}
