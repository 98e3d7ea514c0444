package gateway

import (
	"strings"
	"sync"
)

// A graceful stop, as Kubernetes rolls a proxy Deployment, has two steps:
//
//  1. Drain: /readyz fails, so that the pod leaves its Service's endpoints,
//     and every response carries "Connection: close" (on HTTP/2 a GOAWAY),
//     so that a client's next request opens a new connection, which the
//     Service sends to another replica. The listeners keep accepting: until
//     kube-proxy and the load balancers in front have seen the endpoint go,
//     they still send new connections here, and refusing them would fail
//     those requests. The caller decides how long this lasts.
//  2. Shutdown: the listeners close, idle connections are closed, requests
//     in flight (tool calls, including those answered as event streams)
//     finish, and the long GET event streams (MCP's standalone stream, a
//     legacy SSE session's stream) end cleanly at an event boundary: the
//     response is terminated as any finished response is, never reset, and
//     the client opens it again (with Last-Event-ID) through the Service,
//     on another replica. They are ended rather than waited for because
//     they last as long as the client's session.

// Drain starts a graceful stop (step 1 above): /readyz answers 503 from now
// on, and responses carry "Connection: close", while the listeners keep
// serving. Shutdown ends it. Drain may be called more than once.
func (s *Server) Drain() {
	if s.stopping.CompareAndSwap(false, true) {
		s.log.Info("draining: readiness fails, responses close their connections, listeners keep accepting until shutdown")
	}
}

// Draining reports whether Drain or Shutdown has been called.
func (s *Server) Draining() bool { return s.stopping.Load() }

// eventStreams are the GET event streams open through the proxy, which a
// shutdown ends instead of waiting for.
type eventStreams struct {
	mu     sync.Mutex
	open   map[*responseBody]struct{}
	ending bool
}

func newEventStreams() *eventStreams {
	return &eventStreams{open: map[*responseBody]struct{}{}}
}

// add tracks b until remove. When the streams are ending already, b is told
// to end at once.
func (e *eventStreams) add(b *responseBody) {
	e.mu.Lock()
	defer e.mu.Unlock()
	b.streams = e
	if e.ending {
		b.end()
		return
	}
	e.open[b] = struct{}{}
}

func (e *eventStreams) remove(b *responseBody) {
	e.mu.Lock()
	defer e.mu.Unlock()
	delete(e.open, b)
}

// endAll ends every open stream at its next event boundary, and every
// stream added from now on at once. It returns how many were open.
func (e *eventStreams) endAll() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.ending = true
	for b := range e.open {
		b.end()
	}
	return len(e.open)
}

// streamEnd is the state of a tracked event stream's end, shared by the
// goroutine copying it and the one ending it.
type streamEnd struct {
	mu sync.Mutex
	// ending: the stream is to end at its next event boundary.
	ending bool
	// tail holds the last bytes forwarded (up to 4), enough to tell whether
	// they end an event: a blank line, "\n\n", "\r\r" or "\r\n\r\n".
	tail [4]byte
	n    int
	// cont is the stream's continuation once it is detached (detach.go).
	cont *continuation
}

// end asks the stream to end: at once when no event is partly forwarded
// (closing the backend's body wakes the copy, which then ends the response
// cleanly), else as soon as the event in progress is complete.
func (b *responseBody) end() {
	b.endState.mu.Lock()
	defer b.endState.mu.Unlock()
	b.endState.ending = true
	if b.endState.atBoundary() {
		_ = b.src.Close()
		if b.endState.cont != nil {
			b.endState.cont.interrupt() // an idle detached stream has no goroutine to notice
		}
	}
}

// ending reports whether the stream was asked to end.
func (b *responseBody) ending() bool {
	if b.streams == nil {
		return false
	}
	b.endState.mu.Lock()
	defer b.endState.mu.Unlock()
	return b.endState.ending
}

// endsHere reports whether the stream was asked to end and stands at an
// event boundary: a copy that resumes there ends it at once.
func (b *responseBody) endsHere() bool {
	if b.streams == nil {
		return false
	}
	b.endState.mu.Lock()
	defer b.endState.mu.Unlock()
	return b.endState.ending && b.endState.atBoundary()
}

// forwarded notes bytes written to the client and reports whether the
// stream should end now: it was asked to, and they completed an event.
func (b *responseBody) forwarded(p []byte) bool {
	if b.streams == nil {
		return false
	}
	e := &b.endState
	e.mu.Lock()
	defer e.mu.Unlock()
	e.push(p)
	return e.ending && e.atBoundary()
}

func (e *streamEnd) push(p []byte) {
	if len(p) >= len(e.tail) {
		copy(e.tail[:], p[len(p)-len(e.tail):])
		e.n = len(e.tail)
		return
	}
	keep := min(e.n, len(e.tail)-len(p))
	copy(e.tail[:], e.tail[e.n-keep:e.n])
	copy(e.tail[keep:], p)
	e.n = keep + len(p)
}

// atBoundary reports whether nothing, or whole events, were forwarded.
func (e *streamEnd) atBoundary() bool {
	if e.n == 0 {
		return true
	}
	t := string(e.tail[:e.n])
	return strings.HasSuffix(t, "\n\n") || strings.HasSuffix(t, "\r\r") || strings.HasSuffix(t, "\r\n\r\n")
}
