package main

// Tests of the real binary as an attacker would try it: nothing the filter
// did not inspect reaches an MCP backend, nobody uses another user's
// session, and no client holds the proxy's memory or connections.

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/toolgate/toolgate/internal/testgateway"
	"github.com/toolgate/toolgate/internal/testproc"
)

// rawBackend answers every request itself: POSTs with a JSON-RPC result of
// respondBytes bytes, and upgrade requests by switching protocols and
// reading what comes. It records what reached it.
type rawBackend struct {
	addr         string
	respondBytes int

	mu       sync.Mutex
	requests []*http.Request // with their headers; bodies already read
	upgrades atomic.Int64
}

func startRawBackend(t *testing.T, respondBytes int) *rawBackend {
	t.Helper()
	b := &rawBackend{respondBytes: respondBytes}
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		b.mu.Lock()
		b.requests = append(b.requests, r)
		b.mu.Unlock()
		if r.Header.Get("Upgrade") != "" {
			conn, rw, err := http.NewResponseController(w).Hijack()
			if err != nil {
				return
			}
			defer func() { _ = conn.Close() }()
			b.upgrades.Add(1)
			_, _ = rw.WriteString("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: " + r.Header.Get("Upgrade") + "\r\n\r\n")
			_ = rw.Flush()
			_, _ = io.Copy(io.Discard, rw)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		pad := strings.Repeat("x", max(b.respondBytes-64, 0))
		_, _ = fmt.Fprintf(w, `{"jsonrpc":"2.0","id":1,"result":{"pad":%q}}`, pad)
	})
	b.addr = serveOnLoopback(t, handler)
	return b
}

func (b *rawBackend) seen() []*http.Request {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]*http.Request(nil), b.requests...)
}

// startHolesGateway runs toolgate standalone in front of addr with OIDC
// auth and a limit of one expensive_tool call an hour per user.
func startHolesGateway(t *testing.T, addr string, flags ...string) (*testgateway.Gateway, func(user string) string) {
	t.Helper()
	issuer, token := startIssuer(t)
	g := testgateway.Start(t, func(port int) string {
		return testgateway.Config(port, addr, testgateway.OIDC(issuer.URL(), issuer.JWKSURL(), "limits")+`  rateLimiting:
    tools:
    - name: expensive_tool
      perUser: {maxTokens: 1, refillPeriod: 1h}
`)
	}, flags...)
	return g, token
}

// rawExchange sends raw bytes on a new connection and reads one response.
func rawExchange(t *testing.T, hostport, request string) *http.Response {
	t.Helper()
	conn, err := net.Dial("tcp", hostport)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	_ = conn.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := io.WriteString(conn, request); err != nil {
		t.Fatal(err)
	}
	res, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("no response: %v", err)
	}
	_, _ = io.Copy(io.Discard, res.Body)
	_ = res.Body.Close()
	return res
}

func TestAnMCPRouteNeverBecomesATunnel(t *testing.T) {
	backend := startRawBackend(t, 100)
	g, token := startHolesGateway(t, backend.addr)
	host := strings.TrimSuffix(strings.TrimPrefix(g.URL, "http://"), "/mcp")
	alice := token("alice")
	call := toolCall(1, "expensive_tool")
	requests := map[string]string{
		"POST with Upgrade":        fmt.Sprintf("POST /mcp HTTP/1.1\r\nHost: %s\r\nAuthorization: Bearer %s\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", host, alice, len(call), call),
		"GET with Upgrade":         fmt.Sprintf("GET /mcp HTTP/1.1\r\nHost: %s\r\nAuthorization: Bearer %s\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n", host, alice),
		"a preflight with Upgrade": fmt.Sprintf("OPTIONS /mcp HTTP/1.1\r\nHost: %s\r\nOrigin: https://app.example\r\nAccess-Control-Request-Method: POST\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n", host),
	}
	for name, request := range requests {
		for range 5 {
			if res := rawExchange(t, host, request); res.StatusCode != http.StatusBadRequest {
				t.Errorf("%s: status %d, want 400", name, res.StatusCode)
			}
		}
	}
	if n := backend.upgrades.Load(); n != 0 {
		t.Errorf("the backend upgraded %d connections", n)
	}
	if seen := backend.seen(); len(seen) != 0 {
		t.Errorf("the backend saw %d requests, want none", len(seen))
	}
}

