package gateway

import (
	"net/http"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/toolgate/toolgate/filter"
)

func TestCORSOriginPatterns(t *testing.T) {
	cases := []struct {
		pattern, origin string
		want            bool
	}{
		{"https://www.foo.com", "https://www.foo.com", true},
		{"https://www.foo.com", "https://WWW.Foo.com", true},
		{"https://www.foo.com", "https://www.foo.com:443", true},
		{"https://www.foo.com", "https://www.foo.com:8443", false},
		{"https://www.foo.com", "http://www.foo.com", false},
		{"https://www.foo.com:8443", "https://www.foo.com:8443", true},
		{"http://localhost:6274", "http://localhost:6274", true},
		{"http://localhost", "http://localhost:6274", false},
		{"https://*.bar.com", "https://www.bar.com", true},
		{"https://*.bar.com", "https://xpto.www.bar.com", true},
		{"https://*.bar.com", "https://bar.com", false},
		{"https://*.bar.com", "https://evilbar.com", false},
		{"https://*.bar.com", "https://www.bar.com.evil.com", false},
		{"http://*", "http://anything.example", true},
		{"http://*", "http://[::1]", true},
		{"http://*", "http://anything.example:8080", false},
		{"http://*", "https://anything.example", false},
		{"https://www.foo.com", "https://www.foo.com/", false},
		{"https://www.foo.com", "https://user@www.foo.com", false},
		{"https://www.foo.com", "null", false},
		{"https://www.foo.com", "https://*.foo.com", false},
	}
	for _, tc := range cases {
		p, ok := parseOrigin(tc.pattern, true)
		if !ok {
			t.Fatalf("pattern %q does not parse", tc.pattern)
		}
		o, ok := parseOrigin(tc.origin, false)
		if got := ok && p.allows(o); got != tc.want {
			t.Errorf("%q allows %q: %v, want %v", tc.pattern, tc.origin, got, tc.want)
		}
	}
}

func TestCORSCheckSaysWhatToFix(t *testing.T) {
	cases := []struct {
		name string
		cors CORS
		want string // "" for valid
	}{
		{"the upstream example", CORS{AllowOrigins: []string{"https://www.foo.com", "https://*.bar.com"}, AllowMethods: []string{"GET", "OPTIONS"},
			AllowHeaders: []string{"x-header-1"}, ExposeHeaders: []string{"x-header-3"}, AllowCredentials: true, MaxAge: 3600}, ""},
		{"wildcards alone", CORS{AllowOrigins: []string{"*"}, AllowMethods: []string{"*"}, AllowHeaders: []string{"*"}, ExposeHeaders: []string{"*", "Mcp-Session-Id"}}, ""},
		{"an origin with a path", CORS{AllowOrigins: []string{"https://app.example/mcp"}}, `allowOrigins[0]: "https://app.example/mcp" is not an origin`},
		{"another scheme", CORS{AllowOrigins: []string{"https://a.example", "ftp://a.example"}}, `allowOrigins[1]: "ftp://a.example" is not an origin`},
		{"a wildcard inside a host", CORS{AllowOrigins: []string{"https://a.*.example"}}, "is not an origin"},
		{"a port out of range", CORS{AllowOrigins: []string{"https://a.example:65536"}}, "is not an origin"},
		{"a wildcard beside origins", CORS{AllowOrigins: []string{"*", "https://a.example"}}, `allowOrigins: "*" allows everything and must be alone`},
		{"a wildcard beside methods", CORS{AllowMethods: []string{"GET", "*"}}, `allowMethods: "*" allows everything`},
		{"a method that is not a token", CORS{AllowMethods: []string{"GET POST"}}, `allowMethods[0]: "GET POST" is not a method`},
		{"a header name that is not a token", CORS{AllowHeaders: []string{"x:y"}}, `allowHeaders[0]: "x:y" is not a header name`},
		{"an exposed name that is not a token", CORS{ExposeHeaders: []string{""}}, `exposeHeaders[0]: "" is not a header name`},
		{"a negative max age", CORS{MaxAge: -1}, "maxAge: -1 is not a number of seconds"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.cors.Check()
			switch {
			case tc.want == "" && err != nil:
				t.Errorf("Check() = %v, want nil", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Errorf("Check() = %v, want an error saying %q", err, tc.want)
			}
		})
	}
}

// corsGateway serves corsRoute in front of backend and returns its URL.
func corsGateway(t *testing.T, backend http.Handler) string {
	t.Helper()
	s := newServer(t, Options{})
	mustApply(t, s, corsRoute(backendOf("b", 1, newHTTPTestServer(t, backend))))
	return gatewayURL(t, s, "web")
}

