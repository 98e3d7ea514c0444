package filter_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/toolgate/toolgate/filter"
)

// slowBody is a request body that sends its first byte and then waits for
// finish; it counts the bytes read from it.
type slowBody struct {
	rest   string
	first  bool
	finish chan struct{}
	read   atomic.Int64
}

func newSlowBody(body string) *slowBody {
	return &slowBody{rest: body, finish: make(chan struct{})}
}

func (b *slowBody) Read(p []byte) (int, error) {
	if b.first {
		<-b.finish
	}
	if b.rest == "" {
		return 0, io.EOF
	}
	n := 1
	if b.first {
		n = copy(p, b.rest)
	}
	copy(p, b.rest[:n])
	b.rest, b.first = b.rest[n:], true
	b.read.Add(int64(n))
	return n, nil
}

func (b *slowBody) Close() error { return nil }

// padded is a tools/call body of exactly n bytes.
func padded(n int) string {
	body := call(1, "t")
	return body[:len(body)-1] + `,"pad":"` + strings.Repeat("x", n-len(body)-9) + `"}`
}

func TestBodiesPastTheBudgetGet503BeforeTheyAreRead(t *testing.T) {
	const size = 1000
	h := newHarness(t, filter.Policy{Server: testServer, Global: limit(100, time.Hour)}, func(o *filter.SharedOptions) {
		o.MaxBodyBytes = size
		o.MaxBodyBytesInFlight = 2 * size
		o.MaxBodyBytesPerConnection = size
	})
	body := padded(size)
	if len(body) != size {
		t.Fatalf("body of %d bytes", len(body))
	}
	// start serves a request whose body arrives slowly, on its own
	// connection unless conn is given, and returns its answer when done.
	start := func(conn context.Context, b *slowBody) <-chan *httptest.ResponseRecorder {
		r := httptest.NewRequest(http.MethodPost, "/mcp", b)
		r.ContentLength = size
		r.Header.Set("Content-Type", "application/json")
		if conn == nil {
			conn = h.shared.WithConnection(context.Background())
		}
		r = r.WithContext(conn)
		done := make(chan *httptest.ResponseRecorder, 1)
		go func() { done <- h.serve(r) }()
		return done
	}
	waitRead := func(b *slowBody) {
		t.Helper()
		for deadline := time.Now().Add(10 * time.Second); b.read.Load() == 0; time.Sleep(time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatal("the filter did not start reading a body")
			}
		}
	}

	// Two slow bodies hold the whole budget.
	first, second := newSlowBody(body), newSlowBody(body)
	firstDone, secondDone := start(nil, first), start(nil, second)
	waitRead(first)
	waitRead(second)

	// A third, on a connection of its own, is refused unread.
	third := newSlowBody(body)
	close(third.finish)
	w := <-start(nil, third)
	if w.Code != http.StatusServiceUnavailable || w.Header().Get("Retry-After") != "1" {
		t.Fatalf("over the budget: status %d, Retry-After %q; want 503 and 1", w.Code, w.Header().Get("Retry-After"))
	}
	if n := third.read.Load(); n != 0 {
		t.Errorf("the refused body was read (%d bytes)", n)
	}
	if got := metricValue(t, h.reg, filter.MetricRejectedRequests, map[string]string{"reason": "body_budget"}); got != 1 {
		t.Errorf("%s{reason=body_budget} = %v, want 1", filter.MetricRejectedRequests, got)
	}

	// Once the first body has reached the backend, its bytes are back.
	close(first.finish)
	if w := <-firstDone; w.Code != http.StatusOK {
		t.Fatalf("the first slow body: status %d: %s", w.Code, w.Body)
	}
	fourth := newSlowBody(body)
	close(fourth.finish)
	if w := <-start(nil, fourth); w.Code != http.StatusOK {
		t.Errorf("after a body was released: status %d, want 200: %s", w.Code, w.Body)
	}

	// One connection holds at most its own share: a second body on the
	// connection of a slow one is refused while the process has room.
	close(second.finish)
	<-secondDone
	conn := h.shared.WithConnection(context.Background())
	slow := newSlowBody(body)
	slowDone := start(conn, slow)
	waitRead(slow)
	other := newSlowBody(body)
	close(other.finish)
	if w := <-start(conn, other); w.Code != http.StatusServiceUnavailable {
		t.Errorf("a second body on one connection: status %d, want 503", w.Code)
	}
	if w := <-start(nil, other); w.Code != http.StatusOK {
		t.Errorf("the same body on another connection: status %d, want 200: %s", w.Code, w.Body)
	}
	close(slow.finish)
	<-slowDone
}

func TestABudgetBelowTheBodyLimitIsRefused(t *testing.T) {
	for _, opts := range []filter.SharedOptions{
		{MaxBodyBytes: 1000, MaxBodyBytesInFlight: 999},
		{MaxBodyBytes: 1000, MaxBodyBytesPerConnection: 999},
	} {
		if _, err := filter.NewShared(opts); err == nil {
			t.Errorf("NewShared(%+v) succeeded", opts)
		}
	}
}
