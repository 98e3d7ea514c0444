package gateway

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"
)

// These tables follow the Gateway API's HTTPRoute documentation and the
// upstream conformance cases. A result names the route and rule that serve
// the request ("ns/name#rule"), or "404".

// compiled compiles cfg for routing tests; backends are never reached.
func compiled(t *testing.T, cfg *Config) *snapshot {
	t.Helper()
	snap, err := compile(cfg, http.NotFoundHandler(), newSessionSealer([]byte("test key")), nil, nil, nil)
	if err != nil {
		t.Fatalf("compile: %v", err)
	}
	return snap
}

// request describes a test request: target is "http://host/path?query".
type request struct {
	method string
	target string
	header []string // name, value pairs; a name may repeat
}

// served returns which rule serves req on the socket 127.0.0.1:0.
func served(snap *snapshot, req request) string {
	method := req.method
	if method == "" {
		method = http.MethodGet
	}
	r := httptest.NewRequest(method, req.target, nil)
	for i := 0; i+1 < len(req.header); i += 2 {
		r.Header.Add(req.header[i], req.header[i+1])
	}
	_, e, _ := snap.resolve(portKey{address: "127.0.0.1"}, r)
	if e == nil {
		return "404"
	}
	return fmt.Sprintf("%s#%d", e.rule.route.key, e.rule.index)
}

// routes builds a config of one listener whose routes all serve any host.
func routes(rs ...Route) *Config {
	return &Config{Listeners: []Listener{httpListener("web", VirtualHost{Routes: rs})}}
}

func rule(matches ...Match) Rule { return Rule{Matches: matches} }

func prefix(p string) PathMatch { return PathMatch{Type: PathMatchPathPrefix, Value: p} }
func exact(p string) PathMatch  { return PathMatch{Type: PathMatchExact, Value: p} }
func regex(p string) PathMatch  { return PathMatch{Type: PathMatchRegularExpression, Value: p} }

func header(name, value string) HeaderMatch { return HeaderMatch{Name: name, Value: value} }
func query(name, value string) QueryParamMatch {
	return QueryParamMatch{Name: name, Value: value}
}

func TestPathMatchTypes(t *testing.T) {
	cases := []struct {
		name string
		path PathMatch
		req  string
		want bool
	}{
		{"exact matches the same path", exact("/abc"), "/abc", true},
		{"exact does not match a trailing slash", exact("/abc"), "/abc/", false},
		{"exact is case-sensitive", exact("/abc"), "/Abc", false},
		{"exact does not match a longer path", exact("/abc"), "/abcd", false},
		{"exact does not match a subpath", exact("/abc"), "/abc/def", false},
		{"prefix matches itself", prefix("/abc"), "/abc", true},
		{"prefix matches with a trailing slash", prefix("/abc"), "/abc/", true},
		{"prefix matches a subpath", prefix("/abc"), "/abc/def", true},
		{"prefix does not match a longer segment", prefix("/abc"), "/abcd", false},
		{"prefix is case-sensitive", prefix("/abc"), "/ABC/def", false},
		{"prefix ignores its trailing slash", prefix("/abc/"), "/abc", true},
		{"prefix with trailing slash still matches segments only", prefix("/abc/"), "/abcd", false},
		{"prefix with trailing slash matches a subpath", prefix("/abc/"), "/abc/def", true},
		{"prefix of several segments", prefix("/a/b"), "/a/b/c", true},
		{"prefix of several segments stops at a segment", prefix("/a/b"), "/a/bc", false},
		{"root prefix matches everything", prefix("/"), "/anything/at/all", true},
		{"zero path match is a root prefix", PathMatch{}, "/x", true},
		{"regex matches the whole path", regex(`/v[0-9]+/.*`), "/v2/tools", true},
		{"regex is anchored at the start", regex(`/v[0-9]+/.*`), "/api/v2/tools", false},
		{"regex is anchored at the end", regex(`/v[0-9]+`), "/v2/tools", false},
		{"regex is case-sensitive", regex(`/mcp`), "/MCP", false},
		{"dot segments are resolved before matching", exact("/b"), "/a/../b", true},
		{"dot segments cannot escape a prefix", prefix("/public"), "/public/../admin", false},
		{"repeated slashes are merged", exact("/a/b"), "/a//b", true},
		{"percent-encoded characters are decoded", exact("/abc"), "/a%62c", true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			snap := compiled(t, routes(Route{Namespace: "ns", Name: "r", Rules: []Rule{rule(Match{Path: tc.path})}}))
			got := served(snap, request{target: "http://example.com" + tc.req}) == "ns/r#0"
			if got != tc.want {
				t.Errorf("%s %q on %q: matched = %v, want %v", tc.path.Type, tc.path.Value, tc.req, got, tc.want)
			}
		})
	}
}

