package gateway

import (
	"net/http"
	"sort"
	"strings"
	"time"
)

// matchEntry is one Match of one rule, the unit that precedence orders. It
// is the handler registered on the mux route of its Match.
type matchEntry struct {
	rule  *compiledRule
	match Match
	// prefix is the PathPrefix value that selected the rule, for
	// ReplacePrefixMatch; hasPrefix is false for other path matches.
	prefix    string
	hasPrefix bool

	// Precedence inputs.
	pathType    PathMatchType
	pathValue   string
	hasMethod   bool
	headers     int
	queryParams int
	hostname    string // the route hostname that matched ("" for any)
	created     time.Time
	routeKey    string // "{namespace}/{name}"
	ruleIndex   int
	matchIndex  int
}

// ServeHTTP records which rule was selected and runs it.
func (e *matchEntry) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if x := exchangeOf(r); x != nil {
		x.rule = e.rule
		x.prefix, x.hasPrefix = e.prefix, e.hasPrefix
	}
	e.rule.handler.ServeHTTP(w, r)
}

// pathRank orders path match types: Exact first, then RegularExpression,
// then PathPrefix. The spec orders Exact before PathPrefix and leaves
// regular expressions to the implementation; putting them before prefixes
// keeps a catch-all "/" prefix from hiding them.
func pathRank(t PathMatchType) int {
	switch t {
	case PathMatchExact:
		return 0
	case PathMatchRegularExpression:
		return 1
	default:
		return 2
	}
}

// precedes reports whether a takes precedence over b, following the
// HTTPRouteRule.Matches documentation, continuing on ties:
//
//  1. "Exact" path match (then regular expressions, see pathRank);
//  2. "Prefix" path match with the largest number of characters;
//  3. method match;
//  4. largest number of header matches;
//  5. largest number of query param matches;
//  6. the most characters in a matching non-wildcard hostname, then in a
//     matching hostname (HTTPRouteSpec.Hostnames);
//  7. the oldest route by creation timestamp;
//  8. the route first in alphabetical order by "{namespace}/{name}";
//  9. the first matching rule in list order (and, within a rule, the first
//     match, which only decides the prefix ReplacePrefixMatch replaces).
//
// The hostname criterion comes after the match criteria although the
// HTTPRouteSpec.Hostnames text puts it first: the upstream conformance test
// HTTPRouteMatchingAcrossRoutes requires a "*.com" route's "/v2" prefix to
// win over an "example.com" route's "/" for example.com/v2, which only holds
// when hostnames break ties rather than partition the rules.
func precedes(a, b *matchEntry) bool {
	if ra, rb := pathRank(a.pathType), pathRank(b.pathType); ra != rb {
		return ra < rb
	}
	if la, lb := len(a.pathValue), len(b.pathValue); la != lb {
		return la > lb
	}
	if a.hasMethod != b.hasMethod {
		return a.hasMethod
	}
	if a.headers != b.headers {
		return a.headers > b.headers
	}
	if a.queryParams != b.queryParams {
		return a.queryParams > b.queryParams
	}
	if ea, eb := exactHostnameLen(a.hostname), exactHostnameLen(b.hostname); ea != eb {
		return ea > eb
	}
	if la, lb := len(a.hostname), len(b.hostname); la != lb {
		return la > lb
	}
	if !a.created.Equal(b.created) {
		return a.created.Before(b.created)
	}
	if a.routeKey != b.routeKey {
		return a.routeKey < b.routeKey
	}
	if a.ruleIndex != b.ruleIndex {
		return a.ruleIndex < b.ruleIndex
	}
	return a.matchIndex < b.matchIndex
}

// exactHostnameLen is the number of characters of a non-wildcard hostname,
// 0 for a wildcard or the catch-all.
func exactHostnameLen(h string) int {
	if h == "" || strings.HasPrefix(h, "*.") {
		return 0
	}
	return len(h)
}

// sortByPrecedence orders entries so that the first matching one wins.
func sortByPrecedence(entries []*matchEntry) {
	sort.SliceStable(entries, func(i, j int) bool { return precedes(entries[i], entries[j]) })
}

// newMatchEntry fills the precedence inputs of a Match.
func newMatchEntry(rule *compiledRule, route *Route, ruleIndex, matchIndex int, m Match) *matchEntry {
	e := &matchEntry{
		rule:        rule,
		match:       m,
		pathType:    m.Path.Type,
		pathValue:   m.Path.Value,
		hasMethod:   m.Method != "",
		headers:     len(effectiveHeaders(m.Headers)),
		queryParams: len(effectiveQueryParams(m.QueryParams)),
		created:     route.CreationTimestamp,
		routeKey:    route.Namespace + "/" + route.Name,
		ruleIndex:   ruleIndex,
		matchIndex:  matchIndex,
	}
	if e.pathType == "" {
		e.pathType = PathMatchPathPrefix
	}
	if e.pathValue == "" {
		e.pathValue = "/"
	}
	e.prefix, e.hasPrefix = matchedPrefix(m.Path)
	return e
}
