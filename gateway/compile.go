package gateway

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/gorilla/mux"

	"github.com/toolgate/toolgate/filter"
)

// snapshot is a Config compiled for serving: matchers, precedence-ordered
// rule tables and handler chains are built once, here, and never change.
type snapshot struct {
	config *Config
	ports  map[portKey]*portTable
	// transports are the keys of the TLS transports its backends use
	// (backendTransports.retain).
	transports map[string]bool
}

// portKey identifies one socket.
type portKey struct {
	address string
	port    int
}

func (k portKey) String() string {
	return fmt.Sprintf("%s:%d", k.address, k.port)
}

// portTable is everything served on one socket.
type portTable struct {
	protocol  Protocol
	listeners hostIndex[*listenerTable]
}

// listenerTable is one Gateway listener: its certificates and its rule
// tables by hostname.
type listenerTable struct {
	name         string
	port         int
	certificates []tls.Certificate
	// clientCAs verify client certificates as clientAuth says; nil asks
	// for none.
	clientCAs  *x509.CertPool
	clientAuth tls.ClientAuthType
	routes     hostIndex[*routeTable]
}

// routeTable holds the rules serving one hostname, in precedence order, in
// a gorilla/mux router whose first match wins.
type routeTable struct {
	router  *mux.Router
	entries []*matchEntry
	// root is the one protected rule's entry when the hostname has exactly
	// one, with a path that names it: the root form of the resource
	// metadata serves it.
	root *matchEntry
}

type compiledRoute struct {
	key string // "{namespace}/{name}"
}

type compiledRule struct {
	route    *compiledRoute
	index    int
	name     string
	timeouts Timeouts
	// retry sends backend requests again; nil sends each once.
	retry   *retrier
	handler http.Handler
	// metadata serves the RFC 9728 metadata of the rule's protected
	// resource; nil when no filter of the rule protects it.
	metadata ResourceMetadataServer
}

// lookup returns the rule entry serving r on this listener, or nil. The
// table of the most specific hostname matching the request holds the rules
// of every hostname that matches it, in precedence order.
func (l *listenerTable) lookup(host string, r *http.Request) *matchEntry {
	t, ok := l.routes.first(host)
	if !ok {
		return nil
	}
	m := mux.RouteMatch{Vars: noVars}
	if !t.router.Match(r, &m) {
		return nil
	}
	return m.Handler.(*matchEntry)
}

// noVars is handed to mux so that it does not allocate a map per request:
// our routes have no template variables, so mux never writes to it.
var noVars = map[string]string{}

// candidates returns the entries a request whose best-matching hostname is
// key may be served by: those of every hostname that matches all the
// requests key matches. For an exact name that is the name itself, the
// wildcards matching it and the catch-all; for "*.example.com" it is the
// wildcards of its parent domains ("*.com") and the catch-all. Each copy
// carries the hostname it came from, for precedence.
func candidates(key string, byHost map[string][]*matchEntry) []*matchEntry {
	var out []*matchEntry
	for other, entries := range byHost {
		if !hostnameCovers(other, key) {
			continue
		}
		for _, e := range entries {
			c := *e
			c.hostname = other
			out = append(out, &c)
		}
	}
	return out
}

// hostnameCovers reports whether every host matching key also matches
// pattern.
func hostnameCovers(pattern, key string) bool {
	switch {
	case pattern == "" || pattern == key:
		return true
	case key == "":
		return false
	case strings.HasPrefix(key, "*."):
		return strings.HasPrefix(pattern, "*.") && hostnameMatches(pattern, key[2:])
	default:
		return hostnameMatches(pattern, key)
	}
}

// compiler builds one snapshot. It lives for one compile, so the filters
// it builds belong to the new snapshot alone.
type compiler struct {
	// proxy is the final handler of every backend.
	proxy    http.Handler
	sessions *sessionSealer
	// extensions builds the filters of resolved ExtensionRefs.
	extensions ExtensionBuilder
	// built holds the filters built so far, by reference, so that every
	// rule and backend referring to the same resolved ExtensionRef shares
	// one filter within the snapshot.
	built map[extensionKey][]builtExtension
	// transports reach backends with TLS; used collects the keys of those
	// this snapshot uses.
	transports *backendTransports
	used       map[string]bool
	// mirrors sends the copies of mirror filters; mirrorStrip is what the
	// copies of the rule being compiled lose (see mirrorStrip).
	mirrors     *mirrorSender
	mirrorStrip []string
	// clientCert is presented to backends over TLS; nil presents none.
	clientCert *backendClientCert
}

