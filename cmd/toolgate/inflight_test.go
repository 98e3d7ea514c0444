package main

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/toolgate/toolgate/filter"
	"github.com/toolgate/toolgate/internal/testgateway"
	"github.com/toolgate/toolgate/internal/testredis"
)

// slowBackend is an MCP server whose tool "slow" holds every call until
// released, counting the calls in flight and their most at once.
type slowBackend struct {
	addr          string
	inFlight, top atomic.Int64
	open          atomic.Bool // calls pass without waiting
	fail          atomic.Bool // requests fail: the connection is closed unanswered
	mu            sync.Mutex
	release       chan struct{}
}

func startSlowBackend(t *testing.T) *slowBackend {
	t.Helper()
	b := &slowBackend{release: make(chan struct{})}
	server := mcp.NewServer(&mcp.Implementation{Name: "slow", Version: "v1.0.0"}, nil)
	mcp.AddTool(server, &mcp.Tool{Name: "slow"}, func(ctx context.Context, _ *mcp.CallToolRequest, _ map[string]any) (*mcp.CallToolResult, any, error) {
		n := b.inFlight.Add(1)
		defer b.inFlight.Add(-1)
		for {
			top := b.top.Load()
			if n <= top || b.top.CompareAndSwap(top, n) {
				break
			}
		}
		if b.open.Load() {
			return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: "done"}}}, nil, nil
		}
		b.mu.Lock()
		release := b.release
		b.mu.Unlock()
		select {
		case <-release:
		case <-ctx.Done(): // the gateway went away
		}
		return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: "done"}}}, nil, nil
	})
	mcpHandler := mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return server }, &mcp.StreamableHTTPOptions{Stateless: true})
	b.addr = serveOnLoopback(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if b.fail.Load() {
			if conn, _, err := http.NewResponseController(w).Hijack(); err == nil {
				_ = conn.Close()
			}
			return
		}
		mcpHandler.ServeHTTP(w, r)
	}))
	return b
}

// releaseAll lets the calls in flight end, and holds the next ones.
func (b *slowBackend) releaseAll() {
	b.mu.Lock()
	close(b.release)
	b.release = make(chan struct{})
	b.mu.Unlock()
}

// freeSlots reads, through g's admin endpoint, how many of user's
// concurrent_per_user slots on default/mcp are free.
func freeSlots(t *testing.T, g *testgateway.Gateway, user string) int64 {
	t.Helper()
	res, err := http.Get("http://" + g.Admin + "/limits?server=default/mcp&user=" + user)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	var b filter.Budgets
	if err := json.NewDecoder(res.Body).Decode(&b); err != nil {
		t.Fatalf("/limits: status %d: %v", res.StatusCode, err)
	}
	for _, bu := range b.Buckets {
		if bu.Scope == "concurrent_per_user" {
			return bu.Remaining
		}
	}
	t.Fatalf("/limits shows no concurrent_per_user cap: %+v", b)
	return 0
}

