package gateway

import (
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
)

func TestRequestHeaderModifier(t *testing.T) {
	// After the upstream HTTPRouteRequestHeaderModifier case.
	be := echoBackend(t, "b")
	mod := func(path string, m HeaderModifier) Rule {
		return Rule{
			Matches:  []Match{{Path: exact(path)}},
			Filters:  []Filter{{Type: FilterRequestHeaderModifier, RequestHeaderModifier: &m}},
			Backends: []Backend{backendOf("b", 1, be)},
		}
	}
	s := newServer(t, Options{})
	mustApply(t, s, oneRoute(
		mod("/set", HeaderModifier{Set: []Header{{"X-Header-Set", "set-overwrites-values"}}}),
		mod("/add", HeaderModifier{Add: []Header{{"X-Header-Add", "add-appends-values"}}}),
		mod("/remove", HeaderModifier{Remove: []string{"X-Header-Remove"}}),
		mod("/multiple", HeaderModifier{
			Set:    []Header{{"X-Header-Set-1", "header-set-1"}, {"X-Header-Set-2", "header-set-2"}},
			Add:    []Header{{"X-Header-Add-1", "header-add-1"}, {"X-Header-Add-2", "header-add-2"}, {"X-Header-Add-3", "header-add-3"}},
			Remove: []string{"X-Header-Remove-1", "X-Header-Remove-2"},
		}),
		mod("/case-insensitivity", HeaderModifier{
			Set:    []Header{{"X-Header-Set", "header-set"}},
			Add:    []Header{{"X-Header-Add", "header-add"}},
			Remove: []string{"X-Header-Remove"},
		}),
		mod("/host", HeaderModifier{Set: []Header{{"Host", "rewritten.example"}}}),
	))
	base := gatewayURL(t, s, "web")
	cases := []struct {
		name   string
		path   string
		send   []string
		want   map[string]string
		absent []string
	}{
		{"set adds a missing header", "/set", []string{"Some-Other-Header", "val"},
			map[string]string{"Some-Other-Header": "val", "X-Header-Set": "set-overwrites-values"}, nil},
		{"set overwrites a header", "/set", []string{"Some-Other-Header", "val", "X-Header-Set", "some-other-value"},
			map[string]string{"X-Header-Set": "set-overwrites-values"}, nil},
		{"add adds a missing header", "/add", []string{"Some-Other-Header", "val"},
			map[string]string{"X-Header-Add": "add-appends-values"}, nil},
		{"add appends to a header", "/add", []string{"X-Header-Add", "some-other-value"},
			map[string]string{"X-Header-Add": "some-other-value,add-appends-values"}, nil},
		{"remove removes a header", "/remove", []string{"X-Header-Remove", "val"}, nil, []string{"X-Header-Remove"}},
		{"set, add and remove together", "/multiple",
			[]string{"X-Header-Set-2", "set-val-2", "X-Header-Add-2", "add-val-2", "X-Header-Remove-2", "remove-val-2", "Another-Header", "another-header-val"},
			map[string]string{
				"X-Header-Set-1": "header-set-1", "X-Header-Set-2": "header-set-2",
				"X-Header-Add-1": "header-add-1", "X-Header-Add-2": "add-val-2,header-add-2", "X-Header-Add-3": "header-add-3",
				"Another-Header": "another-header-val",
			},
			[]string{"X-Header-Remove-1", "X-Header-Remove-2"}},
		{"names are case-insensitive", "/case-insensitivity",
			[]string{"x-header-set", "original-val-set", "x-header-add", "original-val-add", "x-header-remove", "original-val-remove"},
			map[string]string{"X-Header-Set": "header-set", "X-Header-Add": "original-val-add,header-add"},
			[]string{"X-Header-Remove"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			resp, body := get(t, base+tc.path, tc.send...)
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("status %d: %s", resp.StatusCode, body)
			}
			got := decodeEcho(t, body)
			for k, v := range tc.want {
				if g := strings.Join(got.Header.Values(k), ","); g != v {
					t.Errorf("backend got %s: %q, want %q", k, g, v)
				}
			}
			for _, k := range tc.absent {
				if vs := got.Header.Values(k); len(vs) > 0 {
					t.Errorf("backend got %s: %q, want it removed", k, vs)
				}
			}
		})
	}
	t.Run("setting Host changes the Host sent to the backend", func(t *testing.T) {
		_, body := get(t, base+"/host")
		if got := decodeEcho(t, body); got.Host != "rewritten.example" {
			t.Errorf("backend got Host %q, want rewritten.example", got.Host)
		}
	})
}

