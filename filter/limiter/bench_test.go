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

	for _, n := range []int{1, 2, 4} {
		b.Run(fmt.Sprintf("redis/buckets=%d", n), func(b *testing.B) {
			s := limiter.NewRedis(client, limiter.RedisOptions{Prefix: "bench"})
			demands := benchDemands(n, "alice")
			if _, err := s.Take(ctx, demands); err != nil { // loads the script
				b.Fatal(err)
			}
			meter := startCommandMeter(b, admin)
			b.ReportAllocs()
			for b.Loop() {
				if dec, err := s.Take(ctx, demands); err != nil || !dec.Allowed {
					b.Fatalf("Take = %+v, %v", dec, err)
				}
			}
			meter.report(b, b.N)
		})
	}

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
