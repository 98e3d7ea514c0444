package main

// The Grafana dashboard and the alerts of charts/toolgate query only
// metrics the binary exports, with labels those metrics have.

import (
	"encoding/json"
	"fmt"
	"maps"
	"net"
	"net/http"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/yaml"

	"github.com/toolgate/toolgate/controller/pki"
	"github.com/toolgate/toolgate/gateway"
	"github.com/toolgate/toolgate/internal/promqlref"
	"github.com/toolgate/toolgate/internal/testgateway"
	"github.com/toolgate/toolgate/internal/testproc"
	"github.com/toolgate/toolgate/internal/testredis"
)

const (
	dashboardFile = "../../charts/toolgate/dashboards/toolgate.json"
	rulesFile     = "../../config/prometheus/toolgate.rules.yaml"
)

// targetLabels are the labels Prometheus gives every series of a scrape,
// which the queries may use though the binary does not export them.
var targetLabels = []string{"instance", "job"}

// TestDashboardAndAlertsQueryExportedMetrics scrapes a standalone gateway
// on Redis that refused calls and streamed events, and a proxy fed by a
// config stream, and checks every metric name and label name of the
// dashboard's queries and variables and of the alert rules against what
// they export.
func TestDashboardAndAlertsQueryExportedMetrics(t *testing.T) {
	exported := scrapeGatewayAndProxy(t)

	queries := dashboardQueries(t)
	for name, expr := range alertQueries(t) {
		queries["alert "+name] = expr
	}
	if len(queries) < 20 {
		t.Fatalf("found %d queries in the dashboard and the alerts; the files have more: is the search broken?", len(queries))
	}
	for _, where := range slices.Sorted(maps.Keys(queries)) {
		for _, problem := range checkQuery(queries[where], exported) {
			t.Errorf("%s: %s", where, problem)
		}
	}

	// The check finds what is wrong: a misspelled metric, a label the
	// metric does not have, a grouping label no metric of the query has.
	for expr, want := range map[string]string{
		`sum(rate(toolgate_ratelimit_decision_total[5m]))`:                     "toolgate_ratelimit_decision_total is not exported",
		`rate(toolgate_ratelimit_decisions_total{tool="x"}[5m])`:               "has no label tool",
		`sum by (gateway) (rate(toolgate_filter_rejected_requests_total[5m]))`: "no metric of the query has label gateway",
	} {
		if problems := checkQuery(expr, exported); !slices.ContainsFunc(problems, func(p string) bool { return strings.Contains(p, want) }) {
			t.Errorf("checking %s found %q, want a problem saying %q", expr, problems, want)
		}
	}
}

// exportedMetrics maps each sample name of a scrape (x_bucket, x_sum and
// x_count for a histogram x) to the label names its samples carry.
type exportedMetrics map[string]map[string]bool

// checkQuery returns what is wrong with expr against exported.
func checkQuery(expr string, exported exportedMetrics) []string {
	refs, err := promqlref.Parse(expr)
	if err != nil {
		return []string{fmt.Sprintf("%s: %v", expr, err)}
	}
	var problems []string
	if len(refs.Selectors) == 0 {
		problems = append(problems, fmt.Sprintf("%s selects no metric", expr))
	}
	used := map[string]bool{}
	for _, l := range targetLabels {
		used[l] = true
	}
	for _, sel := range refs.Selectors {
		labels, ok := exported[sel.Metric]
		if !ok {
			problems = append(problems, fmt.Sprintf("%s is not exported (in %s)", sel.Metric, expr))
			continue
		}
		maps.Copy(used, labels)
		for _, l := range sel.Labels {
			if !labels[l] && !slices.Contains(targetLabels, l) {
				problems = append(problems, fmt.Sprintf("%s has no label %s (it has %s)", sel.Metric, l, strings.Join(slices.Sorted(maps.Keys(labels)), ", ")))
			}
		}
	}
	for _, l := range refs.Grouping {
		if !used[l] {
			problems = append(problems, fmt.Sprintf("no metric of the query has label %s (in %s)", l, expr))
		}
	}
	return problems
}

// labelValues is Grafana's variable query label_values(SELECTOR, LABEL).
var labelValues = regexp.MustCompile(`^\s*label_values\((.*),\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*\)\s*$`)

// dashboardQueries returns the PromQL of the dashboard's panels and of its
// query variables, keyed by where they are. A label_values variable
// becomes the query count by (LABEL) (SELECTOR), which uses the label as
// the variable does.
func dashboardQueries(t *testing.T) map[string]string {
	t.Helper()
	data, err := os.ReadFile(dashboardFile)
	if err != nil {
		t.Fatal(err)
	}
	type target struct {
		Expr  string `json:"expr"`
		RefID string `json:"refId"`
	}
	type panel struct {
		Title   string   `json:"title"`
		Targets []target `json:"targets"`
		Panels  []panel  `json:"panels"`
	}
	var dash struct {
		Panels     []panel `json:"panels"`
		Templating struct {
			List []struct {
				Name  string          `json:"name"`
				Type  string          `json:"type"`
				Query json.RawMessage `json:"query"`
			} `json:"list"`
		} `json:"templating"`
	}
	if err := json.Unmarshal(data, &dash); err != nil {
		t.Fatalf("%s: %v", dashboardFile, err)
	}
	queries := map[string]string{}
	var walk func([]panel)
	walk = func(panels []panel) {
		for _, p := range panels {
			for _, tg := range p.Targets {
				if tg.Expr == "" {
					t.Errorf("panel %q, query %s has no expression", p.Title, tg.RefID)
				}
				queries[fmt.Sprintf("panel %q query %s", p.Title, tg.RefID)] = tg.Expr
			}
			walk(p.Panels)
		}
	}
	walk(dash.Panels)
	for _, v := range dash.Templating.List {
		if v.Type != "query" {
			continue
		}
		var q struct {
			Query string `json:"query"`
		}
		if err := json.Unmarshal(v.Query, &q); err != nil {
			if err := json.Unmarshal(v.Query, &q.Query); err != nil {
				t.Fatalf("variable %s: query %s: %v", v.Name, v.Query, err)
			}
		}
		m := labelValues.FindStringSubmatch(q.Query)
		if m == nil {
			t.Errorf("variable %s: %q is not label_values(SELECTOR, LABEL); teach this test its form", v.Name, q.Query)
			continue
		}
		queries["variable "+v.Name] = fmt.Sprintf("count by (%s) (%s)", m[2], m[1])
	}
	return queries
}

