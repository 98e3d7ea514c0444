package gateway

import (
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/toolgate/toolgate/filter"
)

// entryHandler is where every request on a gateway socket starts: it loads
// the current snapshot once (the request finishes on it whatever Apply does
// meanwhile), selects the listener by Host, normalizes the path, finds the
// rule by precedence and runs it; then it records metrics and the access
// log.
type entryHandler struct {
	server *Server
	key    portKey
	// detached are the streams of this socket that went on without their
	// handler (detach.go).
	detached *detachedStreams
}

func (h *entryHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s := h.server
	x := &exchange{start: time.Now(), host: r.Host, trustedHops: s.opts.TrustedHops, http1: r.ProtoMajor == 1, detached: h.detached}
	x.rec = recorder{ResponseWriter: w, metrics: s.metrics, owner: x, writeTimeout: s.opts.WriteTimeout}
	if r.ProtoMajor == 1 && len(r.TransferEncoding) > 0 {
		// RFC 9112 section 6.3: a request with both Transfer-Encoding and
		// Content-Length must not leave its connection open, since a
		// front proxy that framed it by Content-Length disagrees with us
		// on where the next request starts. net/http drops the
		// Content-Length before a handler sees it, so every connection
		// that carried a request framed by Transfer-Encoding is closed
		// after the response.
		w.Header().Set("Connection", "close")
	}
	if s.stopping.Load() {
		// Draining (drain.go): the client's next request opens a new
		// connection, which reaches another replica. net/http closes an
		// HTTP/1 connection after this response and sends an HTTP/2 one
		// a GOAWAY.
		w.Header().Set("Connection", "close")
	}
	// On HTTP/1 a write deadline outlives the response that set it (it
	// bounds the last flush, after the handler): clear it for this one.
	// HTTP/2 deadlines are per stream.
	cs, _ := r.Context().Value(connStateKey{}).(*connState)
	if cs != nil && r.ProtoMajor == 1 && cs.writeDeadline {
		_ = x.rec.controller().SetWriteDeadline(time.Time{})
		cs.writeDeadline = false
	}
	defer func() {
		if cs != nil && r.ProtoMajor == 1 && x.rec.deadlineSet {
			cs.writeDeadline = true
		}
		p := recover()
		if c := x.cont; c != nil {
			// A detached stream (detach.go): it is finished when it ends.
			ended := func(cut bool) { s.finish(x, r, cut || p != nil) }
			if p == nil {
				go c.start(ended)
				return
			}
			c.cut()
			c.start(ended)
			panic(p)
		}
		s.finish(x, r, p != nil)
		if p != nil {
			panic(p) // net/http aborts the connection (http.ErrAbortHandler) or logs
		}
	}()

	snap := s.snap.Load()
	if snap == nil {
		writeError(&x.rec, http.StatusServiceUnavailable, "no configuration loaded")
		return
	}
	if wellKnown, ok := strings.CutPrefix(r.URL.Path, wellKnownResourceMetadata); ok && (wellKnown == "" || wellKnown[0] == '/') {
		if s.serveResourceMetadata(snap, h.key, &x.rec, r, wellKnown) {
			return
		}
	}
	l, e, r := snap.resolve(h.key, r)
	x.listener = l
	if l != nil && misdirected(snap, h.key, r, l) {
		writeError(&x.rec, http.StatusMisdirectedRequest, "this connection's TLS server name selects another listener than the request's Host: open a new connection for that host")
		return
	}
	if e == nil {
		writeError(&x.rec, http.StatusNotFound, "no route matched")
		return
	}
	r = withExchange(r, x)
	e.ServeHTTP(&x.rec, r)
}

// wellKnownResourceMetadata is the path prefix of RFC 9728 metadata.
const wellKnownResourceMetadata = "/.well-known/oauth-protected-resource"

// serveResourceMetadata answers a request for the RFC 9728 metadata of the
// resource at path (the root form when path is ""), or a browser's
// preflight for it: the rule a request to path would reach on this host
// must have a filter that protects it. It returns false, having written
// nothing, when there is none: the request is then routed as any other.
func (s *Server) serveResourceMetadata(snap *snapshot, key portKey, w http.ResponseWriter, r *http.Request, path string) bool {
	preflight := filter.IsCORSPreflight(r)
	if r.Method != http.MethodGet && r.Method != http.MethodHead && !preflight {
		return false
	}
	var e *matchEntry
	if path == "" {
		l, ok := snap.listener(key, r)
		if !ok {
			return false
		}
		if t, ok := l.routes.first(requestHostname(r.Host)); ok {
			e = t.root
		}
		if e != nil {
			path = e.pathValue
		}
	} else {
		// The request the client will make: same host and headers, the
		// resource's path, a POST as MCP messages are.
		probe := r.Clone(r.Context())
		probe.Method = http.MethodPost
		probe.URL.Path, probe.URL.RawPath, probe.URL.RawQuery = path, "", ""
		_, e, _ = snap.resolve(key, probe)
	}
	if e == nil || e.rule.metadata == nil {
		return false
	}
	if preflight {
		metadataCORS.preflight(w, r, metadataCORS.allowed(r.Header.Values("Origin")))
		return true
	}
	e.rule.metadata.ServeResourceMetadata(w, r, resourceURL(r, path))
	return true
}

