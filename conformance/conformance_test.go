// Package conformance is toolgate's end-to-end suite: the user's acceptance
// criteria checked through the real toolgate binary, a real API server,
// Redis, MCP clients and servers built with the go-sdk, and an OpenID
// Connect issuer. See README.md for how to run it and its flags.
package conformance

import (
	"flag"
	"testing"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/toolgate/toolgate/conformance/env"
)

var flags = env.RegisterFlags(flag.CommandLine)

func TestConformance(t *testing.T) {
	RegisterFailHandler(Fail)
	suiteConfig, reporterConfig := GinkgoConfiguration()
	if suiteConfig.LabelFilter == "" {
		suiteConfig.LabelFilter = defaultLabelFilter()
	}
	t.Logf("label filter: %s", suiteConfig.LabelFilter)
	RunSpecs(t, "toolgate conformance", suiteConfig, reporterConfig)
}

// Waits. The proxies pick up a change within about a second; these bounds
// are generous for a busy machine and are never what a spec asserts.
const (
	waitTimeout = 30 * time.Second
	waitPoll    = 100 * time.Millisecond
)

var (
	world *env.Env
	// failed is set when any spec fails, to keep the processes' logs.
	failed bool
	// logOffsets are the processes' log sizes when the current spec
	// started, so that a failure shows only what the spec caused.
	logOffsets = map[*env.Process]int64{}
)

var _ = BeforeSuite(func(ctx SpecContext) {
	var err error
	world, err = env.Start(ctx, flags, GinkgoWriter)
	Expect(err).NotTo(HaveOccurred())
	SetDefaultEventuallyTimeout(waitTimeout)
	SetDefaultEventuallyPollingInterval(waitPoll)
	// A spec's context has no deadline: without this, an Eventually given
	// one would wait forever instead of waitTimeout.
	EnforceDefaultTimeoutsWhenUsingContexts()
}, NodeTimeout(10*time.Minute))

var _ = AfterSuite(func() {
	if world != nil {
		world.Stop(!failed)
	}
})

var _ = BeforeEach(func() {
	for _, p := range world.Processes() {
		logOffsets[p] = p.LogSize()
	}
})

var _ = AfterEach(func() {
	report := CurrentSpecReport()
	if report.Failed() {
		failed = true
		for _, p := range world.Processes() {
			GinkgoWriter.Printf("\n----- %s (%s) during this spec -----\n%s", p.Name, p.LogPath(), p.LogSince(logOffsets[p], 16<<10))
		}
	}
	// A process that died explains every later failure: say so at once.
	Expect(world.CheckProcesses()).To(Succeed(), "a toolgate process exited")
})
