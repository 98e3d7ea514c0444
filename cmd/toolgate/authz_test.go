package main

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"mime"
	"net/http"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/toolgate/toolgate/filter/audit"
	"github.com/toolgate/toolgate/internal/testgateway"
	"github.com/toolgate/toolgate/internal/testissuer"
)

// Authorization through the real binary: who may call which tool, by a
// claim, by an argument and by a scope, before any token is taken.
func TestAuthorizationRulesDecideWhoMayCallWhichTool(t *testing.T) {
	backend := startBackend(t)
	issuer, _ := startIssuer(t)
	r := testgateway.Start(t, func(port int) string {
		return testgateway.Config(port, backend.addr, testgateway.OIDC(issuer.URL(), issuer.JWKSURL(), "limits")+limits+`  authorization:
    rules:
    - name: engineers
      tools: ["expensive_*"]
      when: "'engineering' in claims.groups"
    - name: batches-for-team-a
      tools: [batch_tool]
      when: "request.arguments.team == 'a'"
    - name: admins
      tools: [other_tool]
      scopes: ["tools:admin"]
`)
	})
	token := func(user string, extra map[string]any) string { return claimsToken(t, issuer, user, extra) }
	engineer := token("alice", map[string]any{"groups": []string{"engineering"}})
	sales := token("bob", map[string]any{"groups": []string{"sales"}, "scope": "tools:read"})
	admin := token("carol", map[string]any{"scope": "tools:admin"})
	callWith := func(tool, arguments string) string {
		return `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"` + tool + `","arguments":` + arguments + `}}`
	}
	tests := []struct {
		name       string
		token      string
		body       string
		wantStatus int
		wantCode   int // the JSON-RPC error code; 0 when the backend answers
	}{
		{"an engineer calls expensive_tool", engineer, callWith("expensive_tool", "{}"), http.StatusOK, 0},
		{"sales calls expensive_tool: unknown tool", sales, callWith("expensive_tool", "{}"), http.StatusOK, -32602},
		{"team a's batch", sales, callWith("batch_tool", `{"team":"a"}`), http.StatusOK, 0},
		{"team b's batch", sales, callWith("batch_tool", `{"team":"b"}`), http.StatusOK, -32602},
		{"an admin scope held", admin, callWith("other_tool", "{}"), http.StatusOK, 0},
		{"an admin scope missing: step up", sales, callWith("other_tool", "{}"), http.StatusForbidden, -32003},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := backend.calls.Load()
			req, err := http.NewRequest(http.MethodPost, r.URL, strings.NewReader(tt.body))
			if err != nil {
				t.Fatal(err)
			}
			req.Header.Set("Content-Type", "application/json")
			req.Header.Set("Accept", "application/json, text/event-stream")
			req.Header.Set("Authorization", "Bearer "+tt.token)
			res, err := client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(res.Body)
			_ = res.Body.Close()
			if res.StatusCode != tt.wantStatus {
				t.Fatalf("status %d, want %d: %s", res.StatusCode, tt.wantStatus, body)
			}
			reached := backend.calls.Load() - before
			if tt.wantCode == 0 {
				if reached != 1 {
					t.Errorf("the backend ran %d calls, want 1: %s", reached, body)
				}
				return
			}
			if reached != 0 {
				t.Errorf("the backend ran a refused call")
			}
			var resp struct {
				Error struct{ Code int } `json:"error"`
			}
			if err := json.Unmarshal(body, &resp); err != nil || resp.Error.Code != tt.wantCode {
				t.Errorf("body %s: want JSON-RPC error %d", body, tt.wantCode)
			}
			if tt.wantStatus == http.StatusForbidden && !strings.Contains(res.Header.Get("WWW-Authenticate"), `scope="tools:admin"`) {
				t.Errorf("WWW-Authenticate %q does not name the scope to step up to", res.Header.Get("WWW-Authenticate"))
			}
		})
	}
}

