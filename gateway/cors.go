package gateway

import (
	"fmt"
	"net/http"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"github.com/toolgate/toolgate/filter"
)

// The CORS filter (the Gateway API's HTTPCORSFilter) answers browsers'
// preflights itself and adds the CORS response headers to every other
// answer of its rule, whoever writes it: the backend, or the gateway and
// the MCP filter refusing the request (a page must be able to read a 401's
// WWW-Authenticate and a 429's Retry-After). So it always wraps the whole
// filter chain of its rule (or backend), whatever its place in the list:
// see wrapFilters.

// corsWildcard is the value of an allow list that allows everything.
const corsWildcard = "*"

// Check reports the first value of c that the gateway cannot serve, named
// as the HTTPRoute's cors field spells it, with what to write instead.
func (c *CORS) Check() error {
	for i, o := range c.AllowOrigins {
		if o == corsWildcard {
			continue
		}
		if _, ok := parseOrigin(o, true); !ok {
			return fmt.Errorf(`allowOrigins[%d]: %q is not an origin: write "*" alone, or scheme://host[:port] with scheme http or https and a host name that may be "*" or start with "*."`, i, o)
		}
	}
	for _, list := range []struct {
		field  string
		values []string
		what   string
	}{
		{"allowOrigins", c.AllowOrigins, ""},
		{"allowMethods", c.AllowMethods, "method"},
		{"allowHeaders", c.AllowHeaders, "header name"},
		{"exposeHeaders", c.ExposeHeaders, "header name"},
	} {
		for i, v := range list.values {
			if list.what != "" && !isToken(v) {
				return fmt.Errorf("%s[%d]: %q is not a %s: write letters, digits and !#$%%&'*+-.^_`|~ only", list.field, i, v, list.what)
			}
		}
		// exposeHeaders may list "*" beside names (its CRD allows it): the
		// wildcard covers them.
		if list.field != "exposeHeaders" && len(list.values) > 1 && slices.Contains(list.values, corsWildcard) {
			return fmt.Errorf(`%s: "*" allows everything and must be alone: remove it or the other values`, list.field)
		}
	}
	if c.MaxAge < 0 {
		return fmt.Errorf("maxAge: %d is not a number of seconds: write 1 or more", c.MaxAge)
	}
	return nil
}

// isToken reports whether s is an HTTP token (RFC 9110 section 5.6.2), as
// method and header names are.
func isToken(s string) bool {
	return s != "" && !strings.ContainsFunc(s, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("!#$%&'*+-.^_`|~", r))
	})
}

// origin is a serialized origin (RFC 6454) or, in a pattern, an allowed
// one: lower case, the port made explicit.
type origin struct {
	scheme string
	// host is a name, a bracketed IPv6 address, or in a pattern "*" (any
	// host) or "*.suffix" (any name below suffix, at any depth).
	host string
	port string
}

// parseOrigin reads scheme://host[:port] with scheme http or https, the
// port defaulting to the scheme's. A pattern's host may be "*" or start
// with "*."; a request's may be a bracketed IPv6 address. Anything else
// ("null", a path, another scheme) is not an origin.
func parseOrigin(s string, pattern bool) (origin, bool) {
	scheme, rest, ok := strings.Cut(strings.ToLower(s), "://")
	if !ok {
		return origin{}, false
	}
	o := origin{scheme: scheme, host: rest}
	switch scheme {
	case "http":
		o.port = "80"
	case "https":
		o.port = "443"
	default:
		return origin{}, false
	}
	if i := strings.LastIndexByte(rest, ':'); i >= 0 && !strings.HasSuffix(rest, "]") {
		o.host = rest[:i]
		port, err := strconv.Atoi(rest[i+1:])
		if err != nil || port < 1 || port > 65535 || !isDigits(rest[i+1:]) {
			return origin{}, false
		}
		o.port = strconv.Itoa(port)
	}
	name := o.host
	switch {
	case pattern && name == "*":
		return o, true
	case pattern:
		name = strings.TrimPrefix(name, "*.")
	case strings.HasPrefix(name, "["):
		addr, err := netip.ParseAddr(strings.TrimSuffix(name[1:], "]"))
		return o, err == nil && addr.Is6() && strings.HasSuffix(name, "]")
	}
	for label := range strings.SplitSeq(name, ".") {
		if label == "" || strings.ContainsFunc(label, func(r rune) bool {
			return !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-')
		}) {
			return origin{}, false
		}
	}
	return o, true
}

