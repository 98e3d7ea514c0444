package limiter_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/toolgate/toolgate/filter/limiter"
	"github.com/toolgate/toolgate/internal/testredis"
)

// sharedRedis serves the tests and benchmarks that neither count commands
// nor stop the server; those start their own.
var sharedRedis *testredis.Server

func TestMain(m *testing.M) {
	srv, err := testredis.Start()
	if err != nil {
		fmt.Fprintln(os.Stderr, "limiter tests:", err)
		os.Exit(1)
	}
	sharedRedis = srv
	code := m.Run()
	_ = srv.Close()
	os.Exit(code)
}

func startRedis(t testing.TB) *testredis.Server {
	t.Helper()
	srv, err := testredis.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Close() })
	return srv
}

func newClient(t testing.TB, addr string) *redis.Client {
	c := redis.NewClient(&redis.Options{Addr: addr})
	t.Cleanup(func() { _ = c.Close() })
	return c
}

var prefixes atomic.Int64

// newPrefix keeps the keys of stores sharing a server apart.
func newPrefix() string { return fmt.Sprintf("test%d", prefixes.Add(1)) }

// commandCalls reads how many times the server ran each command.
func commandCalls(ctx context.Context, c redis.UniversalClient) (map[string]int64, error) {
	info, err := c.Info(ctx, "commandstats").Result()
	if err != nil {
		return nil, fmt.Errorf("read commandstats: %w", err)
	}
	calls := make(map[string]int64)
	for line := range strings.Lines(info) {
		name, stats, ok := strings.Cut(strings.TrimSpace(line), ":")
		name, isStat := strings.CutPrefix(name, "cmdstat_")
		if !ok || !isStat {
			continue
		}
		for field := range strings.SplitSeq(stats, ",") {
			if v, ok := strings.CutPrefix(field, "calls="); ok {
				n, err := strconv.ParseInt(v, 10, 64)
				if err != nil {
					return nil, fmt.Errorf("read commandstats: %q: %w", line, err)
				}
				calls[name] = n
			}
		}
	}
	return calls, nil
}

// commandsSince returns the commands the server ran since before, other
// than INFO and the handshake of new connections.
func commandsSince(ctx context.Context, c redis.UniversalClient, before map[string]int64) (map[string]int64, error) {
	after, err := commandCalls(ctx, c)
	if err != nil {
		return nil, err
	}
	ran := make(map[string]int64)
	for name, n := range after {
		switch name {
		case "info", "hello", "client|setinfo", "auth", "select", "ping":
			continue
		}
		if d := n - before[name]; d != 0 {
			ran[name] = d
		}
	}
	return ran, nil
}

func TestRedisStore(t *testing.T) {
	client := newClient(t, sharedRedis.Addr())
	runStoreSuite(t, func(t *testing.T) (limiter.Store, clock) {
		c := newFakeClock()
		s := limiter.NewRedisWithClock(client, limiter.RedisOptions{Prefix: newPrefix()}, c.Now)
		t.Cleanup(func() { _ = s.Close() })
		return s, c
	})
}

