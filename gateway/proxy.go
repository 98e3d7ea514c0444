package gateway

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/toolgate/toolgate/filter"
)

// proxy forwards a request to the endpoint chosen for it (exchange.endpoint)
// with net/http/httputil.ReverseProxy. One proxy serves every snapshot: it
// holds the shared transport and reads everything per request from the
// exchange.
//
//   - Bodies are streamed unchanged both ways; with FlushInterval -1 every
//     write from the backend is flushed to the client at once, so each
//     server-sent event arrives as soon as the backend sends it.
//   - ReverseProxy removes hop-by-hop headers and the client's Forwarded
//     and X-Forwarded-* headers. X-Forwarded-For and X-Real-IP name the
//     client as this gateway knows it (see clientAddress), X-Forwarded-Proto
//     is the client's scheme and X-Forwarded-Host the Host the client sent
//     (before any URLRewrite). These headers are the gateway's: a route's
//     RequestHeaderModifier cannot set them.
//   - The Host header reaches the backend unchanged unless a filter
//     rewrote it, as the spec says.
//   - MCP session ids are restored on the way in and sealed on the way out
//     (affinity.go).
//   - Errors: 503 when the endpoint cannot be reached or its TLS handshake
//     fails, 504 on a timeout, 502 otherwise, each with a one-line body.
//     Once a response has started an error can only cut it.
type proxy struct {
	rp          *httputil.ReverseProxy
	buffers     *copyBuffers
	idle        *idleBuffers // rp's BufferPool
	streams     *eventStreams
	sessions    *sessionSealer
	log         *slog.Logger
	trustedHops int // Options.TrustedHops
}

func newProxy(transport http.RoundTripper, sessions *sessionSealer, log *slog.Logger, trustedHops int) *proxy {
	p := &proxy{buffers: newCopyBuffers(), idle: newIdleBuffers(), streams: newEventStreams(), sessions: sessions, log: log, trustedHops: trustedHops}
	p.rp = &httputil.ReverseProxy{
		Rewrite:        p.rewrite,
		Transport:      &backendRoundTripper{next: transport, stream: newStreamRoundTripper(transport)},
		FlushInterval:  -1,
		ErrorHandler:   p.errorHandler,
		ModifyResponse: p.modifyResponse,
		BufferPool:     p.idle, // see responseBody
		ErrorLog:       slog.NewLogLogger(log.Handler(), slog.LevelDebug),
	}
	return p
}

// Dialing backends: connecting is bounded, an established connection is
// kept alive with TCP keep-alives.
const (
	connectTimeout = 5 * time.Second
	keepAlive      = 30 * time.Second
)

// The buffers of a backend connection, held as long as it is open (an
// event stream's for hours), are smaller than net/http's 4 KiB: the write
// buffer holds the headers and a small MCP message in one write; the read
// buffer parses the response's headers (longer lines are read in parts)
// and response bodies are read past it, into responseBody's buffers.
const (
	backendReadBufferSize  = 1 << 10
	backendWriteBufferSize = 2 << 10
)

// defaultTransport is used when Options.Transport is nil. It never uses an
// environment proxy, does not add Accept-Encoding (bodies pass through
// unchanged), bounds connecting but not waiting for a response, so long
// tool calls and event streams are not cut. It dials with a backendDialer
// (trustNames: Options.TrustBackendNames).
func defaultTransport(trustNames bool) *http.Transport {
	return &http.Transport{
		DialContext:           newBackendDialer(trustNames).DialContext,
		ForceAttemptHTTP2:     true,
		MaxIdleConns:          1024,
		MaxIdleConnsPerHost:   256,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   10 * time.Second,
		ExpectContinueTimeout: time.Second,
		DisableCompression:    true,
		ReadBufferSize:        backendReadBufferSize,
		WriteBufferSize:       backendWriteBufferSize,
	}
}