type extensionKey struct{ group, kind, name string }

// builtExtension is a filter and the policy it was built from: two
// references to the same name may carry different policies while an
// MCPServer changes, and each gets the filter of its own.
type builtExtension struct {
	policy *filter.Policy
	filter ExtensionFilter
}

// compile validates cfg and builds its snapshot: matchers, handler chains,
// extension filters (with extensions), parsed certificates and the
// transports of TLS backends (from transports; nil builds new ones); its
// mirror filters send their copies with mirrors (nil: a sender of their
// own).
func compile(cfg *Config, proxy http.Handler, sessions *sessionSealer, extensions ExtensionBuilder, transports *backendTransports, mirrors *mirrorSender) (*snapshot, error) {
	if cfg == nil {
		return nil, fmt.Errorf("config is nil")
	}
	c := &compiler{
		proxy: proxy, sessions: sessions, extensions: extensions, built: map[extensionKey][]builtExtension{},
		transports: transports, used: map[string]bool{}, mirrors: mirrors,
	}
	var err error
	if c.clientCert, err = parseClientCertificate(cfg.BackendClientCertificate); err != nil {
		return nil, err
	}
	snap := &snapshot{config: cfg, ports: map[portKey]*portTable{}, transports: c.used}
	byPort := map[portKey]map[string]*listenerTable{}
	for i := range cfg.Listeners {
		l := &cfg.Listeners[i]
		lt, err := c.compileListener(l)
		if err != nil {
			return nil, fmt.Errorf("listener %q: %w", l.Name, err)
		}
		key := portKey{address: l.Address, port: l.Port}
		pt := snap.ports[key]
		if pt == nil {
			pt = &portTable{protocol: l.Protocol}
			snap.ports[key] = pt
			byPort[key] = map[string]*listenerTable{}
		}
		if pt.protocol != l.Protocol {
			return nil, fmt.Errorf("listener %q: port %s is already %s, cannot also be %s", l.Name, key, pt.protocol, l.Protocol)
		}
		hostname := strings.ToLower(l.Hostname)
		if other, dup := byPort[key][hostname]; dup {
			return nil, fmt.Errorf("listener %q: hostname %q on port %s is already served by listener %q", l.Name, l.Hostname, key, other.name)
		}
		byPort[key][hostname] = lt
	}
	for key, pt := range snap.ports {
		pt.listeners = newHostIndex(byPort[key])
	}
	return snap, nil
}

func (c *compiler) compileListener(l *Listener) (*listenerTable, error) {
	if l.Port < 0 || l.Port > 65535 {
		return nil, fmt.Errorf("port %d out of range", l.Port)
	}
	switch l.Protocol {
	case ProtocolHTTP:
	case ProtocolHTTPS:
		if len(l.Certificates) == 0 {
			return nil, fmt.Errorf("HTTPS listener has no certificate")
		}
	default:
		return nil, fmt.Errorf("unsupported protocol %q", l.Protocol)
	}
	certificates, err := parseCertificates(l.Certificates)
	if err != nil {
		return nil, err
	}
	lt := &listenerTable{name: l.Name, port: l.Port, certificates: certificates}
	if v := l.ClientValidation; v != nil {
		if l.Protocol != ProtocolHTTPS {
			return nil, fmt.Errorf("client certificate validation on a %s listener: it needs HTTPS", l.Protocol)
		}
		lt.clientCAs = x509.NewCertPool()
		if !lt.clientCAs.AppendCertsFromPEM([]byte(v.CACertificatesPEM)) {
			return nil, fmt.Errorf("client certificate validation: no CA certificate in caCertificatesPEM")
		}
		lt.clientAuth = tls.RequireAndVerifyClientCert
		if v.AllowInsecureFallback {
			// Asked for, not required, and not verified: the backends
			// authorize the clients.
			lt.clientAuth = tls.RequestClientCert
		}
	}
	entriesByHost := map[string][]*matchEntry{}
	for _, vh := range l.VirtualHosts {
		hostnames := vh.Hostnames
		if len(hostnames) == 0 {
			hostnames = []string{""}
		}
		for ri := range vh.Routes {
			route := &vh.Routes[ri]
			entries, err := c.compileRoute(route)
			if err != nil {
				return nil, fmt.Errorf("route %s/%s: %w", route.Namespace, route.Name, err)
			}
			for _, h := range hostnames {
				h = strings.ToLower(h)
				entriesByHost[h] = append(entriesByHost[h], entries...)
			}
		}
	}
	tables := map[string]*routeTable{}
	for key := range entriesByHost {
		t, err := newRouteTable(candidates(key, entriesByHost))
		if err != nil {
			return nil, err
		}
		tables[key] = t
	}
	lt.routes = newHostIndex(tables)
	return lt, nil
}

