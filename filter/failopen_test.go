package filter_test

import (
	"context"
	"log/slog"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/toolgate/toolgate/filter"
	"github.com/toolgate/toolgate/filter/limiter"
	"github.com/toolgate/toolgate/internal/testredis"
)

var failOpenLabels = map[string]string{"namespace": "team-a", "server": "github"}

// startRedis starts a real redis-server and a Redis store on it, built as
// the toolgate command builds them, with a short health window so that an
// outage is recognized quickly.
func startRedis(t *testing.T, logger *slog.Logger) (*testredis.Server, *limiter.Redis) {
	t.Helper()
	srv, err := testredis.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Close() })
	client, err := limiter.NewRedisClient(limiter.RedisConfig{URL: srv.URL(), Timeout: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = client.Close() })
	store := limiter.NewRedis(client, limiter.RedisOptions{
		Timeout:       100 * time.Millisecond,
		HealthWindow:  50 * time.Millisecond,
		ProbeInterval: 20 * time.Millisecond,
		Logger:        logger,
	})
	t.Cleanup(func() { _ = store.Close() })
	return srv, store
}

func withStore(s limiter.Store) harnessOption {
	return func(o *filter.SharedOptions) { o.Store = s }
}

// postUntilDecided posts calls until one is not refused for lack of time
// (503): while an outage is being recognized, decisions the store cannot
// make are refused, and take no token anywhere.
func postUntilDecided(t *testing.T, h *harness, id int) int {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		w := h.post("", call(id, "t"))
		if w.Code != http.StatusServiceUnavailable {
			return w.Code
		}
		if time.Now().After(deadline) {
			t.Fatalf("calls were still refused with 503 after 30s: %s", w.Body)
		}
	}
}

func TestRedisUnavailableFromTheStartTheReplicaLimitsOnItsOwn(t *testing.T) {
	srv, store := startRedis(t, nil)
	h := newHarness(t, filter.Policy{Server: testServer, Global: limit(1, time.Hour)}, withStore(store))
	if err := srv.Stop(); err != nil {
		t.Fatal(err)
	}
	// The store never succeeded: its first failure makes it suspect, and
	// the probe that follows finds it unavailable.
	if code := postUntilDecided(t, h, 0); code != http.StatusOK {
		t.Fatalf("the first call decided with Redis down: status %d, want 200", code)
	}
	for i, want := range []int{http.StatusTooManyRequests, http.StatusTooManyRequests} {
		if w := h.post("", call(i+1, "t")); w.Code != want {
			t.Fatalf("call %d with Redis down: status %d, want %d: %s", i+2, w.Code, want, w.Body)
		}
	}
	if got := metricValue(t, h.reg, filter.MetricFailOpen, failOpenLabels); got != 3 {
		t.Errorf("%s = %v, want 3 decisions made locally", filter.MetricFailOpen, got)
	}
	if got := metricValue(t, h.reg, filter.MetricStoreAvailable, nil); got != 0 {
		t.Errorf("%s = %v while Redis is down, want 0", filter.MetricStoreAvailable, got)
	}
	if got := h.backend.hits.Load(); got != 1 {
		t.Errorf("the backend saw %d calls, want 1", got)
	}
}

