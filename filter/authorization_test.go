package filter_test

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/toolgate/toolgate/filter"
	"github.com/toolgate/toolgate/filter/authz"
	"github.com/toolgate/toolgate/filter/limiter"
)

func TestAuthorizationDecidesWhoMayCallWhichTool(t *testing.T) {
	iss := newIssuer(t)
	policy := filter.Policy{
		Server: testServer, Auth: iss.auth(),
		PerUser: limit(100, time.Hour),
		Authorization: &authz.Policy{Rules: []authz.Rule{
			{Name: "engineers", Tools: []string{"search_*"}, When: "'engineering' in claims.groups"},
			{Name: "team-a", Tools: []string{"create_issue"}, When: "request.arguments.repo.startsWith('team-a/')"},
			{Name: "admins", Tools: []string{"delete_repo"}, Scopes: []string{"repo:admin"}},
			{Name: "go-reviews", Prompts: []string{"review_*"}, When: "request.arguments.lang == 'go'"},
			{Name: "docs", Resources: []string{"file:///docs/*"}},
		}},
	}
	engineer := iss.token(t, "alice", func(c claims) { c["groups"] = []string{"engineering"} })
	sales := iss.token(t, "bob", func(c claims) { c["groups"] = []string{"sales"}; c["scope"] = "repo:read" })
	admin := iss.token(t, "carol", func(c claims) { c["scope"] = "repo:read repo:admin" })
	tests := []struct {
		name       string
		token      string
		body       string
		wantStatus int
		wantCode   int // 0 when the call passes
	}{
		{"a glob by group", engineer, call(1, "search_code"), http.StatusOK, 0},
		{"another group: as if the tool did not exist", sales, call(2, "search_code"), http.StatusOK, filter.CodeInvalidParams},
		{"an argument allowed", sales, `{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"create_issue","arguments":{"repo":"team-a/api"}}}`, http.StatusOK, 0},
		{"an argument refused", sales, `{"jsonrpc":"2.0","id":4,"method":"tools/call","params":{"name":"create_issue","arguments":{"repo":"team-b/api"}}}`, http.StatusOK, filter.CodeInvalidParams},
		{"a scope held", admin, call(5, "delete_repo"), http.StatusOK, 0},
		{"a scope missing: 403 to step up", sales, call(6, "delete_repo"), http.StatusForbidden, filter.CodeInsufficientScope},
		{"a tool no rule names", engineer, call(7, "launch"), http.StatusOK, filter.CodeInvalidParams},
		{"a batch with one refused call is refused whole", engineer, "[" + call(8, "search_code") + "," + call(9, "launch") + "]", http.StatusOK, filter.CodeInvalidParams},
		{"other methods pass", sales, `{"jsonrpc":"2.0","id":10,"method":"tools/list"}`, http.StatusOK, 0},
		{"a prompt allowed by its arguments", sales, `{"jsonrpc":"2.0","id":12,"method":"prompts/get","params":{"name":"review_code","arguments":{"lang":"go"}}}`, http.StatusOK, 0},
		{"a prompt refused: unknown prompt", sales, `{"jsonrpc":"2.0","id":13,"method":"prompts/get","params":{"name":"review_code","arguments":{"lang":"rust"}}}`, http.StatusOK, filter.CodeInvalidParams},
		{"a resource allowed", sales, `{"jsonrpc":"2.0","id":14,"method":"resources/read","params":{"uri":"file:///docs/guide.md"}}`, http.StatusOK, 0},
		{"a resource refused: not found", sales, `{"jsonrpc":"2.0","id":15,"method":"resources/read","params":{"uri":"file:///etc/passwd"}}`, http.StatusOK, filter.CodeResourceNotFound},
		{"a subscription refused", sales, `{"jsonrpc":"2.0","id":16,"method":"resources/subscribe","params":{"uri":"file:///etc/passwd"}}`, http.StatusOK, filter.CodeResourceNotFound},
		{"a uri spelled twice is refused", sales, `{"jsonrpc":"2.0","id":17,"method":"resources/read","params":{"uri":"file:///docs/a","URI":"file:///etc/passwd"}}`, http.StatusBadRequest, filter.CodeInvalidRequest},
		{"arguments spelled twice are refused", sales, `{"jsonrpc":"2.0","id":11,"method":"tools/call","params":{"name":"create_issue","arguments":{"repo":"team-a/x"},"Arguments":{"repo":"team-b/x"}}}`, http.StatusBadRequest, filter.CodeInvalidRequest},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, policy)
			w := h.post(tt.token, tt.body)
			if w.Code != tt.wantStatus {
				t.Fatalf("status %d, want %d: %s", w.Code, tt.wantStatus, w.Body)
			}
			if tt.wantCode == 0 {
				if h.backend.hits.Load() != 1 {
					t.Errorf("the backend saw %d requests, want 1", h.backend.hits.Load())
				}
				return
			}
			if h.backend.hits.Load() != 0 {
				t.Errorf("the backend saw a refused call")
			}
			resp := decodeError(t, w)
			if resp.Error.Code != tt.wantCode {
				t.Errorf("code %d (%s), want %d", resp.Error.Code, resp.Error.Message, tt.wantCode)
			}
			if tt.wantStatus == http.StatusForbidden {
				challenge := w.Header().Get("WWW-Authenticate")
				for _, want := range []string{`error="insufficient_scope"`, `scope="repo:admin"`, `resource_metadata="`} {
					if !strings.Contains(challenge, want) {
						t.Errorf("WWW-Authenticate %q lacks %s", challenge, want)
					}
				}
			}
			// A refused call takes no token: the caller's bucket is full.
			for _, user := range []string{"alice", "bob", "carol"} {
				if !h.bucketHolds(t, limiter.BucketID{Server: testServer, User: user}, *limit(100, time.Hour), 100) {
					t.Errorf("a refused call took a token from %s's bucket", user)
				}
			}
		})
	}
}