// corsRoute is the upstream conformance test's routes (HTTPRouteCORS), and
// one that exposes every header with credentials.
func corsRoute(backend Backend) *Config {
	rule := func(path string, c CORS) Rule {
		return Rule{Matches: []Match{{Path: prefix(path)}}, Filters: []Filter{{Type: FilterCORS, CORS: &c}}, Backends: []Backend{backend}}
	}
	return oneRoute(
		rule("/cors-1", CORS{
			AllowOrigins: []string{"https://www.foo.com", "https://*.bar.com"}, AllowMethods: []string{"GET", "OPTIONS"},
			AllowHeaders: []string{"x-header-1", "x-header-2"}, ExposeHeaders: []string{"x-header-3", "x-header-4"},
			AllowCredentials: true, MaxAge: 3600,
		}),
		rule("/cors-2", CORS{AllowOrigins: []string{"https://www.foo.com"}, AllowMethods: []string{"*"}, MaxAge: 5}),
		rule("/cors-wildcard-origin", CORS{AllowOrigins: []string{"*"}, AllowMethods: []string{"PUT"}, MaxAge: 5}),
		rule("/cors-wildcard-methods-headers", CORS{AllowOrigins: []string{"*"}, AllowMethods: []string{"*"}, AllowHeaders: []string{"*"}, AllowCredentials: true, MaxAge: 5}),
		rule("/cors-wildcard-unauth", CORS{AllowOrigins: []string{"*"}, AllowMethods: []string{"*"}, AllowHeaders: []string{"*"}, ExposeHeaders: []string{"*"}, MaxAge: 5}),
		rule("/expose-all-with-credentials", CORS{AllowOrigins: []string{"https://app.example"}, ExposeHeaders: []string{"*"}, AllowCredentials: true}),
	)
}

// ownCORSHeaders is a backend that answers with CORS headers of its own,
// which the route's filter must replace.
func ownCORSHeaders(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Access-Control-Allow-Origin", "https://backend.example")
		w.Header().Set("Access-Control-Expose-Headers", "X-Backend-Secret")
		w.Header().Set("Vary", "Accept-Encoding")
		w.Header().Set("Mcp-Session-Id", "s1")
		next.ServeHTTP(w, r)
	})
}