func TestRedisKilledMidRunLimitsPerReplicaThenSharedAgain(t *testing.T) {
	logs := &logRecords{}
	srv, store := startRedis(t, slog.New(logs))
	h := newHarness(t, filter.Policy{Server: testServer, Global: limit(2, time.Hour)}, withStore(store))

	if w := h.post("", call(1, "t")); w.Code != http.StatusOK || w.Header().Get("RateLimit") == "" {
		t.Fatalf("before the kill: status %d, RateLimit %q; want 200 decided by Redis", w.Code, w.Header().Get("RateLimit"))
	}
	if got := metricValue(t, h.reg, filter.MetricStoreAvailable, nil); got != 1 {
		t.Errorf("%s = %v with Redis up, want 1", filter.MetricStoreAvailable, got)
	}

	if err := srv.Stop(); err != nil {
		t.Fatal(err)
	}
	// The replica's own buckets start full: two more calls, then 429.
	if code := postUntilDecided(t, h, 2); code != http.StatusOK {
		t.Fatalf("first call decided locally: status %d, want 200", code)
	}
	for i, want := range []int{http.StatusOK, http.StatusTooManyRequests, http.StatusTooManyRequests} {
		if w := h.post("", call(3+i, "t")); w.Code != want {
			t.Fatalf("call %d with Redis killed: status %d, want %d: %s", 3+i, w.Code, want, w.Body)
		}
	}
	if got := metricValue(t, h.reg, filter.MetricFailOpen, failOpenLabels); got != 4 {
		t.Errorf("%s = %v during the outage, want 4", filter.MetricFailOpen, got)
	}

	if err := srv.Restart(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for !store.Available() {
		if time.Now().After(deadline) {
			t.Fatal("the store did not become available again within 30s of the restart")
		}
		time.Sleep(10 * time.Millisecond)
	}
	// The restarted Redis kept nothing: the shared bucket is full again,
	// and it limits with no restart of the filter.
	for i, want := range []int{http.StatusOK, http.StatusOK, http.StatusTooManyRequests} {
		if w := h.post("", call(10+i, "t")); w.Code != want {
			t.Fatalf("call %d after the restart: status %d, want %d", i+1, w.Code, want)
		}
	}
	if got := metricValue(t, h.reg, filter.MetricFailOpen, failOpenLabels); got != 4 {
		t.Errorf("%s = %v after the restart, want still 4", filter.MetricFailOpen, got)
	}
	warnings := logs.messages(slog.LevelWarn)
	if len(warnings) != 1 || !strings.Contains(warnings[0], "unavailable") {
		t.Errorf("warnings = %q, want one saying the store is unavailable", warnings)
	}
	if got := logs.messages(slog.LevelInfo); len(got) != 2 || !strings.Contains(got[1], "available again") {
		t.Errorf("log = %q, want the warning, then one line saying the store is available again", got)
	}
}

func TestRedisPausedEveryCallIsAnsweredSoonAndLimitsHoldPerReplica(t *testing.T) {
	srv, store := startRedis(t, nil)
	h := newHarness(t, filter.Policy{Server: testServer, Global: limit(2, time.Hour)}, withStore(store))
	if w := h.post("", call(0, "t")); w.Code != http.StatusOK {
		t.Fatalf("before the pause: status %d", w.Code)
	}
	if err := srv.Pause(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = srv.Resume() }()

	// Calls get 503 until a probe has found Redis unavailable, then the
	// replica's own buckets decide: 2 pass, the others get 429.
	var latencies []time.Duration
	codes := map[int]int{}
	deadline := time.Now().Add(30 * time.Second)
	for i := 1; codes[http.StatusTooManyRequests] < 3; i++ {
		if time.Now().After(deadline) {
			t.Fatalf("the local buckets did not decide within 30s of the pause: statuses %v", codes)
		}
		start := time.Now()
		w := h.post("", call(i, "t"))
		latencies = append(latencies, time.Since(start))
		codes[w.Code]++
	}
	slices.Sort(latencies)
	t.Logf("with Redis paused: %d calls, median %s, slowest %s; statuses %v", len(latencies), latencies[len(latencies)/2], latencies[len(latencies)-1], codes)
	// A generous bound: a paused Redis used to hold every call for 5s.
	if slowest := latencies[len(latencies)-1]; slowest > time.Second {
		t.Errorf("the slowest call took %s with Redis paused, want well under 1s", slowest)
	}
	if codes[http.StatusOK] != 2 || codes[http.StatusOK]+codes[http.StatusTooManyRequests]+codes[http.StatusServiceUnavailable] != len(latencies) {
		t.Errorf("statuses %v, want exactly 2 allowed and the rest 429 or 503", codes)
	}
}

// stalledStore never answers: it waits for the context to end, as a store
// behind a dead network would, and never reports itself unavailable.
type stalledStore struct{}

func (stalledStore) Take(ctx context.Context, _ []limiter.Demand) (limiter.Decision, error) {
	<-ctx.Done()
	return limiter.Decision{}, ctx.Err()
}

func TestADecisionNotMadeInTimeIsRefusedNotAllowed(t *testing.T) {
	h := newHarness(t, filter.Policy{Server: testServer, Global: limit(1, time.Hour)}, withStore(stalledStore{}),
		func(o *filter.SharedOptions) { o.StoreTimeout = 10 * time.Millisecond })
	for i := 1; i <= 2; i++ {
		w := h.post("", call(i, "t"))
		if w.Code != http.StatusServiceUnavailable || w.Header().Get("Retry-After") != "1" {
			t.Fatalf("call %d: status %d, Retry-After %q; want 503 and 1", i, w.Code, w.Header().Get("Retry-After"))
		}
		if !strings.Contains(w.Body.String(), `"id":`+strconv.Itoa(i)) {
			t.Errorf("call %d: body %s does not answer the request's id", i, w.Body)
		}
	}
	if got := h.backend.hits.Load(); got != 0 {
		t.Errorf("the backend saw %d calls, want none", got)
	}
	if got := metricValue(t, h.reg, filter.MetricFailOpen, failOpenLabels); got != 0 {
		t.Errorf("%s = %v, want 0: the store was never unavailable", filter.MetricFailOpen, got)
	}
	if got := metricValue(t, h.reg, filter.MetricStoreDuration, map[string]string{"outcome": "timeout"}); got != 2 {
		t.Errorf("%s{outcome=timeout} has %v samples, want 2", filter.MetricStoreDuration, got)
	}
	if got := metricValue(t, h.reg, filter.MetricRejectedRequests, map[string]string{"reason": "overloaded"}); got != 2 {
		t.Errorf("%s{reason=overloaded} = %v, want 2", filter.MetricRejectedRequests, got)
	}
}
