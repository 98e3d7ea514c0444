package filter_test

import (
	"bytes"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/toolgate/toolgate/filter"
	"github.com/toolgate/toolgate/filter/limiter"
)

// smallCall is a typical tools/call.
var smallCall = []byte(`{"jsonrpc":"2.0","id":42,"method":"tools/call","params":{"name":"expensive_tool","arguments":{"query":"select name from users where id = 7","limit":10},"_meta":{"progressToken":"p-42"}}}`)

// BenchmarkInspect is the JSON-RPC inspection alone.
func BenchmarkInspect(b *testing.B) {
	var in filter.Inspector
	b.SetBytes(int64(len(smallCall)))
	b.ReportAllocs()
	for b.Loop() {
		if code := in.Inspect(smallCall); code != 0 {
			b.Fatalf("code %d", code)
		}
	}
}

// rewindBody is a request body the benchmark can read again.
type rewindBody struct{ bytes.Reader }

func (*rewindBody) Close() error { return nil }

// headerWriter is a ResponseWriter that keeps nothing but reuses its header.
type headerWriter struct {
	header http.Header
	status int
}

func (w *headerWriter) Header() http.Header         { return w.header }
func (w *headerWriter) Write(p []byte) (int, error) { return len(p), nil }
func (w *headerWriter) WriteHeader(status int)      { w.status = status }

// BenchmarkMiddleware is the whole per-request cost of the filter for a
// small tools/call: inspection, identity from a cached verified token, and a
// decision on three buckets (server per user, tool per user, server global)
// in the in-memory store. The backend only reads the body.
func BenchmarkMiddleware(b *testing.B) {
	iss := newIssuer(b)
	shared, err := filter.NewShared(filter.SharedOptions{
		Store:      limiter.NewMemory(limiter.MemoryOptions{}),
		Registerer: prometheus.NewRegistry(),
	})
	if err != nil {
		b.Fatal(err)
	}
	plenty := limit(1<<40, time.Second)
	f, err := filter.New(filter.Policy{
		Server: testServer, Auth: iss.auth(), Global: plenty, PerUser: plenty,
		Tools: map[string]filter.ToolLimits{"expensive_tool": {PerUser: plenty}},
	}, shared)
	if err != nil {
		b.Fatal(err)
	}
	h := f.Wrap(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
	}))

	r := httptest.NewRequest(http.MethodPost, "/mcp", nil)
	r.Header.Set("Content-Type", "application/json")
	bearer := "Bearer " + iss.token(b, "alice")
	body := &rewindBody{}
	w := &headerWriter{header: http.Header{}}
	serve := func() {
		body.Reset(smallCall)
		r.Body, r.ContentLength = body, int64(len(smallCall))
		// The filter removes the checked token on its way to the backend.
		r.Header.Set("Authorization", bearer)
		clear(w.header)
		w.status = http.StatusOK
		h.ServeHTTP(w, r)
		if w.status != http.StatusOK {
			b.Fatalf("status %d", w.status)
		}
	}
	serve() // verifies the token and caches it

	b.SetBytes(int64(len(smallCall)))
	b.ReportAllocs()
	for b.Loop() {
		serve()
	}
}