// Two replicas on one Redis hold a user's calls in flight to the cap,
// together: of 50 concurrent slow calls, 3 reach the backend. A call gives
// its slot back when its answer ends, when its client goes away and when
// its backend fails, long before its lease (10 minutes) would free it. A
// replica killed while its calls are in flight leaves their slots held
// until their lease ends (6 seconds there), then they are free again.
func TestInFlightCapsHoldAcrossReplicas(t *testing.T) {
	redisServer, err := testredis.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = redisServer.Close() })
	issuer, _ := startIssuer(t)
	backend := startSlowBackend(t)
	startReplicas := func(lease string) []*testgateway.Gateway {
		config := func(port int) string {
			return testgateway.Config(port, backend.addr, testgateway.OIDC(issuer.URL(), issuer.JWKSURL(), "limits")+`  rateLimiting:
    maxConcurrent: {perUser: 3}
    concurrencyLease: `+lease+`
`)
		}
		return []*testgateway.Gateway{
			testgateway.Start(t, config, "--redis-url", redisServer.URL()),
			testgateway.Start(t, config, "--redis-url", redisServer.URL()),
		}
	}
	replicas := startReplicas("10m")
	token := claimsToken(t, issuer, "alice", nil)
	const slowCall = `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"slow","arguments":{}}}`
	waitInFlight := func(n int64) {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for backend.inFlight.Load() != n {
			if time.Now().After(deadline) {
				t.Fatalf("%d calls in flight at the backend, want %d", backend.inFlight.Load(), n)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}

	statuses := make(chan int, 50)
	var wg sync.WaitGroup
	for i := range 50 {
		wg.Go(func() { statuses <- post(t, replicas[i%2].URL, token, http.MethodPost, slowCall) })
	}
	waitInFlight(3)
	// The 47 others are refused at once, while the 3 are held.
	refused := 0
	for refused < 47 {
		select {
		case s := <-statuses:
			if s != http.StatusTooManyRequests {
				t.Fatalf("a call ended with %d while 3 were in flight; want 429", s)
			}
			refused++
		case <-time.After(30 * time.Second):
			t.Fatalf("%d of 47 calls refused", refused)
		}
	}
	backend.releaseAll()
	wg.Wait()
	close(statuses)
	for s := range statuses {
		if s != http.StatusOK {
			t.Errorf("a call in flight ended with %d, want 200", s)
		}
	}
	if top := backend.top.Load(); top != 3 {
		t.Errorf("%d calls were in flight at the backend at once, want 3", top)
	}
	// A slot is given back just after its answer ends, and the store
	// both replicas share says so.
	slotsBack := func(why string) {
		t.Helper()
		replicas[0].WaitFor(t, "the 3 slots given back after "+why, func() bool {
			return freeSlots(t, replicas[0], "alice") == 3
		})
	}
	slotsBack("their answers")

	// Clients that go away give their slots back.
	ctx, cancel := context.WithCancel(t.Context())
	for i := range 3 {
		go func() {
			req, _ := http.NewRequestWithContext(ctx, http.MethodPost, replicas[i%2].URL, strings.NewReader(slowCall))
			req.Header.Set("Content-Type", "application/json")
			req.Header.Set("Accept", "application/json, text/event-stream")
			req.Header.Set("Authorization", "Bearer "+token)
			if res, err := client.Do(req); err == nil {
				_ = res.Body.Close()
			}
		}()
	}
	waitInFlight(3)
	if free := freeSlots(t, replicas[1], "alice"); free != 0 {
		t.Errorf("%d slots free with 3 calls in flight, want 0", free)
	}
	cancel()
	slotsBack("their clients went away")
	backend.releaseAll() // the backend may not notice the gateway went away
	waitInFlight(0)

	// Calls whose backend fails give their slots back.
	backend.fail.Store(true)
	for i := range 3 {
		if s := post(t, replicas[i%2].URL, token, http.MethodPost, slowCall); s != http.StatusBadGateway {
			t.Errorf("a call whose backend closed the connection: status %d, want 502", s)
		}
	}
	slotsBack("their backend failed")
	backend.fail.Store(false)

	// A replica dies with 3 calls in flight: their slots stay held until
	// the lease ends. (Two replicas with a short lease; the first two
	// stay idle.)
	replicas = startReplicas("6s")
	for range 3 {
		go func() {
			// The replica dies under it: no answer is expected.
			req, _ := http.NewRequest(http.MethodPost, replicas[0].URL, strings.NewReader(slowCall))
			req.Header.Set("Content-Type", "application/json")
			req.Header.Set("Accept", "application/json, text/event-stream")
			req.Header.Set("Authorization", "Bearer "+token)
			if res, err := client.Do(req); err == nil {
				_ = res.Body.Close()
			}
		}()
	}
	waitInFlight(3)
	if err := syscall.Kill(replicas[0].Pid(), syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	backend.open.Store(true) // the calls end at the backend; nobody gives their slots back
	backend.releaseAll()
	if s := post(t, replicas[1].URL, token, http.MethodPost, slowCall); s != http.StatusTooManyRequests {
		t.Errorf("with the dead replica's slots held: status %d, want 429", s)
	}
	replicas[1].WaitFor(t, "the dead replica's slots freed by their lease", func() bool {
		return post(t, replicas[1].URL, token, http.MethodPost, slowCall) == http.StatusOK
	})
}
