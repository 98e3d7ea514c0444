package gateway

import (
	"fmt"
	"math/bits"
	"net"
	"net/http"
	"sort"
	"strings"
	"sync/atomic"

	"github.com/toolgate/toolgate/filter"
)

// compiledBackend is a Backend ready to serve.
type compiledBackend struct {
	name      string
	weight    int64
	scheme    string
	endpoints []string
	invalid   bool
	// path and pathGETOnly are Backend.EndpointPath and
	// EndpointPathGETOnly.
	path        string
	pathGETOnly bool
	// transport reaches the backend over TLS (Backend.TLS); nil uses the
	// proxy's. tlsPolicy names its BackendTLSPolicy, and noCA is set when
	// that policy has no valid CA certificate: nothing is dialed.
	transport http.RoundTripper
	tlsPolicy string
	noCA      bool
	next      atomic.Uint64 // round-robin position among endpoints
	handler   http.Handler  // backend filters, then the proxy
}

// pickEndpoint balances across the backend's endpoints round-robin.
func (b *compiledBackend) pickEndpoint() string {
	if len(b.endpoints) == 0 {
		return ""
	}
	i := b.next.Add(1) - 1
	return b.endpoints[i%uint64(len(b.endpoints))]
}

// backendSet chooses a rule's backend by weight, or by MCP session.
//
// The weighted choice is deterministic: request n takes the point
// frac(n/φ) of the golden-ratio (Weyl) sequence in [0, total weight) and
// the backend whose cumulative weight interval holds it. The sequence is
// low-discrepancy, so every backend's share stays within a few requests of
// weight/total at every point, with no lock and no random source; a weight
// of 0 is an empty interval and is never chosen.
type backendSet struct {
	backends   []*compiledBackend
	cumulative []uint64 // cumulative[i] = sum of weights of backends[0..i]
	total      uint64
	counter    atomic.Uint64

	byEndpoint map[string]*compiledBackend // endpoints of valid, weighted backends
	sessions   *sessionSealer
}

// golden is 2^64/φ, rounded to odd: n*golden mod 2^64 walks [0, 2^64) as
// the Weyl sequence frac(n/φ).
const golden = 0x9E3779B97F4A7C15

// newBackendSet compiles a rule's backends, each behind its own filters.
func (c *compiler) newBackendSet(backends []Backend) (*backendSet, error) {
	s := &backendSet{byEndpoint: map[string]*compiledBackend{}, sessions: c.sessions}
	for i, b := range backends {
		if b.Weight < 0 {
			return nil, fmt.Errorf("backend %d (%s): negative weight %d", i, b.Name, b.Weight)
		}
		h, err := c.wrapFilters(b.Filters, c.proxy)
		if err != nil {
			return nil, fmt.Errorf("backend %d (%s): %w", i, b.Name, err)
		}
		cb, err := c.compileBackend(&b, h)
		if err != nil {
			return nil, fmt.Errorf("backend %d (%s): %w", i, b.Name, err)
		}
		s.total += uint64(b.Weight)
		s.backends = append(s.backends, cb)
		s.cumulative = append(s.cumulative, s.total)
		if !b.Invalid && !cb.noCA && b.Weight > 0 {
			for _, ep := range b.Endpoints {
				if _, dup := s.byEndpoint[ep]; !dup {
					s.byEndpoint[ep] = cb
				}
			}
		}
	}
	return s, nil
}

// compileBackend checks b and compiles it with handler, its filters then
// the proxy (nil for a mirror's backend), and the transport it needs.
func (c *compiler) compileBackend(b *Backend, handler http.Handler) (*compiledBackend, error) {
	scheme := b.Scheme
	switch scheme {
	case "":
		scheme = "http"
		if b.TLS != nil {
			scheme = "https"
		}
	case "http", "https":
	default:
		return nil, fmt.Errorf("unsupported scheme %q", b.Scheme)
	}
	if b.TLS != nil && scheme != "https" {
		return nil, fmt.Errorf("TLS needs scheme https, not %q", b.Scheme)
	}
	for _, ep := range b.Endpoints {
		if _, _, err := net.SplitHostPort(ep); err != nil {
			return nil, fmt.Errorf("endpoint %q: %w", ep, err)
		}
	}
	if b.EndpointPath != "" && !strings.HasPrefix(b.EndpointPath, "/") {
		return nil, fmt.Errorf("endpoint path %q must start with /", b.EndpointPath)
	}
	cb := &compiledBackend{
		name:      b.Name,
		weight:    int64(b.Weight),
		scheme:    scheme,
		endpoints: append([]string(nil), b.Endpoints...),
		invalid:   b.Invalid,
		handler:   handler,

		path:        b.EndpointPath,
		pathGETOnly: b.EndpointPathGETOnly,
	}
	if b.Protocol != "" && b.Protocol != BackendProtocolH2C {
		return nil, fmt.Errorf("protocol %q is not one the gateway speaks (h2c, or none for HTTP/1.1)", b.Protocol)
	}
	if b.Protocol == BackendProtocolH2C && b.TLS == nil {
		cb.transport = c.transports.h2c()
		c.used[h2cTransportKey] = true
	}
	switch {
	case b.TLS != nil:
		cb.tlsPolicy = b.TLS.Policy
		if cb.noCA = !b.TLS.hasRoots(); !cb.noCA {
			tr, key, err := c.transports.get(b.TLS, c.clientCert)
			if err != nil {
				return nil, err
			}
			cb.transport = tr
			c.used[key] = true
		}
	case scheme == "https" && c.clientCert != nil:
		// The proxy's own transport presents no certificate.
		tr, key, err := c.transports.https(c.clientCert)
		if err != nil {
			return nil, err
		}
		cb.transport = tr
		c.used[key] = true
	}
	return cb, nil
}

