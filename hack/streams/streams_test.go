//go:build streams

package streams

import (
	"bufio"
	"encoding/json"
	"flag"
	"fmt"
	"io"
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

	"github.com/toolgate/toolgate/internal/stats"
	"github.com/toolgate/toolgate/internal/testgateway"
	"github.com/toolgate/toolgate/internal/testissuer"
	"github.com/toolgate/toolgate/internal/testproc"
)

var (
	levelsFlag  = flag.String("levels", "2000,8000", "numbers of open streams to measure at, ascending")
	sessionsN   = flag.Int("sessions", 8000, "MCP sessions (initialize, then a stream each) to measure at; 0 skips them")
	perProcess  = flag.Int("per-process", 2000, "streams each client process opens")
	runs        = flag.Int("runs", 3, "runs of everything; the report gives medians")
	proxiesFlag = flag.String("proxies", "toolgate,bare,nginx", "proxies to measure: toolgate, bare (httputil.ReverseProxy), nginx (skipped with a note when not installed)")
	settleFor   = flag.Duration("settle", 3*time.Second, "wait after the streams are open before measuring")
	keepalive   = flag.Duration("keepalive", 0, "how often the backend sends a comment on each stream; 0 never")
	profileDir  = flag.String("profile", "", "write toolgate's heap (after a forced GC) and goroutine profiles at each level of the first run to this folder")
	resultsPath = flag.String("results", "", "write every sample as JSON to this file")
)

func TestMain(m *testing.M) { testproc.Main(m) }

// Sample is one measurement of a proxy process.
type Sample struct {
	Scenario string // streams or sessions
	Proxy    string
	Run      int
	Streams  int
	RSSKiB   float64
	// From the process's Go metrics (not for nginx).
	HeapInuseKiB, StackInuseKiB float64
	Goroutines                  float64
}

// proxyUnderTest is a proxy process and how to read it.
type proxyUnderTest struct {
	target     string // the URL clients open streams at
	pid        int
	metricsURL string // Prometheus metrics with go_*; "" for nginx
	pprofAddr  string // toolgate only
}