func TestHeaderMatching(t *testing.T) {
	// After the upstream HTTPRouteHeaderMatching case.
	snap := compiled(t, routes(Route{Namespace: "ns", Name: "h", Rules: []Rule{
		rule(Match{Headers: []HeaderMatch{header("version", "one")}}),
		rule(Match{Headers: []HeaderMatch{header("version", "two")}}),
		rule(Match{Headers: []HeaderMatch{header("version", "two"), header("color", "orange")}}),
		rule(Match{Headers: []HeaderMatch{header("color", "blue")}}, Match{Headers: []HeaderMatch{header("color", "green")}}),
		rule(Match{Headers: []HeaderMatch{header("color", "red")}}, Match{Headers: []HeaderMatch{header("color", "yellow")}}),
		rule(Match{Headers: []HeaderMatch{{Type: MatchRegularExpression, Name: "x-id", Value: `[0-9]+`}}}),
		rule(Match{Headers: []HeaderMatch{header("dup", "first"), header("DUP", "second")}}),
	}}))
	cases := []struct {
		name   string
		header []string
		want   string
	}{
		{"one header selects its rule", []string{"version", "one"}, "ns/h#0"},
		{"another value selects another rule", []string{"version", "two"}, "ns/h#1"},
		{"more header matches win", []string{"version", "two", "color", "orange"}, "ns/h#2"},
		{"matches of a rule are ORed (first)", []string{"color", "blue"}, "ns/h#3"},
		{"matches of a rule are ORed (second)", []string{"color", "green"}, "ns/h#3"},
		{"another ORed rule", []string{"color", "yellow"}, "ns/h#4"},
		{"headers of a match are ANDed", []string{"color", "orange"}, "404"},
		{"equal header counts fall back to rule order", []string{"color", "blue", "version", "one"}, "ns/h#0"},
		{"header names are case-insensitive", []string{"VERSION", "one"}, "ns/h#0"},
		{"header values are case-sensitive", []string{"version", "ONE"}, "404"},
		{"a repeated header matches by any value", []string{"color", "purple", "color", "red"}, "ns/h#4"},
		{"regex header matches the whole value", []string{"x-id", "123"}, "ns/h#5"},
		{"regex header is anchored", []string{"x-id", "12a"}, "404"},
		{"first of duplicate header names counts", []string{"dup", "first"}, "ns/h#6"},
		{"later duplicate header names are ignored", []string{"dup", "second"}, "404"},
		{"no header no match", nil, "404"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := served(snap, request{target: "http://example.com/", header: tc.header}); got != tc.want {
				t.Errorf("headers %q: served by %s, want %s", tc.header, got, tc.want)
			}
		})
	}
}

func TestQueryParamMatching(t *testing.T) {
	snap := compiled(t, routes(Route{Namespace: "ns", Name: "q", Rules: []Rule{
		rule(Match{QueryParams: []QueryParamMatch{query("animal", "whale")}}),
		rule(Match{QueryParams: []QueryParamMatch{query("animal", "dolphin")}}),
		rule(Match{QueryParams: []QueryParamMatch{query("animal", "dolphin"), query("color", "blue")}}),
		rule(Match{QueryParams: []QueryParamMatch{query("ANIMAL", "Whale")}}),
		rule(Match{QueryParams: []QueryParamMatch{query("animal", "sea lion")}}),
		rule(Match{QueryParams: []QueryParamMatch{{Type: MatchRegularExpression, Name: "id", Value: `[0-9]+`}}}),
		rule(Match{QueryParams: []QueryParamMatch{query("dup", "first"), query("dup", "second")}}),
	}}))
	cases := []struct {
		name, query, want string
	}{
		{"exact value", "animal=whale", "ns/q#0"},
		{"another value", "animal=dolphin", "ns/q#1"},
		{"more query matches win", "animal=dolphin&color=blue", "ns/q#2"},
		{"order in the query does not matter", "color=blue&animal=dolphin", "ns/q#2"},
		{"names are case-sensitive", "ANIMAL=Whale", "ns/q#3"},
		{"values are case-sensitive", "animal=Whale", "404"},
		{"the first of repeated parameters counts", "animal=whale&animal=dolphin", "ns/q#0"},
		{"values are percent-decoded", "animal=dol%70hin", "ns/q#1"},
		{"plus decodes to a space", "animal=sea+lion", "ns/q#4"},
		{"regex matches the whole value", "id=42", "ns/q#5"},
		{"regex is anchored", "id=4x", "404"},
		{"first of duplicate condition names counts", "dup=first", "ns/q#6"},
		{"later duplicate condition names are ignored", "dup=second", "404"},
		{"missing parameter", "other=1", "404"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := served(snap, request{target: "http://example.com/?" + tc.query}); got != tc.want {
				t.Errorf("query %q: served by %s, want %s", tc.query, got, tc.want)
			}
		})
	}
}