// preflight sends a browser's preflight from origin for method, with the
// request headers it asks for ("" for none).
func preflight(t *testing.T, url, origin, method, headers string) *http.Response {
	t.Helper()
	req, err := http.NewRequest(http.MethodOptions, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Origin", origin)
	req.Header.Set("Access-Control-Request-Method", method)
	if headers != "" {
		req.Header.Set("Access-Control-Request-Headers", headers)
	}
	resp, _ := do(t, req)
	return resp
}

func TestCORSPreflightsAreAnsweredByTheGateway(t *testing.T) {
	var reached atomic.Int64
	base := corsGateway(t, &countingBackend{next: echoHandler("b"), n: &reached})

	cases := []struct {
		name            string
		path            string
		method, headers string // asked for
		origin          string
		status          int
		want            map[string]string // "" for absent
	}{
		{"an exact origin gets the configured lists", "/cors-1", "GET", "x-header-1, x-header-2",
			"https://www.foo.com", 204, map[string]string{
				"Access-Control-Allow-Origin": "https://www.foo.com", "Access-Control-Allow-Methods": "GET, OPTIONS",
				"Access-Control-Allow-Headers": "x-header-1, x-header-2", "Access-Control-Expose-Headers": "x-header-3, x-header-4",
				"Access-Control-Max-Age": "3600", "Access-Control-Allow-Credentials": "true", "Vary": "Origin",
			}},
		{"a wildcard origin matches any depth to its left", "/cors-1", "GET", "",
			"https://xpto.www.bar.com", 204, map[string]string{"Access-Control-Allow-Origin": "https://xpto.www.bar.com"}},
		{"an origin that does not match gets 403 and no CORS header", "/cors-1", "GET", "",
			"https://foobar.com", 403, map[string]string{"Access-Control-Allow-Origin": "", "Access-Control-Allow-Methods": "", "Access-Control-Allow-Credentials": "", "Vary": "Origin"}},
		{"a wildcard method list answers the method asked for", "/cors-2", "POST", "",
			"https://www.foo.com", 204, map[string]string{
				"Access-Control-Allow-Methods": "POST", "Access-Control-Allow-Credentials": "", "Access-Control-Max-Age": "5",
				"Vary": "Origin, Access-Control-Request-Method",
			}},
		{"a wildcard origin without credentials answers *", "/cors-wildcard-origin", "PUT", "",
			"https://foobar.com:12345", 204, map[string]string{"Access-Control-Allow-Origin": "*", "Access-Control-Allow-Methods": "PUT", "Vary": ""}},
		{"a wildcard origin with credentials echoes the origin", "/cors-wildcard-methods-headers",
			"PUT", "authorization, x-header-1",
			"https://other.foo.com", 204, map[string]string{
				"Access-Control-Allow-Origin": "https://other.foo.com", "Access-Control-Allow-Methods": "PUT",
				"Access-Control-Allow-Headers": "authorization, x-header-1", "Access-Control-Allow-Credentials": "true",
			}},
		{"wildcard headers without credentials still name them, for Authorization", "/cors-wildcard-unauth",
			"POST", "authorization, mcp-protocol-version",
			"https://other.foo.com", 204, map[string]string{
				"Access-Control-Allow-Origin": "*", "Access-Control-Allow-Headers": "authorization, mcp-protocol-version",
				"Access-Control-Expose-Headers": "*", "Access-Control-Allow-Credentials": "",
			}},
		{"wildcard headers and no header asked for", "/cors-wildcard-unauth", "POST", "",
			"https://other.foo.com", 204, map[string]string{"Access-Control-Allow-Headers": ""}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := reached.Load()
			resp := preflight(t, base+tc.path, tc.origin, tc.method, tc.headers)
			if resp.StatusCode != tc.status {
				t.Fatalf("status %d, want %d", resp.StatusCode, tc.status)
			}
			for name, want := range tc.want {
				if got := strings.Join(resp.Header.Values(name), ", "); got != want {
					t.Errorf("%s = %q, want %q", name, got, want)
				}
			}
			if reached.Load() != before {
				t.Error("the preflight reached the backend")
			}
		})
	}
	t.Run("an OPTIONS request that is not a preflight reaches the backend", func(t *testing.T) {
		before := reached.Load()
		req, err := http.NewRequest(http.MethodOptions, base+"/cors-1", nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Origin", "https://www.foo.com")
		resp, _ := do(t, req)
		if resp.StatusCode != http.StatusOK || reached.Load() != before+1 {
			t.Errorf("status %d, backend reached %d times, want the backend's 200", resp.StatusCode, reached.Load()-before)
		}
		if got := resp.Header.Get("Access-Control-Allow-Origin"); got != "https://www.foo.com" {
			t.Errorf("Access-Control-Allow-Origin = %q, want the origin", got)
		}
	})
}

func TestCORSHeadersOfActualResponses(t *testing.T) {
	base := corsGateway(t, ownCORSHeaders(echoHandler("b")))

	cases := []struct {
		name string
		path string
		send []string
		want map[string]string // "" for absent
	}{
		{"a matching origin gets the filter's headers, not the backend's", "/cors-1", []string{"Origin", "https://www.bar.com"}, map[string]string{
			"Access-Control-Allow-Origin": "https://www.bar.com", "Access-Control-Allow-Credentials": "true",
			"Access-Control-Expose-Headers": "x-header-3, x-header-4", "Access-Control-Allow-Methods": "", "Access-Control-Max-Age": "",
			"Vary": "Accept-Encoding, Origin",
		}},
		{"an origin that does not match gets no CORS header, the backend's neither", "/cors-1", []string{"Origin", "https://foobar.com"}, map[string]string{
			"Access-Control-Allow-Origin": "", "Access-Control-Expose-Headers": "", "Access-Control-Allow-Credentials": "", "Vary": "Accept-Encoding, Origin",
		}},
		{"a request without Origin is told the answer varies with it", "/cors-1", nil, map[string]string{
			"Access-Control-Allow-Origin": "", "Vary": "Accept-Encoding, Origin",
		}},
		{"two Origin fields are no origin", "/cors-1", []string{"Origin", "https://www.foo.com", "Origin", "https://www.bar.com"}, map[string]string{
			"Access-Control-Allow-Origin": "",
		}},
		{"a wildcard origin without credentials answers * for every origin", "/cors-wildcard-origin", []string{"Origin", "https://foobar.com:12345"}, map[string]string{
			"Access-Control-Allow-Origin": "*", "Access-Control-Allow-Credentials": "", "Vary": "Accept-Encoding",
		}},
		{"a wildcard origin with credentials echoes the origin", "/cors-wildcard-methods-headers", []string{"Origin", "https://other.foo.com"}, map[string]string{
			"Access-Control-Allow-Origin": "https://other.foo.com", "Access-Control-Allow-Credentials": "true",
		}},
		{"exposing * with credentials names the response's fields", "/expose-all-with-credentials", []string{"Origin", "https://app.example"}, map[string]string{
			"Access-Control-Expose-Headers": "Date, Mcp-Session-Id, Vary, X-Backend",
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			resp, body := get(t, base+tc.path, tc.send...)
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("status %d: %s", resp.StatusCode, body)
			}
			for name, want := range tc.want {
				if got := strings.Join(resp.Header.Values(name), ", "); got != want {
					t.Errorf("%s = %q, want %q", name, got, want)
				}
			}
		})
	}
}

