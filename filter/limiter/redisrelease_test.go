package limiter_test

import (
	"context"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/toolgate/toolgate/filter/limiter"
)

// capOf is one slot, named slot, of user's in-flight cap of size slots,
// leased for a minute.
func capOf(user, slot string, size int64) limiter.Demand {
	return limiter.Demand{
		Bucket: limiter.BucketID{Server: server, User: user},
		Limit:  limiter.Limit{MaxTokens: size, RefillPeriod: time.Minute},
		Tokens: 1,
		Slot:   slot,
	}
}

// scriptTrips counts the round trips of a client that run a script: a
// single EVAL or EVALSHA, or a pipeline holding one. What a client sends on
// its own (the handshake of a new connection) is not counted.
type scriptTrips struct{ n atomic.Uint64 }

func isScript(cmd redis.Cmder) bool {
	switch cmd.Name() {
	case "eval", "evalsha":
		return true
	}
	return false
}

func (h *scriptTrips) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h *scriptTrips) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if isScript(cmd) {
			h.n.Add(1)
		}
		return next(ctx, cmd)
	}
}

func (h *scriptTrips) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		for _, cmd := range cmds {
			if isScript(cmd) {
				h.n.Add(1)
				break
			}
		}
		return next(ctx, cmds)
	}
}

// releaseStore returns a store on the server at addr with a prefix of its
// own, closed with the test, and the counter of its client's round trips.
func releaseStore(t *testing.T, addr string, opts limiter.RedisOptions) (*limiter.Redis, *scriptTrips) {
	t.Helper()
	client := newClient(t, addr)
	trips := &scriptTrips{}
	client.AddHook(trips)
	opts.Prefix = newPrefix()
	s := limiter.NewRedis(client, opts)
	t.Cleanup(func() { _ = s.Close() })
	return s, trips
}

func takeSlot(t *testing.T, s limiter.Store, d limiter.Demand) bool {
	t.Helper()
	dec, err := s.Take(context.Background(), []limiter.Demand{d})
	if err != nil {
		t.Errorf("Take(%+v): %v", d, err)
		return false
	}
	return dec.Allowed
}

func release(t *testing.T, s limiter.Releaser, d limiter.Demand) {
	t.Helper()
	if err := s.Release(context.Background(), []limiter.Demand{d}); err != nil {
		t.Errorf("Release(%+v): %v", d, err)
	}
}

// waitAllFree polls the cap of d until every slot is free, as queued
// releases leave without a decision to carry them, and returns how many
// times it peeked.
func waitAllFree(t *testing.T, s limiter.Peeker, d limiter.Demand) (peeks uint64) {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(2 * time.Millisecond) {
		states, err := s.Peek(context.Background(), []limiter.Demand{d})
		if err != nil {
			t.Fatal(err)
		}
		peeks++
		if states[0].Remaining == d.Limit.MaxTokens {
			return peeks
		}
		if time.Now().After(deadline) {
			t.Fatalf("30s after the last release, %d slots of %d are free", states[0].Remaining, d.Limit.MaxTokens)
		}
	}
}

// waitReleasers waits until want goroutines send the releases no decision
// carried, and fails the test when that does not come within 30s. The
// count is awaited, not read once: a closed store's releaser has returned
// from Close's point of view (its WaitGroup is done) a moment before its
// goroutine is gone from the process's stacks.
func waitReleasers(t *testing.T, want int, what string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		got := releasers()
		if got == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %d goroutines send the stores' releases, want %d", what, got, want)
		}
		time.Sleep(time.Millisecond)
	}
}

// releasers counts the goroutines that send the releases no decision
// carried.
func releasers() int {
	buf := make([]byte, 1<<16)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			return strings.Count(string(buf[:n]), "limiter.(*Redis).releaser(")
		}
		buf = make([]byte, 2*len(buf))
	}
}

// raise makes most at least n.
func raise(most *atomic.Int64, n int64) {
	for m := most.Load(); n > m; m = most.Load() {
		if most.CompareAndSwap(m, n) {
			return
		}
	}
}

// warmUp loads the scripts into Redis, so that no NOSCRIPT doubles a round
// trip of the test.
func warmUp(t *testing.T, s *limiter.Redis) {
	t.Helper()
	d := capOf("warm-up", "w", 1)
	if !takeSlot(t, s, d) {
		t.Fatal("warm-up refused")
	}
	release(t, s, d)
	waitAllFree(t, s, d)
}