// listsBackend is an MCP server of four tools, two prompts and two
// resources, served over one of go-sdk's transports.
func listsBackend(t *testing.T, transport string) string {
	t.Helper()
	server := mcp.NewServer(&mcp.Implementation{Name: "lists-backend", Version: "v1.0.0"}, nil)
	for _, tool := range []string{"search_code", "create_issue", "delete_repo", "launch"} {
		mcp.AddTool(server, &mcp.Tool{Name: tool}, func(context.Context, *mcp.CallToolRequest, map[string]any) (*mcp.CallToolResult, any, error) {
			return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: "done"}}}, nil, nil
		})
	}
	for _, prompt := range []string{"review_code", "summarize"} {
		server.AddPrompt(&mcp.Prompt{Name: prompt}, func(context.Context, *mcp.GetPromptRequest) (*mcp.GetPromptResult, error) {
			return &mcp.GetPromptResult{Messages: []*mcp.PromptMessage{{Role: "user", Content: &mcp.TextContent{Text: "p"}}}}, nil
		})
	}
	for _, uri := range []string{"file:///docs/guide.md", "file:///secrets/keys.txt"} {
		server.AddResource(&mcp.Resource{URI: uri, Name: path.Base(uri)}, func(_ context.Context, r *mcp.ReadResourceRequest) (*mcp.ReadResourceResult, error) {
			return &mcp.ReadResourceResult{Contents: []*mcp.ResourceContents{{URI: r.Params.URI, Text: "text"}}}, nil
		})
	}
	var h http.Handler
	switch transport {
	case "sse":
		h = mcp.NewSSEHandler(func(*http.Request) *mcp.Server { return server }, nil)
	default:
		opts := &mcp.StreamableHTTPOptions{Stateless: strings.HasPrefix(transport, "stateless"), JSONResponse: strings.HasSuffix(transport, "json")}
		h = mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return server }, opts)
	}
	return serveOnLoopback(t, h)
}

// listsAuthorization lets engineers search, team a create issues, admins
// (by scope) delete; it shows the review prompts and the docs.
const listsAuthorization = `  authorization:
    rules:
    - name: engineers
      tools: ["search_*"]
      when: "'engineering' in claims.groups"
    - name: team-a
      tools: [create_issue]
      when: "request.arguments.repo.startsWith('team-a/')"
    - name: admins
      tools: [delete_repo]
      scopes: ["repo:admin"]
    - name: reviews
      prompts: ["review_*"]
    - name: docs
      resources: ["file:///docs/*"]
`

// contentTypes records the media type of each MCP response a client gets.
type contentTypes struct {
	mu    sync.Mutex
	seen  map[string]bool
	token string
}

func (c *contentTypes) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("Authorization", "Bearer "+c.token)
	res, err := http.DefaultTransport.RoundTrip(r)
	if err == nil {
		mediaType, _, _ := mime.ParseMediaType(res.Header.Get("Content-Type"))
		c.mu.Lock()
		c.seen[mediaType] = true
		c.mu.Unlock()
	}
	return res, err
}

