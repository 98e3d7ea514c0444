package gateway

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/toolgate/toolgate/filter"
)

// Real MCP traffic: go-sdk clients talk through the gateway to go-sdk
// servers on loopback.

type echoArgs struct {
	Text string `json:"text"`
}

// newMCPServer is an MCP server with two tools: "echo" returns its text,
// "whoami" returns the server's name, which tells tests which endpoint
// answered.
func newMCPServer(name string) *mcp.Server {
	s := mcp.NewServer(&mcp.Implementation{Name: name, Version: "v1.0.0"}, nil)
	mcp.AddTool(s, &mcp.Tool{Name: "echo", Description: "Returns its text."},
		func(_ context.Context, _ *mcp.CallToolRequest, in echoArgs) (*mcp.CallToolResult, any, error) {
			return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: in.Text}}}, nil, nil
		})
	mcp.AddTool(s, &mcp.Tool{Name: "whoami", Description: "Names the server."},
		func(context.Context, *mcp.CallToolRequest, struct{}) (*mcp.CallToolResult, any, error) {
			return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: name}}}, nil, nil
		})
	return s
}

// sessionLog records the Mcp-Session-Id headers and session query
// parameters a backend receives.
type sessionLog struct {
	mu   sync.Mutex
	seen []string // "METHOD id"
}

func (l *sessionLog) wrap(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id := r.Header.Get("Mcp-Session-Id")
		if id == "" {
			id = r.URL.Query().Get("sessionid")
		}
		l.mu.Lock()
		l.seen = append(l.seen, r.Method+" "+id)
		l.mu.Unlock()
		h.ServeHTTP(w, r)
	})
}

func (l *sessionLog) entries() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.seen...)
}

// streamableBackend serves an MCP server over Streamable HTTP.
func streamableBackend(t *testing.T, name string, opts *mcp.StreamableHTTPOptions, log *sessionLog) *httptest.Server {
	t.Helper()
	server := newMCPServer(name)
	var h http.Handler = mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return server }, opts)
	if log != nil {
		h = log.wrap(h)
	}
	return newHTTPTestServer(t, h)
}

// sseBackend serves an MCP server over the legacy HTTP+SSE transport.
func sseBackend(t *testing.T, name string, log *sessionLog) *httptest.Server {
	t.Helper()
	server := newMCPServer(name)
	var h http.Handler = mcp.NewSSEHandler(func(*http.Request) *mcp.Server { return server }, nil)
	if log != nil {
		h = log.wrap(h)
	}
	return newHTTPTestServer(t, h)
}

func connect(t *testing.T, transport mcp.Transport, version string) *mcp.ClientSession {
	t.Helper()
	// The legacy SSE transport ties its stream to Connect's context, so
	// that context lives as long as the test.
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	c := mcp.NewClient(&mcp.Implementation{Name: "test-client", Version: "v1.0.0"}, nil)
	var opts *mcp.ClientSessionOptions
	if version != "" {
		opts = &mcp.ClientSessionOptions{ProtocolVersion: version}
	}
	cs, err := c.Connect(ctx, transport, opts)
	if err != nil {
		t.Fatalf("connect through the gateway: %v", err)
	}
	t.Cleanup(func() { _ = cs.Close() })
	return cs
}

// callText calls a tool and returns its text.
func callText(t *testing.T, cs *mcp.ClientSession, tool string, args any) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitLong)
	defer cancel()
	res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: tool, Arguments: args})
	if err != nil {
		t.Fatalf("call %s: %v", tool, err)
	}
	if res.IsError || len(res.Content) != 1 {
		t.Fatalf("call %s: unexpected result %+v", tool, res)
	}
	text, ok := res.Content[0].(*mcp.TextContent)
	if !ok {
		t.Fatalf("call %s: content %T, want text", tool, res.Content[0])
	}
	return text.Text
}

// exercise lists the tools and calls echo.
func exercise(t *testing.T, cs *mcp.ClientSession) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitLong)
	defer cancel()
	tools, err := cs.ListTools(ctx, nil)
	if err != nil {
		t.Fatalf("list tools: %v", err)
	}
	var names []string
	for _, tool := range tools.Tools {
		names = append(names, tool.Name)
	}
	if strings.Join(names, ",") != "echo,whoami" {
		t.Errorf("tools = %v, want echo and whoami", names)
	}
	if got := callText(t, cs, "echo", echoArgs{Text: "through the gateway"}); got != "through the gateway" {
		t.Errorf("echo returned %q", got)
	}
}

