package gateway

import (
	"fmt"
	"net/http"
	"net/url"
	"path"
	"regexp"
	"strings"

	"github.com/gorilla/mux"
)

// Matching uses gorilla/mux where its matchers have the Gateway API's
// semantics and our own matchers (mux.MatcherFunc) where they do not:
//
//   - Method: mux's Methods matcher (exact, upper case).
//   - Headers, Exact: mux's Headers matcher. It canonicalizes names, so
//     matching is case-insensitive as the spec requires, and accepts a
//     repeated header when any of its values is equal. mux stores the pairs
//     in a map, so duplicate names are removed here first: the spec says
//     only the first entry of a name counts.
//   - Headers, RegularExpression: mux's HeadersRegexp, with the expression
//     anchored here (mux matches anywhere in the value; we match the whole
//     value, like Envoy-based implementations).
//   - Path: our own. mux's PathPrefix is a string prefix ("/foo" would match
//     "/foobar"), while the spec's PathPrefix matches whole segments and
//     ignores a trailing slash; mux's Path reads "{...}" as a template
//     variable, and an Exact value may contain braces.
//   - Query parameters: our own. mux's Queries compares the raw
//     "name=value" text, still percent-encoded, and reads braces in values
//     as templates; the spec compares decoded names and values and
//     recommends the first value of a repeated parameter.
//   - Hostnames: our own (see host.go). mux's Host templates cannot express
//     "*.example.com" matching several labels, and hostname precedence
//     decides which rule table is consulted before mux runs.
//
// The rules of one hostname table are registered in a mux.Router in
// precedence order (precedence.go) and the Router's first-match dispatch
// picks the rule.

// normalizePath resolves dot segments and merges repeated slashes, keeping a
// trailing slash. It reports whether the path changed.
func normalizePath(p string) (string, bool) {
	if p == "" {
		return "/", true
	}
	if !strings.Contains(p, "//") && !strings.Contains(p, "/.") {
		return p, false
	}
	c := path.Clean(p)
	if strings.HasSuffix(p, "/") && c != "/" {
		c += "/"
	}
	return c, c != p
}

// matchedPrefix returns the prefix that a ReplacePrefixMatch rewrite
// replaces for requests selected by pm, and false unless pm is a PathPrefix.
func matchedPrefix(pm PathMatch) (string, bool) {
	switch pm.Type {
	case "", PathMatchPathPrefix:
		if pm.Value == "" {
			return "/", true
		}
		return pm.Value, true
	}
	return "", false
}

// pathMatcher returns a mux matcher for a path condition.
func pathMatcher(pm PathMatch) (mux.MatcherFunc, error) {
	value := pm.Value
	switch pm.Type {
	case "", PathMatchPathPrefix:
		if value == "" {
			value = "/"
		}
		if !strings.HasPrefix(value, "/") {
			return nil, fmt.Errorf("path prefix %q must start with /", value)
		}
		prefix := strings.TrimSuffix(value, "/")
		return func(r *http.Request, _ *mux.RouteMatch) bool {
			return segmentPrefixMatch(r.URL.Path, prefix)
		}, nil
	case PathMatchExact:
		if !strings.HasPrefix(value, "/") {
			return nil, fmt.Errorf("exact path %q must start with /", value)
		}
		return func(r *http.Request, _ *mux.RouteMatch) bool {
			return r.URL.Path == value
		}, nil
	case PathMatchRegularExpression:
		re, err := compileFullMatch(value)
		if err != nil {
			return nil, fmt.Errorf("path regular expression: %w", err)
		}
		return func(r *http.Request, _ *mux.RouteMatch) bool {
			return re.MatchString(r.URL.Path)
		}, nil
	default:
		return nil, fmt.Errorf("unsupported path match type %q", pm.Type)
	}
}

// segmentPrefixMatch reports whether p starts with prefix (which has no
// trailing slash) on a segment boundary.
func segmentPrefixMatch(p, prefix string) bool {
	if !strings.HasPrefix(p, prefix) {
		return false
	}
	return len(p) == len(prefix) || p[len(prefix)] == '/'
}

// compileFullMatch compiles an RE2 expression that must match a whole value.
func compileFullMatch(expr string) (*regexp.Regexp, error) {
	if _, err := regexp.Compile(expr); err != nil {
		return nil, err
	}
	return regexp.Compile(`^(?:` + expr + `)$`)
}