func TestStreamMemory(t *testing.T) {
	levels := parseLevels(t, *levelsFlag)
	proxies := strings.Split(*proxiesFlag, ",")
	if slices.Contains(proxies, "nginx") {
		if _, err := exec.LookPath("nginx"); err != nil {
			t.Log("nginx is not installed (apt-get install -y nginx-light): measured without it")
			proxies = slices.DeleteFunc(proxies, func(p string) bool { return p == "nginx" })
		}
	}
	issuer, err := testissuer.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(issuer.Close)
	streamer := testproc.Build(t, "github.com/toolgate/toolgate/hack/streams/streamer")

	scenarios := []struct {
		name     string
		sessions bool
		levels   []int
	}{{"streams", false, levels}}
	if *sessionsN > 0 {
		scenarios = append(scenarios, struct {
			name     string
			sessions bool
			levels   []int
		}{"sessions", true, []int{*sessionsN}})
	}

	var samples []Sample
	for run := 1; run <= *runs; run++ {
		for _, sc := range scenarios {
			for _, kind := range proxies {
				t.Run(fmt.Sprintf("run%d/%s/%s", run, sc.name, kind), func(t *testing.T) {
					backendAddr := startBackend(t, streamer)
					p := startProxy(t, kind, streamer, backendAddr, issuer)
					time.Sleep(*settleFor)
					samples = append(samples, measure(t, sc.name, kind, run, 0, p))
					opened, processes := 0, 0
					for _, level := range sc.levels {
						for opened < level {
							n := min(*perProcess, level-opened)
							token, err := issuer.Token(fmt.Sprintf("user-%d", processes), "streams")
							if err != nil {
								t.Fatal(err)
							}
							startClients(t, streamer, p.target, token, n, sc.sessions, processes)
							opened += n
							processes++
						}
						waitOpen(t, backendAddr, level)
						time.Sleep(*settleFor)
						s := measure(t, sc.name, kind, run, level, p)
						samples = append(samples, s)
						t.Logf("%s %s: %d streams: RSS %.1f MiB, heap %.1f MiB, stacks %.1f MiB, %v goroutines",
							sc.name, kind, level, s.RSSKiB/1024, s.HeapInuseKiB/1024, s.StackInuseKiB/1024, s.Goroutines)
						if kind == "toolgate" && run == 1 && *profileDir != "" {
							// The heap profile is taken after a forced GC, of what
							// is live; the garbage before it is seen against s.
							profile(t, p.pprofAddr, fmt.Sprintf("%s-%d", sc.name, level))
							time.Sleep(*settleFor)
							g := measure(t, sc.name, kind, run, level, p)
							t.Logf("%s %s: %d streams, after a forced GC: RSS %.1f MiB, heap %.1f MiB, stacks %.1f MiB (the later samples of this run follow that GC)",
								sc.name, kind, level, g.RSSKiB/1024, g.HeapInuseKiB/1024, g.StackInuseKiB/1024)
						}
					}
				})
			}
		}
	}
	report(t, samples)
	if *resultsPath != "" {
		b, _ := json.MarshalIndent(samples, "", "  ")
		if err := os.WriteFile(*resultsPath, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
}

func parseLevels(t *testing.T, s string) []int {
	var levels []int
	for f := range strings.SplitSeq(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n <= 0 || (len(levels) > 0 && n <= levels[len(levels)-1]) {
			t.Fatalf("-levels %q: give ascending positive numbers", s)
		}
		levels = append(levels, n)
	}
	return levels
}

// startBackend starts the backend that holds streams, and returns its
// address.
func startBackend(t *testing.T, streamer string) string {
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(testproc.FreePort(t)))
	p := testproc.Start(t, "backend", streamer, "backend", "-listen", addr, "-keepalive", keepalive.String())
	p.WaitFor(t, "listening", testproc.AcceptsConnections(addr))
	return addr
}

func startProxy(t *testing.T, kind, streamer, backendAddr string, issuer *testissuer.Issuer) proxyUnderTest {
	switch kind {
	case "toolgate":
		pprofAddr := net.JoinHostPort("127.0.0.1", strconv.Itoa(testproc.FreePort(t)))
		g := testgateway.Start(t, func(port int) string {
			return testgateway.Config(port, backendAddr, testgateway.OIDC(issuer.URL(), issuer.JWKSURL(), "streams"))
		}, "--pprof-address", pprofAddr, "--log-level", "warn")
		return proxyUnderTest{target: g.URL, pid: g.Pid(), metricsURL: "http://" + g.Admin + "/metrics", pprofAddr: pprofAddr}
	case "bare":
		ports := testproc.FreePorts(t, 2)
		listen := net.JoinHostPort("127.0.0.1", strconv.Itoa(ports[0]))
		admin := net.JoinHostPort("127.0.0.1", strconv.Itoa(ports[1]))
		p := testproc.Start(t, "bare proxy", streamer, "bareproxy", "-listen", listen, "-admin", admin, "-backend", "http://"+backendAddr)
		p.WaitFor(t, "listening", testproc.AnswersOK("http://"+admin+"/metrics"))
		return proxyUnderTest{target: "http://" + listen + "/mcp", pid: p.Pid(), metricsURL: "http://" + admin + "/metrics"}
	case "nginx":
		listen := net.JoinHostPort("127.0.0.1", strconv.Itoa(testproc.FreePort(t)))
		dir := t.TempDir()
		conf := filepath.Join(dir, "nginx.conf")
		if err := os.WriteFile(conf, []byte(nginxConfig(dir, listen, backendAddr)), 0o600); err != nil {
			t.Fatal(err)
		}
		p := testproc.Start(t, "nginx", "nginx", "-p", dir, "-c", conf, "-e", filepath.Join(dir, "error.log"))
		p.WaitFor(t, "listening", testproc.AcceptsConnections(listen))
		return proxyUnderTest{target: "http://" + listen + "/mcp", pid: p.Pid()}
	}
	t.Fatalf("unknown proxy %q: give toolgate, bare or nginx", kind)
	return proxyUnderTest{}
}

// nginxConfig is nginx set up for event streams as its users do: one
// process (no master, so that one RSS is all of it), buffering off,
// HTTP/1.1 to the backend.
func nginxConfig(dir, listen, backend string) string {
	return fmt.Sprintf(`daemon off;
master_process off;
worker_processes 1;
worker_rlimit_nofile 20000;
pid %[1]s/nginx.pid;
error_log %[1]s/error.log warn;
events { worker_connections 19000; }
http {
  access_log off;
  client_body_temp_path %[1]s/client_body;
  proxy_temp_path %[1]s/proxy;
  fastcgi_temp_path %[1]s/fastcgi;
  uwsgi_temp_path %[1]s/uwsgi;
  scgi_temp_path %[1]s/scgi;
  upstream backend { server %[3]s; keepalive 64; }
  server {
    listen %[2]s;
    location / {
      proxy_pass http://backend;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_buffering off;
      proxy_read_timeout 1h;
    }
  }
}
`, dir, listen, backend)
}

// startClients starts a client process opening n streams and waits until
// every one is open.
func startClients(t *testing.T, streamer, target, token string, n int, sessions bool, i int) {
	args := []string{"clients", "-url", target, "-n", strconv.Itoa(n), "-token", token}
	if sessions {
		args = append(args, "-sessions")
	}
	p := testproc.Start(t, fmt.Sprintf("clients %d", i), streamer, args...)
	p.WaitFor(t, fmt.Sprintf("%d streams open", n), func() bool {
		return strings.Contains(p.Log.String(), "established ")
	})
	want := fmt.Sprintf("established %d failed 0", n)
	if !strings.Contains(p.Log.String(), want) {
		t.Fatalf("clients %d: want %q:\n%s", i, want, p.Log.String())
	}
}

// waitOpen waits until the backend holds n streams: every stream is
// through the proxy.
func waitOpen(t *testing.T, backendAddr string, n int) {
	deadline := time.Now().Add(30 * time.Second)
	got := -1
	for time.Now().Before(deadline) {
		res, err := http.Get("http://" + backendAddr + "/open")
		if err == nil {
			b, _ := io.ReadAll(res.Body)
			_ = res.Body.Close()
			got, _ = strconv.Atoi(strings.TrimSpace(string(b)))
			if got == n {
				return
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("the backend holds %d streams, want %d", got, n)
}

func measure(t *testing.T, scenario, kind string, run, streams int, p proxyUnderTest) Sample {
	s := Sample{Scenario: scenario, Proxy: kind, Run: run, Streams: streams, RSSKiB: rssKiB(t, p.pid)}
	if p.metricsURL != "" {
		m := scrape(t, p.metricsURL)
		s.HeapInuseKiB = m["go_memstats_heap_inuse_bytes"] / 1024
		s.StackInuseKiB = m["go_memstats_stack_inuse_bytes"] / 1024
		s.Goroutines = m["go_goroutines"]
	}
	return s
}

// rssKiB is VmRSS of the process pid.
func rssKiB(t *testing.T, pid int) float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kib, err := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 64)
			if err != nil {
				t.Fatalf("VmRSS %q: %v", rest, err)
			}
			return kib
		}
	}
	t.Fatalf("/proc/%d/status has no VmRSS", pid)
	return 0
}