// Two users with different claims list different tools, prompts and
// resources, through go-sdk's client, on every transport and protocol
// generation go-sdk serves: stateless (2026-07-28) and session-based
// (2025-11-25) streamable HTTP, each with JSON and event-stream responses,
// and the legacy SSE transport, whose responses all come on its GET
// stream. A tool hidden from a caller is unknown to him when he calls it.
func TestEachCallerListsWhatHeMayUse(t *testing.T) {
	issuer, _ := startIssuer(t)
	token := func(user string, extra map[string]any) string { return claimsToken(t, issuer, user, extra) }
	users := []struct {
		name, token       string
		tools             string
		prompts, resource string
	}{
		// delete_repo needs a scope neither holds: listed, for a step up.
		{"engineer", token("alice", map[string]any{"groups": []string{"engineering"}}), "create_issue,delete_repo,search_code", "review_code", "file:///docs/guide.md"},
		{"sales", token("bob", map[string]any{"groups": []string{"sales"}}), "create_issue,delete_repo", "review_code", "file:///docs/guide.md"},
	}
	for _, tc := range []struct {
		transport, version, mediaType string
	}{
		{"stateless", "2026-07-28", "text/event-stream"},
		{"stateless-json", "2026-07-28", "application/json"},
		{"stateful", "2025-11-25", "text/event-stream"},
		{"stateful-json", "2025-11-25", "application/json"},
		{"sse", "2024-11-05", "text/event-stream"},
	} {
		t.Run(tc.transport, func(t *testing.T) {
			backend := listsBackend(t, tc.transport)
			g := testgateway.Start(t, func(port int) string {
				return testgateway.Config(port, backend, testgateway.OIDC(issuer.URL(), issuer.JWKSURL(), "limits")+listsAuthorization)
			})
			for _, u := range users {
				t.Run(u.name, func(t *testing.T) {
					ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
					defer cancel()
					seen := &contentTypes{seen: map[string]bool{}, token: u.token}
					httpClient := &http.Client{Transport: seen}
					var transport mcp.Transport = &mcp.StreamableClientTransport{Endpoint: g.URL, HTTPClient: httpClient}
					if tc.transport == "sse" {
						transport = &mcp.SSEClientTransport{Endpoint: g.URL, HTTPClient: httpClient}
					}
					var opts *mcp.ClientSessionOptions
					if tc.version != "2026-07-28" {
						opts = &mcp.ClientSessionOptions{ProtocolVersion: tc.version}
					}
					cs, err := mcp.NewClient(&mcp.Implementation{Name: "lists-client", Version: "v1.0.0"}, nil).Connect(ctx, transport, opts)
					if err != nil {
						t.Fatalf("connect: %v", err)
					}
					defer func() { _ = cs.Close() }()
					if got := cs.InitializeResult().ProtocolVersion; got != tc.version {
						t.Errorf("protocol %s, want %s", got, tc.version)
					}
					tools, err := cs.ListTools(ctx, nil)
					if err != nil {
						t.Fatalf("list tools: %v", err)
					}
					var names []string
					for _, tool := range tools.Tools {
						names = append(names, tool.Name)
					}
					slices.Sort(names)
					if tc.version == "2026-07-28" && tools.GetCacheScope() != "private" {
						// go-sdk's server marks its lists public.
						t.Errorf("the filtered list's cacheScope is %q, want private", tools.GetCacheScope())
					}
					if got := strings.Join(names, ","); got != u.tools {
						t.Errorf("tools %s, want %s", got, u.tools)
					}
					prompts, err := cs.ListPrompts(ctx, nil)
					if err != nil || len(prompts.Prompts) != 1 || prompts.Prompts[0].Name != u.prompts {
						t.Errorf("prompts %v (%v), want %s", prompts, err, u.prompts)
					}
					resources, err := cs.ListResources(ctx, nil)
					if err != nil || len(resources.Resources) != 1 || resources.Resources[0].URI != u.resource {
						t.Errorf("resources %v (%v), want %s", resources, err, u.resource)
					}
					if !seen.seen[tc.mediaType] {
						t.Errorf("the client saw responses of %v, want %s among them", seen.seen, tc.mediaType)
					}
					if u.name != "sales" {
						return
					}
					if _, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "create_issue", Arguments: map[string]any{"repo": "team-a/api"}}); err != nil {
						t.Errorf("calling an allowed tool: %v", err)
					}
					// A tool hidden from the caller is unknown to him. The
					// legacy transport's client sees answers on its stream
					// only: it gets HTTP 403 (and go-sdk's closes).
					_, hiddenErr := cs.CallTool(ctx, &mcp.CallToolParams{Name: "search_code", Arguments: map[string]any{}})
					var rpcErr *jsonrpc.Error
					switch {
					case tc.transport == "sse":
						if hiddenErr == nil || !strings.Contains(hiddenErr.Error(), "Forbidden") {
							t.Errorf("calling a hidden tool: %v, want 403 Forbidden", hiddenErr)
						}
					case !errors.As(hiddenErr, &rpcErr) || rpcErr.Code != jsonrpc.CodeInvalidParams || !strings.Contains(rpcErr.Message, "search_code"):
						t.Errorf("calling a hidden tool: %v, want invalid params naming it", hiddenErr)
					}
				})
			}
		})
	}
}

