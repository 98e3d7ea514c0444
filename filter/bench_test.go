package filter_test

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/toolgate/toolgate/filter"
	"github.com/toolgate/toolgate/filter/authz"
	"github.com/toolgate/toolgate/filter/limiter"
	"github.com/toolgate/toolgate/internal/testredis"
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
	serve := benchCall(b, shared, iss, nil, iss.token(b, "alice"))
	serve() // verifies the token and caches it

	b.SetBytes(int64(len(smallCall)))
	b.ReportAllocs()
	for b.Loop() {
		serve()
	}
}

// benchCall returns a function that sends smallCall with token through a
// filter of three buckets that never run out (server per user, tool per
// user, server global) and the given authorization, to a backend that
// only reads the body; it panics on any status but 200.
func benchCall(b *testing.B, shared *filter.Shared, iss *testIssuer, authorization *authz.Policy, token string) func() {
	b.Helper()
	p := plentyPolicy(iss)
	p.Authorization = authorization
	f, err := filter.New(p, shared)
	if err != nil {
		b.Fatal(err)
	}
	return benchServe(f, token)
}

// plentyPolicy has three buckets that never run out: server per user,
// tool per user, server global.
func plentyPolicy(iss *testIssuer) filter.Policy {
	plenty := limit(1<<40, time.Second)
	return filter.Policy{
		Server: testServer, Auth: iss.auth(), Global: plenty, PerUser: plenty,
		Tools: map[string]filter.ToolLimits{"expensive_tool": {PerUser: plenty}},
	}
}

// benchServe returns a function that sends smallCall with token through
// f, to a backend that only reads the body; it panics on any status but
// 200. Each goroutine needs its own.
func benchServe(f *filter.Filter, token string) func() {
	h := f.Wrap(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
	}))
	r := httptest.NewRequest(http.MethodPost, "/mcp", nil)
	r.Header.Set("Content-Type", "application/json")
	bearer := "Bearer " + token
	body := &rewindBody{}
	w := &headerWriter{header: http.Header{}}
	return func() {
		body.Reset(smallCall)
		r.Body, r.ContentLength = body, int64(len(smallCall))
		// The filter removes the checked token on its way to the backend.
		r.Header.Set("Authorization", bearer)
		clear(w.header)
		w.status = http.StatusOK
		h.ServeHTTP(w, r)
		if w.status != http.StatusOK {
			panic(fmt.Sprintf("status %d", w.status)) // b.Fatal may not be called from RunParallel's goroutines
		}
	}
}

// authorizationBench is a policy of n rules, the last of which allows
// expensive_tool to engineers (and, byArguments, only with a limit below
// 100: a decision that cannot be remembered per caller); the others name
// other tools, on conditions over claims and arguments, as a real policy
// would.
func authorizationBench(n int, byArguments bool) *authz.Policy {
	if n == 0 {
		return nil
	}
	when := "'engineering' in claims.groups"
	if byArguments {
		when += " && request.arguments.limit < 100"
	}
	p := &authz.Policy{}
	for i := range n - 1 {
		p.Rules = append(p.Rules, authz.Rule{
			Name:  fmt.Sprintf("team-%d", i),
			Tools: []string{fmt.Sprintf("team_%d_*", i), fmt.Sprintf("report_%d", i)},
			When:  fmt.Sprintf("'team-%d' in claims.groups && request.arguments.limit < 100", i),
		})
	}
	p.Rules = append(p.Rules, authz.Rule{Name: "engineers", Tools: []string{"expensive_*"}, When: when})
	return p
}