func mcpGateway(t *testing.T, opts Options, backends ...*httptest.Server) *Server {
	t.Helper()
	s := newServer(t, opts)
	mustApply(t, s, oneRoute(Rule{Matches: []Match{{Path: prefix("/mcp")}}, Backends: []Backend{backendOf("mcp", 1, backends...)}}))
	return s
}

func TestMCPStreamableHTTPWithSessions(t *testing.T) {
	for _, tc := range []struct {
		version string
		json    bool
	}{
		{"2025-06-18", false},
		{"2025-06-18", true},
		{"2025-11-25", false},
	} {
		name := tc.version + " event-stream"
		if tc.json {
			name = tc.version + " json"
		}
		t.Run(name, func(t *testing.T) {
			log := &sessionLog{}
			be := streamableBackend(t, "stateful", &mcp.StreamableHTTPOptions{JSONResponse: tc.json}, log)
			s := mcpGateway(t, Options{SessionKey: []byte("0123456789abcdef0123456789abcdef")}, be)

			cs := connect(t, &mcp.StreamableClientTransport{Endpoint: gatewayURL(t, s, "web") + "/mcp"}, tc.version)
			if got := cs.InitializeResult().ProtocolVersion; got != tc.version {
				t.Errorf("negotiated protocol %q, want %q", got, tc.version)
			}
			if !strings.HasPrefix(cs.ID(), sessionTokenPrefix) {
				t.Errorf("the client sees session id %q, want one sealed by the gateway", cs.ID())
			}
			exercise(t, cs)
			if err := cs.Close(); err != nil {
				t.Errorf("close session: %v", err)
			}

			var backendID string
			deleted := false
			for _, e := range log.entries() {
				method, id, _ := strings.Cut(e, " ")
				if strings.HasPrefix(id, sessionTokenPrefix) {
					t.Errorf("the backend received the sealed id %q", id)
				}
				if id != "" {
					if backendID != "" && id != backendID {
						t.Errorf("the backend received session ids %q and %q", backendID, id)
					}
					backendID = id
				}
				deleted = deleted || method == http.MethodDelete
			}
			if backendID == "" || !deleted {
				t.Errorf("the backend should see its own session id and the DELETE: %q", log.entries())
			}
		})
	}
}