func TestWhatReachesTheBackendIsWhatTheFilterInspected(t *testing.T) {
	backend := startRawBackend(t, 100)
	g, token := startHolesGateway(t, backend.addr)
	alice := token("alice")
	var gzipped bytes.Buffer
	zw := gzip.NewWriter(&gzipped)
	_, _ = zw.Write([]byte(toolCall(1, "expensive_tool")))
	_ = zw.Close()

	send := func(method, body string, header ...string) int {
		return request(t, method, g.URL, body, append([]string{"Content-Type", "application/json"}, header...)...).StatusCode
	}
	refused := []struct {
		name   string
		body   string
		header []string
		want   int
	}{
		{"a gzip body", gzipped.String(), []string{"Authorization", "Bearer " + alice, "Content-Encoding", "gzip"}, http.StatusUnsupportedMediaType},
		{"an ASCII body labelled utf-16", toolCall(1, "other_tool"), []string{"Authorization", "Bearer " + alice, "Content-Type", "application/json; charset=utf-16"}, http.StatusUnsupportedMediaType},
		{"a Content-Type that Connection removes", toolCall(1, "other_tool"), []string{"Authorization", "Bearer " + alice, "Connection", "Content-Type"}, http.StatusUnsupportedMediaType},
		{"a tool name ending in NUL", `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"expensive_tool\u0000"}}`, []string{"Authorization", "Bearer " + alice}, http.StatusBadRequest},
	}
	for _, tt := range refused {
		if got := send(http.MethodPost, tt.body, tt.header...); got != tt.want {
			t.Errorf("%s: status %d, want %d", tt.name, got, tt.want)
		}
	}
	if seen := backend.seen(); len(seen) != 0 {
		t.Fatalf("the backend saw %d of the refused requests", len(seen))
	}

	// A header that Connection names stops here: the backend gets the
	// request the filter checked, without it.
	if got := send(http.MethodPost, toolCall(2, "other_tool"), "Authorization", "Bearer "+alice, "Connection", "X-Hop", "X-Hop", "1"); got != http.StatusOK {
		t.Fatalf("a call naming X-Hop in Connection: status %d", got)
	}
	// A preflight passes without authentication, and the token sent with
	// it anyway stays here.
	if got := send(http.MethodOptions, "", "Origin", "https://app.example", "Access-Control-Request-Method", "POST", "Authorization", "Bearer "+alice); got != http.StatusOK {
		t.Fatalf("a preflight: status %d", got)
	}
	seen := backend.seen()
	if len(seen) != 2 {
		t.Fatalf("the backend saw %d requests, want the call and the preflight", len(seen))
	}
	if v := seen[0].Header.Values("X-Hop"); len(v) != 0 || seen[0].Header.Get("Content-Type") != "application/json" {
		t.Errorf("the call reached the backend with X-Hop %v and Content-Type %q", v, seen[0].Header.Get("Content-Type"))
	}
	if seen[1].Method != http.MethodOptions || seen[1].Header.Get("Authorization") != "" {
		t.Errorf("the preflight reached the backend as %s with Authorization %q, want OPTIONS without it", seen[1].Method, seen[1].Header.Get("Authorization"))
	}
}

// startStatefulBackend is a go-sdk MCP server with sessions (the protocol
// before 2026-07-28) that counts the requests reaching it.
func startStatefulBackend(t *testing.T) (addr string, requests *atomic.Int64) {
	t.Helper()
	server := mcp.NewServer(&mcp.Implementation{Name: "stateful", Version: "v1.0.0"}, nil)
	mcp.AddTool(server, &mcp.Tool{Name: "other_tool"}, func(context.Context, *mcp.CallToolRequest, struct{}) (*mcp.CallToolResult, any, error) {
		return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: "done"}}}, nil, nil
	})
	sdk := mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return server }, nil)
	requests = &atomic.Int64{}
	return serveOnLoopback(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		requests.Add(1)
		sdk.ServeHTTP(w, r)
	})), requests
}