// A Take that starts after a Release returned gives the released slot
// back itself, so that it sees it free even when the release reaches
// Redis after it, or never: here the release is held back (it waits for
// the only pipeline), then lost.
func TestRedisTakeGivesBackWhatWasReleasedBeforeIt(t *testing.T) {
	s, _ := releaseStore(t, sharedRedis.Addr(), limiter.RedisOptions{Pipelines: 1, Timeout: time.Second})
	held := capOf("alice", "first", 1)
	if !takeSlot(t, s, held) {
		t.Fatal("the first take was refused")
	}
	giveBack := s.HoldPipeline() // the only one
	release(t, s, held)
	next := capOf("alice", "second", 1)
	allowed := make(chan bool, 1)
	go func() { allowed <- takeSlot(t, s, next) }()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if decisions, releases := s.Queued(); decisions == 1 && releases == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the take and the release did not queue")
		}
		time.Sleep(time.Millisecond)
	}
	if n := s.DropQueuedReleases(); n != 1 {
		t.Fatalf("dropped %d releases, want 1", n)
	}
	giveBack()
	if !<-allowed {
		t.Fatal("a take after the release was refused: it did not give the slot back itself")
	}
	release(t, s, next)
	waitAllFree(t, s, next)
}

// A Release does not wait for Redis, yet a Take that starts after it
// returned sees its slot free, whether the release left with that Take, in
// a pipeline before it or from the store's releaser.
func TestRedisTakeAfterReleaseSeesTheSlot(t *testing.T) {
	tests := []struct {
		name      string
		callers   int
		pipelines int
		// fresh starts a server of the test's own: it has run no release
		// when the first one rides behind a decision.
		fresh bool
	}{
		{"one caller", 1, 0, false},
		{"one caller, one pipeline", 1, 1, false},
		{"one caller, on a server that never ran a release", 1, 0, true},
		{"16 callers, each on a cap of its own", 16, 0, false},
		{"16 callers, each on a cap of its own, two pipelines", 16, 2, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			addr := sharedRedis.Addr()
			if tt.fresh {
				addr = startRedis(t).Addr()
			}
			s, _ := releaseStore(t, addr, limiter.RedisOptions{Pipelines: tt.pipelines, Timeout: time.Second})
			var wg sync.WaitGroup
			for caller := range tt.callers {
				wg.Go(func() {
					user := fmt.Sprintf("caller-%d", caller)
					for i := range 200 {
						d := capOf(user, fmt.Sprintf("slot-%d", i), 1)
						if !takeSlot(t, s, d) {
							t.Errorf("%s: take %d was refused: the release before it was not seen", user, i)
							return
						}
						release(t, s, d)
					}
				})
			}
			wg.Wait()
		})
	}
}

// Many callers take and give back slots of one cap: never more than the
// cap are held, every slot is free once the releases have left, and one
// goroutine of the store sends the releases no decision carried.
func TestRedisCapHoldsWhileReleasesRide(t *testing.T) {
	const size, callers, rounds = 3, 32, 40
	waitReleasers(t, 0, "before the test, with every earlier store closed")
	s, trips := releaseStore(t, sharedRedis.Addr(), limiter.RedisOptions{Timeout: time.Second})
	warmUp(t, s)
	start := s.RoundTrips()
	var held, most, taken, refused atomic.Int64
	var wg sync.WaitGroup
	for caller := range callers {
		wg.Go(func() {
			for i := range rounds {
				d := capOf("shared", fmt.Sprintf("caller-%d-%d", caller, i), size)
				if !takeSlot(t, s, d) {
					refused.Add(1)
					continue
				}
				taken.Add(1)
				raise(&most, held.Add(1))
				held.Add(-1)
				release(t, s, d)
			}
		})
	}
	wg.Wait()
	if most.Load() > size {
		t.Errorf("%d slots of a cap of %d were held at once", most.Load(), size)
	}
	if taken.Load() == 0 {
		t.Fatal("no take was allowed")
	}
	peeks := waitAllFree(t, s, capOf("shared", "peek", size))
	waitReleasers(t, 1, "while the store is open")
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	waitReleasers(t, 0, "after Close")
	if got := s.RoundTrips(); got != trips.n.Load() {
		t.Errorf("RoundTrips() = %d, the client sent %d", got, trips.n.Load())
	}
	// Every take and every release is at most one round trip of its own;
	// those that shared one are fewer.
	decisions, releases := uint64(refused.Load()+taken.Load()), uint64(taken.Load())
	if got := s.RoundTrips() - start - peeks; got > decisions+releases {
		t.Errorf("%d decisions and %d releases took %d round trips", decisions, releases, got)
	}
	t.Logf("%d decisions (%d allowed) and %d releases in %d round trips", decisions, taken.Load(), releases, s.RoundTrips()-start-peeks)
}

