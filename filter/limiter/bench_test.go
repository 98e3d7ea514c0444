package limiter_test

import (
	"context"
	"fmt"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-redis/redis_rate/v10"
	"github.com/redis/go-redis/v9"

	"github.com/toolgate/toolgate/filter/limiter"
)

// benchLimit never runs out during a benchmark, which measures allowed
// decisions. MaxTokens × RefillPeriod stays where the Redis script's
// arithmetic is exact.
var benchLimit = limiter.Limit{MaxTokens: 1_000_000_000, RefillPeriod: time.Second}

// benchDemands are the first n buckets of one user's tools/call.
func benchDemands(n int, user string) []limiter.Demand {
	ids := []limiter.BucketID{
		{Server: server, Tool: "search", User: user},
		{Server: server, User: user},
		{Server: server, Tool: "search"},
		{Server: server},
	}
	demands := make([]limiter.Demand, n)
	for i := range demands {
		demands[i] = demand(ids[i], benchLimit, 1)
	}
	return demands
}

// commandMeter reports the Redis commands a benchmark ran per decision,
// from INFO commandstats: rediscmds/op counts the commands clients sent
// (EVAL and EVALSHA), scriptcmds/op those the scripts ran inside them.
type commandMeter struct {
	admin  redis.UniversalClient
	before map[string]int64
}

func startCommandMeter(b *testing.B, admin redis.UniversalClient) *commandMeter {
	b.Helper()
	before, err := commandCalls(context.Background(), admin)
	if err != nil {
		b.Fatal(err)
	}
	return &commandMeter{admin: admin, before: before}
}

func (m *commandMeter) report(b *testing.B, decisions int) {
	b.Helper()
	ran, err := commandsSince(context.Background(), m.admin, m.before)
	if err != nil {
		b.Fatal(err)
	}
	var sent, inScripts int64
	for name, n := range ran {
		switch name {
		case "eval", "evalsha", "eval_ro", "evalsha_ro":
			sent += n
		default:
			inScripts += n
		}
	}
	b.ReportMetric(float64(sent)/float64(decisions), "rediscmds/op")
	b.ReportMetric(float64(inScripts)/float64(decisions), "scriptcmds/op")
}

func BenchmarkTake(b *testing.B) {
	ctx := context.Background()
	client := newClient(b, sharedRedis.Addr())
	admin := newClient(b, sharedRedis.Addr())

	// takes decides demands once a loop, and gives back the slots of
	// their caps as a call's answer ends. round-trips/op counts the
	// store's round trips per loop: a release riding with the next
	// decision costs none of its own.
	takes := func(b *testing.B, demands []limiter.Demand) {
		s := limiter.NewRedis(client, limiter.RedisOptions{Prefix: "bench"})
		defer func() { _ = s.Close() }()
		take := func() {
			if dec, err := s.Take(ctx, demands); err != nil || !dec.Allowed {
				b.Fatalf("Take = %+v, %v", dec, err)
			}
			if err := s.Release(ctx, demands); err != nil {
				b.Fatal(err)
			}
		}
		take() // loads the scripts
		meter := startCommandMeter(b, admin)
		trips := s.RoundTrips()
		b.ReportAllocs()
		for b.Loop() {
			take()
		}
		b.ReportMetric(float64(s.RoundTrips()-trips)/float64(b.N), "round-trips/op")
		meter.report(b, b.N)
	}
	for _, n := range []int{1, 2, 4} {
		b.Run(fmt.Sprintf("redis/buckets=%d", n), func(b *testing.B) { takes(b, benchDemands(n, "alice")) })
	}
	day := time.Now().Truncate(24 * time.Hour)
	quota := limiter.Demand{
		Bucket: limiter.BucketID{Server: server, User: "alice"}, Limit: limiter.Limit{MaxTokens: 1 << 50},
		Tokens: 1, Window: limiter.Window{Start: day, End: day.Add(24 * time.Hour)},
	}
	slot := limiter.Demand{
		Bucket: limiter.BucketID{Server: server, User: "alice"}, Limit: limiter.Limit{MaxTokens: 4, RefillPeriod: time.Minute},
		Tokens: 1, Slot: "bench",
	}
	// Quotas ride in the same script call: a user's two buckets and a
	// daily quota against the two buckets alone. An in-flight cap beside
	// them is taken in the same call and given back in a second one, which
	// rides in the pipeline of the next decision.
	b.Run("redis/buckets=2+quota", func(b *testing.B) { takes(b, append(benchDemands(2, "alice"), quota)) })
	b.Run("redis/buckets=2+quota+cap", func(b *testing.B) { takes(b, append(benchDemands(2, "alice"), quota, slot)) })

	b.Run("redis_rate/buckets=1", func(b *testing.B) {
		l := redis_rate.NewLimiter(client)
		limit := redis_rate.PerMinute(int(benchLimit.MaxTokens))
		if _, err := l.Allow(ctx, "bench:alice", limit); err != nil { // loads the script
			b.Fatal(err)
		}
		meter := startCommandMeter(b, admin)
		b.ReportAllocs()
		for b.Loop() {
			if res, err := l.Allow(ctx, "bench:alice", limit); err != nil || res.Allowed != 1 {
				b.Fatalf("Allow = %+v, %v", res, err)
			}
		}
		meter.report(b, b.N)
	})

	for _, n := range []int{1, 2, 4} {
		b.Run(fmt.Sprintf("memory/buckets=%d", n), func(b *testing.B) {
			s := limiter.NewMemory(limiter.MemoryOptions{})
			demands := benchDemands(n, "alice")
			b.ReportAllocs()
			for b.Loop() {
				if dec, err := s.Take(ctx, demands); err != nil || !dec.Allowed {
					b.Fatalf("Take = %+v, %v", dec, err)
				}
			}
		})
	}

	for _, n := range []int{1, 2, 4} {
		b.Run(fmt.Sprintf("memory-parallel/buckets=%d", n), func(b *testing.B) {
			s := limiter.NewMemory(limiter.MemoryOptions{})
			var users atomic.Int64
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				// One user per goroutine; with 4 buckets all share the
				// server's global ones.
				demands := benchDemands(n, "user-"+strconv.FormatInt(users.Add(1), 10))
				for pb.Next() {
					if dec, err := s.Take(ctx, demands); err != nil || !dec.Allowed {
						b.Errorf("Take = %+v, %v", dec, err)
						return
					}
				}
			})
		})
	}
}