// serveOnLoopback serves h on a free loopback port until the test ends and
// returns its address.
func serveOnLoopback(t *testing.T, h http.Handler) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return ln.Addr().String()
}

func TestASessionCannotBeUsedWithAnotherUsersToken(t *testing.T) {
	addr, requests := startStatefulBackend(t)
	g, token := startHolesGateway(t, addr)
	alice, bob := token("alice"), token("bob")
	do := func(method, user, session, body string) (int, string) {
		req, err := http.NewRequest(method, g.URL, strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Accept", "application/json, text/event-stream")
		req.Header.Set("Mcp-Protocol-Version", "2025-11-25")
		req.Header.Set("Authorization", "Bearer "+user)
		if body != "" {
			req.Header.Set("Content-Type", "application/json")
		}
		if session != "" {
			req.Header.Set("Mcp-Session-Id", session)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		res, err := client.Do(req.WithContext(ctx))
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = res.Body.Close() }()
		if method == http.MethodGet && res.StatusCode == http.StatusOK {
			return res.StatusCode, res.Header.Get("Mcp-Session-Id") // an open event stream
		}
		_, _ = io.Copy(io.Discard, res.Body)
		return res.StatusCode, res.Header.Get("Mcp-Session-Id")
	}
	code, session := do(http.MethodPost, alice, "", `{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"raw","version":"1"}}}`)
	if code != http.StatusOK || session == "" {
		t.Fatalf("initialize: status %d, session %q", code, session)
	}
	if code, _ := do(http.MethodPost, alice, session, `{"jsonrpc":"2.0","method":"notifications/initialized"}`); code != http.StatusAccepted {
		t.Fatalf("initialized: status %d", code)
	}
	listTools := `{"jsonrpc":"2.0","id":2,"method":"tools/list"}`
	before := requests.Load()
	for _, method := range []string{http.MethodPost, http.MethodGet, http.MethodDelete} {
		body := ""
		if method == http.MethodPost {
			body = listTools
		}
		if code, _ := do(method, bob, session, body); code != http.StatusNotFound {
			t.Errorf("bob's %s in alice's session: status %d, want 404", method, code)
		}
	}
	if n := requests.Load() - before; n != 0 {
		t.Errorf("the backend saw %d of bob's requests", n)
	}
	if code, _ := do(http.MethodPost, alice, session, listTools); code != http.StatusOK {
		t.Errorf("alice in her session after bob's tries: status %d, want 200", code)
	}
	if code, _ := do(http.MethodDelete, alice, session, ""); code != http.StatusNoContent && code != http.StatusOK {
		t.Errorf("alice ends her session: status %d", code)
	}
}

func TestHundredSlowBodiesStayWithinTheBodyBudget(t *testing.T) {
	backend := startRawBackend(t, 100)
	const budget = 32 << 20
	g, token := startHolesGateway(t, backend.addr, "--body-timeout", "3s", "--max-body-bytes-in-flight", fmt.Sprint(budget))
	host := strings.TrimSuffix(strings.TrimPrefix(g.URL, "http://"), "/mcp")
	alice := token("alice")
	const connections, size = 100, maxBodyBytes
	before := peakRSS(t, g.Pid())

	statuses := make([]int, connections)
	var wg sync.WaitGroup
	for i := range connections {
		wg.Go(func() {
			conn, err := net.Dial("tcp", host)
			if err != nil {
				t.Error(err)
				return
			}
			defer func() { _ = conn.Close() }()
			_ = conn.SetDeadline(time.Now().Add(60 * time.Second))
			// All of a maximal body but its last 139 bytes, then silence.
			fmt.Fprintf(conn, "POST /mcp HTTP/1.1\r\nHost: %s\r\nAuthorization: Bearer %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n", host, alice, size)
			chunk := bytes.Repeat([]byte(" "), 64<<10)
			for sent := 0; sent < size-139; {
				n := min(len(chunk), size-139-sent)
				if _, err := conn.Write(chunk[:n]); err != nil {
					break // refused early: the gateway answered and closed
				}
				sent += n
			}
			res, err := http.ReadResponse(bufio.NewReader(conn), nil)
			if err != nil {
				t.Errorf("connection %d: no response: %v", i, err)
				return
			}
			_ = res.Body.Close()
			statuses[i] = res.StatusCode
		})
	}
	wg.Wait()
	after := peakRSS(t, g.Pid())
	counts := map[int]int{}
	for _, s := range statuses {
		counts[s]++
	}
	t.Logf("100 connections, each %d bytes short of a %d-byte body: statuses %v; peak RSS %d MiB -> %d MiB (+%d MiB; budget %d MiB)",
		139, size, counts, before>>20, after>>20, (after-before)>>20, budget>>20)
	// The budget holds 8 bodies of this size; the others are refused
	// before a byte is read, the 8 time out.
	if counts[http.StatusServiceUnavailable] != connections-budget/size || counts[http.StatusRequestTimeout] != budget/size {
		t.Errorf("statuses %v, want %d answered 408 and the rest 503", counts, budget/size)
	}
	// The bound the README states: the budget admits budget/size bodies at
	// once, each holding at most perRequestBound (whatever the other 92
	// connections send).
	if bound := int64(budget/size) * perRequestBound; after-before > bound {
		t.Errorf("peak RSS grew by %d MiB, more than %d bodies' bound of %d MiB", (after-before)>>20, budget/size, bound>>20)
	}
	if seen := backend.seen(); len(seen) != 0 {
		t.Errorf("the backend saw %d requests", len(seen))
	}
}

func TestAClientThatNeverReadsIsDisconnected(t *testing.T) {
	backend := startRawBackend(t, 64<<20) // far more than the socket buffers hold
	g, token := startHolesGateway(t, backend.addr, "--write-timeout", "500ms")
	host := strings.TrimSuffix(strings.TrimPrefix(g.URL, "http://"), "/mcp")
	alice := token("alice")
	conn, err := net.Dial("tcp", host)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = conn.Close() }()
	call := toolCall(1, "other_tool")
	fmt.Fprintf(conn, "POST /mcp HTTP/1.1\r\nHost: %s\r\nAuthorization: Bearer %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", host, alice, len(call), call)
	// The gateway gives up writing and logs the exchange while the client
	// reads nothing.
	for deadline := time.Now().Add(30 * time.Second); !strings.Contains(g.Log.String(), "path=/mcp status=200"); time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the gateway still writes to a client that reads nothing after 30s:\n%s", g.Log.String())
		}
	}
	// Its connection is closed: reading drains what the kernel still holds
	// of the response, far less than all of it, and ends.
	_ = conn.SetReadDeadline(time.Now().Add(30 * time.Second))
	n, err := io.Copy(io.Discard, conn)
	if ne, ok := err.(net.Error); ok && ne.Timeout() {
		out, _ := exec.Command("sh", "-c", "ss -tnpi | grep -A1 "+strings.Split(conn.LocalAddr().String(), ":")[1]).CombinedOutput()
		t.Fatalf("the connection is still open after %d bytes:\n%s", n, out)
	}
	if n >= 64<<20 {
		t.Errorf("the whole response (%d bytes) was written to a client that did not read", n)
	}
}