// refusing is an ExtensionRef filter that refuses every request with 401
// and a challenge, as the MCP filter refuses one without a token.
var refusing = extensionFunc(func(http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("WWW-Authenticate", `Bearer realm="toolgate"`)
		w.WriteHeader(http.StatusUnauthorized)
	})
})

func TestCORSWrapsTheOtherFiltersOfItsRuleWhereverItIsListed(t *testing.T) {
	var reached atomic.Int64
	be := newHTTPTestServer(t, &countingBackend{next: echoHandler("b"), n: &reached})
	cors := Filter{Type: FilterCORS, CORS: &CORS{
		AllowOrigins: []string{"https://app.example"}, AllowMethods: []string{"POST"}, AllowHeaders: []string{"Authorization"},
		ExposeHeaders: []string{"WWW-Authenticate"},
	}}
	cfg := oneRoute(
		Rule{Matches: []Match{{Path: prefix("/after")}}, Filters: []Filter{resolvedRef("refusing"), cors}, Backends: []Backend{backendOf("b", 1, be)}},
		Rule{Matches: []Match{{Path: prefix("/before")}}, Filters: []Filter{cors, resolvedRef("refusing")}, Backends: []Backend{backendOf("b", 1, be)}},
		Rule{Matches: []Match{{Path: prefix("/redirect")}}, Filters: []Filter{
			{Type: FilterRequestRedirect, RequestRedirect: &Redirect{Hostname: "example.org"}}, cors,
		}},
		Rule{Matches: []Match{{Path: prefix("/backend")}}, Backends: []Backend{{
			Name: "b", Weight: 1, Endpoints: backendOf("b", 1, be).Endpoints, Filters: []Filter{cors},
		}}},
	)
	s := newServer(t, Options{Extensions: fakeExtensions{"refusing": refusing}.build})
	mustApply(t, s, cfg)
	base := gatewayURL(t, s, "web")

	for _, path := range []string{"/after", "/before", "/redirect", "/backend"} {
		t.Run(path, func(t *testing.T) {
			before := reached.Load()
			resp := preflight(t, base+path, "https://app.example", "POST", "authorization")
			if resp.StatusCode != http.StatusNoContent || resp.Header.Get("Access-Control-Allow-Origin") != "https://app.example" {
				t.Fatalf("preflight: status %d, Access-Control-Allow-Origin %q, want 204 from the CORS filter",
					resp.StatusCode, resp.Header.Get("Access-Control-Allow-Origin"))
			}
			if reached.Load() != before {
				t.Error("the preflight reached the backend")
			}

			resp, _ = get(t, base+path, "Origin", "https://app.example")
			if got := resp.Header.Get("Access-Control-Allow-Origin"); got != "https://app.example" {
				t.Errorf("status %d with Access-Control-Allow-Origin %q, want the origin", resp.StatusCode, got)
			}
			if got := resp.Header.Get("Access-Control-Expose-Headers"); got != "WWW-Authenticate" {
				t.Errorf("status %d with Access-Control-Expose-Headers %q, want WWW-Authenticate", resp.StatusCode, got)
			}
		})
	}
}

