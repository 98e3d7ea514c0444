//go:build dataplane

package dataplane

import (
	"encoding/json"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/toolgate/toolgate/internal/stats"
	"github.com/toolgate/toolgate/internal/testgateway"
	"github.com/toolgate/toolgate/internal/testissuer"
	"github.com/toolgate/toolgate/internal/testproc"
	"github.com/toolgate/toolgate/internal/testredis"
)

var (
	rounds      = flag.Int("rounds", 3, "rounds; each runs every configuration once, in an order that alternates from round to round, and the report gives medians")
	duration    = flag.Duration("duration", 10*time.Second, "how long each run is measured")
	warmup      = flag.Duration("warmup", 2*time.Second, "how long each run sends requests before they are measured")
	connections = flag.Int("connections", 64, "connections of the load generator, each with one request in flight")
	users       = flag.Int("users", 16, "callers the connections take turns at being (their tokens), for the policies' per-user buckets")
	configsFlag = flag.String("configs", strings.Join(configs, ","), "configurations to race")
	resultsPath = flag.String("results", "", "write every sample as JSON to this file")
	profileDir  = flag.String("profile", "", "write a CPU profile of each toolgate configuration, taken over its measured run in the first round, to this folder (toolgate-CONFIG.cpu.pb.gz)")
)

// configs are the configurations, in the order of the report.
var configs = []string{"direct", "bare", "toolgate", "memory", "redis"}

// policy is the MCPServer spec of the memory and redis configurations
// besides its auth: the three buckets of a typical policy, so large that
// nothing is refused.
const policy = `  rateLimiting:
    global: {maxTokens: 1000000000, refillPeriod: 1s}
    perUser: {maxTokens: 1000000000, refillPeriod: 1s}
    tools:
    - name: echo
      perUser: {maxTokens: 1000000000, refillPeriod: 1s}
`

const audience = "dataplane"

func TestMain(m *testing.M) { testproc.Main(m) }

// Results are what -results writes.
type Results struct {
	Connections     int
	Users           int
	DurationSeconds float64
	Rounds          int
	Samples         []Sample
}

// Sample is one run of one configuration.
type Sample struct {
	Config    string
	Round     int
	Requests  int
	RPS       float64
	P50Micros float64
	P99Micros float64
}