func TestMCPStatelessStreamableHTTP(t *testing.T) {
	be := streamableBackend(t, "stateless", &mcp.StreamableHTTPOptions{Stateless: true}, nil)
	s := mcpGateway(t, Options{}, be)
	url := gatewayURL(t, s, "web") + "/mcp"

	cs := connect(t, &mcp.StreamableClientTransport{Endpoint: url}, "")
	if got := cs.InitializeResult().ProtocolVersion; got != "2026-07-28" {
		t.Errorf("negotiated protocol %q, want 2026-07-28", got)
	}
	if cs.ID() != "" {
		t.Errorf("a stateless session got id %q", cs.ID())
	}
	exercise(t, cs)

	t.Run("the backend's header check sees the client's headers and body unchanged", func(t *testing.T) {
		body := `{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"echo","arguments":{"text":"x"},` +
			`"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28"}}}`
		req, _ := http.NewRequest(http.MethodPost, url, strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Accept", "application/json, text/event-stream")
		req.Header.Set("Mcp-Protocol-Version", "2026-07-28")
		req.Header.Set("Mcp-Method", "tools/list") // disagrees with the body
		req.Header.Set("Mcp-Name", "echo")
		resp, out := do(t, req)
		if resp.StatusCode != http.StatusBadRequest {
			t.Fatalf("status %d (%s), want the backend's 400", resp.StatusCode, out)
		}
		if !strings.Contains(string(out), "-32020") {
			t.Errorf("body %s: want JSON-RPC error -32020 from the backend", out)
		}
	})
}

func TestMCPLegacySSETransport(t *testing.T) {
	// Three endpoints, each with its own sessions: the client's POSTs reach
	// the endpoint whose GET stream announced the session only because the
	// gateway sealed the endpoint into the announced URL.
	log := &sessionLog{}
	e1, e2, e3 := sseBackend(t, "sse-1", log), sseBackend(t, "sse-2", log), sseBackend(t, "sse-3", log)
	s := newServer(t, Options{SessionKey: []byte("0123456789abcdef0123456789abcdef")})
	mustApply(t, s, oneRoute(Rule{Matches: []Match{{Path: prefix("/sse")}}, Backends: []Backend{backendOf("sse", 1, e1, e2, e3)}}))

	for i := range 3 {
		cs := connect(t, &mcp.SSEClientTransport{Endpoint: gatewayURL(t, s, "web") + "/sse"}, "")
		exercise(t, cs)
		first := callText(t, cs, "whoami", nil)
		for range 3 {
			if got := callText(t, cs, "whoami", nil); got != first {
				t.Fatalf("session %d moved from %s to %s", i, first, got)
			}
		}
	}
	for _, e := range log.entries() {
		if strings.Contains(e, sessionTokenPrefix) {
			t.Errorf("a backend received a sealed session: %q", e)
		}
	}
}

// alternatingTransport spreads requests over several gateway replicas in
// turn, as a load balancer in front of them would.
type alternatingTransport struct {
	mu      sync.Mutex
	targets []string // host:port of each replica
	n       int
}

func (a *alternatingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	a.mu.Lock()
	target := a.targets[a.n%len(a.targets)]
	a.n++
	a.mu.Unlock()
	r2 := r.Clone(r.Context())
	r2.URL.Host, r2.Host = target, ""
	return http.DefaultTransport.RoundTrip(r2)
}

func (a *alternatingTransport) replace(i int, target string) {
	a.mu.Lock()
	a.targets[i] = target
	a.mu.Unlock()
}

func TestMCPSessionAffinityAcrossReplicas(t *testing.T) {
	key := []byte("shared by every replica, 32 bytes+")
	e1 := streamableBackend(t, "endpoint-1", nil, nil)
	e2 := streamableBackend(t, "endpoint-2", nil, nil)
	e3 := streamableBackend(t, "endpoint-3", nil, nil)
	replica := func() string {
		s := mcpGateway(t, Options{SessionKey: key}, e1, e2, e3)
		return strings.TrimPrefix(gatewayURL(t, s, "web"), "http://")
	}
	alt := &alternatingTransport{targets: []string{replica(), replica()}}
	httpClient := &http.Client{Transport: alt}

	endpoints := map[string]bool{}
	var sessions []*mcp.ClientSession
	for range 6 {
		cs := connect(t, &mcp.StreamableClientTransport{Endpoint: "http://gateway/mcp", HTTPClient: httpClient}, "2025-06-18")
		sessions = append(sessions, cs)
	}
	owner := make([]string, len(sessions))
	for i, cs := range sessions {
		owner[i] = callText(t, cs, "whoami", nil)
		endpoints[owner[i]] = true
	}
	for round := range 4 {
		if round == 2 {
			// A replica restarts: a new process with the same key.
			alt.replace(0, replica())
		}
		for i, cs := range sessions {
			if got := callText(t, cs, "whoami", nil); got != owner[i] {
				t.Fatalf("round %d: session %d moved from %s to %s", round, i, owner[i], got)
			}
		}
	}
	if len(endpoints) < 2 {
		t.Errorf("6 sessions all landed on %v: sessions should be balanced", endpoints)
	}
}

func TestMCPStatelessRequestsAreBalancedFreely(t *testing.T) {
	opts := &mcp.StreamableHTTPOptions{Stateless: true}
	e1 := streamableBackend(t, "endpoint-1", opts, nil)
	e2 := streamableBackend(t, "endpoint-2", opts, nil)
	e3 := streamableBackend(t, "endpoint-3", opts, nil)
	s := mcpGateway(t, Options{}, e1, e2, e3)
	cs := connect(t, &mcp.StreamableClientTransport{Endpoint: gatewayURL(t, s, "web") + "/mcp"}, "")
	seen := map[string]int{}
	for range 12 {
		seen[callText(t, cs, "whoami", nil)]++
	}
	if len(seen) != 3 {
		t.Errorf("stateless calls reached %v, want all three endpoints", seen)
	}
}

// On a route whose filter authenticates callers, a session belongs to the
// user who created it: another user, a tampered id or the backend's own id
// gets 404 from the gateway, and the backend never sees them. On a route
// that authenticates nobody, ids that are not ours pass unchanged.
func TestMCPSessionsAreBoundToTheirUser(t *testing.T) {
	log := &sessionLog{}
	be := streamableBackend(t, "stateful", nil, log)
	// The stand-in for the MCP filter: the caller is the test's header.
	authenticate := extensionFunc(func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			next.ServeHTTP(w, r.WithContext(filter.WithCaller(r.Context(), r.Header.Get("X-Test-User"))))
		})
	})
	s := newServer(t, Options{SessionKey: []byte("0123456789abcdef0123456789abcdef"), Extensions: fakeExtensions{"auth": authenticate}.build})
	mustApply(t, s, oneRoute(
		Rule{Matches: []Match{{Path: prefix("/mcp")}}, Filters: []Filter{resolvedRef("auth")}, Backends: []Backend{backendOf("mcp", 1, be)}},
		Rule{Matches: []Match{{Path: prefix("/open")}}, Backends: []Backend{backendOf("open", 1, be)}},
	))
	base := gatewayURL(t, s, "web")

	post := func(path, user, sessionID, body string) (*http.Response, []byte) {
		req, _ := http.NewRequest(http.MethodPost, base+path, strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Accept", "application/json, text/event-stream")
		req.Header.Set("Mcp-Protocol-Version", "2025-06-18")
		if user != "" {
			req.Header.Set("X-Test-User", user)
		}
		if sessionID != "" {
			req.Header.Set("Mcp-Session-Id", sessionID)
		}
		return do(t, req)
	}
	const initialize = `{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"raw","version":"1"}}}`
	const listTools = `{"jsonrpc":"2.0","id":2,"method":"tools/list"}`
	resp, body := post("/mcp", "alice", "", initialize)
	sealed := resp.Header.Get("Mcp-Session-Id")
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(sealed, sessionTokenPrefix) {
		t.Fatalf("initialize: status %d, session %q, body %s", resp.StatusCode, sealed, body)
	}
	if resp, body := post("/mcp", "alice", sealed, listTools); resp.StatusCode != http.StatusOK {
		t.Fatalf("alice in her session: status %d: %s", resp.StatusCode, body)
	}
	entries := log.entries()
	backendID := strings.TrimPrefix(entries[len(entries)-1], "POST ")
	if backendID == "" || backendID == sealed {
		t.Fatalf("the backend saw session %q, want its own id", backendID)
	}
	raw, _ := b64.DecodeString(strings.TrimPrefix(sealed, sessionTokenPrefix))
	raw[len(raw)-1] ^= 1
	tampered := sessionTokenPrefix + b64.EncodeToString(raw)

	before := len(log.entries())
	for _, tc := range []struct{ name, user, id string }{
		{"bob with alice's session", "bob", sealed},
		{"no user with alice's session", "", sealed},
		{"alice with a tampered id", "alice", tampered},
		{"alice with the backend's own id", "alice", backendID},
		{"alice with an id from elsewhere", "alice", "not-from-this-gateway"},
	} {
		for _, method := range []string{http.MethodPost, http.MethodGet, http.MethodDelete} {
			req, _ := http.NewRequest(method, base+"/mcp", nil)
			if method == http.MethodPost {
				req.Body = io.NopCloser(strings.NewReader(listTools))
				req.Header.Set("Content-Type", "application/json")
			}
			req.Header.Set("Accept", "application/json, text/event-stream")
			req.Header.Set("X-Test-User", tc.user)
			req.Header.Set("Mcp-Session-Id", tc.id)
			if resp, body := do(t, req); resp.StatusCode != http.StatusNotFound {
				t.Errorf("%s, %s: status %d (%s), want 404", tc.name, method, resp.StatusCode, body)
			}
		}
	}
	if after := log.entries(); len(after) != before {
		t.Errorf("the backend received %v, want none of those sessions", after[before:])
	}

	// Where nobody is authenticated, an id that is not ours reaches the
	// backend unchanged, which does not know it.
	for _, id := range []string{tampered, "not-from-this-gateway"} {
		resp, body := post("/open", "", id, listTools)
		if resp.StatusCode != http.StatusNotFound {
			t.Errorf("session %q on an open route: status %d (%s), want the backend's 404", id, resp.StatusCode, body)
		}
		entries := log.entries()
		if last := entries[len(entries)-1]; last != "POST "+id {
			t.Errorf("backend received %q, want the id forwarded unchanged", last)
		}
	}
}

