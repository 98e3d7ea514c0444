package gateway

import (
	"bytes"
	"io"
	"net/http"
	"net/http/httptest"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// Benchmarks of the proxy's cost. hack/bench-proxy.sh runs them and prints
// the direct/gateway ratio.
//
// BenchmarkProxy sends the same small tools/call JSON-RPC POST from the same
// client at the same concurrency, first straight to a backend ("direct"),
// then through the gateway with one route and no filters ("gateway"). All of
// it runs on loopback in this process, so allocs/op counts the client and
// the backend too; "gateway-allocs/op" is the difference, the allocations
// the gateway adds per proxied request.
//
// BenchmarkGatewayHandler measures the gateway alone: its handler with an
// in-memory transport, no sockets, so allocs/op is the gateway's own.

const benchCall = `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"text":"hello"}}}`

const benchResult = `{"jsonrpc":"2.0","id":1,"result":{"content":[{"type":"text","text":"hello"}]}}`

// benchBackend answers every tools/call with a fixed small result, so the
// benchmark measures transport and proxy, not an MCP server.
func benchBackend(w http.ResponseWriter, r *http.Request) {
	_, _ = io.Copy(io.Discard, r.Body)
	w.Header().Set("Content-Type", "application/json")
	_, _ = io.WriteString(w, benchResult)
}

// directMallocsPerOp carries the direct run's allocations to the gateway
// run, which reports the difference.
var directMallocsPerOp float64

func BenchmarkProxy(b *testing.B) {
	backend := httptest.NewServer(http.HandlerFunc(benchBackend))
	defer backend.Close()
	s, err := New(Options{Logger: quiet})
	if err != nil {
		b.Fatal(err)
	}
	defer func() { _ = s.Shutdown(b.Context()) }()
	if err := s.Apply(oneRoute(Rule{
		Matches:  []Match{{Path: prefix("/mcp")}},
		Backends: []Backend{{Name: "bench", Weight: 1, Endpoints: []string{strings.TrimPrefix(backend.URL, "http://")}}},
	})); err != nil {
		b.Fatal(err)
	}
	const parallelism = 8 // goroutines per GOMAXPROCS
	clientTransport := &http.Transport{MaxIdleConnsPerHost: 1024, MaxConnsPerHost: 0, DisableCompression: true}
	defer clientTransport.CloseIdleConnections()
	httpClient := &http.Client{Transport: clientTransport}

	run := func(b *testing.B, url string) float64 {
		var mu sync.Mutex
		var latencies []time.Duration
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		b.ReportAllocs()
		b.SetParallelism(parallelism)
		b.ResetTimer()
		start := time.Now()
		b.RunParallel(func(pb *testing.PB) {
			local := make([]time.Duration, 0, 1024)
			body := strings.NewReader(benchCall)
			for pb.Next() {
				body.Reset(benchCall)
				req, _ := http.NewRequest(http.MethodPost, url, io.NopCloser(body))
				req.ContentLength = int64(len(benchCall))
				req.Header.Set("Content-Type", "application/json")
				req.Header.Set("Accept", "application/json, text/event-stream")
				t0 := time.Now()
				resp, err := httpClient.Do(req)
				if err != nil {
					b.Error(err)
					return
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				local = append(local, time.Since(t0))
				if resp.StatusCode != http.StatusOK {
					b.Errorf("status %d", resp.StatusCode)
					return
				}
			}
			mu.Lock()
			latencies = append(latencies, local...)
			mu.Unlock()
		})
		elapsed := time.Since(start)
		b.StopTimer()
		runtime.ReadMemStats(&after)
		slices.Sort(latencies)
		if n := len(latencies); n > 0 {
			b.ReportMetric(float64(n)/elapsed.Seconds(), "req/s")
			b.ReportMetric(float64(latencies[n/2].Microseconds()), "p50-µs")
			b.ReportMetric(float64(latencies[n*99/100].Microseconds()), "p99-µs")
		}
		return float64(after.Mallocs-before.Mallocs) / float64(b.N)
	}
	b.Run("direct", func(b *testing.B) {
		directMallocsPerOp = run(b, backend.URL+"/mcp")
	})
	b.Run("gateway", func(b *testing.B) {
		perOp := run(b, gatewayURLOf(b, s)+"/mcp")
		if directMallocsPerOp > 0 {
			b.ReportMetric(perOp-directMallocsPerOp, "gateway-allocs/op")
		}
	})
}

func gatewayURLOf(b *testing.B, s *Server) string {
	a := s.Addr("web")
	if a == nil {
		b.Fatal("listener not bound")
	}
	return "http://" + a.String()
}

// cannedTransport answers every request with the same small JSON response.
type cannedTransport struct{}

func (cannedTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.Body != nil {
		_, _ = io.Copy(io.Discard, r.Body)
		r.Body.Close()
	}
	return &http.Response{
		StatusCode:    http.StatusOK,
		Proto:         "HTTP/1.1",
		ProtoMajor:    1,
		ProtoMinor:    1,
		Header:        http.Header{"Content-Type": {"application/json"}},
		Body:          io.NopCloser(strings.NewReader(benchResult)),
		ContentLength: int64(len(benchResult)),
		Request:       r,
	}, nil
}

// discardWriter is a reusable ResponseWriter.
type discardWriter struct {
	header http.Header
	code   int
}

func (d *discardWriter) Header() http.Header         { return d.header }
func (d *discardWriter) Write(p []byte) (int, error) { return len(p), nil }
func (d *discardWriter) WriteHeader(code int)        { d.code = code }
func (d *discardWriter) Flush()                      {}

// rewindBody is a request body that can be read again.
type rewindBody struct{ bytes.Reader }

func (*rewindBody) Close() error { return nil }

func BenchmarkGatewayHandler(b *testing.B) {
	s, err := New(Options{Logger: quiet, Transport: cannedTransport{}})
	if err != nil {
		b.Fatal(err)
	}
	defer func() { _ = s.Shutdown(b.Context()) }()
	if err := s.Apply(oneRoute(Rule{
		Matches:  []Match{{Path: prefix("/mcp")}},
		Backends: []Backend{{Name: "bench", Weight: 1, Endpoints: []string{"127.0.0.1:9"}}},
	})); err != nil {
		b.Fatal(err)
	}
	key := portKey{address: "127.0.0.1"}
	h := &entryHandler{server: s, key: key}
	body := &rewindBody{}
	req := httptest.NewRequest(http.MethodPost, "http://mcp.example.com/mcp", body)
	req.Header.Set("Content-Type", "application/json")
	req.ContentLength = int64(len(benchCall))
	w := &discardWriter{header: http.Header{}}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		body.Reset([]byte(benchCall))
		clear(w.header)
		h.ServeHTTP(w, req)
		if w.code != http.StatusOK {
			b.Fatalf("status %d", w.code)
		}
	}
}