func (p *proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	x := exchangeOf(r)
	if x == nil || x.endpoint == "" || x.backend == nil {
		writeError(w, http.StatusInternalServerError, "no endpoint chosen")
		return
	}
	// Every filter has let the request through: its mirrors go now.
	r = sendMirrors(r, x)
	if d := x.rule.timeouts.BackendRequest; d > 0 {
		ctx, cancel := context.WithTimeout(r.Context(), d)
		defer cancel()
		r = r.WithContext(ctx)
	} else if r.Method == http.MethodGet && x.http1 && r.ProtoAtLeast(1, 1) && x.detached != nil {
		if _, timed := r.Context().Deadline(); !timed {
			// It may become a detached event stream (detach.go), which
			// outlives this handler and so the request's context: the
			// request to the backend gets a context of its own, cancelled
			// with the client's until the stream is detached.
			ctx, cancel := context.WithCancel(context.WithoutCancel(r.Context()))
			stop := context.AfterFunc(r.Context(), cancel)
			x.cancelBackend = cancel
			defer func() {
				stop()
				if x.cont == nil {
					cancel()
				}
			}()
			r = r.WithContext(ctx)
		}
	}
	x.out.ResponseWriter = w
	p.rp.ServeHTTP(&x.out, r)
}

func (p *proxy) rewrite(pr *httputil.ProxyRequest) {
	x := exchangeOf(pr.In)
	pr.Out.URL.Scheme = x.backend.scheme
	pr.Out.URL.Host = x.endpoint
	if b := x.backend; b.path != "" && (!b.pathGETOnly || pr.In.Method == http.MethodGet) {
		pr.Out.URL.Path, pr.Out.URL.RawPath = b.path, ""
	}
	pr.Out.Host = pr.In.Host
	if pr.Out.Body != nil && pr.Out.Body != http.NoBody {
		x.body = clientBody{ReadCloser: pr.Out.Body, x: x}
		pr.Out.Body = &x.body
	}

	setForwarded(pr, x.host, p.trustedHops)

	if x.sessionID != "" {
		if x.sessionParam != "" {
			pr.Out.URL.RawQuery = replaceQueryParam(pr.Out.URL.RawQuery, x.sessionParam, x.sessionID)
		} else {
			pr.Out.Header.Set(sessionHeader, x.sessionID)
		}
	}
}

// setForwarded sets the forwarding fields of pr.Out, whose client-sent
// Forwarded and X-Forwarded-* fields are gone: X-Forwarded-For (the
// trusted part of the client's, and the peer), X-Forwarded-Host (host, as
// the client sent it), X-Forwarded-Proto and X-Real-IP.
func setForwarded(pr *httputil.ProxyRequest, host string, trustedHops int) {
	realIP := clientAddress(pr.In, trustedHops)
	if prior := pr.In.Header["X-Forwarded-For"]; len(prior) > 0 && trustedHops > 0 {
		pr.Out.Header["X-Forwarded-For"] = slices.Clone(prior)
	}
	pr.SetXForwarded() // appends the peer to X-Forwarded-For, or sets it alone
	pr.Out.Header.Set("X-Forwarded-Host", host)
	if realIP != "" {
		pr.Out.Header.Set("X-Real-IP", realIP)
	} else {
		pr.Out.Header.Del("X-Real-IP")
	}
}

// clientAddress is the address of the client as far as this gateway can
// trust it, for X-Real-IP; the same rule as Envoy's xff_num_trusted_hops
// with use_remote_address.
//
// With no trusted hops it is the peer's address: whatever the client wrote
// in X-Forwarded-For or X-Real-IP is its own claim and is dropped. With N
// trusted proxies in front of the gateway, the nearest of them is the peer
// and each appended the address it saw, so the client is the Nth entry from
// the right of the incoming X-Forwarded-For (entries left of it were
// written by the client and are kept but not believed). A list shorter than
// N, or an entry there that is not an IP address, falls back to the peer.
// It returns "" when the peer's address cannot be parsed either.
func clientAddress(r *http.Request, trustedHops int) string {
	peer, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		peer = ""
	}
	if trustedHops <= 0 {
		return peer
	}
	var entries []string
	for _, line := range r.Header["X-Forwarded-For"] {
		for e := range strings.SplitSeq(line, ",") {
			entries = append(entries, strings.TrimSpace(e))
		}
	}
	if len(entries) < trustedHops {
		return peer
	}
	if ip, ok := parseForwardedAddress(entries[len(entries)-trustedHops]); ok {
		return ip
	}
	return peer
}