func TestResponseHeaderModifier(t *testing.T) {
	be := echoBackend(t, "b")
	s := newServer(t, Options{})
	mustApply(t, s, oneRoute(Rule{
		Filters: []Filter{{Type: FilterResponseHeaderModifier, ResponseHeaderModifier: &HeaderModifier{
			Set:    []Header{{"X-Backend", "hidden"}},
			Add:    []Header{{"Content-Type", "charset=utf-8"}, {"X-Added", "yes"}},
			Remove: []string{"date"},
		}}},
		Backends: []Backend{backendOf("b", 1, be)},
	}))
	resp, _ := get(t, gatewayURL(t, s, "web")+"/")
	if got := resp.Header.Get("X-Backend"); got != "hidden" {
		t.Errorf("X-Backend = %q, want it set to hidden", got)
	}
	if got := resp.Header.Get("Content-Type"); got != "application/json,charset=utf-8" {
		t.Errorf("Content-Type = %q, want the added value appended", got)
	}
	if got := resp.Header.Get("X-Added"); got != "yes" {
		t.Errorf("X-Added = %q, want yes", got)
	}
	if got := resp.Header.Get("Date"); got != "" {
		t.Errorf("Date = %q, want it removed", got)
	}
}

func TestRequestRedirect(t *testing.T) {
	redirect := func(path string, r Redirect) Rule {
		return Rule{
			Matches: []Match{{Path: prefix(path)}},
			Filters: []Filter{{Type: FilterRequestRedirect, RequestRedirect: &r}},
		}
	}
	s := newServer(t, Options{})
	mustApply(t, s, oneRoute(
		redirect("/hostname", Redirect{Hostname: "example.org"}),
		redirect("/https", Redirect{Scheme: "https"}),
		redirect("/https-port", Redirect{Scheme: "https", Port: 8443}),
		redirect("/http-80", Redirect{Scheme: "http", Port: 80}),
		redirect("/port", Redirect{Port: 9000}),
		redirect("/moved", Redirect{Hostname: "example.org", StatusCode: 301}),
		redirect("/full", Redirect{Hostname: "example.org", Path: &PathModifier{Type: ReplaceFullPath, ReplaceFullPath: "/new"}}),
		redirect("/old", Redirect{Hostname: "example.org", Path: &PathModifier{Type: ReplacePrefixMatch, ReplacePrefixMatch: "/new"}}),
		redirect("/strip/", Redirect{Hostname: "example.org", Path: &PathModifier{Type: ReplacePrefixMatch, ReplacePrefixMatch: "/"}}),
	))
	base := gatewayURL(t, s, "web")
	_, port, _ := net.SplitHostPort(strings.TrimPrefix(base, "http://"))
	cases := []struct {
		name, path string
		code       int
		location   string
	}{
		{"hostname keeps scheme, listener port, path and query", "/hostname/a?x=1&y=2", 302, "http://example.org:" + port + "/hostname/a?x=1&y=2"},
		{"scheme https uses 443, left out", "/https/a?q=1", 302, "https://127.0.0.1/https/a?q=1"},
		{"scheme with a port keeps the port", "/https-port", 302, "https://127.0.0.1:8443/https-port"},
		{"port 80 for http is left out", "/http-80/x", 302, "http://127.0.0.1/http-80/x"},
		{"a port without a scheme", "/port/x", 302, "http://127.0.0.1:9000/port/x"},
		{"status code 301", "/moved", 301, "http://example.org:" + port + "/moved"},
		{"full path replacement keeps the query", "/full/deep/er?q=1", 302, "http://example.org:" + port + "/new?q=1"},
		{"prefix replacement", "/old/x/y?q=1", 302, "http://example.org:" + port + "/new/x/y?q=1"},
		{"prefix replacement keeps a trailing slash", "/old/", 302, "http://example.org:" + port + "/new/"},
		{"prefix replacement of the whole path", "/old", 302, "http://example.org:" + port + "/new"},
		{"prefix replaced by / with a trailing slash prefix", "/strip/x", 302, "http://example.org:" + port + "/x"},
		{"prefix replaced by / on the prefix itself", "/strip", 302, "http://example.org:" + port + "/"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			resp, body := get(t, base+tc.path)
			if resp.StatusCode != tc.code {
				t.Fatalf("status %d (%s), want %d", resp.StatusCode, body, tc.code)
			}
			if got := resp.Header.Get("Location"); got != tc.location {
				t.Errorf("Location = %q, want %q", got, tc.location)
			}
		})
	}
}