func TestMethodMatching(t *testing.T) {
	// After the upstream HTTPRouteMethodMatching case.
	snap := compiled(t, routes(Route{Namespace: "ns", Name: "m", Rules: []Rule{
		rule(Match{Method: http.MethodPost}),
		rule(Match{Method: http.MethodGet}),
		rule(Match{Path: prefix("/both"), Method: http.MethodDelete}, Match{Path: prefix("/both"), Method: http.MethodPatch}),
	}}))
	cases := []struct {
		method, path, want string
	}{
		{http.MethodPost, "/", "ns/m#0"},
		{http.MethodGet, "/", "ns/m#1"},
		{http.MethodHead, "/", "404"},
		{http.MethodDelete, "/both", "ns/m#2"},
		{http.MethodPatch, "/both/x", "ns/m#2"},
		{http.MethodDelete, "/", "404"},
	}
	for _, tc := range cases {
		t.Run(tc.method+" "+tc.path, func(t *testing.T) {
			if got := served(snap, request{method: tc.method, target: "http://example.com" + tc.path}); got != tc.want {
				t.Errorf("served by %s, want %s", got, tc.want)
			}
		})
	}
}

func TestPathMatchOrder(t *testing.T) {
	// The upstream HTTPRoutePathMatchOrder case, with the rules listed in
	// the worst order so that list order cannot explain the results.
	snap := compiled(t, routes(Route{Namespace: "ns", Name: "order", Rules: []Rule{
		rule(Match{Path: prefix("/match")}),            // 0
		rule(Match{Path: prefix("/match/prefix")}),     // 1
		rule(Match{Path: prefix("/match/prefix/one")}), // 2
		rule(Match{Path: exact("/match/exact/one")}),   // 3
		rule(Match{Path: exact("/match/exact")}),       // 4
		rule(Match{Path: exact("/match")}),             // 5
	}}))
	cases := []struct{ path, want string }{
		{"/match/exact/one", "ns/order#3"},
		{"/match/exact", "ns/order#4"},
		{"/match", "ns/order#5"},
		{"/match/prefix/one/any", "ns/order#2"},
		{"/match/prefix/any", "ns/order#1"},
		{"/match/any", "ns/order#0"},
		{"/other", "404"},
	}
	for _, tc := range cases {
		t.Run(tc.path, func(t *testing.T) {
			if got := served(snap, request{target: "http://example.com" + tc.path}); got != tc.want {
				t.Errorf("served by %s, want %s", got, tc.want)
			}
		})
	}
}