func isDigits(s string) bool {
	return s != "" && !strings.ContainsFunc(s, func(r rune) bool { return r < '0' || r > '9' })
}

// allows reports whether pattern p allows origin o: same scheme and port,
// and the same host, any host ("*"), or a host below the wildcard's suffix.
func (p origin) allows(o origin) bool {
	if p.scheme != o.scheme || p.port != o.port {
		return false
	}
	if p.host == corsWildcard {
		return true
	}
	if suffix, ok := strings.CutPrefix(p.host, "*"); ok {
		return len(o.host) > len(suffix) && strings.HasSuffix(o.host, suffix)
	}
	return p.host == o.host
}

// corsPolicy is a CORS filter compiled for serving.
type corsPolicy struct {
	// anyOrigin allows every origin ("*"); origins are the patterns
	// otherwise.
	anyOrigin   bool
	origins     []origin
	credentials bool
	// The lists as answered, joined; "" when empty. A wildcard list is
	// answered with what the preflight asks for (see preflight).
	methods, headers, expose        string
	anyMethod, anyHeader, exposeAll bool
	maxAge                          string
	// varyOrigin says that answers depend on the request's Origin: all
	// but those of "*" without credentials, which are the same for all.
	varyOrigin bool
}

func newCORSPolicy(c *CORS) (*corsPolicy, error) {
	if err := c.Check(); err != nil {
		return nil, err
	}
	p := &corsPolicy{
		credentials: c.AllowCredentials,
		anyMethod:   slices.Contains(c.AllowMethods, corsWildcard),
		anyHeader:   slices.Contains(c.AllowHeaders, corsWildcard),
		exposeAll:   slices.Contains(c.ExposeHeaders, corsWildcard),
	}
	for _, o := range c.AllowOrigins {
		if o == corsWildcard {
			p.anyOrigin = true
			continue
		}
		pattern, _ := parseOrigin(o, true) // checked
		p.origins = append(p.origins, pattern)
	}
	p.varyOrigin = !p.anyOrigin || p.credentials
	if !p.anyMethod {
		p.methods = strings.Join(c.AllowMethods, ", ")
	}
	if !p.anyHeader {
		p.headers = strings.Join(c.AllowHeaders, ", ")
	}
	if !p.exposeAll {
		p.expose = strings.Join(c.ExposeHeaders, ", ")
	}
	if c.MaxAge > 0 {
		p.maxAge = strconv.Itoa(int(c.MaxAge))
	}
	return p, nil
}

// allowed returns the Access-Control-Allow-Origin answer to a request
// from origins (its Origin fields), "" when the policy does not allow it.
func (p *corsPolicy) allowed(origins []string) string {
	if len(origins) != 1 || origins[0] == "" {
		return ""
	}
	if p.anyOrigin {
		if p.credentials {
			return origins[0] // "*" is refused with credentials
		}
		return corsWildcard
	}
	o, ok := parseOrigin(origins[0], false)
	if !ok {
		return ""
	}
	for _, pattern := range p.origins {
		if pattern.allows(o) {
			return origins[0]
		}
	}
	return ""
}

// CORS response header names, as net/http spells them.
const (
	headerAllowOrigin      = "Access-Control-Allow-Origin"
	headerAllowCredentials = "Access-Control-Allow-Credentials"
	headerAllowMethods     = "Access-Control-Allow-Methods"
	headerAllowHeaders     = "Access-Control-Allow-Headers"
	headerExposeHeaders    = "Access-Control-Expose-Headers"
	headerMaxAge           = "Access-Control-Max-Age"
	headerRequestMethod    = "Access-Control-Request-Method"
	headerRequestHeaders   = "Access-Control-Request-Headers"
)

// corsFilter answers preflights and sets the CORS headers of the other
// responses of its chain.
type corsFilter struct {
	policy *corsPolicy
	next   http.Handler
}

func (f *corsFilter) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	allowOrigin := f.policy.allowed(r.Header.Values("Origin"))
	// The MCP filter lets the same requests pass as preflights: with a
	// CORS filter they never reach it.
	if filter.IsCORSPreflight(r) {
		f.policy.preflight(w, r, allowOrigin)
		return
	}
	f.next.ServeHTTP(&responseHeaderWriter{ResponseWriter: w, mod: &corsResponse{policy: f.policy, allowOrigin: allowOrigin}}, r)
}