// effectiveHeaders drops later entries whose name repeats an earlier one
// (case-insensitively), as the spec requires.
func effectiveHeaders(hs []HeaderMatch) []HeaderMatch {
	out := make([]HeaderMatch, 0, len(hs))
	seen := make(map[string]bool, len(hs))
	for _, h := range hs {
		k := http.CanonicalHeaderKey(h.Name)
		if seen[k] {
			continue
		}
		seen[k] = true
		out = append(out, h)
	}
	return out
}

// effectiveQueryParams drops later entries whose name repeats an earlier one.
func effectiveQueryParams(qs []QueryParamMatch) []QueryParamMatch {
	out := make([]QueryParamMatch, 0, len(qs))
	seen := make(map[string]bool, len(qs))
	for _, q := range qs {
		if seen[q.Name] {
			continue
		}
		seen[q.Name] = true
		out = append(out, q)
	}
	return out
}

// queryCondition is one compiled query parameter condition.
type queryCondition struct {
	name  string
	exact string
	re    *regexp.Regexp
}

func queryMatcher(qs []QueryParamMatch) (mux.MatcherFunc, error) {
	conds := make([]queryCondition, 0, len(qs))
	for _, q := range qs {
		c := queryCondition{name: q.Name, exact: q.Value}
		switch q.Type {
		case "", MatchExact:
		case MatchRegularExpression:
			re, err := compileFullMatch(q.Value)
			if err != nil {
				return nil, fmt.Errorf("query parameter %q: %w", q.Name, err)
			}
			c.re = re
		default:
			return nil, fmt.Errorf("query parameter %q: unsupported match type %q", q.Name, q.Type)
		}
		conds = append(conds, c)
	}
	return func(r *http.Request, _ *mux.RouteMatch) bool {
		for _, c := range conds {
			v, ok := firstQueryValue(r.URL.RawQuery, c.name)
			if !ok {
				return false
			}
			if c.re != nil {
				if !c.re.MatchString(v) {
					return false
				}
			} else if v != c.exact {
				return false
			}
		}
		return true
	}, nil
}

// firstQueryValue returns the decoded value of the first occurrence of the
// parameter name in a raw query, without building a url.Values map.
func firstQueryValue(rawQuery, name string) (string, bool) {
	for rawQuery != "" {
		var pair string
		pair, rawQuery, _ = strings.Cut(rawQuery, "&")
		k, v, _ := strings.Cut(pair, "=")
		if strings.ContainsAny(k, "%+") {
			dk, err := url.QueryUnescape(k)
			if err != nil {
				continue
			}
			k = dk
		}
		if k != name {
			continue
		}
		if strings.ContainsAny(v, "%+") {
			dv, err := url.QueryUnescape(v)
			if err != nil {
				continue
			}
			v = dv
		}
		return v, true
	}
	return "", false
}

// addMuxRoute registers one Match on router, served by h.
func addMuxRoute(router *mux.Router, m Match, h http.Handler) error {
	pm, err := pathMatcher(m.Path)
	if err != nil {
		return err
	}
	route := router.NewRoute().MatcherFunc(pm)
	if m.Method != "" {
		route.Methods(m.Method)
	}
	var exact, regex []string
	for _, hm := range effectiveHeaders(m.Headers) {
		if hm.Name == "" {
			return fmt.Errorf("header match without a name")
		}
		switch hm.Type {
		case "", MatchExact:
			if hm.Value == "" {
				// mux reads an empty value as "header present": ask
				// for an empty value instead.
				regex = append(regex, hm.Name, `^$`)
				continue
			}
			exact = append(exact, hm.Name, hm.Value)
		case MatchRegularExpression:
			if _, err := regexp.Compile(hm.Value); err != nil {
				return fmt.Errorf("header %q: %w", hm.Name, err)
			}
			regex = append(regex, hm.Name, `^(?:`+hm.Value+`)$`)
		default:
			return fmt.Errorf("header %q: unsupported match type %q", hm.Name, hm.Type)
		}
	}
	if len(exact) > 0 {
		route.Headers(exact...)
	}
	if len(regex) > 0 {
		route.HeadersRegexp(regex...)
	}
	if qs := effectiveQueryParams(m.QueryParams); len(qs) > 0 {
		qm, err := queryMatcher(qs)
		if err != nil {
			return err
		}
		route.MatcherFunc(qm)
	}
	route.Handler(h)
	return route.GetError()
}
