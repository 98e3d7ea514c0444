package main

// Tests of the real toolgate binary in standalone mode, on real Redis
// processes, attacked as a caller who wants more than his limit would
// attack it.

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/toolgate/toolgate/filter"
	"github.com/toolgate/toolgate/internal/testgateway"
	"github.com/toolgate/toolgate/internal/testissuer"
	"github.com/toolgate/toolgate/internal/testproc"
	"github.com/toolgate/toolgate/internal/testredis"
)

func TestMain(m *testing.M) { testproc.Main(m) }

// countingBackend is a go-sdk MCP server (stateless Streamable HTTP) that
// counts the tools/call messages reaching it, batches included.
type countingBackend struct {
	addr  string
	calls atomic.Int64
}

func startBackend(t *testing.T) *countingBackend {
	t.Helper()
	server := mcp.NewServer(&mcp.Implementation{Name: "limits-backend", Version: "v1.0.0"}, nil)
	for _, tool := range []string{"expensive_tool", "batch_tool"} {
		mcp.AddTool(server, &mcp.Tool{Name: tool}, func(context.Context, *mcp.CallToolRequest, struct{}) (*mcp.CallToolResult, any, error) {
			return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: "done"}}}, nil, nil
		})
	}
	sdk := mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return server }, &mcp.StreamableHTTPOptions{Stateless: true})
	b := &countingBackend{}
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		b.calls.Add(int64(bytes.Count(body, []byte(`"tools/call"`))))
		r.Body = io.NopCloser(bytes.NewReader(body))
		sdk.ServeHTTP(w, r)
	})
	b.addr = serveOnLoopback(t, handler)
	return b
}

// limits are the limits tests' buckets: each user may call expensive_tool
// twice an hour and batch_tool 150 times.
const limits = `  rateLimiting:
    tools:
    - name: expensive_tool
      perUser: {maxTokens: 2, refillPeriod: 1h}
    - name: batch_tool
      perUser: {maxTokens: 150, refillPeriod: 1h}
`

// replica is one running toolgate standalone process.
type replica = testgateway.Gateway

// startReplica runs toolgate standalone on free ports with the limits
// configuration, users authenticated by issuer, and extra flags, and waits
// until it is ready.
func startReplica(t *testing.T, issuer *testissuer.Issuer, backend *countingBackend, flags ...string) *replica {
	t.Helper()
	return testgateway.Start(t, func(port int) string {
		return testgateway.Config(port, backend.addr, testgateway.OIDC(issuer.URL(), issuer.JWKSURL(), "limits")+limits)
	}, flags...)
}

var client = &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 512}, Timeout: 30 * time.Second}

// post sends body to url with token and returns the status.
func post(t *testing.T, url, token, method, body string) int {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	req.Header.Set("Authorization", "Bearer "+token)
	res, err := client.Do(req)
	if err != nil {
		t.Errorf("%s %s: %v", method, url, err)
		return 0
	}
	_, _ = io.Copy(io.Discard, res.Body)
	res.Body.Close()
	return res.StatusCode
}

func toolCall(id int, tool string) string {
	return fmt.Sprintf(`{"jsonrpc":"2.0","id":%d,"method":"tools/call","params":{"name":%q,"arguments":{}}}`, id, tool)
}

func batchOf(n int, tool string) string {
	calls := make([]string, n)
	for i := range calls {
		calls[i] = toolCall(i, tool)
	}
	return "[" + strings.Join(calls, ",") + "]"
}

// burst sends n concurrent calls of tool and counts the statuses.
func burst(t *testing.T, url, token, tool string, n int) map[int]int {
	t.Helper()
	var mu sync.Mutex
	codes := map[int]int{}
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range n {
		wg.Go(func() {
			<-start
			code := post(t, url, token, http.MethodPost, toolCall(i, tool))
			mu.Lock()
			codes[code]++
			mu.Unlock()
		})
	}
	close(start)
	wg.Wait()
	return codes
}

func startIssuer(t *testing.T) (*testissuer.Issuer, func(user string) string) {
	t.Helper()
	issuer, err := testissuer.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(issuer.Close)
	return issuer, func(user string) string {
		token, err := issuer.Token(user, "limits")
		if err != nil {
			t.Fatal(err)
		}
		return token
	}
}