// BenchmarkAuthorization is BenchmarkMiddleware's tools/call with no
// authorization, and with 20 rules of which the last allows the call: by
// claims (the caller's decision is remembered), and by claims and
// arguments (decided on every call). Run them together and compare the
// medians: hack/bench-authz.sh.
func BenchmarkAuthorization(b *testing.B) {
	for _, tc := range []struct {
		name        string
		rules       int
		byArguments bool
	}{{"rules=0", 0, false}, {"rules=20", 20, false}, {"rules=20-by-arguments", 20, true}} {
		rules, byArguments := tc.rules, tc.byArguments
		b.Run(tc.name, func(b *testing.B) {
			iss := newIssuer(b)
			shared, err := filter.NewShared(filter.SharedOptions{Registerer: prometheus.NewRegistry()})
			if err != nil {
				b.Fatal(err)
			}
			serve := benchCall(b, shared, iss, authorizationBench(rules, byArguments),
				iss.token(b, "alice", func(c claims) { c["groups"] = []string{"engineering", "team-3"} }))
			serve()
			// The side without rules holds the same compiled rules,
			// unused, so that both run with the same live heap: at a heap
			// this small the collector's 4 MB floor makes a few hundred
			// KiB of compiled CEL change how often it runs, which a
			// proxy's real heap does not (with GOGC=off the sides differ
			// by the decision alone).
			var ballast *authz.Authorizer
			if rules == 0 {
				if ballast, err = authz.Compile(*authorizationBench(20, false)); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportAllocs()
			for b.Loop() {
				serve()
			}
			runtime.KeepAlive(ballast)
		})
	}
}

// BenchmarkToolsList is a tools/list answered with 500 tools (JSON, about
// 100 KiB), passed through unfiltered (no authorization) and filtered for a
// caller by 20 rules.
func BenchmarkToolsList(b *testing.B) {
	var list bytes.Buffer
	list.WriteString(`{"jsonrpc":"2.0","id":1,"result":{"tools":[`)
	for i := range 500 {
		if i > 0 {
			list.WriteByte(',')
		}
		prefix := "expensive"
		if i%2 == 1 {
			prefix = fmt.Sprintf("team_%d", i%19)
		}
		fmt.Fprintf(&list, `{"name":"%s_%d","description":"Tool number %d of the benchmark server, which does something useful.","inputSchema":{"type":"object","properties":{"query":{"type":"string"},"limit":{"type":"integer"}},"required":["query"]}}`, prefix, i, i)
	}
	list.WriteString(`],"nextCursor":"next"}}`)
	response := list.Bytes()
	request := []byte(`{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{}}`)
	for _, tc := range []struct {
		name  string
		rules int
	}{{"unfiltered", 0}, {"filtered", 20}} {
		b.Run(tc.name, func(b *testing.B) {
			iss := newIssuer(b)
			shared, err := filter.NewShared(filter.SharedOptions{Registerer: prometheus.NewRegistry()})
			if err != nil {
				b.Fatal(err)
			}
			f, err := filter.New(filter.Policy{Server: testServer, Auth: iss.auth(), Authorization: authorizationBench(tc.rules, false)}, shared)
			if err != nil {
				b.Fatal(err)
			}
			h := f.Wrap(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				_, _ = io.Copy(io.Discard, r.Body)
				w.Header().Set("Content-Type", "application/json")
				_, _ = w.Write(response)
			}))
			r := httptest.NewRequest(http.MethodPost, "/mcp", nil)
			r.Header.Set("Content-Type", "application/json")
			bearer := "Bearer " + iss.token(b, "alice", func(c claims) { c["groups"] = []string{"engineering", "team-3"} })
			body := &rewindBody{}
			w := &countingWriter{header: http.Header{}}
			serve := func() {
				body.Reset(request)
				r.Body, r.ContentLength = body, int64(len(request))
				r.Header.Set("Authorization", bearer)
				clear(w.header)
				w.n = 0
				h.ServeHTTP(w, r)
			}
			serve()
			if tc.rules > 0 && w.n >= len(response) || tc.rules == 0 && w.n != len(response) {
				b.Fatalf("the response is %d bytes of %d: filtering did not happen as it should", w.n, len(response))
			}
			b.SetBytes(int64(len(response)))
			b.ReportAllocs()
			for b.Loop() {
				serve()
			}
		})
	}
}

// countingWriter counts the bytes written.
type countingWriter struct {
	header http.Header
	n      int
}

