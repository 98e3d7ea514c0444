package gateway

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync/atomic"
)

// streamRoundTripper sends a GET that asks for an event stream over
// cleartext HTTP/1.1 on a connection of its own, and reads the response
// on the goroutine that reads its body. net/http's Transport keeps two
// goroutines and a write buffer per connection, for as long as it is open:
// an event stream's connection stays open for hours, and, once the stream
// is detached (detach.go), they would be most of what it costs. Such a
// connection carries one exchange and is closed after it, which is what
// the stream's end does anyway.
type streamRoundTripper struct {
	dial func(ctx context.Context, network, address string) (net.Conn, error)
}

// newStreamRoundTripper returns a streamRoundTripper dialing as t does, or
// nil when t is not a Transport whose connections it can stand in for.
func newStreamRoundTripper(t http.RoundTripper) *streamRoundTripper {
	tr, ok := t.(*http.Transport)
	if !ok || tr.DialContext == nil || tr.Proxy != nil || tr.DialTLSContext != nil || tr.Dial != nil { //nolint:staticcheck // Dial is what a caller may have set
		return nil
	}
	return &streamRoundTripper{dial: tr.DialContext}
}

// wantsStream reports whether r is a GET for an event stream that
// streamRoundTripper may send: one that may be detached (its context is
// the proxy's own), to a cleartext HTTP/1.1 backend, without retries.
func wantsStream(r *http.Request, x *exchange) bool {
	if x == nil || x.cancelBackend == nil || r.Method != http.MethodGet || r.URL.Scheme != "http" {
		return false
	}
	if x.backend == nil || x.backend.transport != nil || (x.rule != nil && x.rule.retry != nil) {
		return false
	}
	for _, v := range r.Header.Values("Accept") {
		if strings.Contains(strings.ToLower(v), "text/event-stream") {
			return true
		}
	}
	return false
}

func (t *streamRoundTripper) RoundTrip(r *http.Request) (*http.Response, error) {
	ctx := r.Context()
	conn, err := t.dial(ctx, "tcp", r.URL.Host)
	if err != nil {
		return nil, err
	}
	b := &streamBody{conn: conn}
	b.stop = context.AfterFunc(ctx, func() {
		b.cancelled.Store(true)
		_ = conn.Close()
	})
	fail := func(err error) (*http.Response, error) {
		_ = b.Close()
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, err
	}
	// The request's headers go out in one write; the buffer is let go.
	w := bufio.NewWriterSize(conn, backendWriteBufferSize)
	if err := r.Write(w); err != nil {
		return fail(err)
	}
	if err := w.Flush(); err != nil {
		return fail(err)
	}
	br := bufio.NewReaderSize(conn, backendReadBufferSize)
	for {
		res, err := http.ReadResponse(br, r)
		if err != nil {
			return fail(err)
		}
		if res.StatusCode >= 100 && res.StatusCode < 200 && res.StatusCode != http.StatusSwitchingProtocols {
			continue // informational: the final response follows
		}
		b.src = res.Body
		if res.StatusCode == http.StatusOK && res.ContentLength < 0 && len(res.Trailer) == 0 && isEventStream(res.Header.Get("Content-Type")) {
			// An event stream: read as framed on the connection, with
			// nothing of the request or response it came with held for
			// as long as it lasts (net/http's body keeps both, for
			// trailers, which such a stream has not announced).
			if slices.Equal(res.TransferEncoding, []string{"chunked"}) {
				cr := &chunkReader{br: br}
				b.src, b.quietSrc = cr, cr
			} else {
				b.src, b.quietSrc = br, bufferedReader{br}
			}
		}
		res.Body = b
		return res, nil
	}
}

// streamBody is the body of a response read by streamRoundTripper: closing
// it closes its connection.
type streamBody struct {
	src io.Reader
	// quietSrc says when src has nothing buffered, for an event stream's
	// body; nil for others.
	quietSrc quietReader
	conn     net.Conn
	// stop ends the watch on the request's context; cancelled says that
	// context was cancelled, which closed the connection.
	stop      func() bool
	cancelled atomic.Bool
}

func (b *streamBody) Read(p []byte) (int, error) {
	n, err := b.src.Read(p)
	if err != nil && err != io.EOF && b.cancelled.Load() {
		err = context.Canceled
	}
	return n, err
}

func (b *streamBody) quiet() bool { return b.quietSrc != nil && b.quietSrc.quiet() }

// bufferedReader is a body read as it comes (ended by the connection's
// end): quiet when nothing is buffered.
type bufferedReader struct{ *bufio.Reader }

func (r bufferedReader) quiet() bool { return r.Buffered() == 0 }

func (b *streamBody) Close() error {
	b.stop()
	return b.conn.Close()
}