// preflight answers a preflight: 204 with what the policy allows, or 403
// without CORS headers to an origin it does not allow (the spec allows
// either 2xx or 403; 403 says why in the browser's network log).
//
// A wildcard allowMethods or allowHeaders is answered with the method and
// headers the preflight asks for, which the spec allows with or without
// credentials: a "*" would not cover Authorization (Fetch: it never does),
// the header MCP clients send their token in.
func (p *corsPolicy) preflight(w http.ResponseWriter, r *http.Request, allowOrigin string) {
	h := w.Header()
	vary := make([]string, 0, 3)
	if p.varyOrigin {
		vary = append(vary, "Origin")
	}
	if p.anyMethod {
		vary = append(vary, headerRequestMethod)
	}
	if p.anyHeader {
		vary = append(vary, headerRequestHeaders)
	}
	addVary(h, vary...)
	if allowOrigin == "" {
		writeError(w, http.StatusForbidden, fmt.Sprintf("origin %q is not allowed by the route's CORS filter (allowOrigins)", r.Header.Get("Origin")))
		return
	}
	p.setOrigin(h, allowOrigin)
	switch {
	case p.anyMethod:
		h.Set(headerAllowMethods, r.Header.Get(headerRequestMethod))
	case p.methods != "":
		h.Set(headerAllowMethods, p.methods)
	}
	switch {
	case p.anyHeader:
		if asked := strings.Join(r.Header.Values(headerRequestHeaders), ", "); asked != "" {
			h.Set(headerAllowHeaders, asked)
		}
	case p.headers != "":
		h.Set(headerAllowHeaders, p.headers)
	}
	switch {
	case p.exposeAll && !p.credentials:
		h.Set(headerExposeHeaders, corsWildcard)
	case p.expose != "":
		h.Set(headerExposeHeaders, p.expose)
	}
	if p.maxAge != "" {
		h.Set(headerMaxAge, p.maxAge)
	}
	w.WriteHeader(http.StatusNoContent)
}

func (p *corsPolicy) setOrigin(h http.Header, allowOrigin string) {
	h.Set(headerAllowOrigin, allowOrigin)
	if p.credentials {
		h.Set(headerAllowCredentials, "true")
	}
}

// corsResponse sets the CORS headers of a response that is not a
// preflight's. The route's CORS filter speaks for the route: CORS headers
// the backend set are replaced, or removed for an origin the filter does
// not allow.
type corsResponse struct {
	policy      *corsPolicy
	allowOrigin string // "" when not allowed
}

func (c *corsResponse) modifyResponse(h http.Header) {
	for _, name := range [...]string{headerAllowOrigin, headerAllowCredentials, headerAllowMethods, headerAllowHeaders, headerExposeHeaders, headerMaxAge} {
		delete(h, name)
	}
	p := c.policy
	if p.varyOrigin {
		addVary(h, "Origin")
	}
	if c.allowOrigin == "" {
		return
	}
	p.setOrigin(h, c.allowOrigin)
	switch {
	case p.exposeAll && p.credentials:
		// "*" means no header with credentials: name every one this
		// response has.
		if names := exposable(h); names != "" {
			h.Set(headerExposeHeaders, names)
		}
	case p.exposeAll:
		h.Set(headerExposeHeaders, corsWildcard)
	case p.expose != "":
		h.Set(headerExposeHeaders, p.expose)
	}
}

// exposable joins the names of the response header fields a page cannot
// read without Access-Control-Expose-Headers, sorted: all but the
// CORS-safelisted ones (Fetch) and Set-Cookie, which no page ever reads.
func exposable(h http.Header) string {
	names := make([]string, 0, len(h))
	for name := range h {
		switch name {
		case "Cache-Control", "Content-Language", "Content-Length", "Content-Type", "Expires", "Last-Modified", "Pragma",
			"Set-Cookie", headerAllowOrigin, headerAllowCredentials:
			continue
		}
		names = append(names, name)
	}
	slices.Sort(names)
	return strings.Join(names, ", ")
}

// addVary adds names to the Vary field of h, each unless it is there
// already (or Vary is "*").
func addVary(h http.Header, names ...string) {
	for _, name := range names {
		if !hasVary(h, name) {
			h.Add("Vary", name)
		}
	}
}

func hasVary(h http.Header, name string) bool {
	for _, v := range h.Values("Vary") {
		for token := range strings.SplitSeq(v, ",") {
			if t := strings.TrimSpace(token); t == "*" || strings.EqualFold(t, name) {
				return true
			}
		}
	}
	return false
}