// The audit trail of a run through the real binary holds one record per
// decision, in order, each naming where, who and what, and never a token.
func TestTheAuditTrailOfARunIsComplete(t *testing.T) {
	backend := startBackend(t)
	issuer, _ := startIssuer(t)
	auditFile := filepath.Join(t.TempDir(), "audit.jsonl")
	g := testgateway.Start(t, func(port int) string {
		return testgateway.Config(port, backend.addr, testgateway.OIDC(issuer.URL(), issuer.JWKSURL(), "limits")+limits+`  authorization:
    rules:
    - name: engineers
      tools: ["expensive_*"]
      when: "'engineering' in claims.groups"
    - name: admins
      tools: [batch_tool]
      scopes: ["tools:admin"]
`)
	}, "--audit-log", auditFile)
	token := func(user string, extra map[string]any) string { return claimsToken(t, issuer, user, extra) }
	engineer := token("alice", map[string]any{"groups": []string{"engineering"}})
	sales := token("bob", map[string]any{"groups": []string{"sales"}})
	call := `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"expensive_tool","arguments":{"q":"x"}}}`
	steps := []struct {
		token, body string
		status      int
	}{
		{engineer, call, http.StatusOK},
		{engineer, call, http.StatusOK},
		{engineer, call, http.StatusTooManyRequests}, // 2 an hour
		{sales, call, http.StatusOK},                 // unknown tool
		{sales, `{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"batch_tool"}}`, http.StatusForbidden},
		{"", `{"jsonrpc":"2.0","id":3,"method":"tools/list"}`, http.StatusUnauthorized},
		{sales, `{"jsonrpc":"2.0","id":4,"method":"tools/list"}`, http.StatusOK},
	}
	for i, s := range steps {
		if got := post(t, g.URL, s.token, http.MethodPost, s.body); got != s.status {
			t.Fatalf("step %d: status %d, want %d", i, got, s.status)
		}
	}
	type want struct{ user, method, name, decision, reason, rule, bucket string }
	wants := []want{
		{"alice", "tools/call", "expensive_tool", "allowed", "", "engineers", ""},
		{"alice", "tools/call", "expensive_tool", "allowed", "", "engineers", ""},
		{"alice", "tools/call", "expensive_tool", "refused", "rate_limited", "", "tool_per_user/expensive_tool"},
		{"bob", "tools/call", "expensive_tool", "refused", "not_allowed", "", ""},
		{"bob", "tools/call", "batch_tool", "refused", "insufficient_scope", "", ""},
		{"", "", "", "refused", "unauthenticated", "", ""},
		{"bob", "tools/list", "", "allowed", "", "", ""},
	}
	var raw []byte
	var records []audit.Record
	deadline := time.Now().Add(30 * time.Second)
	for len(records) < len(wants) && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond) // the writer flushes once its queue is empty
		raw, _ = os.ReadFile(auditFile)
		records = records[:0]
		for line := range strings.Lines(string(raw)) {
			var r audit.Record
			if err := json.Unmarshal([]byte(line), &r); err != nil {
				t.Fatalf("%v: %s", err, line)
			}
			records = append(records, r)
		}
	}
	if len(records) != len(wants) {
		t.Fatalf("%d records, want %d:\n%s", len(records), len(wants), raw)
	}
	for _, tok := range []string{engineer, sales} {
		if strings.Contains(string(raw), tok) || strings.Contains(string(raw), strings.SplitN(tok, ".", 3)[2]) {
			t.Fatal("the audit trail holds a token")
		}
	}
	for i, w := range wants {
		r := records[i]
		if got := (want{r.User, r.Method, r.Name, r.Decision, r.Reason, r.Rule, r.Bucket}); got != w {
			t.Errorf("record %d = %+v, want %+v", i, got, w)
		}
		if r.Gateway != "default/gw" || r.Route != "default/mcp" || r.Server != "default/mcp" || r.Client != "127.0.0.1" ||
			r.Status != steps[i].status || r.HTTPMethod != http.MethodPost || r.LatencyMs <= 0 {
			t.Errorf("record %d: %+v", i, r)
		}
	}
	if a := records[0].Arguments; a == nil || a.Bytes != len(`{"q":"x"}`) || a.Value != nil {
		t.Errorf("arguments %+v, want size and hash only", a)
	}
}