// roundTrips counts what a client sends to Redis: one per command sent
// alone, one per pipeline.
type roundTrips struct{ n atomic.Int64 }

func (h *roundTrips) DialHook(next redis.DialHook) redis.DialHook { return next }
func (h *roundTrips) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		h.n.Add(1)
		return next(ctx, cmd)
	}
}
func (h *roundTrips) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		h.n.Add(1)
		return next(ctx, cmds)
	}
}

// runCallers makes b.N decisions with callers goroutines and reports
// decisions per second.
func runCallers(b *testing.B, callers int, decide func(caller int) error) {
	b.Helper()
	var next atomic.Int64
	errs := make(chan error, callers)
	b.ResetTimer()
	start := time.Now()
	for c := range callers {
		go func() {
			var err error
			for next.Add(1) <= int64(b.N) && err == nil {
				err = decide(c)
			}
			errs <- err
		}()
	}
	for range callers {
		if err := <-errs; err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "decisions/s")
}

// BenchmarkConcurrentDecisions compares, in one run, decisions per second
// on one Redis with 1, 32 and 256 callers at once: the store as it ships
// (decisions waiting at the same moment share a pipeline), the same store
// sending each decision on its own over a pool of 20 connections (how it
// worked before pipelining), and go-redis/redis_rate's Allow on a
// default client.
func BenchmarkConcurrentDecisions(b *testing.B) {
	ctx := context.Background()
	admin := newClient(b, sharedRedis.Addr())
	stores := []struct {
		name string
		opts limiter.RedisOptions
		pool int
	}{
		{name: "pipelined", opts: limiter.RedisOptions{Timeout: time.Second}},
		{name: "one-per-round-trip", opts: limiter.RedisOptions{Timeout: time.Second, MaxBatch: 1, Pipelines: 20}, pool: 20},
	}
	for _, callers := range []int{1, 32, 256} {
		for _, st := range stores {
			b.Run(fmt.Sprintf("%s/callers=%d", st.name, callers), func(b *testing.B) {
				client, err := limiter.NewRedisClient(limiter.RedisConfig{URL: sharedRedis.URL(), Timeout: time.Second, PoolSize: st.pool})
				if err != nil {
					b.Fatal(err)
				}
				defer func() { _ = client.Close() }()
				trips := &roundTrips{}
				client.AddHook(trips)
				s := limiter.NewRedis(client, st.opts)
				defer func() { _ = s.Close() }()
				demands := make([][]limiter.Demand, callers)
				for c := range demands {
					demands[c] = benchDemands(1, "user-"+strconv.Itoa(c))
					if _, err := s.Take(ctx, demands[c]); err != nil { // loads the script
						b.Fatal(err)
					}
				}
				meter := startCommandMeter(b, admin)
				trips.n.Store(0)
				runCallers(b, callers, func(c int) error {
					dec, err := s.Take(ctx, demands[c])
					if err == nil && !dec.Allowed {
						err = fmt.Errorf("refused: %+v", dec)
					}
					return err
				})
				meter.report(b, b.N)
				b.ReportMetric(float64(trips.n.Load())/float64(b.N), "roundtrips/op")
			})
		}
		b.Run(fmt.Sprintf("redis_rate/callers=%d", callers), func(b *testing.B) {
			client := newClient(b, sharedRedis.Addr())
			l := redis_rate.NewLimiter(client)
			limit := redis_rate.PerMinute(int(benchLimit.MaxTokens))
			if _, err := l.Allow(ctx, "bench:user-0", limit); err != nil { // loads the script
				b.Fatal(err)
			}
			meter := startCommandMeter(b, admin)
			runCallers(b, callers, func(c int) error {
				res, err := l.Allow(ctx, "bench:user-"+strconv.Itoa(c), limit)
				if err == nil && res.Allowed != 1 {
					err = fmt.Errorf("refused: %+v", res)
				}
				return err
			})
			meter.report(b, b.N)
		})
	}
}