func TestTheServersScopesAreRequiredOfEveryRequest(t *testing.T) {
	iss := newIssuer(t)
	h := newHarness(t, filter.Policy{Server: testServer, Auth: iss.auth(), Scopes: []string{"mcp:tools"}})
	without := iss.token(t, "alice", func(c claims) { c["scope"] = "openid" })
	with := iss.token(t, "bob", func(c claims) { c["scp"] = []string{"openid", "mcp:tools"} })
	w := h.post(without, `{"jsonrpc":"2.0","id":1,"method":"tools/list"}`)
	if w.Code != http.StatusForbidden || !strings.Contains(w.Header().Get("WWW-Authenticate"), `scope="mcp:tools"`) {
		t.Errorf("without the scope: status %d, WWW-Authenticate %q; want 403 naming mcp:tools", w.Code, w.Header().Get("WWW-Authenticate"))
	}
	if w := h.post(with, `{"jsonrpc":"2.0","id":1,"method":"tools/list"}`); w.Code != http.StatusOK {
		t.Errorf("with the scope: status %d, want 200", w.Code)
	}
}

func TestAnAuthorizationThatCannotBeEnforcedIsRefused(t *testing.T) {
	iss := newIssuer(t)
	for _, tt := range []struct {
		name   string
		policy filter.Policy
		want   string
	}{
		{"a condition that is not CEL", filter.Policy{Server: testServer, Auth: iss.auth(), Authorization: &authz.Policy{Rules: []authz.Rule{{Name: "r", Tools: []string{"t"}, When: "claims.groups contains 'x'"}}}}, "authorization.rules[r].when"},
		{"scopes without auth", filter.Policy{Server: testServer, Authorization: &authz.Policy{Rules: []authz.Rule{{Name: "r", Tools: []string{"t"}, Scopes: []string{"s"}}}}}, "scopes need auth"},
	} {
		if err := tt.policy.Validate(); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: Validate = %v, want an error with %q", tt.name, err, tt.want)
		}
	}
}

// A resource the caller may not read is answered as one that does not
// exist, in the words of the request's protocol generation: -32002 before
// 2026-07-28, -32602 from it (SEP-2164); both name the URI in data.uri.
func TestAHiddenResourceIsNotFoundInEachGenerationsWords(t *testing.T) {
	iss := newIssuer(t)
	policy := filter.Policy{Server: testServer, Auth: iss.auth(), Authorization: &authz.Policy{Rules: []authz.Rule{
		{Name: "docs", Resources: []string{"file:///docs/*"}},
	}}}
	token := iss.token(t, "bob")
	read := `{"jsonrpc":"2.0","id":5,"method":"resources/read","params":{"uri":"file:///etc/passwd"}}`
	for _, tt := range []struct {
		name     string
		headers  []string
		wantCode int
	}{
		{"2025-11-25", []string{"Mcp-Protocol-Version", "2025-11-25"}, filter.CodeResourceNotFound},
		{"2026-07-28", []string{"Mcp-Protocol-Version", "2026-07-28", "Mcp-Method", "resources/read"}, filter.CodeInvalidParams},
	} {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, policy)
			w := h.post(token, read, tt.headers...)
			var resp struct {
				ID    int `json:"id"`
				Error struct {
					Code    int    `json:"code"`
					Message string `json:"message"`
					Data    struct {
						URI string `json:"uri"`
					} `json:"data"`
				} `json:"error"`
			}
			if err := json.Unmarshal(w.Body.Bytes(), &resp); err != nil {
				t.Fatalf("%v: %s", err, w.Body)
			}
			if w.Code != http.StatusOK || resp.ID != 5 || resp.Error.Code != tt.wantCode || resp.Error.Message != "Resource not found" || resp.Error.Data.URI != "file:///etc/passwd" {
				t.Errorf("status %d, body %s; want 200, id 5, code %d, data.uri", w.Code, w.Body, tt.wantCode)
			}
			if h.backend.hits.Load() != 0 {
				t.Error("the backend saw the refused read")
			}
		})
	}
}

// The legacy HTTP+SSE transport's client reads answers from its event
// stream only: a refused message posted to it gets HTTP 403, which it sees.
func TestARefusalOnTheLegacyTransportIsAnHTTPError(t *testing.T) {
	iss := newIssuer(t)
	h := newHarness(t, filter.Policy{Server: testServer, Auth: iss.auth(), Authorization: &authz.Policy{Rules: []authz.Rule{
		{Name: "search", Tools: []string{"search"}},
	}}})
	token := iss.token(t, "bob")
	for target, want := range map[string]int{"/mcp?sessionId=abc": http.StatusForbidden, "/mcp?session=abc": http.StatusOK} {
		r := httptest.NewRequest(http.MethodPost, target, strings.NewReader(call(1, "launch")))
		r.Header.Set("Content-Type", "application/json")
		r.Header.Set("Authorization", "Bearer "+token)
		w := h.serve(r)
		if w.Code != want || decodeError(t, w).Error.Code != filter.CodeInvalidParams {
			t.Errorf("POST %s: status %d, body %s; want %d with invalid params", target, w.Code, w.Body, want)
		}
	}
}