func TestTheMCPFilterNeverSeesAPreflightOfARouteWithCORS(t *testing.T) {
	var reached atomic.Int64
	be := newHTTPTestServer(t, &countingBackend{next: echoHandler("b"), n: &reached})
	shared, err := filter.NewShared(filter.SharedOptions{})
	if err != nil {
		t.Fatal(err)
	}
	build := func(ref *ExtensionRef) (ExtensionFilter, error) { return filter.New(*ref.MCPServer, shared) }
	ref := resolvedRef("mcp")
	ref.ExtensionRef.MCPServer = &filter.Policy{Server: "ns/mcp", Auth: &filter.OIDCConfig{
		Issuer: "http://127.0.0.1:9/issuer", JWKSURL: "http://127.0.0.1:9/jwks", Audience: "toolgate", AllowInsecureHTTP: true,
	}}
	cors := Filter{Type: FilterCORS, CORS: &CORS{AllowOrigins: []string{"https://app.example"}, ExposeHeaders: []string{"WWW-Authenticate"}}}
	s := newServer(t, Options{Extensions: build})
	mustApply(t, s, oneRoute(
		Rule{Matches: []Match{{Path: prefix("/cors")}}, Filters: []Filter{ref, cors}, Backends: []Backend{backendOf("b", 1, be)}},
		Rule{Matches: []Match{{Path: prefix("/plain")}}, Filters: []Filter{ref}, Backends: []Backend{backendOf("b", 1, be)}},
	))
	base := gatewayURL(t, s, "web")

	if resp := preflight(t, base+"/cors", "https://app.example", "POST", ""); resp.StatusCode != http.StatusNoContent || reached.Load() != 0 {
		t.Errorf("with a CORS filter: preflight status %d, backend reached %d times; want 204 from the gateway", resp.StatusCode, reached.Load())
	}
	resp, _ := get(t, base+"/cors", "Origin", "https://app.example")
	if resp.StatusCode != http.StatusUnauthorized || resp.Header.Get("Access-Control-Allow-Origin") != "https://app.example" ||
		resp.Header.Get("Access-Control-Expose-Headers") != "WWW-Authenticate" || resp.Header.Get("WWW-Authenticate") == "" {
		t.Errorf("with a CORS filter, no token: status %d, headers %v; want 401 readable by the origin", resp.StatusCode, resp.Header)
	}
	// Without a CORS filter the MCP filter lets the preflight pass to
	// the backend, which answers CORS itself.
	if resp := preflight(t, base+"/plain", "https://app.example", "POST", ""); resp.StatusCode != http.StatusOK || reached.Load() != 1 {
		t.Errorf("without a CORS filter: preflight status %d, backend reached %d times; want the backend's 200", resp.StatusCode, reached.Load())
	}
}

func TestARuleWithTwoCORSFiltersIsRefused(t *testing.T) {
	cors := Filter{Type: FilterCORS, CORS: &CORS{AllowOrigins: []string{"*"}}}
	s := newServer(t, Options{})
	err := s.Apply(oneRoute(Rule{Filters: []Filter{cors, cors}}))
	if err == nil || !strings.Contains(err.Error(), "at most one CORS filter") {
		t.Errorf("Apply = %v, want it refused for two CORS filters", err)
	}
	bad := Filter{Type: FilterCORS, CORS: &CORS{AllowOrigins: []string{"app.example"}}}
	if err := s.Apply(oneRoute(Rule{Filters: []Filter{bad}})); err == nil || !strings.Contains(err.Error(), "is not an origin") {
		t.Errorf("Apply = %v, want an origin without a scheme refused", err)
	}
}

func TestPreflightsForResourceMetadataAreAnswered(t *testing.T) {
	backend := echoBackend(t, "b")
	s := newServer(t, Options{Extensions: protectedFilters})
	mustApply(t, s, oneRoute(Rule{Matches: []Match{{Path: prefix("/github")}}, Filters: []Filter{protectedBy("github")}, Backends: []Backend{backendOf("b", 1, backend)}}))
	base := gatewayURL(t, s, "web")
	resp := preflight(t, base+"/.well-known/oauth-protected-resource/github", "http://localhost:6274", "GET", "mcp-protocol-version")
	if resp.StatusCode != http.StatusNoContent {
		t.Fatalf("status %d, want 204", resp.StatusCode)
	}
	for name, want := range map[string]string{
		"Access-Control-Allow-Origin": "*", "Access-Control-Allow-Methods": "GET, HEAD", "Access-Control-Allow-Headers": "mcp-protocol-version",
	} {
		if got := resp.Header.Get(name); got != want {
			t.Errorf("%s = %q, want %q", name, got, want)
		}
	}
	if resp := preflight(t, base+"/.well-known/oauth-protected-resource/public", "http://localhost:6274", "GET", "mcp-protocol-version"); resp.StatusCode != http.StatusNotFound {
		t.Errorf("a preflight for the metadata of an unprotected path: status %d, want it routed as any other (404)", resp.StatusCode)
	}
}
