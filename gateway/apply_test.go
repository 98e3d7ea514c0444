package gateway

import (
	"errors"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/toolgate/toolgate/filter"
)

// Apply builds what a Config only describes (TLS pairs, extension filters);
// when that fails, the Apply fails as a whole and the previous snapshot
// keeps serving.
func TestApplyFailsWhenASnapshotCannotBeBuiltAndKeepsServingThePreviousOne(t *testing.T) {
	good := Listener{Name: "tls", Address: "127.0.0.2", Protocol: ProtocolHTTPS, Certificates: testCertificates(t, "a.example.com")}
	other := testCertificates(t, "b.example.com")
	cases := []struct {
		name       string
		extensions ExtensionBuilder
		change     func(cfg *Config)
		want       []string // in the error
	}{
		{
			name: "a certificate that is not PEM",
			change: func(cfg *Config) {
				l := good
				l.Certificates = []Certificate{{CertificatePEM: "not a certificate", PrivateKeyPEM: good.Certificates[0].PrivateKeyPEM}}
				cfg.Listeners = append(cfg.Listeners, l)
			},
			want: []string{`listener "tls"`, "certificate 0"},
		},
		{
			name: "a key that does not match its certificate",
			change: func(cfg *Config) {
				l := good
				l.Certificates = []Certificate{{CertificatePEM: good.Certificates[0].CertificatePEM, PrivateKeyPEM: other[0].PrivateKeyPEM}}
				cfg.Listeners = append(cfg.Listeners, l)
			},
			want: []string{`listener "tls"`, "private key does not match"},
		},
		{
			name: "a redacted key",
			change: func(cfg *Config) {
				cfg.Listeners = append(cfg.Listeners, (&Config{Listeners: []Listener{good}}).Redacted().Listeners[0])
			},
			want: []string{`listener "tls"`, "certificate 0"},
		},
		{
			name: "an extension builder that fails",
			extensions: func(*ExtensionRef) (ExtensionFilter, error) {
				return nil, errors.New("policy refused")
			},
			change: func(cfg *Config) { addRule(cfg, Rule{Filters: []Filter{resolvedRef("github")}}) },
			want:   []string{`"github"`, "policy refused"},
		},
		{
			name:       "an extension builder that builds nothing",
			extensions: func(*ExtensionRef) (ExtensionFilter, error) { return nil, nil },
			change:     func(cfg *Config) { addRule(cfg, Rule{Filters: []Filter{resolvedRef("github")}}) },
			want:       []string{`"github"`, "no filter"},
		},
		{
			name:   "a resolved reference and no extension builder",
			change: func(cfg *Config) { addRule(cfg, Rule{Filters: []Filter{resolvedRef("github")}}) },
			want:   []string{`"github"`, "Options.Extensions"},
		},
		{
			name:       "a backend filter the builder refuses",
			extensions: fakeExtensions{}.build,
			change: func(cfg *Config) {
				addRule(cfg, Rule{Backends: []Backend{{Name: "b", Weight: 1, Filters: []Filter{resolvedRef("jira")}}}})
			},
			want: []string{`"jira"`, "no fake filter"},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			old := echoBackend(t, "old")
			s := newServer(t, Options{Extensions: tc.extensions})
			base := oneRoute(Rule{Backends: []Backend{backendOf("old", 1, old)}})
			mustApply(t, s, base)
			url := gatewayURL(t, s, "web")

			next := oneRoute(Rule{Backends: []Backend{backendOf("old", 1, old)}})
			tc.change(next)
			err := s.Apply(next)
			if err == nil {
				t.Fatal("Apply accepted the config")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("Apply error %q does not say %q", err, w)
				}
			}
			if s.Addr("tls") != nil {
				t.Error("the failed config's listener was opened")
			}
			if resp, body := get(t, url+"/"); resp.StatusCode != http.StatusOK || decodeEcho(t, body).Backend != "old" {
				t.Errorf("after the failed Apply: %d %s, want the previous snapshot to serve", resp.StatusCode, body)
			}
		})
	}
}

// addRule appends a rule to the one route of a oneRoute config.
func addRule(cfg *Config, r Rule) {
	route := &cfg.Listeners[0].VirtualHosts[0].Routes[0]
	route.Rules = append(route.Rules, r)
}

// Rules and backends referring to one MCPServer share one filter in a
// snapshot: it holds per-server state worth building once.
func TestExtensionFiltersAreBuiltOncePerDistinctReferenceInASnapshot(t *testing.T) {
	be := echoBackend(t, "b")
	var builds atomic.Int64
	var built []string
	s := newServer(t, Options{Extensions: func(ref *ExtensionRef) (ExtensionFilter, error) {
		builds.Add(1)
		built = append(built, ref.Name+" "+ref.MCPServer.ResourceURL)
		return extensionFunc(func(next http.Handler) http.Handler { return next }), nil
	}})
	ref := func(name, resourceURL string) Filter {
		// A new policy each time, as the translator copies it per filter.
		f := resolvedRef(name)
		f.ExtensionRef.MCPServer = &filter.Policy{Server: "ns/" + name, ResourceURL: resourceURL}
		return f
	}
	cfg := oneRoute(
		Rule{Matches: []Match{{Path: prefix("/a")}}, Filters: []Filter{ref("github", "")}, Backends: []Backend{backendOf("b", 1, be)}},
		Rule{Matches: []Match{{Path: prefix("/b")}}, Filters: []Filter{ref("github", "")}, Backends: []Backend{backendOf("b", 1, be)}},
		Rule{Matches: []Match{{Path: prefix("/c")}}, Backends: []Backend{func() Backend {
			b := backendOf("b", 1, be)
			b.Filters = []Filter{ref("github", "")}
			return b
		}()}},
		// The same name with another policy (an MCPServer mid-change) and
		// another name: a filter each.
		Rule{Matches: []Match{{Path: prefix("/d")}}, Filters: []Filter{ref("github", "https://mcp.example.com/github")}, Backends: []Backend{backendOf("b", 1, be)}},
		Rule{Matches: []Match{{Path: prefix("/e")}}, Filters: []Filter{ref("jira", "")}, Backends: []Backend{backendOf("b", 1, be)}},
		// Unresolved: nothing to build.
		Rule{Matches: []Match{{Path: prefix("/f")}}, Filters: []Filter{{Type: FilterExtensionRef, ExtensionRef: &ExtensionRef{Group: "toolgate.dev", Kind: "MCPServer", Name: "missing"}}}},
	)
	mustApply(t, s, cfg)
	if got := builds.Load(); got != 3 {
		t.Errorf("the builder was called %d times (%q), want 3: github, github with another policy, jira", got, built)
	}
	for _, path := range []string{"/a", "/b", "/c", "/d", "/e"} {
		if resp, body := get(t, gatewayURL(t, s, "web")+path); resp.StatusCode != http.StatusOK {
			t.Errorf("GET %s = %d %s, want 200", path, resp.StatusCode, body)
		}
	}
	if resp, _ := get(t, gatewayURL(t, s, "web")+"/f"); resp.StatusCode != http.StatusInternalServerError {
		t.Errorf("GET /f (unresolved) = %d, want 500", resp.StatusCode)
	}

	// A new snapshot builds its own.
	mustApply(t, s, cfg)
	if got := builds.Load(); got != 6 {
		t.Errorf("after a second Apply the builder was called %d times, want 6", got)
	}
}