func TestOneUsersConcurrentCallsAdmitExactlyHisLimit(t *testing.T) {
	stores := []struct {
		name  string
		flags func(t *testing.T) []string
	}{
		{name: "memory", flags: func(*testing.T) []string { return nil }},
		{name: "redis", flags: func(t *testing.T) []string {
			srv, err := testredis.Start()
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = srv.Close() })
			return []string{"--redis-url", srv.URL()}
		}},
		{name: "redis cluster", flags: func(t *testing.T) []string {
			cluster, err := testredis.StartCluster()
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = cluster.Close() })
			return []string{"--redis-addrs", strings.Join(cluster.Addrs(), ",")}
		}},
	}
	for _, store := range stores {
		t.Run(store.name, func(t *testing.T) {
			issuer, token := startIssuer(t)
			backend := startBackend(t)
			flags := store.flags(t)
			alice, bob, carol := token("alice"), token("bob"), token("carol")

			// With the default --store-timeout, a loaded machine sheds some
			// decisions (503); none of them is ever admitted. A decision
			// shed before it reaches the store takes nothing; one that
			// Redis made after its deadline (counted as a timeout) may
			// have taken a token whose call was refused. So exactly the
			// limit is admitted, less at most one per such timeout, and
			// the bucket is empty after the burst.
			r := startReplica(t, issuer, backend, flags...)
			codes := burst(t, r.URL, alice, "expensive_tool", 400)
			timedOut := int(metricSum(t, r, filter.MetricStoreDuration+"_count", `outcome="timeout"`))
			t.Logf("400 concurrent calls of one user, default store timeout: %v, %d decisions timed out", codes, timedOut)
			if admitted := codes[http.StatusOK]; admitted > 2 || admitted < 2-timedOut {
				t.Errorf("statuses %v with %d decisions timed out: want 2 admitted, less at most one per timeout", codes, timedOut)
			}
			if codes[http.StatusOK]+codes[http.StatusTooManyRequests]+codes[http.StatusServiceUnavailable] != 400 {
				t.Errorf("statuses %v: want the calls not admitted refused with 429 or 503", codes)
			}
			if store.name == "memory" && (codes[http.StatusOK] != 2 || codes[http.StatusTooManyRequests] != 398) {
				t.Errorf("statuses %v: the memory store decides at once, want exactly 2 admitted and 398 refused with 429", codes)
			}
			if code := post(t, r.URL, alice, http.MethodPost, toolCall(1, "expensive_tool")); code != http.StatusTooManyRequests {
				t.Errorf("alice's call after the burst: status %d, want 429 (her bucket is empty)", code)
			}
			if got := backend.calls.Load(); got != int64(codes[http.StatusOK]) {
				t.Errorf("the backend ran %d calls, %d were admitted", got, codes[http.StatusOK])
			}
			// Another user is not affected by alice's burst.
			if code := post(t, r.URL, carol, http.MethodPost, toolCall(1, "expensive_tool")); code != http.StatusOK {
				t.Errorf("carol's first call: status %d, want 200", code)
			}

			// With time enough for every decision, exactly the limit passes.
			backend.calls.Store(0)
			r = startReplica(t, issuer, backend, append(flags, "--store-timeout", "10s")...)
			codes = burst(t, r.URL, bob, "expensive_tool", 400)
			t.Logf("400 concurrent calls of one user, 10s store timeout: %v", codes)
			if codes[http.StatusOK] != 2 || codes[http.StatusTooManyRequests] != 398 {
				t.Errorf("statuses %v: want exactly 2 admitted and 398 refused with 429", codes)
			}
			if got := backend.calls.Load(); got != 2 {
				t.Errorf("the backend ran %d calls, want 2", got)
			}
			// A batch of 100 takes 100 tokens: of 150, a second batch of
			// 100 no longer fits.
			backend.calls.Store(0)
			if code := post(t, r.URL, bob, http.MethodPost, batchOf(100, "batch_tool")); code != http.StatusOK {
				t.Fatalf("a batch of 100: status %d, want 200", code)
			}
			if code := post(t, r.URL, bob, http.MethodPost, batchOf(100, "batch_tool")); code != http.StatusTooManyRequests {
				t.Errorf("a second batch of 100 with 50 tokens left: status %d, want 429", code)
			}
			if got := backend.calls.Load(); got != 100 {
				t.Errorf("the backend ran %d calls, want 100", got)
			}
		})
	}
}

func TestMethodsOtherThanMCPsNeverReachTheBackend(t *testing.T) {
	issuer, token := startIssuer(t)
	backend := startBackend(t)
	r := startReplica(t, issuer, backend)
	alice := token("alice")
	for _, method := range []string{http.MethodPut, http.MethodPatch, "post", "FOO"} {
		if code := post(t, r.URL, alice, method, toolCall(1, "expensive_tool")); code != http.StatusMethodNotAllowed {
			t.Errorf("%s: status %d, want 405", method, code)
		}
	}
	if got := backend.calls.Load(); got != 0 {
		t.Errorf("the backend saw %d calls, want none", got)
	}
}

