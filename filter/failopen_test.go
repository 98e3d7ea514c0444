package filter_test

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/toolgate/toolgate/filter"
	"github.com/toolgate/toolgate/filter/limiter"
	"github.com/toolgate/toolgate/internal/testredis"
)

var failOpenLabels = map[string]string{"namespace": "team-a", "server": "github"}

// startRedis starts a real redis-server and a Redis store on it.
func startRedis(t *testing.T) (*testredis.Server, *limiter.Redis) {
	t.Helper()
	srv, err := testredis.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Close() })
	client := redis.NewClient(&redis.Options{Addr: srv.Addr(), DialTimeout: time.Second, MaxRetries: -1})
	t.Cleanup(func() { _ = client.Close() })
	return srv, limiter.NewRedis(client, limiter.RedisOptions{})
}

func withStore(s limiter.Store) harnessOption {
	return func(o *filter.SharedOptions) { o.Store = s }
}

func TestRedisUnavailableTheRequestPassesAndTheCounterIncreases(t *testing.T) {
	srv, store := startRedis(t)
	h := newHarness(t, filter.Policy{Server: testServer, Global: limit(1, time.Hour)}, withStore(store))
	if err := srv.Stop(); err != nil {
		t.Fatal(err)
	}
	// With Redis up, the second call would be refused.
	for i := 1; i <= 3; i++ {
		w := h.post("", call(i, "t"))
		if w.Code != http.StatusOK {
			t.Fatalf("call %d with Redis down: status %d, want 200: %s", i, w.Code, w.Body)
		}
		if got := w.Header().Get("RateLimit"); got != "" {
			t.Errorf("call %d: RateLimit = %q though nothing was decided", i, got)
		}
		if got := metricValue(t, h.reg, filter.MetricFailOpen, failOpenLabels); got != float64(i) {
			t.Errorf("after call %d: %s = %v, want %d", i, filter.MetricFailOpen, got, i)
		}
	}
	if got := h.backend.hits.Load(); got != 3 {
		t.Errorf("the backend saw %d calls, want 3", got)
	}
	if got := metricValue(t, h.reg, filter.MetricDecisions, map[string]string{"scope": "global", "result": "fail_open"}); got != 3 {
		t.Errorf("%s{result=fail_open} = %v, want 3", filter.MetricDecisions, got)
	}
}

func TestRedisKilledMidRunFailsOpenThenLimitsAgain(t *testing.T) {
	srv, store := startRedis(t)
	logs := &logRecords{}
	h := newHarness(t, filter.Policy{Server: testServer, Global: limit(2, time.Hour)}, withStore(store),
		func(o *filter.SharedOptions) { o.Logger = slog.New(logs) })

	if w := h.post("", call(1, "t")); w.Code != http.StatusOK || w.Header().Get("RateLimit") == "" {
		t.Fatalf("before the kill: status %d, RateLimit %q; want 200 decided by Redis", w.Code, w.Header().Get("RateLimit"))
	}

	if err := srv.Stop(); err != nil {
		t.Fatal(err)
	}
	for i := 2; i <= 5; i++ {
		if w := h.post("", call(i, "t")); w.Code != http.StatusOK {
			t.Fatalf("call %d with Redis killed: status %d, want 200", i, w.Code)
		}
	}
	if got := metricValue(t, h.reg, filter.MetricFailOpen, failOpenLabels); got != 4 {
		t.Errorf("%s = %v during the outage, want 4", filter.MetricFailOpen, got)
	}

	if err := srv.Restart(); err != nil {
		t.Fatal(err)
	}
	waitForStore(t, store)
	// The restarted Redis kept nothing: the bucket is full again, and it
	// limits with no restart of the filter.
	for i, want := range []int{http.StatusOK, http.StatusOK, http.StatusTooManyRequests} {
		if w := h.post("", call(10+i, "t")); w.Code != want {
			t.Fatalf("call %d after the restart: status %d, want %d", i+1, w.Code, want)
		}
	}
	if got := metricValue(t, h.reg, filter.MetricFailOpen, failOpenLabels); got != 4 {
		t.Errorf("%s = %v after the restart, want still 4", filter.MetricFailOpen, got)
	}
	if got := logs.messages(slog.LevelWarn); len(got) != 1 {
		t.Errorf("warnings = %q, want one for the outage", got)
	}
	if got := logs.messages(slog.LevelInfo); len(got) != 2 || !strings.Contains(got[1], "recovered") {
		t.Errorf("log = %q, want a warning and a recovery", got)
	}
}