// RoundTrips counts what the store sent. Only the cases whose bound holds
// by construction are asserted: how many releases ride with decisions
// under concurrency depends on timing, and shows in BenchmarkTake's
// round-trips/op.
func TestRedisRoundTrips(t *testing.T) {
	tests := []struct {
		name string
		// run acts on the store and returns the most round trips it may
		// cost, and the least.
		run func(t *testing.T, s *limiter.Redis) (most, least uint64)
	}{
		{"a take and its release, one after the other, cost one or two", func(t *testing.T, s *limiter.Redis) (uint64, uint64) {
			const pairs = 50
			for i := range pairs {
				d := capOf("alice", fmt.Sprintf("slot-%d", i), 1)
				if !takeSlot(t, s, d) {
					t.Fatalf("take %d refused", i)
				}
				release(t, s, d)
			}
			return 2 * pairs, pairs
		}},
		{"releases queued behind a busy pipeline leave with the next decision, ahead of it", func(t *testing.T, s *limiter.Redis) (uint64, uint64) {
			held := []limiter.Demand{capOf("bob", "a", 3), capOf("bob", "b", 3), capOf("bob", "c", 3)}
			for _, d := range held {
				if !takeSlot(t, s, d) {
					t.Fatalf("%+v refused", d)
				}
			}
			giveBack := s.HoldPipeline() // the only one
			for _, d := range held {
				release(t, s, d)
			}
			allowed := make(chan bool)
			go func() { allowed <- takeSlot(t, s, capOf("bob", "d", 1)) }()
			for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(time.Millisecond) {
				if decisions, releases := s.Queued(); decisions == 1 && releases == len(held) {
					break
				}
				if time.Now().After(deadline) {
					t.Fatal("the take and the releases did not queue")
				}
			}
			giveBack()
			if !<-allowed {
				t.Error("the take was refused: the releases before it did not leave first")
			}
			// One round trip per take, and one for the rest.
			return 4, 4
		}},
		{"a peek costs one", func(t *testing.T, s *limiter.Redis) (uint64, uint64) {
			if _, err := s.Peek(context.Background(), []limiter.Demand{capOf("carol", "x", 1)}); err != nil {
				t.Fatal(err)
			}
			return 1, 1
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, trips := releaseStore(t, sharedRedis.Addr(), limiter.RedisOptions{Pipelines: 1, Timeout: time.Second})
			warmUp(t, s)
			start := s.RoundTrips()
			most, least := tt.run(t, s)
			// Close sends what is still queued: the count is final.
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			if got := s.RoundTrips(); got != trips.n.Load() {
				t.Errorf("RoundTrips() = %d, the client sent %d", got, trips.n.Load())
			}
			if got := s.RoundTrips() - start; got > most || got < least {
				t.Errorf("%d round trips, want between %d and %d", got, least, most)
			}
		})
	}
}

// Decisions carry the releases of their cap that Redis has not been seen
// to apply, so one release may reach Redis many times: it frees its slot
// once. Here two decisions wait behind a busy pipeline, each carrying the
// one release before them: one slot is free, and only one of them gets it.
func TestRedisReleaseCarriedTwiceFreesOneSlot(t *testing.T) {
	s, _ := releaseStore(t, sharedRedis.Addr(), limiter.RedisOptions{Pipelines: 1, Timeout: time.Second})
	held := []limiter.Demand{capOf("grace", "a", 2), capOf("grace", "b", 2)}
	for _, d := range held {
		if !takeSlot(t, s, d) {
			t.Fatalf("%+v refused", d)
		}
	}
	giveBack := s.HoldPipeline() // the only one
	release(t, s, held[0])
	allowed := make(chan bool, 2)
	for _, slot := range []string{"c", "d"} {
		go func() { allowed <- takeSlot(t, s, capOf("grace", slot, 2)) }()
	}
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(time.Millisecond) {
		if decisions, releases := s.Queued(); decisions == 2 && releases == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the takes did not queue")
		}
	}
	giveBack()
	if got := btoi(<-allowed) + btoi(<-allowed); got != 1 {
		t.Errorf("%d of two takes were allowed after one slot was given back, want 1", got)
	}
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

// A release while Redis is down is no error to its caller: it fails later,
// in a pipeline, and that failure counts in the store's health.
func TestRedisReleaseWhileRedisIsDown(t *testing.T) {
	srv := startRedis(t)
	client := redis.NewClient(&redis.Options{Addr: srv.Addr(), DialTimeout: 100 * time.Millisecond, MaxRetries: -1})
	t.Cleanup(func() { _ = client.Close() })
	const window = time.Millisecond
	s := limiter.NewRedis(client, limiter.RedisOptions{Timeout: 100 * time.Millisecond, HealthWindow: window, ProbeInterval: 10 * time.Millisecond})
	t.Cleanup(func() { _ = s.Close() })
	d := capOf("erin", "a", 1)
	if !takeSlot(t, s, d) {
		t.Fatal("take refused")
	}
	if err := srv.Stop(); err != nil {
		t.Fatal(err)
	}
	// A failure counts once the store has not succeeded for the window.
	time.Sleep(2 * window)
	start := s.RoundTrips()
	if err := s.Release(context.Background(), []limiter.Demand{d}); err != nil {
		t.Errorf("with Redis down, Release = %v, want nil", err)
	}
	// Nothing but that release reaches Redis: the store finds it down only
	// if the release's failure counted.
	for deadline := time.Now().Add(30 * time.Second); s.Available(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the store was still available 30s after a release failed")
		}
	}
	if s.RoundTrips() == start {
		t.Error("the release was not counted as a round trip")
	}
	if err := s.Release(context.Background(), []limiter.Demand{d}); err != nil {
		t.Errorf("with the store unavailable, Release = %v, want nil (the lease frees the slot)", err)
	}
}

