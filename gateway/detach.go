package gateway

import (
	"context"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync"
)

// Detached event streams.
//
// A GET event stream (MCP's standalone stream, a legacy SSE session's
// stream) lasts as long as its client's session, and is idle most of that
// time. Served as net/http serves any response, an idle stream holds the
// connection's goroutine with the whole handler chain on its stack, the
// server's goroutine that watches for the client going away, and the
// connection's read and write buffers: most of what a proxy with thousands
// of connected agents spends its memory on.
//
// So once the headers of such a stream are out on an HTTP/1.1 connection,
// the proxy takes the connection over (Hijack) and hands the stream to a
// goroutine of its own, which starts with a small stack: it copies the
// backend's body as any response is copied (responseBody), framing it in
// chunks itself, while a second small goroutine waits for the client to go
// away. The handler chain returns, and net/http lets go of all it held for
// the connection. What the chain does when a response ends (the access
// log and metrics, the audit trail) waits for the stream's end
// (DeferUntilResponseEnds).
//
// A detached stream ends as any stream does: the backend ends it; the
// client goes away, or sends anything more on the connection; a shutdown
// ends it at an event boundary (drain.go); the removal of its listener
// cuts it after the drain timeout, as it cuts requests still in flight.
// HTTP/2 streams, streams under a timeout, and responses that announce
// trailers stay with their handler.

// continuation is a detached stream.
type continuation struct {
	conn net.Conn
	body *responseBody
	idle *idleBuffers
	// cancel cancels the request to the backend: its body's next read
	// fails.
	cancel context.CancelFunc
	set    *detachedStreams
	// clientSent says the client had sent more bytes by the time its
	// connection was taken over: it is treated as gone.
	clientSent bool
	// hooks are what the handler chain deferred to the stream's end, in
	// the order it deferred them.
	hooks []func()
	done  chan struct{}
}

// run copies the stream to its end, then closes the connection and runs
// the hooks, and last ended, told whether the stream was cut.
func (c *continuation) run(ended func(cut bool)) {
	defer close(c.done)
	go c.watchClient()
	idle := c.idle.Get()
	err := c.body.copy(idle)
	c.idle.Put(idle)
	_ = c.body.src.Close()
	c.cancel()
	if err == nil {
		// The last chunk: the response ends cleanly.
		_, err = io.WriteString(c.conn, "0\r\n\r\n")
	}
	_ = c.conn.Close()
	c.set.remove(c)
	for _, h := range c.hooks {
		h()
	}
	ended(err != nil)
}

// watchClient waits for the client to go away, or to send anything, which
// a client waiting on an event stream has no reason to, and then cuts the
// request to the backend, which ends the copy. It returns when run closes
// the connection.
func (c *continuation) watchClient() {
	if !c.clientSent {
		var b [1]byte
		_, _ = c.conn.Read(b[:])
	}
	c.cancel()
}

// cut ends the stream at once, wherever it is.
func (c *continuation) cut() {
	c.cancel()
	_ = c.conn.Close()
}

// DeferUntilResponseEnds runs f when the response ends, if it goes on
// after the handler returns (a detached stream), and reports whether it
// does; see filter.AfterResponse.
func (w *recorder) DeferUntilResponseEnds(f func()) bool {
	c := w.owner.cont
	if c == nil {
		return false
	}
	c.hooks = append(c.hooks, f)
	return true
}

// detach hands the stream b copies to a goroutine of its own, when it can
// go on without its handler (see detachable); it reports whether it did.
// Its headers are written first.
func (b *responseBody) detach() bool {
	x := b.owner
	if x == nil || !b.detachable || x.detached == nil {
		return false
	}
	g := b.dst
	g.mu.Lock()
	defer g.mu.Unlock()
	rec := &x.rec
	if rec.Header().Get("Content-Length") != "" {
		return false // net/http does not frame it in chunks
	}
	if err := rec.FlushError(); err != nil {
		return false // the copy fails as it would have
	}
	header := rec.Header()
	conn, rw, err := rec.controller().Hijack()
	if err != nil {
		return false
	}
	rec.ResponseWriter, rec.rc = &chunkedConn{conn: conn, header: header}, nil
	c := &continuation{
		conn: conn, body: b, idle: b.idle, cancel: x.cancelBackend, set: x.detached,
		clientSent: rw.Reader.Buffered() > 0, done: make(chan struct{}),
	}
	x.cont = c
	if !c.set.add(c) {
		c.cut() // the listener is gone already
	}
	return true
}

// chunkedConn is a detached stream's ResponseWriter: its headers are out,
// and each write goes to the connection at once, as one chunk of the body.
type chunkedConn struct {
	conn   net.Conn
	header http.Header
}

func (w *chunkedConn) Header() http.Header { return w.header }

func (w *chunkedConn) WriteHeader(int) {}

func (w *chunkedConn) Write(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	frame := make([]byte, 0, len(p)+20)
	frame = strconv.AppendUint(frame, uint64(len(p)), 16)
	frame = append(frame, '\r', '\n')
	frame = append(frame, p...)
	frame = append(frame, '\r', '\n')
	if _, err := w.conn.Write(frame); err != nil {
		return 0, err
	}
	return len(p), nil
}

func (w *chunkedConn) FlushError() error { return nil }

func (w *chunkedConn) Flush() {}

// detachedStreams are the detached streams of one listening socket, which
// a shutdown or the socket's removal waits for.
type detachedStreams struct {
	mu     sync.Mutex
	open   map[*continuation]struct{}
	closed bool
}

func newDetachedStreams() *detachedStreams {
	return &detachedStreams{open: map[*continuation]struct{}{}}
}

// add tracks c until remove; it reports false, tracking nothing, once end
// was called.
func (d *detachedStreams) add(c *continuation) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return false
	}
	d.open[c] = struct{}{}
	return true
}

func (d *detachedStreams) remove(c *continuation) {
	d.mu.Lock()
	defer d.mu.Unlock()
	delete(d.open, c)
}

// end waits for the open streams to end, until ctx is done, and then cuts
// those left, and reports whether it cut any; a stream detached from now
// on is cut at once.
func (d *detachedStreams) end(ctx context.Context) (cut bool) {
	d.mu.Lock()
	d.closed = true
	open := make([]*continuation, 0, len(d.open))
	for c := range d.open {
		open = append(open, c)
	}
	d.mu.Unlock()
	for _, c := range open {
		select {
		case <-c.done:
		case <-ctx.Done():
			c.cut()
			<-c.done
			cut = true
		}
	}
	return cut
}

// detachedOf returns the detached streams of a gateway socket's server,
// nil for the admin listener's.
func detachedOf(srv *http.Server) *detachedStreams {
	if h, ok := srv.Handler.(*entryHandler); ok {
		return h.detached
	}
	return nil
}