// parseForwardedAddress accepts an X-Forwarded-For entry as an IP address,
// with or without a port ("192.0.2.1:5678", "[2001:db8::1]:80"), and
// returns the address alone.
func parseForwardedAddress(entry string) (string, bool) {
	if a, err := netip.ParseAddr(entry); err == nil {
		return a.String(), true
	}
	if ap, err := netip.ParseAddrPort(entry); err == nil {
		return ap.Addr().String(), true
	}
	return "", false
}

func (p *proxy) modifyResponse(res *http.Response) error {
	x := exchangeOf(res.Request)
	if x == nil {
		return nil
	}
	stream := isEventStream(res.Header.Get("Content-Type"))
	if p.sessions != nil {
		user, _ := filter.Caller(res.Request.Context())
		if id := res.Header.Get(sessionHeader); id != "" {
			res.Header.Set(sessionHeader, p.sessions.seal(x.endpoint, id, user))
		}
		if res.Request.Method == http.MethodGet && res.StatusCode == http.StatusOK && stream {
			endpoint := x.endpoint
			res.Body = &endpointEventRewriter{
				src:  res.Body,
				seal: func(id string) string { return p.sessions.seal(endpoint, id, user) },
			}
		}
	}
	if res.StatusCode != http.StatusSwitchingProtocols {
		// An upgraded connection is ReverseProxy's to relay (or refuse).
		x.resBody = responseBody{src: res.Body, dst: &x.out, big: p.buffers, wait: stream || res.ContentLength < 0}
		res.Body = &x.resBody
		if stream && res.Request.Method == http.MethodGet && res.StatusCode == http.StatusOK {
			// A client's wait for server messages, as long as its
			// session: a shutdown ends it (drain.go).
			x.resBody.owner, x.resBody.idle = x, p.idle
			x.resBody.detachable = x.cancelBackend != nil && res.ContentLength < 0 && len(res.Trailer) == 0
			p.streams.add(&x.resBody)
			if x.http1 {
				// Its connection is not worth keeping: when the stream
				// ends (a shutdown ending it above all), a client that
				// put it back in its pool could send its next request
				// on it just as the server closes it, and lose that
				// request. On HTTP/2 the stream ends alone.
				res.Header.Set("Connection", "close")
			}
		}
	}
	return nil
}

func (p *proxy) errorHandler(w http.ResponseWriter, r *http.Request, err error) {
	x := exchangeOf(r)
	if x != nil {
		x.upstreamErr = err
	}
	if x != nil {
		if bodyErr := x.clientBodyErr.Load(); bodyErr != nil {
			// The request's own body broke (bad chunk framing, a client
			// that went away mid-body): the client's fault, not the
			// backend's, and the connection cannot carry another request.
			if r.Context().Err() == nil {
				p.log.LogAttrs(r.Context(), slog.LevelInfo, "client error",
					slog.String("route", x.routeLabel()),
					slog.Int("status", http.StatusBadRequest),
					slog.String("error", (*bodyErr).Error()))
				w.Header().Set("Connection", "close")
				writeError(w, http.StatusBadRequest, "the request body could not be read")
			}
			return
		}
	}
	code, msg := upstreamErrorStatus(r, err)
	if code == 0 {
		return // the client went away: nobody to answer
	}
	if x != nil {
		attrs := []slog.Attr{
			slog.String("route", x.routeLabel()),
			slog.String("backend", x.backend.name),
			slog.String("endpoint", x.endpoint),
			slog.Int("status", code),
			slog.String("error", err.Error()),
		}
		if x.backend.tlsPolicy != "" {
			attrs = append(attrs, slog.String("backendTLSPolicy", x.backend.tlsPolicy))
		}
		p.log.LogAttrs(r.Context(), slog.LevelWarn, "upstream error", attrs...)
	}
	writeError(w, code, msg)
}