// twoReplicasOnRedis runs a Redis server and two replicas sharing their
// buckets through it; token signs a token for a user.
func twoReplicasOnRedis(t *testing.T) (srv *testredis.Server, replicas []*replica, token func(user string) string) {
	t.Helper()
	issuer, token := startIssuer(t)
	backend := startBackend(t)
	srv, err := testredis.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Close() })
	replicas = []*replica{
		startReplica(t, issuer, backend, "--redis-url", srv.URL()),
		startReplica(t, issuer, backend, "--redis-url", srv.URL()),
	}
	return srv, replicas, token
}

func TestRedisPausedCallsAreAnsweredSoonAndEachReplicaKeepsTheLimit(t *testing.T) {
	srv, replicas, token := twoReplicasOnRedis(t)
	alice := token("alice")
	// One shared token is taken while Redis works.
	if code := post(t, replicas[0].URL, alice, http.MethodPost, toolCall(0, "expensive_tool")); code != http.StatusOK {
		t.Fatalf("before the pause: status %d", code)
	}

	if err := srv.Pause(); err != nil {
		t.Fatal(err)
	}
	// Calls alternate between the replicas until both have judged Redis
	// unavailable, then 20 more go to each.
	var latencies []time.Duration
	allowed := map[int]int{}
	call := func(i int) {
		r := replicas[i%2]
		start := time.Now()
		code := post(t, r.URL, alice, http.MethodPost, toolCall(i, "expensive_tool"))
		latencies = append(latencies, time.Since(start))
		if code == http.StatusOK {
			allowed[i%2]++
		}
	}
	i := 0
	for deadline := time.Now().Add(30 * time.Second); metric(t, replicas[0], "toolgate_ratelimit_store_available") != 0 ||
		metric(t, replicas[1], "toolgate_ratelimit_store_available") != 0; i++ {
		if time.Now().After(deadline) {
			t.Fatal("the replicas did not find Redis paused within 30s")
		}
		call(i)
	}
	for range 40 {
		call(i)
		i++
	}
	slices.Sort(latencies)
	n := len(latencies)
	t.Logf("Redis paused: %d calls, median %s, 90th percentile %s, slowest %s; allowed per replica %v",
		n, latencies[n/2], latencies[n*9/10], latencies[n-1], allowed)
	// Generous: a paused Redis used to hold every call for 5s.
	if latencies[n-1] > time.Second {
		t.Errorf("the slowest call took %s with Redis paused, want well under 1s", latencies[n-1])
	}
	// Until a replica has judged Redis unavailable its calls get 503 and
	// take nothing; then its own buckets admit exactly its limit of 2.
	for i := range replicas {
		if allowed[i] != 2 {
			t.Errorf("replica %d admitted %d calls while Redis was paused; its own limit is exactly 2", i, allowed[i])
		}
	}

	if err := srv.Resume(); err != nil {
		t.Fatal(err)
	}
	// Once both replicas use Redis again, the shared buckets decide. Alice's
	// had one token left, but the decisions sent to the paused Redis and
	// never answered (those calls got 503) ran when it resumed: they may
	// have taken it. Never more than that one passes.
	waitForSharedStore(t, replicas)
	total := 0
	for i := range 6 {
		if post(t, replicas[i%2].URL, alice, http.MethodPost, toolCall(i, "expensive_tool")) == http.StatusOK {
			total++
		}
	}
	if total > 1 {
		t.Errorf("after Redis resumed, %d of alice's calls passed across the replicas, want at most 1 (the shared bucket's last token)", total)
	}
	// A new user's bucket is shared by both replicas again: 2 in all.
	bob := token("bob")
	total = 0
	for i := range 6 {
		if post(t, replicas[i%2].URL, bob, http.MethodPost, toolCall(i, "expensive_tool")) == http.StatusOK {
			total++
		}
	}
	if total != 2 {
		t.Errorf("after Redis resumed, %d of bob's calls passed across both replicas, want 2", total)
	}
}