// An issuer over plain HTTP is refused unless the MCPServer opts in:
// standalone mode validates the manifests as the API server does, and says
// why and what to set.
func TestAPlainHTTPIssuerIsRefusedWithoutTheOptIn(t *testing.T) {
	issuer, _ := startIssuer(t)
	dir := t.TempDir()
	policy := fmt.Sprintf("  auth:\n    oidc: {issuer: '%s', jwksURL: '%s', audience: limits}\n", issuer.URL(), issuer.JWKSURL())
	if err := os.WriteFile(filepath.Join(dir, "gateway.yaml"), []byte(testgateway.Config(testproc.FreePort(t), "127.0.0.1:9", policy)), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, testproc.Build(t, "github.com/toolgate/toolgate/cmd/toolgate"),
		"standalone", "--config", dir, "--listen-address", "127.0.0.1", "--admin-address", "127.0.0.1:0").CombinedOutput()
	if err == nil || ctx.Err() != nil {
		t.Fatalf("standalone with an http:// issuer: %v, want it refused at once:\n%s", err, out)
	}
	for _, want := range []string{"spec.auth.oidc.issuer", "issuer must be an https:// URL", "spec.auth.oidc.jwksURL", "allowInsecureHTTP: true"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("the refusal does not say %q:\n%s", want, out)
		}
	}
}

