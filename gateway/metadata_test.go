package gateway

import (
	"net/http"
	"strings"
	"testing"
)

// protectedFilter is an ExtensionRef filter that protects its rules and
// answers metadata requests with the resource URL the gateway derived.
type protectedFilter struct{ name string }

func (p protectedFilter) Wrap(next http.Handler) http.Handler { return next }

func (p protectedFilter) ServeResourceMetadata(w http.ResponseWriter, _ *http.Request, resource string) {
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write([]byte(`{"filter":"` + p.name + `","resource":"` + resource + `"}`))
}

// protectedFilters builds a protectedFilter for every reference.
func protectedFilters(ref *ExtensionRef) (ExtensionFilter, error) {
	return protectedFilter{name: ref.Name}, nil
}

func protectedBy(name string) Filter { return resolvedRef(name) }

func TestResourceMetadataIsServedForTheRuleItsPathReaches(t *testing.T) {
	backend := echoBackend(t, "b")
	rules := func(protected ...Rule) []Rule {
		return append(protected, Rule{Matches: []Match{{Path: prefix("/")}}, Backends: []Backend{backendOf("b", 1, backend)}})
	}
	tests := []struct {
		name  string
		rules []Rule
		path  string
		want  string // the metadata body, or "" when the request is routed as any other
	}{
		{
			name:  "the path-suffixed form of a protected prefix",
			rules: rules(Rule{Matches: []Match{{Path: prefix("/github")}}, Filters: []Filter{protectedBy("github")}, Backends: []Backend{backendOf("b", 1, backend)}}),
			path:  "/.well-known/oauth-protected-resource/github/mcp",
			want:  `{"filter":"github","resource":"http://HOST/github/mcp"}`,
		},
		{
			name: "each protected route its own",
			rules: rules(
				Rule{Matches: []Match{{Path: prefix("/github")}}, Filters: []Filter{protectedBy("github")}, Backends: []Backend{backendOf("b", 1, backend)}},
				Rule{Matches: []Match{{Path: prefix("/jira")}}, Filters: []Filter{protectedBy("jira")}, Backends: []Backend{backendOf("b", 1, backend)}},
			),
			path: "/.well-known/oauth-protected-resource/jira",
			want: `{"filter":"jira","resource":"http://HOST/jira"}`,
		},
		{
			name:  "the root form when one protected rule is all the host has",
			rules: rules(Rule{Matches: []Match{{Path: prefix("/mcp")}}, Filters: []Filter{protectedBy("only")}, Backends: []Backend{backendOf("b", 1, backend)}}),
			path:  "/.well-known/oauth-protected-resource",
			want:  `{"filter":"only","resource":"http://HOST/mcp"}`,
		},
		{
			name: "no root form when two protected rules make it ambiguous",
			rules: rules(
				Rule{Matches: []Match{{Path: prefix("/github")}}, Filters: []Filter{protectedBy("github")}, Backends: []Backend{backendOf("b", 1, backend)}},
				Rule{Matches: []Match{{Path: prefix("/jira")}}, Filters: []Filter{protectedBy("jira")}, Backends: []Backend{backendOf("b", 1, backend)}},
			),
			path: "/.well-known/oauth-protected-resource",
		},
		{
			name:  "an unprotected path is routed as any other",
			rules: rules(Rule{Matches: []Match{{Path: prefix("/github")}}, Filters: []Filter{protectedBy("github")}, Backends: []Backend{backendOf("b", 1, backend)}}),
			path:  "/.well-known/oauth-protected-resource/public",
		},
		{
			name:  "a look-alike prefix is routed as any other",
			rules: rules(Rule{Matches: []Match{{Path: prefix("/github")}}, Filters: []Filter{protectedBy("github")}, Backends: []Backend{backendOf("b", 1, backend)}}),
			path:  "/.well-known/oauth-protected-resourcex/github",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newServer(t, Options{Extensions: protectedFilters})
			mustApply(t, s, oneRoute(tt.rules...))
			base := gatewayURL(t, s, "web")
			res, body := get(t, base+tt.path)
			if tt.want == "" {
				// The catch-all backend echoes what it received.
				if res.StatusCode != http.StatusOK || decodeEcho(t, body).Path != tt.path {
					t.Fatalf("status %d, body %s: want the request routed to the backend", res.StatusCode, body)
				}
				return
			}
			want := strings.ReplaceAll(tt.want, "HOST", strings.TrimPrefix(base, "http://"))
			if res.StatusCode != http.StatusOK || string(body) != want {
				t.Errorf("status %d, body %s; want 200 and %s", res.StatusCode, body, want)
			}
		})
	}
}