func TestRedisKilledAndRestartedSharedLimitsResumeWithoutARestart(t *testing.T) {
	srv, replicas, token := twoReplicasOnRedis(t)
	if err := srv.Stop(); err != nil {
		t.Fatal(err)
	}
	alice := token("alice")
	// Each replica limits on its own once it has found Redis gone: its
	// calls get 503 until then, and take nothing.
	for i, r := range replicas {
		admitted := 0
		deadline := time.Now().Add(30 * time.Second)
		for id := 0; metric(t, r, "toolgate_ratelimit_store_available") != 0; id++ {
			if time.Now().After(deadline) {
				t.Fatalf("replica %d did not find Redis gone within 30s", i)
			}
			if post(t, r.URL, alice, http.MethodPost, toolCall(id, "expensive_tool")) == http.StatusOK {
				admitted++
			}
		}
		codes := burst(t, r.URL, alice, "expensive_tool", 20)
		if admitted+codes[http.StatusOK] != 2 {
			t.Errorf("replica %d admitted %d calls with Redis down, want exactly its own 2 (burst statuses %v)", i, admitted+codes[http.StatusOK], codes)
		}
	}
	if err := srv.Restart(); err != nil {
		t.Fatal(err)
	}
	waitForSharedStore(t, replicas)
	// The restarted Redis is empty: the shared bucket holds 2 again, for
	// both replicas together.
	total := 0
	for i := range 10 {
		if post(t, replicas[i%2].URL, token("bob"), http.MethodPost, toolCall(i, "expensive_tool")) == http.StatusOK {
			total++
		}
	}
	if total != 2 {
		t.Errorf("after the restart %d of bob's calls passed across both replicas, want 2", total)
	}
	for i, r := range replicas {
		if log := r.Log.String(); !strings.Contains(log, "store unavailable") || !strings.Contains(log, "available again") {
			t.Errorf("replica %d did not log the outage and the recovery:\n%s", i, log)
		}
	}
}

