package filter

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/toolgate/toolgate/filter/authz"
)

// Whatever a backend sends, the filter never forwards a list from which a
// client, reading it as Go's encoding/json does (keys without case, the
// last one winning) or as JavaScript does (exact keys, the last one
// winning), would learn a tool the caller may not see; and what it
// forwards is JSON.
func FuzzListFilterHidesWhatClientsWouldRead(f *testing.F) {
	for _, seed := range []string{
		`{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"create_x"},{"name":"search"}]}}`,
		`{"jsonrpc":"2.0","id":1,"result":{"ttlMs":0,"cacheScope":"public","tools":[{"name":"search"}]}}`,
		`[{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"search"}]}},{"jsonrpc":"2.0","id":2,"result":{}}]`,
		`{"jsonrpc":"2.0","id":1,"result":{"t\u006fols":[{"n\u0061me":"search"}],"Tools":[{"NAME":"search"}]}}`,
		`{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"create_x","name":"search"}],"tools":[{"name":"search"}]}}`,
		`{"result":{"tools":[{"name":"create_\"]}x"},{"description":"\\\\\"","name":"search"}]}}`,
		`{"jsonrpc":"2.0","id":1,"result":{"prompts":[{"name":"p"}],"resources":[{"uri":"file:///x"}],"resourceTemplates":[{"uriTemplate":"t"}]}}`,
	} {
		f.Add([]byte(seed))
	}
	shared, err := NewShared(SharedOptions{})
	if err != nil {
		f.Fatal(err)
	}
	filter, err := New(Policy{
		Server: "ns/s", Auth: &OIDCConfig{Issuer: "https://issuer.example.com", Audience: "a"},
		Authorization: &authz.Policy{Rules: []authz.Rule{{Name: "create", Tools: []string{"create_*"}}}},
	}, shared)
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		lf := listFilter{f: filter, who: caller{user: "bob"}}
		out, _, err := lf.rewrite(data)
		if err != nil {
			return // refused or cut: nothing forwarded
		}
		if !json.Valid(out) {
			t.Fatalf("forwarded what is not JSON: %q", out)
		}
		// As Go clients read it.
		var goMessages []struct {
			Result struct {
				Tools []struct {
					Name string `json:"name"`
				} `json:"tools"`
			} `json:"result"`
		}
		var one struct {
			Result struct {
				Tools []struct {
					Name string `json:"name"`
				} `json:"tools"`
			} `json:"result"`
		}
		if json.Unmarshal(out, &goMessages) != nil && json.Unmarshal(out, &one) == nil {
			goMessages = append(goMessages, one)
		}
		for _, m := range goMessages {
			for _, tool := range m.Result.Tools {
				if tool.Name != "" && !strings.HasPrefix(tool.Name, "create_") {
					t.Fatalf("a Go client reads hidden tool %q from %q (sent %q)", tool.Name, out, data)
				}
			}
		}
		// As JavaScript reads it: exact keys.
		var js any
		_ = json.Unmarshal(out, &js)
		messages, ok := js.([]any)
		if !ok {
			messages = []any{js}
		}
		for _, m := range messages {
			obj, _ := m.(map[string]any)
			result, _ := obj["result"].(map[string]any)
			tools, _ := result["tools"].([]any)
			for _, tool := range tools {
				item, _ := tool.(map[string]any)
				if name, _ := item["name"].(string); name != "" && !strings.HasPrefix(name, "create_") {
					t.Fatalf("a JavaScript client reads hidden tool %q from %q (sent %q)", name, out, data)
				}
			}
		}
	})
}