// metadataCORS answers preflights for resource metadata, a public document
// that browser clients ask for with an MCP-Protocol-Version header (which
// needs a preflight) and read with "Access-Control-Allow-Origin: *".
var metadataCORS = &corsPolicy{anyOrigin: true, methods: "GET, HEAD", anyHeader: true, maxAge: "3600"}

// resourceURL is the URL of the resource at path, as the gateway receives
// requests to it: the listener's scheme and the request's Host.
func resourceURL(r *http.Request, path string) string {
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	return (&url.URL{Scheme: scheme, Host: r.Host, Path: path}).String()
}

// listener finds the listener serving r on a socket.
func (snap *snapshot) listener(key portKey, r *http.Request) (*listenerTable, bool) {
	pt := snap.ports[key]
	if pt == nil {
		return nil, false
	}
	return pt.listeners.first(requestHostname(r.Host))
}

// resolve finds the listener and the rule entry serving r on a socket; it
// returns a nil entry when nothing matches (404). The returned request
// carries the normalized path.
func (snap *snapshot) resolve(key portKey, r *http.Request) (*listenerTable, *matchEntry, *http.Request) {
	pt := snap.ports[key]
	if pt == nil {
		return nil, nil, r
	}
	host := requestHostname(r.Host)
	l, ok := pt.listeners.first(host)
	if !ok {
		return nil, nil, r
	}
	if p, changed := normalizePath(r.URL.Path); changed {
		u := *r.URL
		u.Path, u.RawPath = p, ""
		r = r.WithContext(r.Context())
		r.URL = &u
	}
	return l, l.lookup(host, r), r
}

// misdirected reports whether an HTTPS request reached listener l by its
// Host header while the TLS server name of its connection selects another
// listener of the same port (or none). A client that reuses one connection
// for several hosts (HTTP/2 connection coalescing) must not be served by a
// listener whose certificate it never checked; 421 tells it to open a new
// connection (RFC 9110 section 15.5.20, and the Gateway API's
// GatewayHTTPSListenerDetectMisdirectedRequests). Without a server name
// there is nothing to compare.
func misdirected(snap *snapshot, key portKey, r *http.Request, l *listenerTable) bool {
	if r.TLS == nil || r.TLS.ServerName == "" {
		return false
	}
	pt := snap.ports[key]
	if pt == nil {
		return false
	}
	byName, ok := pt.listeners.first(requestHostname(r.TLS.ServerName))
	return !ok || byName != l
}

// statusClientClosedRequest is recorded, as nginx does, for a request whose
// client went away before anything was answered. It is never sent.
const statusClientClosedRequest = 499

// finish records the outcome of an exchange. When the handler wrote
// nothing, the status recorded is what the client got or would have got:
// 502 after a panic (aborted), 499 when the client had gone away (its
// connection closed or broke, which cancels the request's context), else
// the 200 net/http sends for an empty handler.
func (s *Server) finish(x *exchange, r *http.Request, aborted bool) {
	status := x.rec.status
	if !x.rec.wroteHeader {
		switch {
		case aborted:
			status = http.StatusBadGateway
		case r.Context().Err() != nil:
			status = statusClientClosedRequest
		default:
			status = http.StatusOK
		}
	}
	route := x.routeLabel()
	elapsed := time.Since(x.start)
	s.metrics.observe(route, status, elapsed.Seconds())
	if x.rec.stream {
		s.metrics.streamEnded(route)
	}
	ctx := r.Context()
	if !s.access.Enabled(ctx, slog.LevelInfo) {
		return
	}
	attrs := make([]slog.Attr, 0, 16)
	attrs = append(attrs,
		slog.String("method", r.Method),
		slog.String("host", x.host),
		slog.String("path", r.URL.Path),
		slog.Int("status", status),
		slog.Int64("bytes", x.rec.bytes),
		slog.Duration("duration", elapsed),
		slog.String("remote", r.RemoteAddr),
		slog.String("route", route),
	)
	if x.listener != nil {
		attrs = append(attrs, slog.String("listener", x.listener.name))
	}
	if x.rule != nil {
		attrs = append(attrs, slog.Int("rule", x.rule.index))
	}
	if x.backend != nil {
		attrs = append(attrs, slog.String("backend", x.backend.name), slog.String("endpoint", x.endpoint))
	}
	if x.rec.stream {
		attrs = append(attrs, slog.Bool("stream", true))
	}
	if aborted {
		attrs = append(attrs, slog.Bool("aborted", true))
	}
	if x.upstreamErr != nil {
		attrs = append(attrs, slog.String("upstream_error", x.upstreamErr.Error()))
	}
	s.access.LogAttrs(ctx, slog.LevelInfo, "request", attrs...)
}