func TestSessionSealing(t *testing.T) {
	a := newSessionSealer([]byte("key a"))
	b := newSessionSealer([]byte("key b"))
	const endpoint, backendID = "10.0.0.7:8080", "backend-session-id"
	token := a.seal(endpoint, backendID, "alice")
	if ep, id, ok := a.open(token, "alice"); !ok || ep != endpoint || id != backendID {
		t.Fatalf("open(seal) = %q, %q, %v", ep, id, ok)
	}
	if token != a.seal(endpoint, backendID, "alice") {
		t.Error("sealing is not deterministic: a session's id would change between responses")
	}
	if a.seal(endpoint, backendID, "bob") == token || a.seal(endpoint, "another-id", "alice") == token {
		t.Error("two sessions, or one session's id for two users, share an id")
	}
	if strings.Contains(token, "10.0.0.7") || strings.Contains(token, backendID) {
		t.Errorf("the id %q shows the endpoint or the backend's id", token)
	}
	sealed, _ := b64.DecodeString(strings.TrimPrefix(token, sessionTokenPrefix))
	flipped := append([]byte(nil), sealed...)
	flipped[len(flipped)-20] ^= 1
	cases := []struct {
		name        string
		sealer      *sessionSealer
		token, user string
	}{
		{"another key", b, token, "alice"},
		{"another user", a, token, "bob"},
		{"no user (a route without auth)", a, token, ""},
		{"a flipped bit", a, sessionTokenPrefix + b64.EncodeToString(flipped), "alice"},
		{"the backend's own id", a, backendID, "alice"},
		{"truncated", a, token[:len(token)-1], "alice"},
		{"an empty body", a, sessionTokenPrefix, "alice"},
		{"not base64", a, sessionTokenPrefix + "!!!", "alice"},
		{"the first version's format", a, "tg1." + strings.TrimPrefix(token, sessionTokenPrefix), "alice"},
	}
	for _, tc := range cases {
		if _, _, ok := tc.sealer.open(tc.token, tc.user); ok {
			t.Errorf("%s: open accepted %q", tc.name, tc.token)
		}
	}
	// Without a user (no authentication on the route) a session still
	// opens for no user.
	if _, id, ok := a.open(a.seal(endpoint, backendID, ""), ""); !ok || id != backendID {
		t.Errorf("a session sealed for no user does not open for no user")
	}
}