// parseCertificates parses PEM certificate and key pairs.
func parseCertificates(certs []Certificate) ([]tls.Certificate, error) {
	var out []tls.Certificate
	for i, c := range certs {
		pair, err := tls.X509KeyPair([]byte(c.CertificatePEM), []byte(c.PrivateKeyPEM))
		if err != nil {
			return nil, fmt.Errorf("certificate %d: %w", i, err)
		}
		out = append(out, pair)
	}
	return out, nil
}

// compileRoute builds the handler chain of every rule of a route and one
// match entry per Match.
func (c *compiler) compileRoute(route *Route) ([]*matchEntry, error) {
	cr := &compiledRoute{key: route.Namespace + "/" + route.Name}
	var entries []*matchEntry
	for i := range route.Rules {
		rule := &route.Rules[i]
		crule, err := c.compileRule(cr, i, rule)
		if err != nil {
			return nil, fmt.Errorf("rule %d: %w", i, err)
		}
		matches := rule.Matches
		if len(matches) == 0 {
			matches = []Match{{}}
		}
		for j, m := range matches {
			if err := checkMatch(m); err != nil {
				return nil, fmt.Errorf("rule %d match %d: %w", i, j, err)
			}
			entries = append(entries, newMatchEntry(crule, route, i, j, m))
		}
	}
	return entries, nil
}

// checkMatch validates a match by building it on a scratch router.
func checkMatch(m Match) error {
	return addMuxRoute(mux.NewRouter(), m, http.NotFoundHandler())
}

func (c *compiler) compileRule(route *compiledRoute, index int, rule *Rule) (*compiledRule, error) {
	if rule.Timeouts.Request < 0 || rule.Timeouts.BackendRequest < 0 {
		return nil, fmt.Errorf("negative timeout")
	}
	retry, err := compileRetry(rule.Retry)
	if err != nil {
		return nil, err
	}
	cr := &compiledRule{route: route, index: index, name: rule.Name, timeouts: rule.Timeouts, retry: retry}
	c.mirrorStrip = mirrorStrip(rule)
	backends, err := c.newBackendSet(rule.Backends)
	if err != nil {
		return nil, err
	}
	h, err := c.wrapFilters(rule.Filters, backends)
	if err != nil {
		return nil, err
	}
	for _, f := range rule.Filters {
		if f.Type != FilterExtensionRef || f.ExtensionRef == nil {
			continue
		}
		// Built by wrapFilters above: this finds the same filter.
		ext, err := c.extension(f.ExtensionRef)
		if err != nil {
			return nil, err
		}
		if m, ok := ext.(ResourceMetadataServer); ok {
			cr.metadata = m
			break
		}
	}
	if d := rule.Timeouts.Request; d > 0 {
		h = &requestTimeout{d: d, next: h}
	}
	cr.handler = h
	return cr, nil
}

// newRouteTable orders entries by precedence and registers them on a mux
// router in that order.
func newRouteTable(entries []*matchEntry) (*routeTable, error) {
	sorted := append([]*matchEntry(nil), entries...)
	sortByPrecedence(sorted)
	router := mux.NewRouter()
	for _, e := range sorted {
		if err := addMuxRoute(router, e.match, e); err != nil {
			return nil, err
		}
	}
	return &routeTable{router: router, entries: sorted, root: rootResource(sorted)}, nil
}

// rootResource is the entry of the only protected rule among entries, when
// every match of that rule names the same path (Exact or PathPrefix): that
// path is then the host's one protected resource. Nil otherwise.
func rootResource(entries []*matchEntry) *matchEntry {
	var root *matchEntry
	for _, e := range entries {
		if e.rule.metadata == nil {
			continue
		}
		if root != nil && root.rule != e.rule {
			return nil // two protected rules: ambiguous
		}
		if e.pathType != PathMatchExact && e.pathType != PathMatchPathPrefix {
			return nil
		}
		if root != nil && root.pathValue != e.pathValue {
			return nil
		}
		root = e
	}
	return root
}

// requestTimeout bounds a whole exchange (HTTPRoute timeouts.request).
type requestTimeout struct {
	d    time.Duration
	next http.Handler
}

func (t *requestTimeout) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), t.d)
	defer cancel()
	t.next.ServeHTTP(w, r.WithContext(ctx))
}