// alertQueries returns the expressions of the rules file by rule name.
func alertQueries(t *testing.T) map[string]string {
	t.Helper()
	data, err := os.ReadFile(rulesFile)
	if err != nil {
		t.Fatal(err)
	}
	var rules struct {
		Groups []struct {
			Rules []struct {
				Alert  string `json:"alert"`
				Record string `json:"record"`
				Expr   string `json:"expr"`
			} `json:"rules"`
		} `json:"groups"`
	}
	if err := yaml.Unmarshal(data, &rules); err != nil {
		t.Fatalf("%s: %v", rulesFile, err)
	}
	queries := map[string]string{}
	for _, g := range rules.Groups {
		for _, r := range g.Rules {
			queries[r.Alert+r.Record] = r.Expr
		}
	}
	return queries
}

// scrapeGatewayAndProxy runs the two processes whose metrics the dashboard
// draws, makes each export every series it can, and returns their metrics
// together:
//   - toolgate standalone on Redis with an MCP route whose tool has a limit
//     of one call: two calls, the second refused; an answer as an event
//     stream;
//   - toolgate proxy fed by a config stream served here, as the controller
//     serves it.
func scrapeGatewayAndProxy(t *testing.T) exportedMetrics {
	redisServer, err := testredis.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = redisServer.Close() })
	backend := startBackend(t)
	g := testgateway.Start(t, func(port int) string {
		return testgateway.Config(port, backend.addr, `  rateLimiting:
    tools:
    - name: expensive_tool
      global: {maxTokens: 1, refillPeriod: 1h}
`)
	}, "--redis-url", redisServer.URL())
	if got := post(t, g.URL, "", http.MethodPost, toolCall(1, "expensive_tool")); got != http.StatusOK {
		t.Fatalf("the first call: %d, want 200", got)
	}
	if got := post(t, g.URL, "", http.MethodPost, toolCall(2, "expensive_tool")); got != http.StatusTooManyRequests {
		t.Fatalf("the second call: %d, want 429", got)
	}
	exported := exportedMetrics{}
	parseExposition(t, scrape(t, "http://"+g.Admin+"/metrics"), exported)

	// A proxy of Gateway team-a/edge and its config stream.
	gw := types.NamespacedName{Namespace: "team-a", Name: "edge"}
	now := time.Now()
	ca, err := pki.NewCA(now)
	if err != nil {
		t.Fatal(err)
	}
	dir := proxyTLSDir(t, ca, gw, now)
	ports := testproc.FreePorts(t, 2)
	streamAddr := net.JoinHostPort("127.0.0.1", strconv.Itoa(ports[0]))
	admin := net.JoinHostPort("127.0.0.1", strconv.Itoa(ports[1]))
	serveConfigStream(t, ca, gw, &gateway.Config{}, streamAddr, now)
	proxy := testproc.Start(t, "toolgate proxy", testproc.Build(t, "github.com/toolgate/toolgate/cmd/toolgate"),
		"proxy", "--gateway", gw.String(), "--controller", "https://"+streamAddr, "--controller-tls-dir", dir,
		"--admin-address", admin, "--listen-address", "127.0.0.1")
	proxy.WaitFor(t, "ready", testproc.AnswersOK("http://"+admin+"/readyz"))
	parseExposition(t, scrape(t, "http://"+admin+"/metrics"), exported)
	return exported
}

func scrape(t *testing.T, url string) string {
	t.Helper()
	status, body := get(t, url)
	if status != http.StatusOK {
		t.Fatalf("GET %s: %d %s", url, status, body)
	}
	return body
}

// parseExposition adds the sample names of a scrape in Prometheus's text
// format, and their label names, to into.
func parseExposition(t *testing.T, text string, into exportedMetrics) {
	t.Helper()
	for line := range strings.SplitSeq(text, "\n") {
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		end := strings.IndexAny(line, "{ ")
		if end <= 0 {
			t.Fatalf("a sample line without a name: %q", line)
		}
		name := line[:end]
		if into[name] == nil {
			into[name] = map[string]bool{}
		}
		if line[end] != '{' {
			continue
		}
		rest := line[end+1:]
		for {
			rest = strings.TrimLeft(rest, ", ")
			if strings.HasPrefix(rest, "}") {
				break
			}
			label, value, ok := strings.Cut(rest, `="`)
			if !ok {
				t.Fatalf("labels of %q do not parse", line)
			}
			into[name][label] = true
			// Skip the quoted value, whose quotes may be escaped.
			i := 0
			for ; i < len(value) && value[i] != '"'; i++ {
				if value[i] == '\\' {
					i++
				}
			}
			if i >= len(value) {
				t.Fatalf("a label value of %q is not closed", line)
			}
			rest = value[i+1:]
		}
	}
}