// A token the same issuer minted for another service is refused, whatever
// Host the client sends with it: accepted audiences come from the
// MCPServer only.
func TestATokenForAnotherServiceIsRefusedWhateverTheHost(t *testing.T) {
	backend := startRawBackend(t, 100)
	issuer, _ := startIssuer(t)
	g := testgateway.Start(t, func(port int) string {
		return testgateway.Config(port, backend.addr, testgateway.OIDC(issuer.URL(), issuer.JWKSURL(), "limits"))
	})
	other, err := issuer.Token("mallory", "https://other.example/mcp")
	if err != nil {
		t.Fatal(err)
	}
	for _, host := range []string{"other.example", "other.example:443", "127.0.0.1"} {
		req, err := http.NewRequest(http.MethodPost, g.URL, strings.NewReader(toolCall(1, "other_tool")))
		if err != nil {
			t.Fatal(err)
		}
		req.Host = host
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Authorization", "Bearer "+other)
		res, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_ = res.Body.Close()
		if res.StatusCode != http.StatusUnauthorized {
			t.Errorf("Host %s: status %d, want 401", host, res.StatusCode)
		}
	}
	if seen := backend.seen(); len(seen) != 0 {
		t.Errorf("the backend saw %d requests", len(seen))
	}
}

// A route that sends traffic to the MCPServer's Service without its filter
// is reported, by name, with what to add: standalone prints the status.
func TestARouteThatBypassesTheMCPServerIsReported(t *testing.T) {
	backend := startRawBackend(t, 100)
	g := testgateway.Start(t, func(port int) string {
		_, backendPort, _ := net.SplitHostPort(backend.addr)
		return testgateway.Config(port, backend.addr, "  rateLimiting:\n    global: {maxTokens: 1, refillPeriod: 1h}\n") + fmt.Sprintf(`---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: bypass}
spec:
  parentRefs: [{name: gw}]
  rules:
  - matches: [{path: {type: PathPrefix, value: /raw}}]
    backendRefs: [{name: mcp, port: %s}]
`, backendPort)
	})
	// The status is printed as the configuration loads, which readiness
	// does not wait for: wait for its last line.
	for deadline := time.Now().Add(30 * time.Second); !strings.Contains(g.Log.String(), "MCPServer default/mcp:"); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("no status printed after 30s:\n%s", g.Log.String())
		}
	}
	log := g.Log.String()
	for _, want := range []string{
		"HTTPRoute default/bypass (parent gw): Accepted=True ResolvedRefs=True toolgate.dev/MCPPolicyEnforced=False",
		"toolgate.dev/MCPPolicyEnforced BypassesMCPServerPolicy: rules[0].backendRefs[0] sends requests to MCPServer default/mcp",
		"HTTPRoute default/mcp (parent gw): Accepted=True ResolvedRefs=True toolgate.dev/MCPPolicyEnforced=True",
	} {
		if !strings.Contains(log, want) {
			t.Errorf("the status printed lacks %q:\n%s", want, log)
		}
	}
}