// An edit whose condition is not CEL is reported in the status the
// gateway prints, and the policy before it keeps serving; fixing it
// applies the fix.
func TestAnInvalidConditionIsReportedWhileThePreviousPolicyServes(t *testing.T) {
	backend := startBackend(t)
	issuer, _ := startIssuer(t)
	policy := func(when string) string {
		return testgateway.OIDC(issuer.URL(), issuer.JWKSURL(), "limits") + `  authorization:
    rules:
    - name: engineers
      tools: ["expensive_*"]
      when: "` + when + `"
`
	}
	var port int
	g := testgateway.Start(t, func(p int) string {
		port = p
		return testgateway.Config(p, backend.addr, policy("'engineering' in claims.groups"))
	})
	token := func(user, group string) string {
		return claimsToken(t, issuer, user, map[string]any{"groups": []string{group}})
	}
	engineer, sales := token("alice", "engineering"), token("bob", "sales")
	call := `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"expensive_tool"}}`
	allowed := func(tok string) bool {
		before := backend.calls.Load()
		if status := post(t, g.URL, tok, http.MethodPost, call); status != http.StatusOK {
			t.Fatalf("status %d", status)
		}
		return backend.calls.Load() > before
	}
	if !allowed(engineer) || allowed(sales) {
		t.Fatal("the first policy does not hold")
	}

	// Sales would be let in by the edit, had it compiled.
	if err := os.WriteFile(g.Config, []byte(testgateway.Config(port, backend.addr, policy("claims.groups contains 'sales'"))), 0o600); err != nil {
		t.Fatal(err)
	}
	g.WaitFor(t, "reporting the invalid condition", func() bool {
		return strings.Contains(g.Log.String(), "AuthorizationValid=False")
	})
	out := g.Log.String()
	for _, want := range []string{"authorization.rules[engineers].when", "until it is fixed the last valid policy keeps serving"} {
		if !strings.Contains(out, want) {
			t.Errorf("the status printed does not say %q:\n%s", want, out)
		}
	}
	if !allowed(engineer) || allowed(sales) {
		t.Error("while the edit is invalid, the previous policy does not serve")
	}

	if err := os.WriteFile(g.Config, []byte(testgateway.Config(port, backend.addr, policy("'sales' in claims.groups"))), 0o600); err != nil {
		t.Fatal(err)
	}
	g.WaitFor(t, "applying the fix", func() bool {
		before := backend.calls.Load()
		_ = post(t, g.URL, sales, http.MethodPost, call)
		return backend.calls.Load() > before
	})
	if allowed(engineer) {
		t.Error("the fixed policy still lets engineers in")
	}
}

// claimsToken is a token of issuer for user, for the audience "limits",
// with extra claims.
func claimsToken(t *testing.T, issuer *testissuer.Issuer, user string, extra map[string]any) string {
	t.Helper()
	tok, err := issuer.TokenWithClaims(user, "limits", extra)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}