// scrape reads the unlabelled samples of a Prometheus text exposition.
func scrape(t *testing.T, url string) map[string]float64 {
	res, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	m := map[string]float64{}
	sc := bufio.NewScanner(res.Body)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		name, value, ok := strings.Cut(sc.Text(), " ")
		if !ok || strings.HasPrefix(name, "#") || strings.Contains(name, "{") {
			continue
		}
		if v, err := strconv.ParseFloat(value, 64); err == nil {
			m[name] = v
		}
	}
	return m
}

// profile saves toolgate's heap and goroutine profiles as name.
func profile(t *testing.T, pprofAddr, name string) {
	if err := os.MkdirAll(*profileDir, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, kind := range []string{"heap", "goroutine"} {
		res, err := http.Get("http://" + pprofAddr + "/debug/pprof/" + kind + "?gc=1")
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(res.Body)
		_ = res.Body.Close()
		if err != nil || res.StatusCode != http.StatusOK {
			t.Fatalf("%s profile: %v %s", kind, err, res.Status)
		}
		path := filepath.Join(*profileDir, fmt.Sprintf("toolgate-%s.%s.pb.gz", name, kind))
		if err := os.WriteFile(path, b, 0o600); err != nil {
			t.Fatal(err)
		}
		t.Logf("wrote %s", path)
	}
}

// report prints the medians over runs: per proxy and number of streams,
// the memory and, against the same proxy at 0 streams, the cost of one
// stream.
func report(t *testing.T, samples []Sample) {
	type key struct {
		scenario, proxy string
		streams         int
	}
	type perStream struct{ rss, heap, stack, goroutines []float64 }
	byKey := map[key][]Sample{}
	var keys []key
	for _, s := range samples {
		k := key{s.Scenario, s.Proxy, s.Streams}
		if _, ok := byKey[k]; !ok {
			keys = append(keys, k)
		}
		byKey[k] = append(byKey[k], s)
	}
	// Per-stream figures are taken within a run, then the median of them.
	base := map[key]Sample{} // (scenario, proxy, run) -> sample at 0
	for _, s := range samples {
		if s.Streams == 0 {
			base[key{s.Scenario, s.Proxy, s.Run}] = s
		}
	}
	costs := map[key]*perStream{}
	for _, s := range samples {
		if s.Streams == 0 {
			continue
		}
		b := base[key{s.Scenario, s.Proxy, s.Run}]
		k := key{s.Scenario, s.Proxy, s.Streams}
		c := costs[k]
		if c == nil {
			c = &perStream{}
			costs[k] = c
		}
		n := float64(s.Streams)
		c.rss = append(c.rss, (s.RSSKiB-b.RSSKiB)/n)
		c.heap = append(c.heap, (s.HeapInuseKiB-b.HeapInuseKiB)/n)
		c.stack = append(c.stack, (s.StackInuseKiB-b.StackInuseKiB)/n)
		c.goroutines = append(c.goroutines, (s.Goroutines-b.Goroutines)/n)
	}
	var out strings.Builder
	fmt.Fprintf(&out, "\nmedians of %d run(s); per stream = (value at N - value at 0) / N\n", *runs)
	fmt.Fprintf(&out, "%-9s %-9s %7s %9s %9s %9s %7s | %9s %9s %9s %9s\n",
		"scenario", "proxy", "streams", "RSS MiB", "heap MiB", "stack MiB", "gorout.", "KiB/strm", "heap KiB", "stack KiB", "gor/strm")
	for _, k := range keys {
		ss := byKey[k]
		med := func(f func(Sample) float64) float64 {
			var v []float64
			for _, s := range ss {
				v = append(v, f(s))
			}
			return stats.Median(v)
		}
		fmt.Fprintf(&out, "%-9s %-9s %7d %9.1f %9.1f %9.1f %7.0f", k.scenario, k.proxy, k.streams,
			med(func(s Sample) float64 { return s.RSSKiB })/1024,
			med(func(s Sample) float64 { return s.HeapInuseKiB })/1024,
			med(func(s Sample) float64 { return s.StackInuseKiB })/1024,
			med(func(s Sample) float64 { return s.Goroutines }))
		if c := costs[k]; c != nil {
			fmt.Fprintf(&out, " | %9.1f %9.1f %9.1f %9.2f", stats.Median(c.rss), stats.Median(c.heap), stats.Median(c.stack), stats.Median(c.goroutines))
		}
		out.WriteString("\n")
	}
	t.Log(out.String())
}