// waitForSharedStore waits until every replica reports its Redis store
// available.
func waitForSharedStore(t *testing.T, replicas []*replica) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for _, r := range replicas {
		for metric(t, r, "toolgate_ratelimit_store_available") != 1 {
			if time.Now().After(deadline) {
				t.Fatalf("a replica did not find Redis again within 30s:\n%s", r.Log.String())
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
}

// metricSum is the sum of a replica's series of a metric whose labels
// contain match, such as `outcome="timeout"`.
func metricSum(t *testing.T, r *replica, name, match string) float64 {
	t.Helper()
	res, err := http.Get("http://" + r.Admin + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	var sum float64
	sc := bufio.NewScanner(res.Body)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, name+"{") || !strings.Contains(line, match) {
			continue
		}
		v, err := strconv.ParseFloat(line[strings.LastIndexByte(line, ' ')+1:], 64)
		if err != nil {
			t.Fatal(err)
		}
		sum += v
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return sum
}

// metric reads an unlabelled metric from a replica's /metrics.
func metric(t *testing.T, r *replica, name string) float64 {
	t.Helper()
	res, err := http.Get("http://" + r.Admin + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	sc := bufio.NewScanner(res.Body)
	for sc.Scan() {
		if value, ok := strings.CutPrefix(sc.Text(), name+" "); ok {
			v, err := strconv.ParseFloat(value, 64)
			if err != nil {
				t.Fatal(err)
			}
			return v
		}
	}
	return -1
}

// peakRSS is the process's high-water resident set size in bytes.
func peakRSS(t *testing.T, pid int) int64 {
	t.Helper()
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.SplitSeq(string(status), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			return kb << 10
		}
	}
	t.Fatal("no VmHWM in /proc status")
	return 0
}

// maxBodyBytes is the body limit of the memory test, the default.
const maxBodyBytes = 4 << 20

// The bound the README states: one in-flight MCP body costs at most a few
// times the body limit (the body itself, and the buffer it grew from).
const perRequestBound = 4 * maxBodyBytes

func TestSixteenHugeBatchesStayWithinTheStatedMemoryBound(t *testing.T) {
	tests := []struct {
		name string
		// body is user's batch, at most maxBodyBytes.
		body       func(user int) string
		wantStatus int
		// wantCalls is how many tools/call the backend runs in all.
		wantCalls int64
	}{
		{
			// Refused at its first element: the memory of reading it.
			name:       "[{},{},...]",
			body:       func(int) string { return "[" + strings.Repeat("{},", (maxBodyBytes-2)/3) + "{}]" },
			wantStatus: http.StatusBadRequest,
		},
		{
			// Every element scanned, counted and forwarded: the
			// batch's most messages, each with a large argument,
			// as large as the body limit allows.
			name:       "128 calls with large arguments",
			body:       largeCalls,
			wantStatus: http.StatusOK,
			wantCalls:  16 * 128,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			issuer, token := startIssuer(t)
			backend := startBackend(t)
			r := startReplica(t, issuer, backend)
			bodies, tokens := make([]string, 16), make([]string, 16)
			for i := range bodies {
				bodies[i], tokens[i] = tt.body(i), token(fmt.Sprintf("user-%d", i))
				if len(bodies[i]) > maxBodyBytes || len(bodies[i]) < maxBodyBytes*9/10 {
					t.Fatalf("body of %d bytes, want just under %d", len(bodies[i]), maxBodyBytes)
				}
			}
			before := peakRSS(t, r.Pid())
			var wg sync.WaitGroup
			codes := make([]int, 16)
			for i := range codes {
				wg.Go(func() { codes[i] = post(t, r.URL, tokens[i], http.MethodPost, bodies[i]) })
			}
			wg.Wait()
			after := peakRSS(t, r.Pid())
			growth := after - before
			t.Logf("16 concurrent %d-byte batches: peak RSS %d MiB -> %d MiB (+%d MiB; bound %d MiB)",
				len(bodies[0]), before>>20, after>>20, growth>>20, (16*perRequestBound)>>20)
			for i, code := range codes {
				if code != tt.wantStatus {
					t.Errorf("request %d: status %d, want %d", i, code, tt.wantStatus)
				}
			}
			if got := backend.calls.Load(); got != tt.wantCalls {
				t.Errorf("the backend ran %d calls, want %d", got, tt.wantCalls)
			}
			if growth > 16*perRequestBound {
				t.Errorf("peak RSS grew by %d MiB, more than the bound of %d MiB", growth>>20, (16*perRequestBound)>>20)
			}
		})
	}
}

// largeCalls is a batch of filter.DefaultMaxBatch calls of batch_tool, each
// with an argument that brings the body to just under maxBodyBytes. The
// user number makes each body its own.
func largeCalls(user int) string {
	const n = filter.DefaultMaxBatch
	call := func(i int, filler string) string {
		return fmt.Sprintf(`{"jsonrpc":"2.0","id":"%d-%d","method":"tools/call","params":{"name":"batch_tool","arguments":{"filler":%q}}}`, user, i, filler)
	}
	overhead := 2 + (n - 1) // brackets and commas
	for i := range n {
		overhead += len(call(i, ""))
	}
	each := (maxBodyBytes - overhead) / n
	calls := make([]string, n)
	for i := range calls {
		calls[i] = call(i, strings.Repeat("x", each))
	}
	return "[" + strings.Join(calls, ",") + "]"
}

func TestSlowBodiesGet408AndTheirConnectionsClose(t *testing.T) {
	issuer, token := startIssuer(t)
	backend := startBackend(t)
	r := startReplica(t, issuer, backend, "--body-timeout", "500ms")
	alice := token("alice")
	host := strings.TrimPrefix(strings.TrimSuffix(r.URL, "/mcp"), "http://")

	const slow = 50
	var wg sync.WaitGroup
	statuses := make([]int, slow)
	closed := make([]bool, slow)
	for i := range slow {
		wg.Go(func() {
			conn, err := net.Dial("tcp", host)
			if err != nil {
				t.Error(err)
				return
			}
			defer conn.Close()
			// Announce 1 MiB, send one byte of it, and wait.
			fmt.Fprintf(conn, "POST /mcp HTTP/1.1\r\nHost: %s\r\nAuthorization: Bearer %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n[", host, alice, 1<<20)
			_ = conn.SetReadDeadline(time.Now().Add(30 * time.Second))
			br := bufio.NewReader(conn)
			res, err := http.ReadResponse(br, nil)
			if err != nil {
				t.Errorf("connection %d: no response: %v", i, err)
				return
			}
			_, _ = io.Copy(io.Discard, res.Body)
			res.Body.Close()
			statuses[i] = res.StatusCode
			// The gateway closes the connection: the next read ends.
			_, err = br.ReadByte()
			closed[i] = err == io.EOF
		})
	}
	wg.Wait()
	for i := range slow {
		if statuses[i] != http.StatusRequestTimeout || !closed[i] {
			t.Errorf("slow connection %d: status %d, closed %v; want 408 and closed", i, statuses[i], closed[i])
		}
	}
	if got := backend.calls.Load(); got != 0 {
		t.Errorf("the backend saw %d calls, want none", got)
	}
	// The access log line is written after the response: wait for all.
	for deadline := time.Now().Add(30 * time.Second); strings.Count(r.Log.String(), "status=408") < slow; {
		if time.Now().After(deadline) {
			t.Fatalf("the access log has %d requests with status=408 after 30s, want %d", strings.Count(r.Log.String(), "status=408"), slow)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if n := strings.Count(r.Log.String(), "status=408"); n != slow {
		t.Errorf("the access log has %d requests with status=408, want %d", n, slow)
	}
}