// Close sends the releases still queued, or gives up on them after the
// round trip's Timeout, and leaves no goroutine behind.
func TestRedisCloseWithReleasesQueued(t *testing.T) {
	tests := []struct {
		name     string
		answers  bool
		wantFree bool
	}{
		{"Redis answers: the releases are sent", true, true},
		{"Redis does not answer: they are given up after the timeout", false, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := startRedis(t)
			waitReleasers(t, 0, "before the test, with every earlier store closed")
			const timeout = 200 * time.Millisecond
			// Its reads end with the round trip's deadline, as every
			// toolgate mode's do.
			client, err := limiter.NewRedisClient(limiter.RedisConfig{URL: srv.URL(), Timeout: timeout})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = client.Close() })
			s := limiter.NewRedis(client, limiter.RedisOptions{Pipelines: 1, Timeout: timeout})
			held := []limiter.Demand{capOf("frank", "a", 3), capOf("frank", "b", 3), capOf("frank", "c", 3)}
			for _, d := range held {
				if !takeSlot(t, s, d) {
					t.Fatalf("%+v refused", d)
				}
			}
			giveBack := s.HoldPipeline()
			defer giveBack()
			for _, d := range held {
				release(t, s, d)
			}
			if _, releases := s.Queued(); releases != len(held) {
				t.Fatalf("%d releases queued, want %d", releases, len(held))
			}
			if !tt.answers {
				if err := srv.Pause(); err != nil {
					t.Fatal(err)
				}
				defer func() { _ = srv.Resume() }()
			}
			start := time.Now()
			closed := make(chan struct{})
			go func() {
				_ = s.Close()
				close(closed)
			}()
			// Promptly: within the one round trip it may send, with room
			// for a loaded machine.
			select {
			case <-closed:
			case <-time.After(30 * timeout):
				t.Fatalf("Close did not return within %s", 30*timeout)
			}
			t.Logf("Close returned in %s", time.Since(start))
			if decisions, releases := s.Queued(); decisions != 0 || releases != 0 {
				t.Errorf("after Close, %d decisions and %d releases are queued", decisions, releases)
			}
			waitReleasers(t, 0, "after Close")
			if tt.wantFree {
				waitAllFree(t, s, held[0]) // Peek works after Close: it is one script call
			}
		})
	}
}

// A slot never given back (its replica died) is freed with its
// generation: at least a lease after it was taken, and at most a lease and
// a half, as the slots a replica takes within half a lease share one
// generation, held until the last of their leases ends.
func TestRedisSlotsNeverGivenBackAreFreedWithinALeaseAndAHalf(t *testing.T) {
	c := newFakeClock()
	client := newClient(t, sharedRedis.Addr())
	died := limiter.NewRedisWithClock(client, limiter.RedisOptions{Prefix: newPrefix()}, c.Now)
	t.Cleanup(func() { _ = died.Close() })
	slot := func(name string) limiter.Demand {
		return limiter.Demand{Bucket: carol, Limit: limiter.Limit{MaxTokens: 2, RefillPeriod: time.Minute}, Tokens: 1, Slot: name}
	}
	start := c.Now()
	wantAllowed(t, take(t, died, slot("a")), true)
	c.Advance(29 * time.Second)
	wantAllowed(t, take(t, died, slot("b")), true) // a's generation: its lease now ends at 89s
	for _, step := range []struct {
		at   time.Duration
		free int64
	}{
		{59 * time.Second, 0},
		{60 * time.Second, 0}, // a's own lease has ended; its generation's has not
		{88 * time.Second, 0},
		{89 * time.Second, 2},
	} {
		c.Advance(start.Add(step.at).Sub(c.Now()))
		states, err := died.Peek(context.Background(), []limiter.Demand{slot("peek")})
		if err != nil {
			t.Fatal(err)
		}
		if states[0].Remaining != step.free {
			t.Errorf("%s after a was taken: %d slots free, want %d", step.at, states[0].Remaining, step.free)
		}
	}
}
