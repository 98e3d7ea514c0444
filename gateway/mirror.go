package gateway

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/http/httputil"
	"net/textproto"
	"net/url"
	"slices"
	"strings"
	"time"
)

// Request mirroring (the RequestMirror filter): the filter notes a copy of
// the request's method, URL and header fields where it stands in the
// filter list, and the proxy sends the copies, with the body, when it
// forwards the request to its own backend; so a request the gateway
// answers itself is never mirrored. Copies are fire and forget: sent on a
// goroutine of their own, bounded in number and time, their answers read a
// little and thrown away.
const (
	// maxMirrorBody bounds the request bodies mirrored: a request with a
	// longer body is forwarded, not mirrored.
	maxMirrorBody = 1 << 20
	// maxMirrorsInFlight bounds the mirror requests a proxy has
	// outstanding: past it, copies are dropped rather than queued.
	maxMirrorsInFlight = 256
	// defaultMirrorTimeout bounds a mirror request whose rule has no
	// backendRequest timeout.
	defaultMirrorTimeout = 30 * time.Second
	// mirrorResponseDrain is how much of a mirror's answer is read before
	// it is closed, so that small answers leave their connection reusable.
	mirrorResponseDrain = 64 << 10
)

// Outcomes of a copy, the result label of the mirror metric.
const (
	mirrorSent    = "sent"    // the mirror answered (any status)
	mirrorFailed  = "failed"  // the mirror could not be reached or did not answer in time
	mirrorDropped = "dropped" // not sent: no endpoint, a body too long, too many in flight
)

// mirrorSender sends the copies of a Server, whatever its snapshot.
type mirrorSender struct {
	// transport reaches mirror backends that have no transport of their
	// own (Options.Transport or the default one).
	transport   http.RoundTripper
	slots       chan struct{}
	log         *slog.Logger
	metrics     *Metrics
	trustedHops int
	// intN draws a number in [0, n) for a mirror's fraction; rand.N by
	// default, a seeded source in tests. It must be safe for concurrent
	// use.
	intN func(n int32) int32
}

func newMirrorSender(transport http.RoundTripper, log *slog.Logger, metrics *Metrics, trustedHops int) *mirrorSender {
	return &mirrorSender{
		transport: transport, slots: make(chan struct{}, maxMirrorsInFlight), log: log, metrics: metrics,
		trustedHops: trustedHops, intN: rand.N[int32],
	}
}

// mirrorFilter is a RequestMirror filter of one rule or backend.
type mirrorFilter struct {
	backend  *compiledBackend
	fraction *Fraction // nil: every request
	// strip are the header fields the copy loses: the credentials of an
	// MCP policy on the rule (compiler.mirrorStrip).
	strip  []string
	sender *mirrorSender
	next   http.Handler
}

// compileMirror checks m and builds its filter.
func (c *compiler) compileMirror(m *RequestMirror, next http.Handler) (http.Handler, error) {
	if f := m.Fraction; f != nil && (f.Denominator <= 0 || f.Numerator < 0 || f.Numerator > f.Denominator) {
		return nil, fmt.Errorf("fraction %d/%d: want 0 <= numerator <= denominator and denominator > 0", f.Numerator, f.Denominator)
	}
	if len(m.Backend.Filters) > 0 {
		return nil, fmt.Errorf("backend %s: a mirror's backend has no filters", m.Backend.Name)
	}
	b, err := c.compileBackend(&m.Backend, nil)
	if err != nil {
		return nil, fmt.Errorf("backend %s: %w", m.Backend.Name, err)
	}
	if b.invalid || (m.Fraction != nil && m.Fraction.Numerator == 0) {
		// An unresolved backendRef is dropped, as the spec says, and so
		// is a mirror of none of the requests: the request goes on.
		return next, nil
	}
	sender := c.mirrors
	if sender == nil {
		sender = newMirrorSender(defaultTransport(false), slogDiscard, nil, 0)
	}
	var fraction *Fraction
	if m.Fraction != nil && m.Fraction.Numerator < m.Fraction.Denominator {
		f := *m.Fraction
		fraction = &f
	}
	return &mirrorFilter{backend: b, fraction: fraction, strip: c.mirrorStrip, sender: sender, next: next}, nil
}

var slogDiscard = slog.New(slog.DiscardHandler)

// pendingMirror is a copy noted by a mirror filter, sent when the request
// is forwarded.
type pendingMirror struct {
	filter *mirrorFilter
	method string
	url    url.URL
	header http.Header
	host   string
}

func (f *mirrorFilter) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if x := exchangeOf(r); x != nil && f.sampled() && !wantsUpgrade(r.Header) {
		x.mirrors = append(x.mirrors, pendingMirror{
			filter: f, method: r.Method, url: *r.URL, header: r.Header.Clone(), host: r.Host,
		})
	}
	f.next.ServeHTTP(w, r)
}

// sampled draws whether this request is mirrored.
func (f *mirrorFilter) sampled() bool {
	return f.fraction == nil || f.sender.intN(f.fraction.Denominator) < f.fraction.Numerator
}

// wantsUpgrade reports whether a request asks to switch protocols (a
// WebSocket): its copy could not be answered and thrown away like others.
func wantsUpgrade(h http.Header) bool {
	for _, v := range h["Connection"] {
		for t := range strings.SplitSeq(v, ",") {
			if strings.EqualFold(textproto.TrimString(t), "upgrade") {
				return true
			}
		}
	}
	return false
}