func TestPrecedenceAcrossRoutes(t *testing.T) {
	older := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	newer := older.Add(time.Hour)
	route := func(ns, name string, created time.Time, matches ...Match) Route {
		return Route{Namespace: ns, Name: name, CreationTimestamp: created, Rules: []Rule{rule(matches...)}}
	}
	cases := []struct {
		name   string
		routes []Route
		req    request
		want   string
	}{
		{
			name:   "an exact path beats a prefix of the same path",
			routes: []Route{route("ns", "a", older, Match{Path: prefix("/a/b/c")}), route("ns", "b", newer, Match{Path: exact("/a/b/c")})},
			req:    request{target: "http://h/a/b/c"},
			want:   "ns/b#0",
		},
		{
			name:   "the longest prefix wins",
			routes: []Route{route("ns", "a", older, Match{Path: prefix("/a")}), route("ns", "b", newer, Match{Path: prefix("/a/b")})},
			req:    request{target: "http://h/a/b/c"},
			want:   "ns/b#0",
		},
		{
			name: "a method match beats header matches",
			routes: []Route{
				route("ns", "a", older, Match{Headers: []HeaderMatch{header("x", "1"), header("y", "2")}}),
				route("ns", "b", newer, Match{Method: http.MethodGet}),
			},
			req:  request{target: "http://h/", header: []string{"x", "1", "y", "2"}},
			want: "ns/b#0",
		},
		{
			name:   "a longer prefix beats a method match",
			routes: []Route{route("ns", "a", older, Match{Method: http.MethodGet}), route("ns", "b", newer, Match{Path: prefix("/x")})},
			req:    request{target: "http://h/x"},
			want:   "ns/b#0",
		},
		{
			name: "more header matches win",
			routes: []Route{
				route("ns", "a", older, Match{Headers: []HeaderMatch{header("x", "1")}}),
				route("ns", "b", newer, Match{Headers: []HeaderMatch{header("x", "1"), header("y", "2")}}),
			},
			req:  request{target: "http://h/", header: []string{"x", "1", "y", "2"}},
			want: "ns/b#0",
		},
		{
			name: "header matches beat query param matches",
			routes: []Route{
				route("ns", "a", older, Match{QueryParams: []QueryParamMatch{query("p", "1"), query("q", "2")}}),
				route("ns", "b", newer, Match{Headers: []HeaderMatch{header("x", "1")}}),
			},
			req:  request{target: "http://h/?p=1&q=2", header: []string{"x", "1"}},
			want: "ns/b#0",
		},
		{
			name: "more query param matches win",
			routes: []Route{
				route("ns", "a", older, Match{QueryParams: []QueryParamMatch{query("p", "1")}}),
				route("ns", "b", newer, Match{QueryParams: []QueryParamMatch{query("p", "1"), query("q", "2")}}),
			},
			req:  request{target: "http://h/?p=1&q=2"},
			want: "ns/b#0",
		},
		{
			name:   "on a tie the oldest route wins",
			routes: []Route{route("ns", "a", newer, Match{Path: prefix("/x")}), route("ns", "b", older, Match{Path: prefix("/x")})},
			req:    request{target: "http://h/x"},
			want:   "ns/b#0",
		},
		{
			name:   "on a tie of age the first in namespace/name order wins",
			routes: []Route{route("ns", "b", older, Match{Path: prefix("/x")}), route("ns", "a", older, Match{Path: prefix("/x")})},
			req:    request{target: "http://h/x"},
			want:   "ns/a#0",
		},
		{
			name:   "the namespace sorts before the name",
			routes: []Route{route("b", "a", older, Match{Path: prefix("/x")}), route("a", "z", older, Match{Path: prefix("/x")})},
			req:    request{target: "http://h/x"},
			want:   "a/z#0",
		},
		{
			name: "within a route the first matching rule wins",
			routes: []Route{{Namespace: "ns", Name: "r", Rules: []Rule{
				rule(Match{Path: prefix("/x")}), rule(Match{Path: prefix("/x")}),
			}}},
			req:  request{target: "http://h/x"},
			want: "ns/r#0",
		},
		{
			name: "precedence counts the match that matched, not the rule's best",
			routes: []Route{
				route("ns", "a", older, Match{Path: exact("/other")}, Match{Path: prefix("/")}),
				route("ns", "b", newer, Match{Path: prefix("/x")}),
			},
			req:  request{target: "http://h/x"},
			want: "ns/b#0",
		},
		{
			name:   "a regular expression beats a prefix",
			routes: []Route{route("ns", "a", older, Match{Path: prefix("/v1/tools")}), route("ns", "b", newer, Match{Path: regex(`/v[0-9]/.*`)})},
			req:    request{target: "http://h/v1/tools"},
			want:   "ns/b#0",
		},
		{
			name:   "an exact path beats a regular expression",
			routes: []Route{route("ns", "a", older, Match{Path: regex(`/v[0-9]/.*`)}), route("ns", "b", newer, Match{Path: exact("/v1/tools")})},
			req:    request{target: "http://h/v1/tools"},
			want:   "ns/b#0",
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			snap := compiled(t, routes(tc.routes...))
			if got := served(snap, tc.req); got != tc.want {
				t.Errorf("served by %s, want %s", got, tc.want)
			}
		})
	}
}