// Without a test's clock, the script decides by the server's TIME: one
// decision reads it once, and a drained bucket fills as it passes.
func TestRedisDecidesByTheServersClock(t *testing.T) {
	s := limiter.NewRedis(newClient(t, sharedRedis.Addr()), limiter.RedisOptions{Prefix: newPrefix()})
	t.Cleanup(func() { _ = s.Close() })
	l := limiter.Limit{MaxTokens: 2, RefillPeriod: 100 * time.Millisecond}
	dec := take(t, s, demand(alice, l, 1), demand(alice, l, 1))
	wantAllowed(t, dec, true)
	if got := dec.Buckets[1].ResetAfter; got != l.RefillPeriod {
		t.Errorf("after both tokens in one decision, ResetAfter = %v, want %v", got, l.RefillPeriod)
	}
	dec = take(t, s, demand(alice, l, 1))
	wantAllowed(t, dec, false)
	if dec.RetryAfter <= 0 || dec.RetryAfter > l.RefillPeriod/2 {
		t.Errorf("RetryAfter = %v, want in (0, %v]", dec.RetryAfter, l.RefillPeriod/2)
	}
	for deadline := time.Now().Add(30 * time.Second); !take(t, s, demand(alice, l, 1)).Allowed; {
		if time.Now().After(deadline) {
			t.Fatal("the bucket did not refill as the server's clock went on")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// buckets are the four buckets of a tools/call with every limit set.
var buckets = []limiter.BucketID{
	{Server: server},
	{Server: server, Tool: "search"},
	{Server: server, User: "alice"},
	{Server: server, Tool: "search", User: "alice"},
}

func TestRedisSendsOneCommandPerDecision(t *testing.T) {
	ctx := context.Background()
	admin := newClient(t, startRedis(t).Addr())
	client := newClient(t, admin.Options().Addr)
	hook := &countingHook{}
	client.AddHook(hook)
	s := limiter.NewRedis(client, limiter.RedisOptions{})
	l := limiter.Limit{MaxTokens: 1_000_000, RefillPeriod: time.Minute}
	for _, n := range []int{1, 2, 4} {
		t.Run(fmt.Sprintf("a decision over %d buckets is one EVALSHA", n), func(t *testing.T) {
			demands := make([]limiter.Demand, n)
			for i := range demands {
				demands[i] = demand(buckets[i], l, 1)
			}
			take(t, s, demands...) // loads the script
			before, err := commandCalls(ctx, admin)
			if err != nil {
				t.Fatal(err)
			}
			sent := hook.sent.Load()
			const decisions = 10
			for range decisions {
				wantAllowed(t, take(t, s, demands...), true)
			}
			if got := hook.sent.Load() - sent; got != decisions {
				t.Errorf("the client sent %d commands for %d decisions", got, decisions)
			}
			ran, err := commandsSince(ctx, admin, before)
			if err != nil {
				t.Fatal(err)
			}
			// Redis counts the commands scripts run too: one TIME, and one
			// GET and one SET per bucket, all inside the EVALSHA.
			want := map[string]int64{"evalsha": decisions, "time": decisions, "get": int64(n) * decisions, "set": int64(n) * decisions}
			if fmt.Sprint(ran) != fmt.Sprint(want) {
				t.Errorf("%d decisions ran %v on Redis, want %v", decisions, ran, want)
			}
		})
	}
}

// hashTag is the part of a key Redis Cluster hashes: the text between the
// first '{' and the next '}', when not empty.
func hashTag(key string) string {
	_, rest, ok := strings.Cut(key, "{")
	if !ok {
		return ""
	}
	tag, _, ok := strings.Cut(rest, "}")
	if !ok {
		return ""
	}
	return tag
}

func TestRedisKeys(t *testing.T) {
	ctx := context.Background()
	client := newClient(t, sharedRedis.Addr())
	prefix := newPrefix()
	s := limiter.NewRedis(client, limiter.RedisOptions{Prefix: prefix})
	l := limiter.Limit{MaxTokens: 10, RefillPeriod: time.Minute}
	secrets := []string{"team-a", "{weird}", "alice@example.com", "expensive_tool"}
	ids := []limiter.BucketID{
		{Server: "team-a/{weird}:name"},
		{Server: "team-a/{weird}:name", Tool: "expensive_tool"},
		{Server: "team-a/{weird}:name", User: "alice@example.com"},
		{Server: "team-a/{weird}:name", Tool: "expensive_tool", User: "alice@example.com"},
	}
	demands := make([]limiter.Demand, len(ids))
	for i, id := range ids {
		demands[i] = demand(id, l, 1)
	}
	wantAllowed(t, take(t, s, demands...), true)
	keys, err := client.Keys(ctx, prefix+":*").Result()
	if err != nil {
		t.Fatal(err)
	}
	if len(keys) != len(ids) {
		t.Fatalf("a decision over %d buckets left keys %q", len(ids), keys)
	}

	t.Run("keys of one decision share one hash tag", func(t *testing.T) {
		tag := hashTag(keys[0])
		for _, k := range keys {
			if got := hashTag(k); got == "" || got != tag {
				t.Errorf("key %q has hash tag %q, want %q like %q", k, got, tag, keys[0])
			}
		}
	})
	t.Run("keys carry no server, tool or user name in clear", func(t *testing.T) {
		for _, k := range keys {
			for _, secret := range secrets {
				if strings.Contains(k, secret) {
					t.Errorf("key %q contains %q", k, secret)
				}
			}
		}
	})
	t.Run("keys expire when their bucket is full again", func(t *testing.T) {
		for _, k := range keys {
			ttl, err := client.PTTL(ctx, k).Result()
			if err != nil {
				t.Fatal(err)
			}
			// One token of ten per minute is back in six seconds.
			if ttl <= 0 || ttl > 6*time.Second {
				t.Errorf("key %q has PTTL %v, want in (0, 6s]", k, ttl)
			}
		}
	})
	t.Run("keys stay short whatever the names", func(t *testing.T) {
		long := strings.Repeat("x", 10_000)
		id := limiter.BucketID{Server: long, Tool: long, User: long}
		wantAllowed(t, take(t, s, demand(id, l, 1)), true)
		all, err := client.Keys(ctx, prefix+":*").Result()
		if err != nil {
			t.Fatal(err)
		}
		for _, k := range all {
			if len(k) > len(prefix)+71 {
				t.Errorf("key %q is %d bytes long, want at most %d", k, len(k), len(prefix)+71)
			}
		}
	})
	t.Run("an expired key is a full bucket", func(t *testing.T) {
		short := limiter.Limit{MaxTokens: 2, RefillPeriod: 200 * time.Millisecond}
		id := limiter.BucketID{Server: server, User: "expiring"}
		before, err := client.Keys(ctx, prefix+":*").Result()
		if err != nil {
			t.Fatal(err)
		}
		wantAllowed(t, take(t, s, demand(id, short, 2)), true)
		after, err := client.Keys(ctx, prefix+":*").Result()
		if err != nil {
			t.Fatal(err)
		}
		var added []string
		for _, k := range after {
			if !slices.Contains(before, k) {
				added = append(added, k)
			}
		}
		if len(added) != 1 {
			t.Fatalf("a decision over one new bucket added keys %q", added)
		}
		time.Sleep(5 * short.RefillPeriod)
		if n, err := client.Exists(ctx, added[0]).Result(); err != nil || n != 0 {
			t.Errorf("EXISTS %q = %d, %v five refill periods later, want 0", added[0], n, err)
		}
		dec := take(t, s, demand(id, short, 2))
		wantAllowed(t, dec, true)
		wantRemaining(t, dec.Buckets[0], 0)
	})
}

// record reads the numbers of a key's record (see limiter.Redis).
func record(t *testing.T, client redis.UniversalClient, key string) []int64 {
	t.Helper()
	v, err := client.Eval(context.Background(), "return {cmsgpack.unpack(redis.call('GET', KEYS[1]))}", []string{key}).Int64Slice()
	if err != nil {
		t.Fatalf("record of %s: %v", key, err)
	}
	return v
}

func TestRedisKeepsFractionsOfAMicrosecondBetweenDecisions(t *testing.T) {
	ctx := context.Background()
	client := newClient(t, sharedRedis.Addr())
	prefix := newPrefix()
	s := limiter.NewRedis(client, limiter.RedisOptions{Prefix: prefix})
	// A token is worth 1200000000.33µs. Whenever the three decisions run
	// (within twenty minutes), the bucket is full again exactly one period
	// after the first took its token.
	l := limiter.Limit{MaxTokens: 3, RefillPeriod: time.Hour + time.Microsecond}
	var fullAt [3]int64
	for i, wantFrac := range []int64{1, 2, 0} {
		wantAllowed(t, take(t, s, demand(alice, l, 1)), true)
		keys, err := client.Keys(ctx, prefix+":*").Result()
		if err != nil || len(keys) != 1 {
			t.Fatalf("keys %q, %v: want one", keys, err)
		}
		v := record(t, client, keys[0])
		if len(v) != 4 || v[0] != 2 || v[2] != wantFrac {
			t.Fatalf("decision %d left %v, want [2 <µs> %d 0]", i, v, wantFrac)
		}
		fullAt[i] = v[1]
	}
	if got, want := fullAt[1]-fullAt[0], int64(1200000000); got != want {
		t.Errorf("the second token moved the bucket's full time by %dµs, want %d", got, want)
	}
	if got, want := fullAt[2]-fullAt[0], int64(2400000001); got != want {
		t.Errorf("the second and third tokens moved the bucket's full time by %dµs, want %d", got, want)
	}
}

func TestRedisRunsAgainAfterScriptFlush(t *testing.T) {
	ctx := context.Background()
	client := newClient(t, startRedis(t).Addr())
	s := limiter.NewRedis(client, limiter.RedisOptions{})
	l := limiter.Limit{MaxTokens: 3, RefillPeriod: time.Hour}
	wantAllowed(t, take(t, s, demand(alice, l, 1)), true)
	if err := client.ScriptFlush(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	before, err := commandCalls(ctx, client)
	if err != nil {
		t.Fatal(err)
	}
	dec := take(t, s, demand(alice, l, 1))
	wantAllowed(t, dec, true)
	wantRemaining(t, dec.Buckets[0], 1)
	ran, err := commandsSince(ctx, client, before)
	if err != nil {
		t.Fatal(err)
	}
	if ran["eval"] != 1 {
		t.Errorf("after SCRIPT FLUSH a decision ran %v, want one EVAL", ran)
	}
}

// countingHook counts the commands a client sends.
type countingHook struct{ sent atomic.Int64 }

func (h *countingHook) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h *countingHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		h.sent.Add(1)
		return next(ctx, cmd)
	}
}

func (h *countingHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		h.sent.Add(int64(len(cmds)))
		return next(ctx, cmds)
	}
}

func TestRedisRefusesInvalidDemandsWithoutSendingAnything(t *testing.T) {
	ctx := context.Background()
	admin := newClient(t, startRedis(t).Addr())
	client := newClient(t, admin.Options().Addr)
	hook := &countingHook{}
	client.AddHook(hook)
	s := limiter.NewRedis(client, limiter.RedisOptions{})
	before, err := commandCalls(ctx, admin)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range invalidDemands {
		t.Run(tc.why, func(t *testing.T) {
			if dec, err := s.Take(ctx, tc.demands); err == nil {
				t.Errorf("Take = %+v, want an error", dec)
			}
		})
	}
	if n := hook.sent.Load(); n != 0 {
		t.Errorf("the client sent %d commands for invalid demands, want none", n)
	}
	ran, err := commandsSince(ctx, admin, before)
	if err != nil {
		t.Fatal(err)
	}
	if len(ran) != 0 {
		t.Errorf("Redis ran %v for invalid demands, want nothing", ran)
	}
}

func TestRedisReportsAnUnreachableServerAsAnError(t *testing.T) {
	srv := startRedis(t)
	client := redis.NewClient(&redis.Options{Addr: srv.Addr(), DialTimeout: time.Second, MaxRetries: -1})
	t.Cleanup(func() { _ = client.Close() })
	s := limiter.NewRedis(client, limiter.RedisOptions{HealthWindow: time.Millisecond, ProbeInterval: 10 * time.Millisecond})
	t.Cleanup(func() { _ = s.Close() })
	l := limiter.Limit{MaxTokens: 3, RefillPeriod: time.Hour}
	wantAllowed(t, take(t, s, demand(alice, l, 1)), true)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := s.Take(ctx, []limiter.Demand{demand(alice, l, 1)}); !errors.Is(err, context.Canceled) {
		t.Errorf("with a canceled context, Take's error = %v, want context.Canceled", err)
	}

	if err := srv.Stop(); err != nil {
		t.Fatal(err)
	}
	if dec, err := s.Take(context.Background(), []limiter.Demand{demand(alice, l, 1)}); err == nil {
		t.Errorf("with Redis down, Take = %+v, want an error", dec)
	}
	// The probe finds Redis down: the store says so at once.
	for deadline := time.Now().Add(30 * time.Second); s.Available(); {
		if time.Now().After(deadline) {
			t.Fatal("the store was still available 30s after Redis stopped")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if _, err := s.Take(context.Background(), []limiter.Demand{demand(alice, l, 1)}); !errors.Is(err, limiter.ErrUnavailable) {
		t.Errorf("with the store unavailable, Take's error = %v, want ErrUnavailable", err)
	}

	if err := srv.Restart(); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(30 * time.Second); !s.Available(); {
		if time.Now().After(deadline) {
			t.Fatal("the store was still unavailable 30s after Redis restarted")
		}
		time.Sleep(10 * time.Millisecond)
	}
	// The restarted server is empty, and the client may first find its old
	// connections closed: decisions resume within a few attempts.
	var err error
	for range 5 {
		var dec limiter.Decision
		if dec, err = s.Take(context.Background(), []limiter.Demand{demand(alice, l, 1)}); err == nil {
			wantAllowed(t, dec, true)
			wantRemaining(t, dec.Buckets[0], 2)
			break
		}
	}
	if err != nil {
		t.Errorf("after Redis restarted, Take failed: %v", err)
	}
}

func TestNewRedisRefusesBracesInThePrefix(t *testing.T) {
	client := newClient(t, sharedRedis.Addr())
	for _, prefix := range []string{"a{b", "a}b", "{tag}"} {
		t.Run(prefix, func(t *testing.T) {
			defer func() {
				if recover() == nil {
					t.Errorf("NewRedis with prefix %q did not panic", prefix)
				}
			}()
			limiter.NewRedis(client, limiter.RedisOptions{Prefix: prefix})
		})
	}
}