// waitForStore waits until the store decides again: a client may need a
// few tries to drop the connections Redis closed.
func waitForStore(t *testing.T, store limiter.Store) {
	t.Helper()
	probe := []limiter.Demand{{Bucket: limiter.BucketID{Server: "probe/probe"}, Limit: limiter.Limit{MaxTokens: 1 << 30, RefillPeriod: time.Second}, Tokens: 1}}
	deadline := time.Now().Add(30 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_, err := store.Take(ctx, probe)
		cancel()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the store did not come back: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// stalledStore never answers: it waits for the context to end, as a store
// behind a dead network would.
type stalledStore struct{}

func (stalledStore) Take(ctx context.Context, _ []limiter.Demand) (limiter.Decision, error) {
	<-ctx.Done()
	return limiter.Decision{}, ctx.Err()
}

func TestAStoreThatDoesNotAnswerInTimeFailsOpen(t *testing.T) {
	h := newHarness(t, filter.Policy{Server: testServer, Global: limit(1, time.Hour)}, withStore(stalledStore{}),
		func(o *filter.SharedOptions) { o.StoreTimeout = 10 * time.Millisecond })
	for i := 1; i <= 2; i++ {
		if w := h.post("", call(i, "t")); w.Code != http.StatusOK {
			t.Fatalf("call %d: status %d, want 200", i, w.Code)
		}
	}
	if got := metricValue(t, h.reg, filter.MetricFailOpen, failOpenLabels); got != 2 {
		t.Errorf("%s = %v, want 2", filter.MetricFailOpen, got)
	}
	if got := metricValue(t, h.reg, filter.MetricStoreDuration, map[string]string{"outcome": "timeout"}); got != 2 {
		t.Errorf("%s{outcome=timeout} has %v samples, want 2", filter.MetricStoreDuration, got)
	}
}

// brokenStore fails while broken is set and is the real store otherwise.
type brokenStore struct {
	limiter.Store
	broken atomic.Bool
}

func (s *brokenStore) Take(ctx context.Context, demands []limiter.Demand) (limiter.Decision, error) {
	if s.broken.Load() {
		return limiter.Decision{}, errors.New("connection refused")
	}
	return s.Store.Take(ctx, demands)
}

func TestFailOpenIsLoggedPerStateChangeNotPerRequest(t *testing.T) {
	logs := &logRecords{}
	store := &brokenStore{Store: limiter.NewMemory(limiter.MemoryOptions{})}
	h := newHarness(t, filter.Policy{Server: testServer, Global: limit(1000, time.Hour)}, withStore(store),
		func(o *filter.SharedOptions) { o.Logger = slog.New(logs) })

	store.broken.Store(true)
	for i := range 20 {
		h.post("", call(i, "t"))
	}
	if got := logs.messages(slog.LevelInfo); len(got) != 1 || !strings.Contains(got[0], "failing") {
		t.Fatalf("after 20 failures: log = %q, want one line saying the store fails", got)
	}
	store.broken.Store(false)
	for i := range 20 {
		h.post("", call(i, "t"))
	}
	if got := logs.messages(slog.LevelInfo); len(got) != 2 || !strings.Contains(got[1], "recovered") {
		t.Fatalf("after the recovery: log = %q, want a second line saying it recovered", got)
	}
	// Flapping within the log interval writes nothing more.
	for range 5 {
		store.broken.Store(true)
		h.post("", call(1, "t"))
		store.broken.Store(false)
		h.post("", call(2, "t"))
	}
	if got := logs.messages(slog.LevelInfo); len(got) != 2 {
		t.Errorf("after flapping: log = %q, want still 2 lines", got)
	}
	if got := metricValue(t, h.reg, filter.MetricFailOpen, failOpenLabels); got != 25 {
		t.Errorf("%s = %v, want 25", filter.MetricFailOpen, got)
	}
}