func TestMatchingAcrossRoutes(t *testing.T) {
	// The upstream HTTPRouteMatchingAcrossRoutes case: the listener has no
	// hostname, so the routes' hostnames are the intersection.
	created := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	snap := compiled(t, &Config{Listeners: []Listener{httpListener("web",
		VirtualHost{Hostnames: []string{"example.com", "example.net"}, Routes: []Route{{
			Namespace: "infra", Name: "matching-part1", CreationTimestamp: created,
			Rules: []Rule{rule(Match{Path: prefix("/")}, Match{Headers: []HeaderMatch{header("version", "one")}})},
		}}},
		VirtualHost{Hostnames: []string{"*.com"}, Routes: []Route{{
			Namespace: "infra", Name: "matching-part2", CreationTimestamp: created,
			Rules: []Rule{rule(Match{Path: prefix("/v2")}, Match{Headers: []HeaderMatch{header("version", "two")}})},
		}}},
	)}})
	part1, part2 := "infra/matching-part1#0", "infra/matching-part2#0"
	cases := []struct {
		req  request
		want string
	}{
		{request{target: "http://example.com/"}, part1},
		{request{target: "http://example.com/example"}, part1},
		{request{target: "http://example.net/example"}, part1},
		{request{target: "http://example.com/example", header: []string{"Version", "one"}}, part1},
		{request{target: "http://example.com/v2"}, part2},
		{request{target: "http://example.net/v2"}, part1}, // part2 is limited to *.com
		{request{target: "http://example.com/v2/example"}, part2},
		{request{target: "http://example.com/", header: []string{"Version", "two"}}, part2},
		{request{target: "http://other.com/v2"}, part2},
		{request{target: "http://other.com/"}, "404"},
		{request{target: "http://example.org/"}, "404"},
	}
	for _, tc := range cases {
		t.Run(tc.req.target+fmt.Sprint(tc.req.header), func(t *testing.T) {
			if got := served(snap, tc.req); got != tc.want {
				t.Errorf("served by %s, want %s", got, tc.want)
			}
		})
	}
}

func TestHostnameMatching(t *testing.T) {
	created := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	vhost := func(name string, hostnames ...string) VirtualHost {
		return VirtualHost{Hostnames: hostnames, Routes: []Route{{Namespace: "ns", Name: name, CreationTimestamp: created, Rules: []Rule{rule()}}}}
	}
	snap := compiled(t, &Config{Listeners: []Listener{httpListener("web",
		vhost("exact", "foo.example.com"),
		vhost("wild", "*.example.com"),
		vhost("deeper", "*.bar.example.com"),
		vhost("any"),
	)}})
	cases := []struct{ host, want string }{
		{"foo.example.com", "ns/exact#0"},
		{"FOO.Example.COM", "ns/exact#0"},
		{"foo.example.com:8080", "ns/exact#0"},
		{"foo.example.com.", "ns/exact#0"},
		{"bar.example.com", "ns/wild#0"},
		{"a.b.example.com", "ns/wild#0"},
		{"x.bar.example.com", "ns/deeper#0"},
		{"example.com", "ns/any#0"},
		{"example.org", "ns/any#0"},
		{"127.0.0.1:80", "ns/any#0"},
	}
	for _, tc := range cases {
		t.Run(tc.host, func(t *testing.T) {
			if got := served(snap, request{target: "http://" + tc.host + "/"}); got != tc.want {
				t.Errorf("served by %s, want %s", got, tc.want)
			}
		})
	}
}

func TestHostnameSpecificityBreaksTies(t *testing.T) {
	older := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	newer := older.Add(time.Hour)
	snap := compiled(t, &Config{Listeners: []Listener{httpListener("web",
		// The wildcard and catch-all routes are older, so age alone would
		// pick them; the more specific hostname wins the tie first.
		VirtualHost{Hostnames: []string{"*.example.com"}, Routes: []Route{{Namespace: "ns", Name: "wild", CreationTimestamp: older, Rules: []Rule{rule()}}}},
		VirtualHost{Routes: []Route{{Namespace: "ns", Name: "any", CreationTimestamp: older, Rules: []Rule{rule(), rule(Match{Path: exact("/only-any")})}}}},
		VirtualHost{Hostnames: []string{"foo.example.com"}, Routes: []Route{{Namespace: "ns", Name: "exact", CreationTimestamp: newer, Rules: []Rule{rule(Match{Path: prefix("/")})}}}},
	)}})
	cases := []struct{ target, want string }{
		{"http://foo.example.com/x", "ns/exact#0"},
		{"http://bar.example.com/x", "ns/wild#0"},
		{"http://example.com/x", "ns/any#0"},
		{"http://foo.example.com/only-any", "ns/any#1"},
	}
	for _, tc := range cases {
		t.Run(tc.target, func(t *testing.T) {
			if got := served(snap, request{target: tc.target}); got != tc.want {
				t.Errorf("served by %s, want %s", got, tc.want)
			}
		})
	}
}

