package main

// A browser MCP client (MCP Inspector, a web agent) through the real
// binary: the route's CORS filter answers its preflights before the MCP
// filter asks for a token, and the gateway's refusals (401, 429) are
// readable by the page.

import (
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/toolgate/toolgate/internal/testgateway"
	"github.com/toolgate/toolgate/internal/testissuer"
)

// browserCORS is the CORS filter of an MCP route, as the README shows it.
const browserCORS = `    - type: CORS
      cors:
        allowOrigins: ['http://localhost:6274', 'https://*.agents.example.com']
        allowMethods: [GET, POST, DELETE]
        allowHeaders: [Authorization, Content-Type, Mcp-Protocol-Version, Mcp-Session-Id, Mcp-Method, Mcp-Name, Last-Event-ID]
        exposeHeaders: [Mcp-Session-Id, WWW-Authenticate, Retry-After, RateLimit, RateLimit-Policy]
`

// inspectorOrigin is the MCP Inspector's origin.
const inspectorOrigin = "http://localhost:6274"

func TestABrowserClientReadsTheGatewaysAnswersCrossOrigin(t *testing.T) {
	issuer, err := testissuer.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(issuer.Close)
	backend := startRawBackend(t, 100)
	g := testgateway.Start(t, func(port int) string {
		return testgateway.ConfigWithFilters(port, backend.addr, testgateway.OIDC(issuer.URL(), issuer.JWKSURL(), "limits")+limits, browserCORS)
	})
	alice, err := issuer.Token("alice", "limits")
	if err != nil {
		t.Fatal(err)
	}

	// send makes a request as a browser page of origin would, header
	// pairs after it.
	send := func(method, origin, body string, header ...string) *http.Response {
		t.Helper()
		return request(t, method, g.URL, body, append([]string{"Origin", origin}, header...)...)
	}
	// exposed reports whether the page may read header name of res.
	exposed := func(res *http.Response, name string) bool {
		for v := range strings.SplitSeq(res.Header.Get("Access-Control-Expose-Headers"), ",") {
			if strings.EqualFold(strings.TrimSpace(v), name) {
				return true
			}
		}
		return false
	}
	call := func(origin, token string) *http.Response {
		t.Helper()
		header := []string{"Content-Type", "application/json", "Accept", "application/json, text/event-stream"}
		if token != "" {
			header = append(header, "Authorization", "Bearer "+token)
		}
		return send(http.MethodPost, origin, toolCall(1, "expensive_tool"), header...)
	}

	t.Run("the preflight is answered by the gateway, without a token", func(t *testing.T) {
		res := send(http.MethodOptions, inspectorOrigin, "",
			"Access-Control-Request-Method", "POST", "Access-Control-Request-Headers", "authorization, content-type, mcp-protocol-version")
		t.Logf("HTTP %d %v", res.StatusCode, res.Header)
		if res.StatusCode != http.StatusNoContent {
			t.Fatalf("status %d, want 204", res.StatusCode)
		}
		for name, want := range map[string]string{
			"Access-Control-Allow-Origin":  inspectorOrigin,
			"Access-Control-Allow-Methods": "GET, POST, DELETE",
			"Access-Control-Allow-Headers": "Authorization, Content-Type, Mcp-Protocol-Version, Mcp-Session-Id, Mcp-Method, Mcp-Name, Last-Event-ID",
			"Access-Control-Max-Age":       "5",
			"Vary":                         "Origin",
		} {
			if got := res.Header.Get(name); got != want {
				t.Errorf("%s = %q, want %q", name, got, want)
			}
		}
		if n := len(backend.seen()); n != 0 {
			t.Errorf("the backend saw %d requests, want none", n)
		}
	})
	t.Run("a 401 and its challenge are readable", func(t *testing.T) {
		res := call(inspectorOrigin, "")
		if res.StatusCode != http.StatusUnauthorized || res.Header.Get("WWW-Authenticate") == "" {
			t.Fatalf("status %d, WWW-Authenticate %q: want 401 with a challenge", res.StatusCode, res.Header.Get("WWW-Authenticate"))
		}
		if got := res.Header.Get("Access-Control-Allow-Origin"); got != inspectorOrigin || !exposed(res, "WWW-Authenticate") {
			t.Errorf("Access-Control-Allow-Origin %q, Access-Control-Expose-Headers %q: want the origin, and WWW-Authenticate exposed",
				got, res.Header.Get("Access-Control-Expose-Headers"))
		}
	})
	t.Run("calls within the limit pass, with their RateLimit fields readable", func(t *testing.T) {
		for range 2 {
			res := call("https://web.agents.example.com", alice)
			if res.StatusCode != http.StatusOK {
				t.Fatalf("status %d, want 200", res.StatusCode)
			}
			if got := res.Header.Get("Access-Control-Allow-Origin"); got != "https://web.agents.example.com" || res.Header.Get("RateLimit") == "" || !exposed(res, "RateLimit") {
				t.Errorf("Access-Control-Allow-Origin %q, RateLimit %q, Access-Control-Expose-Headers %q: want the origin and RateLimit readable",
					got, res.Header.Get("RateLimit"), res.Header.Get("Access-Control-Expose-Headers"))
			}
		}
	})
	t.Run("a 429 and its Retry-After are readable", func(t *testing.T) {
		res := call(inspectorOrigin, alice)
		if res.StatusCode != http.StatusTooManyRequests || res.Header.Get("Retry-After") == "" {
			t.Fatalf("status %d, Retry-After %q: want 429 with Retry-After", res.StatusCode, res.Header.Get("Retry-After"))
		}
		if got := res.Header.Get("Access-Control-Allow-Origin"); got != inspectorOrigin {
			t.Errorf("Access-Control-Allow-Origin = %q, want %q", got, inspectorOrigin)
		}
		for _, name := range []string{"Retry-After", "RateLimit", "RateLimit-Policy"} {
			if !exposed(res, name) {
				t.Errorf("Access-Control-Expose-Headers %q does not expose %s", res.Header.Get("Access-Control-Expose-Headers"), name)
			}
		}
	})
	t.Run("another origin gets no CORS header", func(t *testing.T) {
		res := send(http.MethodOptions, "https://evil.example", "", "Access-Control-Request-Method", "POST")
		if res.StatusCode != http.StatusForbidden || res.Header.Get("Access-Control-Allow-Origin") != "" {
			t.Errorf("preflight: status %d, Access-Control-Allow-Origin %q: want 403 without it", res.StatusCode, res.Header.Get("Access-Control-Allow-Origin"))
		}
		res = call("https://evil.example", "")
		if res.StatusCode != http.StatusUnauthorized || res.Header.Get("Access-Control-Allow-Origin") != "" || res.Header.Get("Access-Control-Expose-Headers") != "" {
			t.Errorf("call: status %d, headers %v: want 401 without CORS headers", res.StatusCode, res.Header)
		}
	})
	if methods := requestMethods(backend.seen()); !slices.Equal(methods, []string{"POST", "POST"}) {
		t.Errorf("the backend saw %v, want the two calls within the limit and nothing else", methods)
	}
}

func requestMethods(requests []*http.Request) []string {
	methods := make([]string, len(requests))
	for i, r := range requests {
		methods[i] = r.Method
	}
	return methods
}

// request sends method to url with body and header pairs, and returns the
// response, its body read and closed.
func request(t *testing.T, method, url, body string, header ...string) *http.Response {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	res, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, res.Body)
	_ = res.Body.Close()
	return res
}