// upstreamErrorStatus maps a proxy error to the status the client gets, or
// 0 when the client itself cancelled.
func upstreamErrorStatus(r *http.Request, err error) (int, string) {
	var opErr *net.OpError
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return http.StatusGatewayTimeout, "upstream request timeout"
	case errors.Is(err, context.Canceled) && r.Context().Err() != nil:
		return 0, ""
	case errors.As(err, &opErr) && opErr.Op == "dial":
		if opErr.Timeout() {
			return http.StatusServiceUnavailable, "upstream connect timeout"
		}
		return http.StatusServiceUnavailable, "upstream connect error"
	case isTLSError(err):
		// Part of connecting, as for Envoy: the backend's certificate is
		// not one its BackendTLSPolicy trusts, or it does not speak TLS.
		return http.StatusServiceUnavailable, "upstream TLS handshake failed"
	}
	var netErr net.Error
	if errors.As(err, &netErr) && netErr.Timeout() {
		return http.StatusGatewayTimeout, "upstream request timeout"
	}
	return http.StatusBadGateway, "upstream error"
}

// Response bodies are copied by responseBody, not by ReverseProxy's own
// loop, which holds one copy buffer for as long as a response lasts: an
// open event stream that sends nothing would hold 32 KiB for hours. The
// copy of a response whose end is not known (an event stream, a chunked
// body) waits for the backend with the small buffer ReverseProxy lends
// (idleBuffers), and takes a full-size one (copyBuffers) only while
// data flows: after a read that filled the small one, until a read leaves
// the big one part empty. Every read is written and flushed at once, as
// with FlushInterval -1, so no event waits for the next one.
const (
	copyBufferSize = 32 << 10
	idleBufferSize = 1 << 10
)

// copyBuffers lends the buffers responseBody copies with while data flows.
// It pools array pointers, which a returned slice converts back to without
// allocating.
type copyBuffers struct{ pool sync.Pool }

func newCopyBuffers() *copyBuffers {
	return &copyBuffers{pool: sync.Pool{New: func() any { return new([copyBufferSize]byte) }}}
}

func (b *copyBuffers) Get() []byte { return b.pool.Get().(*[copyBufferSize]byte)[:] }

func (b *copyBuffers) Put(buf []byte) {
	if cap(buf) >= copyBufferSize {
		b.pool.Put((*[copyBufferSize]byte)(buf[:copyBufferSize]))
	}
}

// idleBuffers is ReverseProxy's BufferPool: the small buffers that
// responseBody waits for data with.
type idleBuffers struct{ pool sync.Pool }

func newIdleBuffers() *idleBuffers {
	return &idleBuffers{pool: sync.Pool{New: func() any { return new([idleBufferSize]byte) }}}
}

func (b *idleBuffers) Get() []byte { return b.pool.Get().(*[idleBufferSize]byte)[:] }

func (b *idleBuffers) Put(buf []byte) {
	if cap(buf) >= idleBufferSize {
		b.pool.Put((*[idleBufferSize]byte)(buf[:idleBufferSize]))
	}
}