func TestReplacePrefixMatchTable(t *testing.T) {
	// The table of HTTPPathModifier.ReplacePrefixMatch, row by row.
	cases := []struct{ path, prefix, replacement, want string }{
		{"/foo/bar", "/foo", "/xyz", "/xyz/bar"},
		{"/foo/bar", "/foo", "/xyz/", "/xyz/bar"},
		{"/foo/bar", "/foo/", "/xyz", "/xyz/bar"},
		{"/foo/bar", "/foo/", "/xyz/", "/xyz/bar"},
		{"/foo", "/foo", "/xyz", "/xyz"},
		{"/foo/", "/foo", "/xyz", "/xyz/"},
		{"/foo/bar", "/foo", "", "/bar"},
		{"/foo/", "/foo", "", "/"},
		{"/foo", "/foo", "", "/"},
		{"/foo/", "/foo", "/", "/"},
		{"/foo", "/foo", "/", "/"},
		{"/anything", "/", "/xyz", "/xyz/anything"},
	}
	for _, tc := range cases {
		if got := replacePrefix(tc.path, tc.prefix, tc.replacement); got != tc.want {
			t.Errorf("replacePrefix(%q, %q, %q) = %q, want %q", tc.path, tc.prefix, tc.replacement, got, tc.want)
		}
	}
}

func TestURLRewrite(t *testing.T) {
	be := echoBackend(t, "b")
	rewrite := func(m Match, u URLRewrite) Rule {
		return Rule{
			Matches:  []Match{m},
			Filters:  []Filter{{Type: FilterURLRewrite, URLRewrite: &u}},
			Backends: []Backend{backendOf("b", 1, be)},
		}
	}
	s := newServer(t, Options{})
	mustApply(t, s, oneRoute(
		rewrite(Match{Path: prefix("/host")}, URLRewrite{Hostname: "internal.example"}),
		rewrite(Match{Path: prefix("/full")}, URLRewrite{Path: &PathModifier{Type: ReplaceFullPath, ReplaceFullPath: "/replaced"}}),
		rewrite(Match{Path: prefix("/api/v1")}, URLRewrite{Path: &PathModifier{Type: ReplacePrefixMatch, ReplacePrefixMatch: "/mcp"}}),
		rewrite(Match{Path: prefix("/strip/")}, URLRewrite{Path: &PathModifier{Type: ReplacePrefixMatch, ReplacePrefixMatch: ""}}),
		rewrite(Match{Path: exact("/exact")}, URLRewrite{Path: &PathModifier{Type: ReplacePrefixMatch, ReplacePrefixMatch: "/ignored"}}),
	))
	base := gatewayURL(t, s, "web")
	host := strings.TrimPrefix(base, "http://")
	cases := []struct {
		name, path          string
		wantHost, wantPath  string
		wantQuery, wantXFHo string
	}{
		{"hostname", "/host/x?q=1", "internal.example", "/host/x", "q=1", host},
		{"full path keeps the query", "/full/a/b?q=1&r=2", host, "/replaced", "q=1&r=2", host},
		{"prefix", "/api/v1/tools?x=y", host, "/mcp/tools", "x=y", host},
		{"prefix with a trailing slash", "/api/v1/", host, "/mcp/", "", host},
		{"prefix alone", "/api/v1", host, "/mcp", "", host},
		{"prefix replaced by nothing", "/strip/rest", host, "/rest", "", host},
		{"prefix replaced by nothing on the prefix itself", "/strip", host, "/", "", host},
		{"prefix replacement needs a prefix match", "/exact", host, "/exact", "", host},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			resp, body := get(t, base+tc.path)
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("status %d: %s", resp.StatusCode, body)
			}
			got := decodeEcho(t, body)
			if got.Host != tc.wantHost || got.Path != tc.wantPath || got.RawQuery != tc.wantQuery {
				t.Errorf("backend got host %q path %q query %q, want %q %q %q", got.Host, got.Path, got.RawQuery, tc.wantHost, tc.wantPath, tc.wantQuery)
			}
			if xfh := got.Header.Get("X-Forwarded-Host"); xfh != tc.wantXFHo {
				t.Errorf("X-Forwarded-Host = %q, want the client's Host %q", xfh, tc.wantXFHo)
			}
		})
	}
}