// sendMirrors sends the copies the request's mirror filters noted, with
// its body, and returns the request to forward: its body, read to be
// copied, is handed on from memory. A body longer than maxMirrorBody (or
// one that fails to read) is not copied: the copies are dropped, and the
// request is forwarded with its body as it comes.
func sendMirrors(r *http.Request, x *exchange) *http.Request {
	if len(x.mirrors) == 0 {
		return r
	}
	pending := x.mirrors
	x.mirrors = nil
	r = r.WithContext(r.Context()) // the body changes; the caller's request does not
	body, whole, err := replayable(r, maxMirrorBody)
	switch {
	case err != nil:
		// The proxy reads the same failure and answers for it.
		r.Body = io.NopCloser(failingReader{err})
		whole = false
	case body != nil:
		r.Body = io.NopCloser(bytes.NewReader(body))
	}
	for _, m := range pending {
		if !whole {
			m.filter.sender.count(mirrorDropped)
			continue
		}
		m.filter.sender.send(r, x, m, body)
	}
	return r
}

// failingReader fails every read with err.
type failingReader struct{ err error }

func (f failingReader) Read([]byte) (int, error) { return 0, f.err }

// send sends one copy of in, as m noted it, with body, on a goroutine of
// its own.
func (s *mirrorSender) send(in *http.Request, x *exchange, m pendingMirror, body []byte) {
	b := m.filter.backend
	ep := b.pickEndpoint()
	if ep == "" || b.noCA {
		s.count(mirrorDropped)
		return
	}
	select {
	case s.slots <- struct{}{}:
	default:
		s.count(mirrorDropped)
		return
	}
	timeout := defaultMirrorTimeout
	if x.rule != nil && x.rule.timeouts.BackendRequest > 0 {
		timeout = x.rule.timeouts.BackendRequest
	}
	// Not the client's context: the copy outlives the client's answer.
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	out := s.request(ctx, in, x, m, ep, body)
	transport := s.transport
	if b.transport != nil {
		transport = b.transport
	}
	go func() {
		defer func() { <-s.slots }()
		defer cancel()
		res, err := transport.RoundTrip(out)
		if err != nil {
			s.count(mirrorFailed)
			s.log.LogAttrs(ctx, slog.LevelDebug, "mirror request failed",
				slog.String("route", x.routeLabel()), slog.String("backend", b.name), slog.String("endpoint", ep),
				slog.String("error", err.Error()))
			return
		}
		_, _ = io.CopyN(io.Discard, res.Body, mirrorResponseDrain)
		_ = res.Body.Close()
		s.count(mirrorSent)
	}()
}

// request builds the copy of in that m noted, for endpoint ep of its
// backend: the header fields as the filter saw them, less hop-by-hop ones
// and the credentials it strips, and the gateway's forwarding fields, as
// the proxy sets them for the request itself.
func (s *mirrorSender) request(ctx context.Context, in *http.Request, x *exchange, m pendingMirror, ep string, body []byte) *http.Request {
	b := m.filter.backend
	u := m.url
	u.Scheme, u.Host = b.scheme, ep
	if b.path != "" && (!b.pathGETOnly || m.method == http.MethodGet) {
		u.Path, u.RawPath = b.path, ""
	}
	h := m.header
	removeHopByHop(h)
	for _, name := range m.filter.strip {
		delete(h, name)
	}
	for _, name := range []string{"Forwarded", "X-Forwarded-For", "X-Forwarded-Host", "X-Forwarded-Proto"} {
		delete(h, name)
	}
	out := (&http.Request{
		Method: m.method, URL: &u, Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
		Header: h, Host: m.host, ContentLength: int64(len(body)),
	}).WithContext(ctx)
	if len(body) > 0 {
		out.Body = io.NopCloser(bytes.NewReader(body))
	}
	setForwarded(&httputil.ProxyRequest{In: in, Out: out}, x.host, s.trustedHops)
	return out
}

// hopByHop are the header fields that stop at each hop (RFC 9110 section
// 7.6.1), besides those Connection names.
var hopByHop = []string{
	"Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate", "Proxy-Authorization",
	"Te", "Trailer", "Transfer-Encoding", "Upgrade",
}

func removeHopByHop(h http.Header) {
	for _, v := range h["Connection"] {
		for name := range strings.SplitSeq(v, ",") {
			if name = textproto.TrimString(name); name != "" {
				h.Del(name)
			}
		}
	}
	for _, name := range hopByHop {
		delete(h, name)
	}
}

func (s *mirrorSender) count(result string) {
	if s.metrics != nil {
		s.metrics.mirrors.WithLabelValues(result).Inc()
	}
}

// mirrorStrip is the header fields a mirror of a rule's requests loses:
// when an MCP policy applies to the rule (an ExtensionRef of the rule or of
// one of its backends), Authorization, whether the caller's token or the
// gateway's credential for the server, and the header of every policy's
// backendAuth. A copy carries no credential further than the policy's own
// backend: it carries none.
func mirrorStrip(rule *Rule) []string {
	var strip []string
	add := func(filters []Filter) {
		for _, f := range filters {
			if f.Type != FilterExtensionRef || f.ExtensionRef == nil {
				continue
			}
			if strip == nil {
				strip = []string{"Authorization"}
			}
			p := f.ExtensionRef.MCPServer
			if p == nil || p.BackendAuth == nil || p.BackendAuth.Header == nil {
				continue
			}
			name := http.CanonicalHeaderKey(p.BackendAuth.Header.Name)
			if !slices.Contains(strip, name) {
				strip = append(strip, name)
			}
		}
	}
	add(rule.Filters)
	for _, b := range rule.Backends {
		add(b.Filters)
	}
	return strip
}
