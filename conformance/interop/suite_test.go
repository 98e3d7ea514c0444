package interop

import (
	"cmp"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"text/tabwriter"
)

// A protocol revision the conformance suite measures, and how: which
// everything-server transport speaks it, which installed suite selects it
// and with which flags.
type revision struct {
	name      string
	stateless bool     // everything-server's -stateless
	suite     string   // the suite's package folder under node_modules
	flags     []string // how that suite selects the revision
	// The floor, for the suite and server versions hack/node.sh and
	// go.mod pin: how many scenarios the suite runs, and those that fail
	// directly against the server (the server's own gaps). Every other
	// scenario must pass directly, so that a scenario broken on both
	// sides (an upgrade, a wrong install) fails the test rather than
	// matching itself through the gateway.
	scenarios     int
	knownFailures []string
}

var revisions = []revision{
	{
		// Sessions, initialize handshake. 0.1.16 knows no 2026 revision;
		// "all" adds the scenarios the suite still calls pending.
		name:      "2025-11-25 (session-based)",
		stateless: false,
		suite:     "@modelcontextprotocol/conformance",
		flags:     []string{"--suite", "all", "--spec-version", "2025-11-25"},
		scenarios: 32,
	},
	{
		// Stateless, per-request _meta. Only the 0.2 line of the suite
		// has this revision, as the frozen requirement set plus the
		// scenarios it runs unscored (extensions, pending).
		name:      "2026-07-28 (stateless)",
		stateless: true,
		suite:     "mcp-conformance-2026-07-28",
		flags:     []string{"--requirements", "2026-07-28"},
		scenarios: 50,
		// The go-sdk server does not implement the tasks extension
		// (SEP-2663); tasks-status-notifications passes only because it
		// asserts nothing a server without tasks breaks.
		knownFailures: []string{
			"tasks-capability-negotiation",
			"tasks-dispatch-and-envelope",
			"tasks-lifecycle",
			"tasks-mrtr-composition",
			"tasks-mrtr-input",
			"tasks-request-headers",
			"tasks-request-state-removal",
			"tasks-required-task-error",
			"tasks-wire-fields",
		},
	},
}

// check is one entry of a scenario's checks.json.
type check struct {
	ID           string          `json:"id"`
	Status       string          `json:"status"` // SUCCESS, FAILURE, WARNING, INFO, SKIPPED
	ErrorMessage string          `json:"errorMessage"`
	Details      json.RawMessage `json:"details"`
}

// scenarioResult is one scenario's checks and what they add up to.
type scenarioResult struct {
	checks  []check
	failing []string // ids of the failed checks, in order
}

func (r scenarioResult) passed() bool { return len(r.failing) == 0 }

// String is the scenario's outcome as the table shows it.
func (r scenarioResult) String() string {
	if r.passed() {
		return fmt.Sprintf("pass (%d checks)", len(r.checks))
	}
	return fmt.Sprintf("FAIL (%d of %d checks)", len(r.failing), len(r.checks))
}

// statuses is each check's status, in order, such as "ping:SUCCESS".
func (r scenarioResult) statuses() []string {
	s := make([]string, len(r.checks))
	for i, c := range r.checks {
		s[i] = c.ID + ":" + c.Status
	}
	return s
}

// resultFolder is the folder the suite writes for one scenario:
// server-<scenario>-<timestamp>.
var resultFolder = regexp.MustCompile(`^server-(.+)-\d{4}-\d{2}-\d{2}T\d{2}-\d{2}-\d{2}-\d{3}Z$`)

// runSuite runs the conformance suite of rev against url and returns each
// scenario's result. The suite's exit status only says whether something
// failed; the results say what.
func runSuite(t *testing.T, rev revision, url string) map[string]scenarioResult {
	t.Helper()
	out := t.TempDir()
	cli := filepath.Join(nodeInstall(t), "node_modules", rev.suite, "dist", "index.js")
	args := append([]string{cli, "server", "--url", url, "--output-dir", out}, rev.flags...)
	stdout, stderr, err := runNodeIn(t, t.TempDir(), nil, args...)
	results, readErr := readResults(out)
	if readErr != nil || len(results) == 0 {
		t.Fatalf("conformance suite against %s (exit %v): no results (%v):\n%s\n%s", url, err, readErr, stdout, stderr)
	}
	return results
}

func readResults(dir string) (map[string]scenarioResult, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	results := map[string]scenarioResult{}
	for _, e := range entries {
		m := resultFolder.FindStringSubmatch(e.Name())
		if m == nil || !e.IsDir() {
			continue
		}
		raw, err := os.ReadFile(filepath.Join(dir, e.Name(), "checks.json"))
		if err != nil {
			return nil, fmt.Errorf("scenario %s: %w", m[1], err)
		}
		var r scenarioResult
		if err := json.Unmarshal(raw, &r.checks); err != nil {
			return nil, fmt.Errorf("scenario %s: checks.json: %w", m[1], err)
		}
		for _, c := range r.checks {
			if c.Status == "FAILURE" {
				r.failing = append(r.failing, c.ID)
			}
		}
		if _, twice := results[m[1]]; twice {
			return nil, fmt.Errorf("scenario %s has two result folders in %s", m[1], dir)
		}
		results[m[1]] = r
	}
	return results, nil
}

