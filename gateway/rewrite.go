package gateway

import (
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
)

// The RequestRedirect and URLRewrite filters and their path modifiers.

func checkPathModifier(m *PathModifier) error {
	if m == nil {
		return nil
	}
	switch m.Type {
	case ReplaceFullPath:
		if !strings.HasPrefix(m.ReplaceFullPath, "/") {
			return fmt.Errorf("replaceFullPath %q must start with /", m.ReplaceFullPath)
		}
	case ReplacePrefixMatch:
		if m.ReplacePrefixMatch != "" && !strings.HasPrefix(m.ReplacePrefixMatch, "/") {
			return fmt.Errorf("replacePrefixMatch %q must start with /", m.ReplacePrefixMatch)
		}
	default:
		return fmt.Errorf("unsupported path modifier type %q", m.Type)
	}
	return nil
}

// modifyPath applies a path modifier to a request path. x tells which
// PathPrefix selected the rule, for ReplacePrefixMatch.
func modifyPath(m *PathModifier, p string, x *exchange) string {
	switch m.Type {
	case ReplaceFullPath:
		return m.ReplaceFullPath
	case ReplacePrefixMatch:
		if x == nil || !x.hasPrefix {
			return p
		}
		return replacePrefix(p, x.prefix, m.ReplacePrefixMatch)
	}
	return p
}

// replacePrefix replaces the segment-wise prefix of p, ignoring trailing
// slashes on both the prefix and the replacement, as in the table of
// HTTPPathModifier.ReplacePrefixMatch: "/foo/bar" with prefix "/foo" and
// replacement "/xyz" becomes "/xyz/bar"; "/foo/" becomes "/xyz/"; an empty
// result is "/".
func replacePrefix(p, prefix, replacement string) string {
	prefix = strings.TrimSuffix(prefix, "/")
	if !segmentPrefixMatch(p, prefix) {
		return p
	}
	out := strings.TrimSuffix(replacement, "/") + p[len(prefix):]
	if !strings.HasPrefix(out, "/") {
		out = "/" + out
	}
	return out
}

type urlRewriteFilter struct {
	cfg  URLRewrite
	next http.Handler
}

func (f *urlRewriteFilter) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	r2 := r.WithContext(r.Context())
	if f.cfg.Hostname != "" {
		r2.Host = f.cfg.Hostname
	}
	if f.cfg.Path != nil {
		u := *r.URL
		u.Path = modifyPath(f.cfg.Path, r.URL.Path, exchangeOf(r))
		u.RawPath = ""
		r2.URL = &u
	}
	f.next.ServeHTTP(w, r2)
}

type redirectFilter struct {
	cfg  Redirect
	code int
}

func newRedirectFilter(cfg Redirect) (*redirectFilter, error) {
	switch cfg.Scheme {
	case "", "http", "https":
	default:
		return nil, fmt.Errorf("unsupported redirect scheme %q", cfg.Scheme)
	}
	code := cfg.StatusCode
	switch code {
	case 0:
		code = http.StatusFound
	case 301, 302, 303, 307, 308:
	default:
		return nil, fmt.Errorf("unsupported redirect status code %d", code)
	}
	if cfg.Port < 0 || cfg.Port > 65535 {
		return nil, fmt.Errorf("redirect port %d out of range", cfg.Port)
	}
	if err := checkPathModifier(cfg.Path); err != nil {
		return nil, err
	}
	return &redirectFilter{cfg: cfg, code: code}, nil
}

func (f *redirectFilter) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	x := exchangeOf(r)
	scheme := f.cfg.Scheme
	if scheme == "" {
		scheme = requestScheme(r)
	}
	host := f.cfg.Hostname
	if host == "" {
		host = requestHostname(r.Host)
	}
	port := f.cfg.Port
	if port == 0 {
		// The spec: the scheme's well-known port when the filter sets a
		// scheme, otherwise the listener's port.
		switch f.cfg.Scheme {
		case "http":
			port = 80
		case "https":
			port = 443
		default:
			port = listenerPort(r, x)
		}
	}
	hostport := host
	if strings.Contains(host, ":") {
		hostport = "[" + host + "]"
	}
	if !(scheme == "http" && port == 80) && !(scheme == "https" && port == 443) && port != 0 {
		hostport = net.JoinHostPort(host, strconv.Itoa(port))
	}
	loc := url.URL{Scheme: scheme, Host: hostport, Path: r.URL.Path, RawPath: r.URL.RawPath, RawQuery: r.URL.RawQuery}
	if f.cfg.Path != nil {
		loc.Path, loc.RawPath = modifyPath(f.cfg.Path, r.URL.Path, x), ""
	}
	w.Header().Set("Location", loc.String())
	w.WriteHeader(f.code)
}

// requestScheme is the scheme the client used to reach the gateway.
func requestScheme(r *http.Request) string {
	if r.TLS != nil {
		return "https"
	}
	return "http"
}

// listenerPort is the port of the Gateway listener serving r: the
// configured one, or the bound one for port 0.
func listenerPort(r *http.Request, x *exchange) int {
	if x != nil && x.listener != nil && x.listener.port != 0 {
		return x.listener.port
	}
	if a, ok := r.Context().Value(http.LocalAddrContextKey).(net.Addr); ok {
		if _, p, err := net.SplitHostPort(a.String()); err == nil {
			n, _ := strconv.Atoi(p)
			return n
		}
	}
	return 0
}