// pick returns the backend for the next request, or nil when no backend has
// a weight.
func (s *backendSet) pick() *compiledBackend {
	if s.total == 0 {
		return nil
	}
	n := s.counter.Add(1) - 1
	point, _ := bits.Mul64(n*golden, s.total) // floor(frac(n/φ) * total)
	i := sort.Search(len(s.cumulative), func(i int) bool { return point < s.cumulative[i] })
	return s.backends[i]
}

// session is what a request says of its MCP session.
type session int

const (
	sessionNone      session = iota // no session id: a new session, or none
	sessionHere                     // ours, for this caller, its endpoint still here
	sessionElsewhere                // ours, for this caller, its endpoint gone
	sessionUnknown                  // not one the gateway sealed for this caller
)

// sticky returns the endpoint that owns the request's MCP session, and
// records on x the backend's own session id to restore.
func (s *backendSet) sticky(r *http.Request, x *exchange) (*compiledBackend, string, session) {
	if s.sessions == nil {
		return nil, "", sessionNone
	}
	user, _ := filter.Caller(r.Context())
	var token, param string
	if token = r.Header.Get(sessionHeader); token == "" {
		var ok bool
		if param, token, ok = legacySessionParam(r.URL.RawQuery); !ok {
			return nil, "", sessionNone
		}
	}
	endpoint, id, ok := s.sessions.open(token, user)
	if !ok {
		return nil, "", sessionUnknown
	}
	x.sessionID, x.sessionParam = id, param
	b, ok := s.byEndpoint[endpoint]
	if !ok {
		return nil, "", sessionElsewhere
	}
	return b, endpoint, sessionHere
}

// ServeHTTP sends the request to the session's endpoint or to a weighted
// choice. The share of an invalid backend, or of one whose TLS policy has
// no valid CA certificate, answers 500 and a backend without endpoints
// 503, as the spec says.
func (s *backendSet) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	x := exchangeOf(r)
	if x == nil {
		writeError(w, http.StatusInternalServerError, "request did not enter through the gateway")
		return
	}
	switch b, ep, sess := s.sticky(r, x); sess {
	case sessionHere:
		x.backend, x.endpoint = b, ep
		b.handler.ServeHTTP(w, r)
		return
	case sessionUnknown:
		if _, authenticated := filter.Caller(r.Context()); authenticated {
			// Not a session of this caller's: another user's, tampered
			// with, or the backend's own id. It never reaches the backend,
			// and gets the MCP specification's answer to a session the
			// server does not know: the client starts a new one.
			writeError(w, http.StatusNotFound, "session not found: start a new session")
			return
		}
		// Where nobody is authenticated there is no identity to borrow:
		// an id that is not ours is forwarded unchanged and balanced
		// normally, and the backend says whether it knows it.
	}
	b := s.pick()
	if b == nil {
		writeError(w, http.StatusInternalServerError, "no backend with a non-zero weight")
		return
	}
	x.backend = b
	if b.invalid {
		writeError(w, http.StatusInternalServerError, "backend "+b.name+" is not resolved")
		return
	}
	if b.noCA {
		// The spec: connections that would use an invalid CA certificate
		// fail with a 5xx.
		writeError(w, http.StatusInternalServerError, "backend "+b.name+": its BackendTLSPolicy "+b.tlsPolicy+" has no valid CA certificate")
		return
	}
	ep := b.pickEndpoint()
	if ep == "" {
		writeError(w, http.StatusServiceUnavailable, "no ready endpoints for backend "+b.name)
		return
	}
	x.endpoint = ep
	b.handler.ServeHTTP(w, r)
}