func TestExtensionRef(t *testing.T) {
	var reached atomic.Int64
	beCounted := newHTTPTestServer(t, &countingBackend{next: echoHandler("b"), n: &reached})

	wraps := &wrapCounter{tag: "policy"}
	seenStep := make(chan string, 10)
	recordOrder := extensionFunc(func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			seenStep <- r.Header.Get("X-Step")
			next.ServeHTTP(w, r)
		})
	})
	cfg := oneRoute(
		Rule{
			Matches:  []Match{{Path: prefix("/resolved")}},
			Filters:  []Filter{resolvedRef("github")},
			Backends: []Backend{backendOf("b", 1, beCounted)},
		},
		Rule{
			Matches:  []Match{{Path: prefix("/unresolved")}},
			Filters:  []Filter{{Type: FilterExtensionRef, ExtensionRef: &ExtensionRef{Group: "toolgate.dev", Kind: "MCPServer", Name: "missing"}}},
			Backends: []Backend{backendOf("b", 1, beCounted)},
		},
		Rule{
			Matches: []Match{{Path: prefix("/ordered")}},
			Filters: []Filter{
				{Type: FilterRequestHeaderModifier, RequestHeaderModifier: &HeaderModifier{Set: []Header{{"X-Step", "header-modifier"}}}},
				resolvedRef("order"),
			},
			Backends: []Backend{backendOf("b", 1, beCounted)},
		},
	)
	s := newServer(t, Options{Extensions: fakeExtensions{"github": wraps, "order": recordOrder}.build})
	mustApply(t, s, cfg)
	base := gatewayURL(t, s, "web")

	t.Run("a resolved filter wraps the rule", func(t *testing.T) {
		for range 5 {
			resp, body := get(t, base+"/resolved")
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("status %d: %s", resp.StatusCode, body)
			}
			if got := decodeEcho(t, body).Header.Get("X-Extension"); got != "policy" {
				t.Fatalf("backend got X-Extension %q, want policy", got)
			}
		}
		wraps.mu.Lock()
		defer wraps.mu.Unlock()
		if wraps.wraps != 1 {
			t.Errorf("Wrap called %d times for one snapshot and 5 requests, want 1", wraps.wraps)
		}
	})
	t.Run("an unresolved filter answers 500 and never reaches the backend", func(t *testing.T) {
		before := reached.Load()
		resp, body := get(t, base+"/unresolved")
		if resp.StatusCode != http.StatusInternalServerError {
			t.Fatalf("status %d, want 500", resp.StatusCode)
		}
		if !strings.Contains(string(body), "missing") {
			t.Errorf("body %q does not name the missing reference", body)
		}
		if reached.Load() != before {
			t.Error("the backend was reached through an unresolved filter")
		}
	})
	t.Run("filters run in list order", func(t *testing.T) {
		get(t, base+"/ordered")
		if got := <-seenStep; got != "header-modifier" {
			t.Errorf("the extension saw X-Step %q, want the header modifier to have run first", got)
		}
	})
	t.Run("a new snapshot wraps again", func(t *testing.T) {
		mustApply(t, s, cfg)
		wraps.mu.Lock()
		defer wraps.mu.Unlock()
		if wraps.wraps != 2 {
			t.Errorf("Wrap called %d times after a second snapshot, want 2", wraps.wraps)
		}
	})
}

func TestBackendFiltersApplyOnlyToTheirBackend(t *testing.T) {
	a, b := echoBackend(t, "a"), echoBackend(t, "b")
	ba := backendOf("a", 1, a)
	ba.Filters = []Filter{{Type: FilterRequestHeaderModifier, RequestHeaderModifier: &HeaderModifier{Set: []Header{{"X-Only-A", "1"}}}}}
	s := newServer(t, Options{})
	mustApply(t, s, oneRoute(Rule{Backends: []Backend{ba, backendOf("b", 1, b)}}))
	seen := map[string]bool{}
	for range 10 {
		_, body := get(t, gatewayURL(t, s, "web")+"/")
		got := decodeEcho(t, body)
		seen[got.Backend] = true
		if has := got.Header.Get("X-Only-A") != ""; has != (got.Backend == "a") {
			t.Errorf("backend %s got X-Only-A = %v", got.Backend, has)
		}
	}
	if !seen["a"] || !seen["b"] {
		t.Errorf("both backends should have been used: %v", seen)
	}
}