func TestListenersOnOnePortAreIsolated(t *testing.T) {
	// After GatewayHTTPListenerIsolation: the most specific listener
	// serves the host, and its routes alone.
	listener := func(name, hostname string, rules ...Rule) Listener {
		l := httpListener(name, VirtualHost{Routes: []Route{{Namespace: "ns", Name: name, Rules: rules}}})
		l.Hostname = hostname
		return l
	}
	snap := compiled(t, &Config{Listeners: []Listener{
		listener("empty", "", rule()),
		listener("wild", "*.example.com", rule()),
		listener("exact", "foo.example.com", rule(Match{Path: prefix("/only")})),
	}})
	cases := []struct{ target, want string }{
		{"http://foo.example.com/only/x", "ns/exact#0"},
		{"http://foo.example.com/other", "404"},
		{"http://bar.example.com/other", "ns/wild#0"},
		{"http://example.org/other", "ns/empty#0"},
	}
	for _, tc := range cases {
		t.Run(tc.target, func(t *testing.T) {
			if got := served(snap, request{target: tc.target}); got != tc.want {
				t.Errorf("served by %s, want %s", got, tc.want)
			}
		})
	}
}

func TestInvalidConfigsAreRejected(t *testing.T) {
	cases := []struct {
		name string
		cfg  *Config
	}{
		{"a bad path regex", routes(Route{Name: "r", Rules: []Rule{rule(Match{Path: regex("(")})}})},
		{"a bad header regex", routes(Route{Name: "r", Rules: []Rule{rule(Match{Headers: []HeaderMatch{{Type: MatchRegularExpression, Name: "x", Value: "["}}})}})},
		{"a bad query regex", routes(Route{Name: "r", Rules: []Rule{rule(Match{QueryParams: []QueryParamMatch{{Type: MatchRegularExpression, Name: "x", Value: "["}}})}})},
		{"an unknown path match type", routes(Route{Name: "r", Rules: []Rule{rule(Match{Path: PathMatch{Type: "Glob", Value: "/x"}})}})},
		{"a relative exact path", routes(Route{Name: "r", Rules: []Rule{rule(Match{Path: exact("x")})}})},
		{"an unknown filter", routes(Route{Name: "r", Rules: []Rule{{Filters: []Filter{{Type: "Mirror"}}}}})},
		{"URLRewrite with RequestRedirect", routes(Route{Name: "r", Rules: []Rule{{Filters: []Filter{
			{Type: FilterURLRewrite, URLRewrite: &URLRewrite{Hostname: "x"}},
			{Type: FilterRequestRedirect, RequestRedirect: &Redirect{Hostname: "y"}},
		}}}})},
		{"a bad redirect status", routes(Route{Name: "r", Rules: []Rule{{Filters: []Filter{
			{Type: FilterRequestRedirect, RequestRedirect: &Redirect{StatusCode: 200}},
		}}}})},
		{"a bad endpoint", routes(Route{Name: "r", Rules: []Rule{{Backends: []Backend{{Name: "b", Weight: 1, Endpoints: []string{"no-port"}}}}}})},
		{"a negative weight", routes(Route{Name: "r", Rules: []Rule{{Backends: []Backend{{Name: "b", Weight: -1}}}}})},
		{"HTTPS without a certificate", &Config{Listeners: []Listener{{Name: "s", Address: "127.0.0.1", Protocol: ProtocolHTTPS}}}},
		{"two protocols on one port", &Config{Listeners: []Listener{
			{Name: "a", Address: "127.0.0.1", Port: 0, Protocol: ProtocolHTTP},
			{Name: "b", Address: "127.0.0.1", Port: 0, Protocol: ProtocolHTTPS, Certificates: testCertificates(t, "x")},
		}}},
		{"two listeners with one hostname on one port", &Config{Listeners: []Listener{
			{Name: "a", Address: "127.0.0.1", Protocol: ProtocolHTTP, Hostname: "x.example.com"},
			{Name: "b", Address: "127.0.0.1", Protocol: ProtocolHTTP, Hostname: "X.example.com"},
		}}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := compile(tc.cfg, http.NotFoundHandler(), newSessionSealer([]byte("k")), nil, nil, nil); err == nil {
				t.Fatal("compile accepted an invalid config")
			}
		})
	}
}