// responseBody is a backend's response body on its way to the client
// (ModifyResponse puts it in place; one allocation with the exchange). The
// first Read that ReverseProxy makes copies the whole body to the client
// and reports its end (io.EOF) or what cut it; ReverseProxy then ends the
// response as for its own copy, trailers included, or aborts it.
type responseBody struct {
	src  io.ReadCloser
	dst  *flushGuard
	big  *copyBuffers
	wait bool // the end is not known: wait for data with the small buffer
	done bool
	// streams tracks a GET event stream, which a shutdown ends at an event
	// boundary (endState); nil for every other response.
	streams  *eventStreams
	endState streamEnd
	// detachable says such a stream may go on without its handler
	// (detach.go); owner is its exchange, and idle the pool of the small
	// buffer it then waits with.
	detachable bool
	owner      *exchange
	idle       *idleBuffers
}

func (b *responseBody) Read(idle []byte) (int, error) {
	if b.done {
		return 0, io.EOF
	}
	b.done = true
	if b.detach() {
		return 0, io.EOF // for this handler, the response is done
	}
	if err := b.copy(idle); err != nil {
		return 0, err
	}
	return 0, io.EOF
}

func (b *responseBody) Close() error {
	if b.owner != nil && b.owner.cont != nil {
		return nil // detached: the stream's continuation closes it
	}
	return b.src.Close()
}

// copy copies the body to the client, each read written and flushed. idle
// is the small buffer to wait for data with.
func (b *responseBody) copy(idle []byte) error { return b.copyUntil(idle, nil) }

// errPaused is copyUntil's answer when it stopped where it was asked to.
var errPaused = errors.New("the copy paused")

// copyUntil is copy, but asks pause, when set, before each read whether to
// stop there; it then returns errPaused, and a later copyUntil goes on.
func (b *responseBody) copyUntil(idle []byte, pause func() bool) (err error) {
	var big []byte
	defer func() {
		if big != nil {
			b.big.Put(big)
		}
		if b.streams != nil && err != errPaused {
			b.streams.remove(b)
		}
	}()
	if b.endsHere() {
		return nil
	}
	if !b.wait || len(idle) == 0 {
		big = b.big.Get()
	}
	for {
		if pause != nil && pause() {
			return errPaused
		}
		buf := idle
		if big != nil {
			buf = big
		}
		n, rerr := b.src.Read(buf)
		if n > 0 {
			nw, werr := b.dst.Write(buf[:n])
			if werr == nil && nw != n {
				werr = io.ErrShortWrite
			}
			if werr != nil {
				return werr
			}
			_ = b.dst.FlushError() // as ReverseProxy's own flushes: a failed write says it
			if b.forwarded(buf[:n]) {
				return nil // a shutdown ends the stream after this event
			}
		}
		if rerr != nil {
			if rerr == io.EOF || b.ending() {
				// The backend ended, or a shutdown closed its body to
				// end the stream here: the response ends cleanly.
				return nil
			}
			return rerr
		}
		switch {
		case big == nil && n == len(buf):
			big = b.big.Get() // more may be waiting
		case big != nil && b.wait && n < len(buf):
			b.big.Put(big) // drained: wait without it
			big = nil
		}
	}
}

// flushGuard is the client's ResponseWriter as ReverseProxy sees it. It
// serializes writes and flushes, since ReverseProxy flushes from a timer
// of its own while responseBody writes.
type flushGuard struct {
	http.ResponseWriter
	mu sync.Mutex
}

func (g *flushGuard) WriteHeader(code int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.ResponseWriter.WriteHeader(code)
}

func (g *flushGuard) Write(p []byte) (int, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.ResponseWriter.Write(p)
}

func (g *flushGuard) FlushError() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	return http.NewResponseController(g.ResponseWriter).Flush()
}

func (g *flushGuard) Flush() { _ = g.FlushError() }

func (g *flushGuard) Unwrap() http.ResponseWriter { return g.ResponseWriter }

// clientBody is a request body on its way to the backend. It notes on the
// exchange why reading it failed, so that a client's malformed body is not
// taken for the backend's failure.
type clientBody struct {
	io.ReadCloser
	x *exchange
}

func (b *clientBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if err != nil && err != io.EOF {
		b.x.clientBodyErr.CompareAndSwap(nil, &err)
	}
	return n, err
}
