package filter_test

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/toolgate/toolgate/filter"
)

func TestTheMetadataNamesTheIssuerOfTokensForTheResource(t *testing.T) {
	iss := newIssuer(t)
	tests := []struct {
		name         string
		policy       filter.Policy
		wantStatus   int
		wantResource string
		wantScopes   []string
	}{
		{name: "the resource the gateway derived", policy: filter.Policy{Server: testServer, Auth: iss.auth()},
			wantStatus: http.StatusOK, wantResource: "http://gw.example.com/github/mcp"},
		{name: "the resource URL of the policy, with scopes", policy: filter.Policy{Server: testServer, Auth: iss.auth(), ResourceURL: "https://mcp.example.com/github", Scopes: []string{"tools.call"}},
			wantStatus: http.StatusOK, wantResource: "https://mcp.example.com/github", wantScopes: []string{"tools.call"}},
		{name: "no auth, no protected resource", policy: filter.Policy{Server: testServer, Global: limit(1, time.Hour)},
			wantStatus: http.StatusNotFound},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			shared, err := filter.NewShared(filter.SharedOptions{})
			if err != nil {
				t.Fatal(err)
			}
			f, err := filter.New(tt.policy, shared)
			if err != nil {
				t.Fatal(err)
			}
			r := httptest.NewRequest(http.MethodGet, "http://gw.example.com/.well-known/oauth-protected-resource/github/mcp", nil)
			w := httptest.NewRecorder()
			f.ServeResourceMetadata(w, r, "http://gw.example.com/github/mcp")
			if w.Code != tt.wantStatus {
				t.Fatalf("status %d, want %d: %s", w.Code, tt.wantStatus, w.Body)
			}
			if tt.wantStatus != http.StatusOK {
				return
			}
			// RFC 9728 section 2: resource is required; the others are what
			// an MCP client needs to find the authorization server.
			var doc map[string]any
			if err := json.Unmarshal(w.Body.Bytes(), &doc); err != nil {
				t.Fatalf("body %s: %v", w.Body, err)
			}
			if doc["resource"] != tt.wantResource {
				t.Errorf("resource = %v, want %s", doc["resource"], tt.wantResource)
			}
			if servers, _ := doc["authorization_servers"].([]any); len(servers) != 1 || servers[0] != iss.URL() {
				t.Errorf("authorization_servers = %v, want [%s]", doc["authorization_servers"], iss.URL())
			}
			if methods, _ := doc["bearer_methods_supported"].([]any); len(methods) != 1 || methods[0] != "header" {
				t.Errorf("bearer_methods_supported = %v, want [header]", doc["bearer_methods_supported"])
			}
			scopes, _ := doc["scopes_supported"].([]any)
			if len(scopes) != len(tt.wantScopes) {
				t.Errorf("scopes_supported = %v, want %v", doc["scopes_supported"], tt.wantScopes)
			}
			if w.Header().Get("Content-Type") != "application/json" || w.Header().Get("Access-Control-Allow-Origin") != "*" {
				t.Errorf("headers %v: want JSON readable from any origin", w.Header())
			}
		})
	}
}

// Accepted audiences come from the policy only: the audience, and the
// resource URL when it names one. The URL a request reached the gateway at
// (its Host, which the client chooses) is never accepted.
func TestATokenForTheResourceURLIsAcceptedAsOneForTheAudience(t *testing.T) {
	iss := newIssuer(t)
	const resource = "https://mcp.example.com/github/mcp"
	tests := []struct {
		name     string
		resource string // the policy's ResourceURL
		aud      any
		want     int
		wantHint string // in WWW-Authenticate
	}{
		{name: "the audience", aud: "toolgate", want: http.StatusOK},
		{name: "the URL the request reached, with no resource URL set", aud: "http://example.com/mcp", want: http.StatusUnauthorized, wantHint: `resource_metadata="http://example.com/.well-known/oauth-protected-resource/mcp"`},
		{name: "the policy's resource URL", resource: resource, aud: resource, want: http.StatusOK},
		{name: "the derived URL when the policy names another", resource: resource, aud: "http://example.com/mcp", want: http.StatusUnauthorized},
		{name: "another resource", aud: "http://example.com/other", want: http.StatusUnauthorized, wantHint: `resource_metadata="http://example.com/.well-known/oauth-protected-resource/mcp"`},
		{name: "another resource, with the policy's metadata URL", resource: resource, aud: "x", want: http.StatusUnauthorized, wantHint: `resource_metadata="https://mcp.example.com/.well-known/oauth-protected-resource/github/mcp"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, filter.Policy{Server: testServer, Auth: iss.auth(), ResourceURL: tt.resource, PerUser: limit(10, time.Hour)})
			token := iss.token(t, "alice", func(c claims) { c["aud"] = tt.aud })
			w := h.post(token, call(1, "t"))
			if w.Code != tt.want {
				t.Fatalf("status %d, want %d: %s", w.Code, tt.want, w.Body)
			}
			if got := w.Header().Get("WWW-Authenticate"); !strings.Contains(got, tt.wantHint) {
				t.Errorf("WWW-Authenticate = %s, want it to hold %s", got, tt.wantHint)
			}
		})
	}
}

func TestAPolicyResourceURLMustBeAnAbsoluteURL(t *testing.T) {
	iss := newIssuer(t)
	for _, bad := range []string{"/github/mcp", "ftp://mcp.example.com/x", "https://mcp.example.com/x?tenant=a", "https:///x"} {
		err := filter.Policy{Server: testServer, Auth: iss.auth(), ResourceURL: bad}.Validate()
		if err == nil || !strings.Contains(err.Error(), "resourceURL") {
			t.Errorf("ResourceURL %q: error %v, want one about resourceURL", bad, err)
		}
	}
	if err := (filter.Policy{Server: testServer, ResourceURL: "https://mcp.example.com/x"}).Validate(); err == nil {
		t.Error("a ResourceURL without auth was accepted")
	}
}

// A token the same issuer minted for another service is refused whatever
// Host the client sends with it.
func TestATokenForAnotherServiceIsRefusedWhateverTheHost(t *testing.T) {
	iss := newIssuer(t)
	for _, resourceURL := range []string{"", "https://mcp.example.com/github/mcp"} {
		h := newHarness(t, filter.Policy{Server: testServer, Auth: iss.auth(), ResourceURL: resourceURL, PerUser: limit(10, time.Hour)})
		token := iss.token(t, "alice", func(c claims) { c["aud"] = "https://other.example/mcp" })
		for _, host := range []string{"other.example", "other.example:443", "mcp.example.com"} {
			r := httptest.NewRequest(http.MethodPost, "https://"+host+"/mcp", strings.NewReader(call(1, "t")))
			r.Header.Set("Content-Type", "application/json")
			r.Header.Set("Authorization", "Bearer "+token)
			if w := h.serve(r); w.Code != http.StatusUnauthorized {
				t.Errorf("resourceURL %q, Host %s: status %d, want 401", resourceURL, host, w.Code)
			}
		}
		if got := h.backend.hits.Load(); got != 0 {
			t.Errorf("resourceURL %q: the backend saw %d requests", resourceURL, got)
		}
	}
}
