package filter

import (
	"context"
	"net/http"
	"sync/atomic"
)

// The bytes of MCP request bodies that the filter holds at once are
// bounded twice: across the process (SharedOptions.MaxBodyBytesInFlight) and
// per client connection (SharedOptions.MaxBodyBytesPerConnection, which
// matters for HTTP/2, where one connection carries many requests). A body
// reserves what it may grow to before a byte of it is read, its
// Content-Length or, when that is unknown, the body limit; past either
// bound the request is answered 503 at once, and the bytes are given back
// when the body has been handed to the backend or the request ends.

// byteBudget counts reserved bytes against a limit.
type byteBudget struct {
	limit int64
	used  atomic.Int64
}

// reserve takes n bytes when they fit, and reports whether they did.
func (b *byteBudget) reserve(n int64) bool {
	if b.used.Add(n) > b.limit {
		b.used.Add(-n)
		return false
	}
	return true
}

func (b *byteBudget) release(n int64) { b.used.Add(-n) }

// connectionBudgetKey is the context key of a connection's byteBudget.
type connectionBudgetKey struct{}

// WithConnection returns the context of a new client connection, carrying
// its share of the body budget: pass it from http.Server.ConnContext. The
// limit is SharedOptions.MaxBodyBytesPerConnection of the Shared that
// serves the connection's requests.
func (s *Shared) WithConnection(ctx context.Context) context.Context {
	return context.WithValue(ctx, connectionBudgetKey{}, &byteBudget{limit: s.maxBodyBytesPerConnection})
}

// bodyReservation is what one body holds of the budgets.
type bodyReservation struct {
	n          int64
	global     *byteBudget
	connection *byteBudget // nil when the connection has no budget of its own
	released   atomic.Bool
}

// reserveBody reserves into res what r's body may grow to, from the
// process's budget and its connection's, and reports whether both had room.
func (s *Shared) reserveBody(r *http.Request, res *bodyReservation) bool {
	n := s.maxBodyBytes
	if r.ContentLength >= 0 && r.ContentLength < n {
		n = r.ContentLength
	}
	conn, _ := r.Context().Value(connectionBudgetKey{}).(*byteBudget)
	if conn != nil && !conn.reserve(n) {
		return false
	}
	if !s.bodyBudget.reserve(n) {
		if conn != nil {
			conn.release(n)
		}
		return false
	}
	res.n, res.global, res.connection = n, s.bodyBudget, conn
	return true
}

// release gives the bytes back, once however often it is called.
func (res *bodyReservation) release() {
	if res.global == nil || !res.released.CompareAndSwap(false, true) {
		return
	}
	res.global.release(res.n)
	if res.connection != nil {
		res.connection.release(res.n)
	}
}
