package filter_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/toolgate/toolgate/filter"
)

// newToolServer is an MCP server with the two tools of the user's story.
func newToolServer() *mcp.Server {
	s := mcp.NewServer(&mcp.Implementation{Name: "tools", Version: "v1.0.0"}, nil)
	done := func(context.Context, *mcp.CallToolRequest, struct{}) (*mcp.CallToolResult, any, error) {
		return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: "done"}}}, nil, nil
	}
	mcp.AddTool(s, &mcp.Tool{Name: "expensive_tool", Description: "costs a lot"}, done)
	mcp.AddTool(s, &mcp.Tool{Name: "other_tool", Description: "costs little"}, done)
	return s
}

// bearer adds a bearer token to every request.
type bearer struct {
	token string
	base  http.RoundTripper
}

func (b bearer) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("Authorization", "Bearer "+b.token)
	return b.base.RoundTrip(r)
}

// methodHeaders records the Mcp-Method headers that reach the MCP server.
type methodHeaders struct {
	mu     sync.Mutex
	values []string
	next   http.Handler
}

func (m *methodHeaders) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if v := r.Header.Get("Mcp-Method"); v != "" {
		m.mu.Lock()
		m.values = append(m.values, v)
		m.mu.Unlock()
	}
	m.next.ServeHTTP(w, r)
}

func (m *methodHeaders) seen(method string) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.Contains(m.values, method)
}

func TestARealMCPClientIsLimitedByTheFilter(t *testing.T) {
	tests := []struct {
		name      string
		stateless bool
		version   string // the protocol version the client asks for
	}{
		{"a session-based server (2025-06-18)", false, "2025-06-18"},
		{"a stateless server (2026-07-28)", true, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			iss := newIssuer(t)
			policy := filter.Policy{
				Server: testServer, Auth: iss.auth(), PerUser: limit(100, time.Hour),
				Tools: map[string]filter.ToolLimits{"expensive_tool": {PerUser: limit(2, time.Hour)}},
			}
			h := newHarness(t, policy) // for its store, on a clock the test moves
			f, err := filter.New(policy, h.shared)
			if err != nil {
				t.Fatal(err)
			}
			server := newToolServer()
			seen := &methodHeaders{next: mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return server },
				&mcp.StreamableHTTPOptions{Stateless: tt.stateless})}
			srv := httptest.NewServer(f.Wrap(seen))
			t.Cleanup(srv.Close)

			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			client := mcp.NewClient(&mcp.Implementation{Name: "client", Version: "v1.0.0"}, nil)
			session, err := client.Connect(ctx, &mcp.StreamableClientTransport{
				Endpoint:   srv.URL,
				HTTPClient: &http.Client{Transport: bearer{token: iss.token(t, "alice"), base: http.DefaultTransport}},
				MaxRetries: -1,
			}, &mcp.ClientSessionOptions{ProtocolVersion: tt.version})
			if err != nil {
				t.Fatalf("connect: %v", err)
			}
			defer func() { _ = session.Close() }()

			callTool := func(name string) error {
				res, err := session.CallTool(ctx, &mcp.CallToolParams{Name: name, Arguments: map[string]any{}})
				if err == nil && res.IsError {
					t.Fatalf("%s failed in the tool: %+v", name, res.Content)
				}
				return err
			}
			for i := 1; i <= 2; i++ {
				if err := callTool("expensive_tool"); err != nil {
					t.Fatalf("expensive_tool call %d: %v", i, err)
				}
			}
			// The client does not read the body of a 429; it reports the status.
			err = callTool("expensive_tool")
			if err == nil || !strings.Contains(err.Error(), http.StatusText(http.StatusTooManyRequests)) {
				t.Fatalf("expensive_tool over its limit: error %v, want one saying %q", err, http.StatusText(http.StatusTooManyRequests))
			}
			if err := callTool("other_tool"); err != nil {
				t.Fatalf("other_tool on the same session after the refusal: %v", err)
			}
			h.clock.Advance(30 * time.Minute) // one token of two per hour
			if err := callTool("expensive_tool"); err != nil {
				t.Fatalf("expensive_tool after a refill: %v", err)
			}
			if tt.stateless && !seen.seen("tools/call") {
				t.Errorf("the stateless client sent no Mcp-Method header to check")
			}
		})
	}
}
