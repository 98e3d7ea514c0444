package gateway

import (
	"context"
	"mime"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	"github.com/toolgate/toolgate/filter"
)

// exchange is the state of one request as it moves through the gateway's
// stages: what matched, where it went, and what was answered. It lives in
// the request context so that filters and the proxy can read it, and it
// embeds the recorder that wraps the client's ResponseWriter, so a request
// costs one allocation for both.
type exchange struct {
	start    time.Time
	listener *listenerTable
	host     string // Host header as received, before any URLRewrite

	rule      *compiledRule
	prefix    string
	hasPrefix bool

	backend  *compiledBackend
	endpoint string

	// sessionID is the backend's own session id to send instead of the
	// sealed one; sessionParam names the query parameter carrying it on
	// the legacy SSE transport (empty for the Mcp-Session-Id header).
	sessionID    string
	sessionParam string

	// mirrors are the copies the rule's mirror filters noted, sent when
	// the request is forwarded.
	mirrors []pendingMirror

	upstreamErr error
	// body wraps the request body on its way to the backend (one
	// allocation with the exchange); clientBodyErr is why reading it
	// failed, which the transport does on a goroutine of its own.
	body          clientBody
	clientBodyErr atomic.Pointer[error]

	rec recorder
	// out is the client's ResponseWriter (rec, or a filter's wrapper of
	// it) as ReverseProxy writes to it, and resBody the backend's
	// response body that it copies (proxy.go).
	out     flushGuard
	resBody responseBody

	// trustedHops is Options.TrustedHops, for OriginOf.
	trustedHops int
	// http1: the client's request came over HTTP/1.x.
	http1 bool

	// detached are the detached streams of the socket the request came
	// on; cancelBackend cancels the request to the backend of a GET that
	// may be detached (its context outlives the handler); cont is the
	// stream's continuation once detached (detach.go).
	detached      *detachedStreams
	cancelBackend context.CancelFunc
	cont          *continuation
}

type exchangeKey struct{}

// connState is what the gateway keeps per client connection.
type connState struct {
	// writeDeadline says the last response on an HTTP/1 connection left a
	// write deadline, which the next request clears before its own
	// (possibly streamed) response.
	writeDeadline bool
}

type connStateKey struct{}

// exchangeOf returns the exchange of a request served by the gateway, or nil.
func exchangeOf(r *http.Request) *exchange {
	x, _ := r.Context().Value(exchangeKey{}).(*exchange)
	return x
}

func withExchange(r *http.Request, x *exchange) *http.Request {
	return r.WithContext(context.WithValue(r.Context(), exchangeKey{}, x))
}

// OriginOf names the Gateway ("namespace/name"), the route and the client
// address of a request the gateway is serving, as its access log does; for
// the MCP filter's audit trail (filter.SharedOptions.Origin). Outside the
// gateway it knows only the peer's address.
func OriginOf(r *http.Request) filter.Origin {
	x := exchangeOf(r)
	if x == nil {
		return filter.Origin{Client: clientAddress(r, 0)}
	}
	o := filter.Origin{Route: x.routeLabel(), Client: clientAddress(r, x.trustedHops)}
	if x.listener != nil {
		// A listener is named namespace/gateway/listener.
		if i := strings.LastIndexByte(x.listener.name, '/'); i > 0 {
			o.Gateway = x.listener.name[:i]
		}
	}
	return o
}

// routeLabel names the matched route for metrics and logs.
func (x *exchange) routeLabel() string {
	if x.rule == nil {
		return ""
	}
	return x.rule.route.key
}

// recorder wraps the client's ResponseWriter to record the status, the body
// size and whether the response is an event stream. It supports Flush and
// http.ResponseController through Unwrap.
type recorder struct {
	http.ResponseWriter
	status      int
	bytes       int64
	wroteHeader bool
	stream      bool
	metrics     *Metrics  // counts active streams
	owner       *exchange // labels them

	// writeTimeout, when positive, bounds each write of a response that
	// is not an event stream (Options.WriteTimeout); deadlineSet says a
	// write deadline was set on the connection.
	writeTimeout time.Duration
	deadlineSet  bool
	rc           *http.ResponseController // made on first use
}

// controller is the ResponseController of the client's ResponseWriter.
func (w *recorder) controller() *http.ResponseController {
	if w.rc == nil {
		w.rc = http.NewResponseController(w.ResponseWriter)
	}
	return w.rc
}

// extendWriteDeadline gives the next write writeTimeout to make progress,
// unless the response is an event stream.
func (w *recorder) extendWriteDeadline() {
	if w.writeTimeout <= 0 || w.stream {
		return
	}
	if w.controller().SetWriteDeadline(time.Now().Add(w.writeTimeout)) == nil {
		w.deadlineSet = true
	}
}

func (w *recorder) WriteHeader(code int) {
	if w.wroteHeader {
		return
	}
	if code >= 100 && code < 200 && code != http.StatusSwitchingProtocols {
		w.ResponseWriter.WriteHeader(code) // informational: not the final status
		return
	}
	w.wroteHeader = true
	w.status = code
	if isEventStream(w.Header().Get("Content-Type")) {
		w.stream = true
		if w.metrics != nil {
			w.metrics.streamStarted(w.owner.routeLabel())
		}
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *recorder) Write(b []byte) (int, error) {
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	w.extendWriteDeadline()
	n, err := w.ResponseWriter.Write(b)
	w.bytes += int64(n)
	return n, err
}

func (w *recorder) FlushError() error {
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	w.extendWriteDeadline()
	return w.controller().Flush()
}

func (w *recorder) Flush() { _ = w.FlushError() }

func (w *recorder) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// isEventStream reports whether a Content-Type is text/event-stream.
func isEventStream(contentType string) bool {
	if contentType == "" {
		return false
	}
	if contentType == "text/event-stream" {
		return true
	}
	const mt = "text/event-stream"
	if len(contentType) < len(mt) || !strings.EqualFold(contentType[:len(mt)], mt) {
		return false // most responses: no need to parse
	}
	parsed, _, err := mime.ParseMediaType(contentType)
	return err == nil && parsed == mt
}

// writeError answers with a short plain-text body.
func writeError(w http.ResponseWriter, code int, msg string) {
	h := w.Header()
	h.Set("Content-Type", "text/plain; charset=utf-8")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Del("Content-Length")
	w.WriteHeader(code)
	_, _ = w.Write([]byte(msg + "\n")) //nolint:gosec // text/plain with nosniff: no markup is interpreted
}