func TestConformanceSuiteSeesTheSameServerThroughTheGateway(t *testing.T) {
	for _, rev := range revisions {
		t.Run(rev.name, func(t *testing.T) {
			backend := startEverythingServer(t, rev.stateless)
			// No auth: the suite sends no tokens. A global limit the
			// suite never reaches keeps the rate-limiting path in play.
			gateway := startGateway(t, gatewayRoute{backend: backend, policy: `  rateLimiting:
    global: {maxTokens: 1000000, refillPeriod: 1h}`})

			direct := runSuite(t, rev, "http://"+backend+"/mcp")
			through := runSuite(t, rev, gateway)

			names := unionOfKeys(direct, through)
			var table, failures strings.Builder
			w := tabwriter.NewWriter(&table, 0, 0, 2, ' ', 0)
			fmt.Fprintln(w, "scenario\tdirect\tthrough toolgate\t")
			passedDirect, passedThrough := 0, 0
			for _, name := range names {
				d, inDirect := direct[name]
				g, inThrough := through[name]
				fmt.Fprintf(w, "%s\t%s\t%s\t\n", name, outcome(d, inDirect), outcome(g, inThrough))
				if inDirect && d.passed() {
					passedDirect++
				}
				if inThrough && g.passed() {
					passedThrough++
				}
				switch {
				case !inDirect:
					t.Errorf("scenario %s ran only through the gateway", name)
				case !inThrough:
					t.Errorf("scenario %s ran only directly", name)
				case d.passed() != g.passed():
					t.Errorf("scenario %s: %s directly, %s through the gateway\n%s", name, d, g, differingChecks(d, g))
				case !slices.Equal(d.failing, g.failing):
					t.Errorf("scenario %s fails other checks through the gateway: directly %v, through it %v\n%s",
						name, d.failing, g.failing, differingChecks(d, g))
				case !slices.Equal(d.statuses(), g.statuses()):
					// Warnings and the like: worth a look, not a failure.
					t.Logf("scenario %s: same failures, other check statuses through the gateway:\n%s", name, differingChecks(d, g))
				}
				if inDirect && !d.passed() {
					fmt.Fprintf(&failures, "  %s: %s\n", name, strings.Join(d.failing, ", "))
				}
			}
			_ = w.Flush() // into a strings.Builder, which cannot fail
			t.Logf("MCP conformance, %s: %d of %d scenarios pass directly, %d through toolgate\n%s",
				rev.name, passedDirect, len(names), passedThrough, table.String())
			if failures.Len() > 0 {
				t.Logf("checks failed directly (%s):\n%s", rev.name, failures.String())
			}
			checkFloor(t, rev, direct)
		})
	}
}

// checkFloor checks the direct results against rev's floor: the number of
// scenarios, every one passing but the known failures, and each of those
// failing still (one that passes should leave the list).
func checkFloor(t *testing.T, rev revision, direct map[string]scenarioResult) {
	t.Helper()
	if len(direct) != rev.scenarios {
		t.Errorf("the suite ran %d scenarios directly, want %d: a suite or server upgrade changes the floor; update revisions", len(direct), rev.scenarios)
	}
	for _, name := range slices.Sorted(maps.Keys(direct)) {
		known := slices.Contains(rev.knownFailures, name)
		switch r := direct[name]; {
		case !known && !r.passed():
			t.Errorf("scenario %s fails directly (%v): the server or the suite is broken, whatever the gateway does", name, r.failing)
		case known && r.passed():
			t.Errorf("scenario %s, a known failure, now passes directly: take it off knownFailures", name)
		}
	}
	for _, name := range rev.knownFailures {
		if _, ran := direct[name]; !ran {
			t.Errorf("known failure %s did not run", name)
		}
	}
}

func outcome(r scenarioResult, ran bool) string {
	if !ran {
		return "(not run)"
	}
	return r.String()
}

// differingChecks shows the checks whose status differs between the two
// runs, with what the suite said of each.
func differingChecks(direct, through scenarioResult) string {
	status := func(r scenarioResult) map[string]check {
		m := map[string]check{}
		for _, c := range r.checks {
			if prev, ok := m[c.ID]; !ok || prev.Status != "FAILURE" {
				m[c.ID] = c
			}
		}
		return m
	}
	d, g := status(direct), status(through)
	var b strings.Builder
	for _, id := range unionOfKeys(d, g) {
		dc, gc := d[id], g[id]
		if dc.Status == gc.Status {
			continue
		}
		fmt.Fprintf(&b, "  check %s: directly %s %s %s\n           through the gateway %s %s %s\n",
			id, cmp.Or(dc.Status, "absent"), dc.ErrorMessage, dc.Details, cmp.Or(gc.Status, "absent"), gc.ErrorMessage, gc.Details)
	}
	return b.String()
}

// unionOfKeys is the sorted keys of a and b together.
func unionOfKeys[V any](a, b map[string]V) []string {
	all := maps.Clone(a)
	maps.Copy(all, b)
	return slices.Sorted(maps.Keys(all))
}
