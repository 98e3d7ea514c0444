package gateway

import (
	"context"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync"
	"syscall"
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
//
// Where the process has a poller (poller_linux.go) and the stream's backend
// connection is its own (streamdial.go), an idle stream holds no goroutine
// at all: when its copy has forwarded everything the backend sent, whole
// chunks, it arms the poller on the backend's connection and returns
// (pause); the poller starts the copy again when the backend sends more,
// and ends the stream when the client's connection becomes readable or
// closes. Otherwise one goroutine copies and another waits on the client.
type continuation struct {
	conn net.Conn
	body *responseBody
	// cancel cancels the request to the backend: its body's next read
	// fails.
	cancel context.CancelFunc
	set    *detachedStreams
	// clientSent says the client had sent more bytes by the time its
	// connection was taken over: it is treated as gone.
	clientSent bool
	// hooks are what the handler chain deferred to the stream's end, in
	// the order it deferred them; ended runs after them.
	hooks []func()
	ended func(cut bool)
	done  chan struct{}

	// With a poller: id names the stream in its events; source says when
	// the backend's body has nothing buffered.
	poll       *poller
	id         int32
	clientRaw  syscall.RawConn
	backendRaw syscall.RawConn
	source     quietReader

	mu sync.Mutex
	// paused: the stream waits in the poller, with no goroutine.
	paused bool
	// interrupted: the stream is ending (its client left, a shutdown ended
	// it at an event boundary, it was cut) and may not go idle again.
	interrupted bool
}

// quietReader is a body that can say it has nothing buffered: its next
// read would wait for the connection.
type quietReader interface {
	quiet() bool
}

// start copies the stream until it ends, then finishes it with ended.
func (c *continuation) start(ended func(cut bool)) {
	c.ended = ended
	if c.usePoller() {
		c.pump(false)
		return
	}
	go c.watchClient()
	idle := c.body.idle.Get()
	err := c.body.copy(idle)
	c.body.idle.Put(idle)
	c.finish(err)
}

// usePoller sets the stream up to wait in the poller, when it can.
func (c *continuation) usePoller() bool {
	p := streamPoller()
	if p == nil || c.clientSent {
		return false
	}
	source, backend := quietSource(c.body.src)
	client := rawConnOf(c.conn)
	if source == nil || backend == nil || client == nil {
		return false
	}
	c.poll, c.source, c.backendRaw, c.clientRaw = p, source, backend, client
	c.id = p.add(c)
	if err := p.arm(client, c.id, sideClient); err != nil {
		p.remove(c.id)
		c.poll = nil
		return false
	}
	return true
}

// quietSource finds in a response body's readers the one that says when
// it is quiet, and the connection it reads, or nil.
func quietSource(src io.Reader) (quietReader, syscall.RawConn) {
	switch s := src.(type) {
	case *endpointEventRewriter:
		if _, raw := quietSource(s.src); raw != nil {
			return s, raw
		}
	case *streamBody:
		if raw := rawConnOf(s.conn); raw != nil && s.quietSrc != nil {
			return s, raw
		}
	}
	return nil, nil
}

// rawConnOf returns the descriptor of a TCP connection, or of the one a
// TLS connection runs on; nil for anything else.
func rawConnOf(conn net.Conn) syscall.RawConn {
	if t, ok := conn.(*tls.Conn); ok {
		conn = t.NetConn()
	}
	sc, ok := conn.(syscall.Conn)
	if !ok {
		return nil
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return nil
	}
	return raw
}

// pump copies until the stream is quiet, then leaves it idle in the
// poller; or until it ends.
func (c *continuation) pump(woken bool) {
	// Woken by the poller, the copy reads first: the bufio buffers are
	// empty, and the data that woke it is on the connection.
	pause := func() bool {
		if woken {
			woken = false
			return false
		}
		return c.mayIdle()
	}
	for {
		idle := c.body.idle.Get()
		err := c.body.copyUntil(idle, pause)
		c.body.idle.Put(idle)
		if err != errPaused {
			c.finish(err)
			return
		}
		if c.goIdle() {
			return
		}
		// Interrupted, or the poller refused the connection: the copy
		// goes on to the stream's end.
		pause = nil
	}
}

// mayIdle reports whether the stream can wait in the poller now.
func (c *continuation) mayIdle() bool {
	if !c.source.quiet() {
		return false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return !c.interrupted
}

// goIdle arms the poller on the backend's connection and marks the stream
// idle; it reports false, and the copy goes on, when the stream was
// interrupted or its backend's connection is closed.
func (c *continuation) goIdle() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.interrupted || c.poll.arm(c.backendRaw, c.id, sideBackend) != nil {
		return false
	}
	c.paused = true
	return true
}

// wakeLocked starts the copy again when the stream is idle. c.mu is held.
func (c *continuation) wakeLocked() {
	if c.paused {
		c.paused = false
		go c.pump(true)
	}
}

// ready is the poller's event on one of the stream's connections.
func (c *continuation) ready(side int32) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if side == sideClient {
		// The client sent something or left: the stream ends, its copy
		// failing on the backend's closed body.
		c.interrupted = true
		_ = c.body.src.Close()
		c.cancel()
	}
	c.wakeLocked()
}

// interrupt tells the stream it is ending, the backend's body closed by
// the caller, and starts the copy again if it was idle, to end it.
func (c *continuation) interrupt() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.interrupted = true
	c.wakeLocked()
}

// finish ends the stream, cleanly when err is nil, and runs what waited
// for its end.
func (c *continuation) finish(err error) {
	defer close(c.done)
	if c.poll != nil {
		c.poll.disarm(c.clientRaw)
		c.poll.remove(c.id)
	}
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
	c.ended(err != nil)
}

// watchClient waits for the client to go away, or to send anything, which
// a client waiting on an event stream has no reason to, and then cuts the
// request to the backend, which ends the copy. It returns when the stream
// closes the connection.
func (c *continuation) watchClient() {
	var b [1]byte
	if !c.clientSent {
		_, _ = c.conn.Read(b[:])
	}
	c.cancel()
}

// cut ends the stream at once, wherever it is.
func (c *continuation) cut() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.interrupted = true
	_ = c.body.src.Close()
	c.cancel()
	_ = c.conn.Close()
	c.wakeLocked()
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
		conn: conn, body: b, cancel: x.cancelBackend, set: x.detached,
		clientSent: rw.Reader.Buffered() > 0, done: make(chan struct{}),
	}
	x.cont = c
	b.endState.mu.Lock()
	b.endState.cont = c
	b.endState.mu.Unlock()
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