func TestEndpointEventRewriting(t *testing.T) {
	s := newSessionSealer([]byte("k"))
	seal := func(id string) string { return s.seal("10.0.0.1:80", id, "") }
	sealed := seal("abc")
	cases := []struct {
		name, in, want string
	}{
		{"go-sdk", "event: endpoint\ndata: /sse?sessionid=abc\n\n", "event: endpoint\ndata: /sse?sessionid=" + sealed + "\n\n"},
		{"typescript sdk", "event: endpoint\ndata: /message?sessionId=abc\n\n", "event: endpoint\ndata: /message?sessionId=" + sealed + "\n\n"},
		{"python sdk", "event: endpoint\r\ndata: /messages/?session_id=abc\r\n\r\n", "event: endpoint\r\ndata: /messages/?session_id=" + sealed + "\r\n\r\n"},
		{"other parameters kept", "event:endpoint\ndata:/m?a=1&sessionId=abc&b=2\n\n", "event:endpoint\ndata:/m?a=1&sessionId=" + sealed + "&b=2\n\n"},
		{"absolute URL", "event: endpoint\ndata: http://h/m?sessionId=abc\n\n", "event: endpoint\ndata: http://h/m?sessionId=" + sealed + "\n\n"},
		{"another event is untouched", "event: message\ndata: /m?sessionId=abc\n\n", "event: message\ndata: /m?sessionId=abc\n\n"},
		{"no session parameter", "event: endpoint\ndata: /m?x=1\n\n", "event: endpoint\ndata: /m?x=1\n\n"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := string(rewriteEndpointEvent([]byte(tc.in), seal)); got != tc.want {
				t.Errorf("got %q, want %q", got, tc.want)
			}
		})
	}
	t.Run("only the first event, across reads", func(t *testing.T) {
		pr, pw := io.Pipe()
		r := &endpointEventRewriter{src: pr, seal: seal}
		go func() {
			for _, part := range []string{"event: end", "point\ndata: /m?sessionId=a", "bc\n", "\n", "event: endpoint\ndata: /m?sessionId=abc\n\n"} {
				_, _ = pw.Write([]byte(part))
			}
			_ = pw.Close()
		}()
		var out strings.Builder
		buf := make([]byte, 7)
		for {
			n, err := r.Read(buf)
			out.Write(buf[:n])
			if err != nil {
				break
			}
		}
		want := "event: endpoint\ndata: /m?sessionId=" + sealed + "\n\nevent: endpoint\ndata: /m?sessionId=abc\n\n"
		if out.String() != want {
			t.Errorf("got %q, want %q", out.String(), want)
		}
	})
}