func TestDataPlaneRace(t *testing.T) {
	chosen := strings.Split(*configsFlag, ",")
	for _, c := range chosen {
		if !slices.Contains(configs, c) {
			t.Fatalf("-configs: unknown configuration %q: give some of %s", c, strings.Join(configs, ","))
		}
	}
	racer := testproc.Build(t, "github.com/toolgate/toolgate/hack/dataplane/racer")
	backend := net.JoinHostPort("127.0.0.1", strconv.Itoa(testproc.FreePort(t)))
	b := testproc.Start(t, "backend", racer, "backend", "-listen", backend)
	b.WaitFor(t, "listening", testproc.AcceptsConnections(backend))

	issuer, err := testissuer.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(issuer.Close)
	tokens := filepath.Join(t.TempDir(), "tokens")
	var lines []string
	for i := range *users {
		token, err := issuer.Token(fmt.Sprintf("user-%d", i), audience)
		if err != nil {
			t.Fatal(err)
		}
		lines = append(lines, token)
	}
	if err := os.WriteFile(tokens, []byte(strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}

	// Every proxy runs for the whole race, idle while the others are
	// measured.
	targets := map[string]string{}
	// pprofs are the toolgate configurations' profile addresses, with
	// -profile.
	pprofs := map[string]string{}
	redisAddr := ""
	withPolicy := func(port int) string {
		return testgateway.Config(port, backend, testgateway.OIDC(issuer.URL(), issuer.JWKSURL(), audience)+policy)
	}
	// As the bare proxy, toolgate writes no access log (it would at info).
	quietFlags := []string{"--log-level", "warn"}
	for _, c := range chosen {
		quiet := quietFlags
		if *profileDir != "" && c != "direct" && c != "bare" {
			pprofs[c] = net.JoinHostPort("127.0.0.1", strconv.Itoa(testproc.FreePorts(t, 1)[0]))
			quiet = append(slices.Clone(quietFlags), "--pprof-address", pprofs[c])
		}
		switch c {
		case "direct":
			targets[c] = "http://" + backend + "/mcp"
		case "bare":
			ports := testproc.FreePorts(t, 2)
			listen := net.JoinHostPort("127.0.0.1", strconv.Itoa(ports[0]))
			admin := net.JoinHostPort("127.0.0.1", strconv.Itoa(ports[1]))
			p := testproc.Start(t, "bare proxy", testproc.Build(t, "github.com/toolgate/toolgate/hack/streams/streamer"),
				"bareproxy", "-listen", listen, "-admin", admin, "-backend", "http://"+backend, "-max-idle-per-host", "256")
			p.WaitFor(t, "listening", testproc.AnswersOK("http://"+admin+"/metrics"))
			targets[c] = "http://" + listen + "/mcp"
		case "toolgate":
			targets[c] = testgateway.Start(t, func(port int) string { return testgateway.Config(port, backend, "") }, quiet...).URL
		case "memory":
			targets[c] = testgateway.Start(t, withPolicy, quiet...).URL
		case "redis":
			srv, err := testredis.Start()
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = srv.Close() })
			// Decisions wait up to 2 s for Redis, as in the process-mode
			// suite and the local cluster: with the default 50 ms, a busy
			// machine makes the proxy shed calls with 503, which answer
			// faster than the calls the race measures.
			targets[c] = testgateway.Start(t, withPolicy, append(quiet, "--redis-url", srv.URL(), "--store-timeout", "2s")...).URL
			redisAddr = srv.Addr()
		}
	}
	for _, c := range chosen {
		checkServes(t, c, targets[c], lines[0])
	}
	if redisAddr != "" {
		checkRedisDecided(t, redisAddr)
	}

	res := Results{Connections: *connections, Users: *users, DurationSeconds: duration.Seconds(), Rounds: *rounds}
	for round := 1; round <= *rounds; round++ {
		order := slices.Clone(chosen)
		if round%2 == 0 {
			slices.Reverse(order)
		}
		for _, c := range order {
			args := []string{"load", "-url", targets[c], "-connections", strconv.Itoa(*connections),
				"-duration", duration.String(), "-warmup", warmup.String()}
			if c == "memory" || c == "redis" {
				args = append(args, "-tokens", tokens)
			}
			var profiled chan error
			if addr, ok := pprofs[c]; ok && round == 1 {
				profiled = make(chan error, 1)
				go func() { profiled <- profileCPU(addr, filepath.Join(*profileDir, "toolgate-"+c+".cpu.pb.gz")) }()
			}
			m := load(t, racer, args)
			if profiled != nil {
				if err := <-profiled; err != nil {
					t.Fatalf("profile of %s: %v", c, err)
				}
			}
			s := Sample{Config: c, Round: round, Requests: m.Requests, RPS: m.RPS, P50Micros: m.P50Micros, P99Micros: m.P99Micros}
			t.Logf("round %d %-8s %9.0f req/s  p50 %6.0f µs  p99 %6.0f µs", round, c, s.RPS, s.P50Micros, s.P99Micros)
			res.Samples = append(res.Samples, s)
		}
	}
	report(t, chosen, res)
	if *resultsPath != "" {
		b, _ := json.MarshalIndent(res, "", "  ")
		if err := os.WriteFile(*resultsPath, append(b, '\n'), 0o600); err != nil {
			t.Fatal(err)
		}
	}
}