func (w *countingWriter) Header() http.Header         { return w.header }
func (w *countingWriter) Write(p []byte) (int, error) { w.n += len(p); return len(p), nil }
func (w *countingWriter) WriteHeader(int)             {}

// BenchmarkLimitsOnRedis is a tools/call through a policy on Redis, by
// many callers at once as a proxy serves them: the three buckets of
// plentyPolicy, and the same with a per-user quota and a per-user in-flight
// cap (a slot taken and given back on every call) besides. Neither runs
// out. It reports the store's round trips per call. Run them together and
// compare the medians: hack/bench-limits.sh.
func BenchmarkLimitsOnRedis(b *testing.B) {
	srv, err := testredis.Start()
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = srv.Close() })
	iss := newIssuer(b)
	withQuota, withCap := plentyPolicy(iss), plentyPolicy(iss)
	withQuota.PerUserQuota = &filter.Quota{Max: 1 << 40, Window: filter.WindowDay}
	withCap.PerUserMaxConcurrent = 1 << 20
	withQuotaAndCap := withQuota
	withQuotaAndCap.PerUserMaxConcurrent = withCap.PerUserMaxConcurrent
	for _, tc := range []struct {
		name   string
		policy filter.Policy
	}{
		{"buckets", plentyPolicy(iss)},
		{"buckets+quota", withQuota},
		{"buckets+cap", withCap},
		{"buckets+quota+cap", withQuotaAndCap},
	} {
		b.Run(tc.name, func(b *testing.B) {
			// A busy machine may hold a round trip past the default 50ms,
			// which sheds its calls with 503: the benchmark measures
			// decisions, so it waits up to 2 s for each, as the local
			// cluster's proxies do (--store-timeout=2s).
			const patience = 2 * time.Second
			client, err := limiter.NewRedisClient(limiter.RedisConfig{URL: srv.URL(), Timeout: patience})
			if err != nil {
				b.Fatal(err)
			}
			defer func() { _ = client.Close() }()
			_ = client.FlushAll(b.Context()).Err()
			store := limiter.NewRedis(client, limiter.RedisOptions{Timeout: patience})
			defer func() { _ = store.Close() }()
			shared, err := filter.NewShared(filter.SharedOptions{Store: store, StoreTimeout: patience, Registerer: prometheus.NewRegistry()})
			if err != nil {
				b.Fatal(err)
			}
			f, err := filter.New(tc.policy, shared)
			if err != nil {
				b.Fatal(err)
			}
			// Callers are 8 users, each with a verified token in cache.
			var tokens []string
			for i := range 8 {
				token := iss.token(b, fmt.Sprintf("user-%d", i))
				benchServe(f, token)()
				tokens = append(tokens, token)
			}
			var next atomic.Int64
			start := store.RoundTrips()
			cpuStart := redisCPU(b, client)
			b.SetParallelism(16)
			b.ReportAllocs()
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				serve := benchServe(f, tokens[next.Add(1)%int64(len(tokens))])
				for pb.Next() {
					serve()
				}
			})
			b.StopTimer()
			b.ReportMetric(float64(store.RoundTrips()-start)/float64(b.N), "round-trips/op")
			b.ReportMetric((redisCPU(b, client)-cpuStart).Seconds()*1e6/float64(b.N), "redis-cpu-µs/op")
		})
	}
}

// redisCPU is the CPU time the Redis server has used (INFO cpu: user and
// system), so that a benchmark can say what one call costs Redis.
func redisCPU(b *testing.B, client redis.UniversalClient) time.Duration {
	b.Helper()
	info, err := client.Info(b.Context(), "cpu").Result()
	if err != nil {
		b.Fatal(err)
	}
	var total float64
	for line := range strings.Lines(info) {
		name, value, ok := strings.Cut(strings.TrimSpace(line), ":")
		if ok && (name == "used_cpu_sys" || name == "used_cpu_user") {
			v, err := strconv.ParseFloat(value, 64)
			if err != nil {
				b.Fatalf("INFO cpu %s: %v", name, err)
			}
			total += v
		}
	}
	return time.Duration(total * float64(time.Second))
}
