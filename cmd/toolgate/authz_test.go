package main

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/toolgate/toolgate/internal/testgateway"
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
	token := func(user string, extra map[string]any) string {
		tok, err := issuer.TokenWithClaims(user, "limits", extra)
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
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