// checkServes sends one call through target and fails the race unless it
// is answered 200; a configuration with a policy must also refuse a call
// without a token (401), so that the policy is known to be in force.
func checkServes(t *testing.T, config, target, token string) {
	call := func(bearer string) int {
		req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, target,
			strings.NewReader(`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{}}}`))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Accept", "application/json, text/event-stream")
		if bearer != "" {
			req.Header.Set("Authorization", "Bearer "+bearer)
		}
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("%s: %v", config, err)
		}
		_ = res.Body.Close()
		return res.StatusCode
	}
	withToken := ""
	if config == "memory" || config == "redis" {
		withToken = token
		if got := call(""); got != http.StatusUnauthorized {
			t.Fatalf("%s: a call without a token got %d, want 401: the policy is not in force", config, got)
		}
	}
	if got := call(withToken); got != http.StatusOK {
		t.Fatalf("%s: a call got %d, want 200", config, got)
	}
}

// checkRedisDecided fails the race unless the redis configuration's
// buckets are in Redis (after checkServes' call).
func checkRedisDecided(t *testing.T, addr string) {
	c := redis.NewClient(&redis.Options{Addr: addr})
	defer func() { _ = c.Close() }()
	n, err := c.DBSize(t.Context()).Result()
	if err != nil {
		t.Fatalf("redis DBSIZE: %v", err)
	}
	if n == 0 {
		t.Fatal("Redis holds no keys: the redis configuration did not decide there")
	}
}

// load runs the load generator and returns what it measured; any answer
// but 200 fails the race.
func load(t *testing.T, racer string, args []string) measurement {
	cmd := exec.CommandContext(t.Context(), racer, args...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("racer %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
	}
	var m measurement
	if err := json.Unmarshal(out, &m); err != nil {
		t.Fatalf("racer's output %q: %v", out, err)
	}
	if m.Errors > 0 || m.Requests == 0 {
		t.Fatalf("racer %s: %d requests answered 200, %d not (first: %s)", strings.Join(args, " "), m.Requests, m.Errors, m.FirstError)
	}
	return m
}

// profileCPU waits for the warmup, then writes toolgate's CPU profile
// (served at addr, --pprof-address) over the measured run to path.
func profileCPU(addr, path string) error {
	time.Sleep(*warmup)
	resp, err := http.Get(fmt.Sprintf("http://%s/debug/pprof/profile?seconds=%d", addr, int(duration.Seconds())))
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("status %s", resp.Status)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := f.ReadFrom(resp.Body); err != nil {
		_ = f.Close()
		return err
	}
	return f.Close()
}

// measurement is the load generator's output (racer's Measurement).
type measurement struct {
	Requests, Errors     int
	FirstError           string
	RPS                  float64
	P50Micros, P99Micros float64
}

// report prints each configuration's medians and its ratios to direct and
// to the bare proxy.
func report(t *testing.T, chosen []string, res Results) {
	med := map[string]Sample{}
	for _, c := range chosen {
		var rps, p50, p99 []float64
		for _, s := range res.Samples {
			if s.Config == c {
				rps, p50, p99 = append(rps, s.RPS), append(p50, s.P50Micros), append(p99, s.P99Micros)
			}
		}
		med[c] = Sample{RPS: stats.Median(rps), P50Micros: stats.Median(p50), P99Micros: stats.Median(p99)}
	}
	ratio := func(a, b float64) string {
		if b == 0 {
			return "-"
		}
		return fmt.Sprintf("%.2fx", a/b)
	}
	var out strings.Builder
	fmt.Fprintf(&out, "\nmedians of %d round(s) of %s, %d connections\n", res.Rounds, duration, res.Connections)
	fmt.Fprintf(&out, "%-9s %10s %9s %9s %10s %10s\n", "config", "req/s", "p50 µs", "p99 µs", "vs direct", "vs bare")
	for _, c := range chosen {
		m := med[c]
		fmt.Fprintf(&out, "%-9s %10.0f %9.0f %9.0f %10s %10s\n", c, m.RPS, m.P50Micros, m.P99Micros,
			ratio(m.RPS, med["direct"].RPS), ratio(m.RPS, med["bare"].RPS))
	}
	t.Log(out.String())
}
