package limiter_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/toolgate/toolgate/filter/limiter"
)

// clock lets time pass for a store under test. Both stores decide by a
// clock the test moves (MemoryOptions.Now, NewRedisWithClock), so that the
// suite's arithmetic is exact on each.
type clock interface {
	// Advance lets d pass.
	Advance(d time.Duration)
	// Now reads it: quotas' windows are computed from it.
	Now() time.Time
}

// fakeClock is an injected clock that moves only when told to.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func newFakeClock() *fakeClock {
	return &fakeClock{now: time.Date(2026, 7, 28, 12, 0, 0, 0, time.UTC)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

var (
	server = "team-a/github"
	alice  = limiter.BucketID{Server: server, Tool: "search", User: "alice"}
	bob    = limiter.BucketID{Server: server, Tool: "search", User: "bob"}
	carol  = limiter.BucketID{Server: server, Tool: "search", User: "carol"}
)

func demand(b limiter.BucketID, l limiter.Limit, tokens int64) limiter.Demand {
	return limiter.Demand{Bucket: b, Limit: l, Tokens: tokens}
}

func take(t *testing.T, s limiter.Store, demands ...limiter.Demand) limiter.Decision {
	t.Helper()
	dec, err := s.Take(context.Background(), demands)
	if err != nil {
		t.Fatalf("Take(%+v): %v", demands, err)
	}
	if len(dec.Buckets) != len(demands) {
		t.Fatalf("Take(%+v) reported %d buckets, want %d", demands, len(dec.Buckets), len(demands))
	}
	return dec
}

// remaining reads a bucket's tokens without taking any: a demand above
// MaxTokens is always rejected and reports the bucket as it is.
func remaining(t *testing.T, s limiter.Store, b limiter.BucketID, l limiter.Limit) int64 {
	t.Helper()
	dec := take(t, s, demand(b, l, l.MaxTokens+1))
	if dec.Allowed {
		t.Fatalf("a demand above MaxTokens on %+v was allowed", b)
	}
	return dec.Buckets[0].Remaining
}

// near checks a duration measured from a decision: exactly want.
func near(t *testing.T, _ clock, what string, got, want time.Duration) {
	t.Helper()
	if got != want {
		t.Errorf("%s = %v, want %v", what, got, want)
	}
}

func wantAllowed(t *testing.T, dec limiter.Decision, want bool) {
	t.Helper()
	if dec.Allowed != want {
		t.Fatalf("Allowed = %v, want %v (decision %+v)", dec.Allowed, want, dec)
	}
	if want && dec.RetryAfter != 0 {
		t.Errorf("an allowed decision has RetryAfter %v, want 0", dec.RetryAfter)
	}
}

func wantRemaining(t *testing.T, st limiter.BucketState, want int64) {
	t.Helper()
	if st.Remaining != want {
		t.Errorf("Remaining = %d, want %d (state %+v)", st.Remaining, want, st)
	}
}

// validDemand is the valid demand the cases of invalidDemands come with.
var validDemand = demand(alice, limiter.Limit{MaxTokens: 3, RefillPeriod: time.Minute}, 1)

// invalidDemands are decisions a store must refuse. None takes validDemand.
var invalidDemands = []struct {
	why     string
	demands []limiter.Demand
}{
	{"no demands", nil},
	{"an empty list of demands", []limiter.Demand{}},
	{"MaxTokens 0", []limiter.Demand{validDemand, demand(bob, limiter.Limit{MaxTokens: 0, RefillPeriod: time.Minute}, 1)}},
	{"MaxTokens -1", []limiter.Demand{validDemand, demand(bob, limiter.Limit{MaxTokens: -1, RefillPeriod: time.Minute}, 1)}},
	{"RefillPeriod 0", []limiter.Demand{validDemand, demand(bob, limiter.Limit{MaxTokens: 3}, 1)}},
	{"RefillPeriod -1s", []limiter.Demand{validDemand, demand(bob, limiter.Limit{MaxTokens: 3, RefillPeriod: -time.Second}, 1)}},
	{"Tokens 0", []limiter.Demand{validDemand, demand(bob, validDemand.Limit, 0)}},
	{"Tokens -1", []limiter.Demand{validDemand, demand(bob, validDemand.Limit, -1)}},
	{"a quota's window that ends when it starts", []limiter.Demand{validDemand, {Bucket: bob, Limit: limiter.Limit{MaxTokens: 3}, Tokens: 1, Window: limiter.Window{Start: time.Unix(100, 0), End: time.Unix(100, 0)}}}},
	{"a quota of 0", []limiter.Demand{validDemand, {Bucket: bob, Limit: limiter.Limit{MaxTokens: 0}, Tokens: 1, Window: limiter.Window{Start: time.Unix(100, 0), End: time.Unix(200, 0)}}}},
	{"a cap with no lease", []limiter.Demand{validDemand, {Bucket: bob, Limit: limiter.Limit{MaxTokens: 3}, Tokens: 1, Slot: "s"}}},
	{"two demands on one cap", []limiter.Demand{{Bucket: bob, Limit: validDemand.Limit, Tokens: 1, Slot: "s"}, {Bucket: bob, Limit: validDemand.Limit, Tokens: 1, Slot: "s"}}},
	{"two slot names in one decision", []limiter.Demand{{Bucket: bob, Limit: validDemand.Limit, Tokens: 1, Slot: "s"}, {Bucket: carol, Limit: validDemand.Limit, Tokens: 1, Slot: "t"}}},
	{"one bucket both shadow and enforced", []limiter.Demand{validDemand, {Bucket: validDemand.Bucket, Limit: limiter.Limit{MaxTokens: 3, RefillPeriod: time.Minute, Shadow: true}, Tokens: 1}}},
	{"two servers in one decision", []limiter.Demand{validDemand, demand(limiter.BucketID{Server: "team-b/github", User: "alice"}, validDemand.Limit, 1)}},
}

// runStoreSuite checks the semantics every Store shares. newStore returns an
// empty store and its clock.
func runStoreSuite(t *testing.T, newStore func(t *testing.T) (limiter.Store, clock)) {
	perMinute := func(n int64) limiter.Limit { return limiter.Limit{MaxTokens: n, RefillPeriod: time.Minute} }
	tests := []struct {
		name string
		run  func(t *testing.T, s limiter.Store, c clock)
	}{
		{"a fresh bucket allows exactly MaxTokens then rejects for one token's time", func(t *testing.T, s limiter.Store, c clock) {
			l := perMinute(3)
			for i := range int64(3) {
				dec := take(t, s, demand(alice, l, 1))
				wantAllowed(t, dec, true)
				wantRemaining(t, dec.Buckets[0], 2-i)
				near(t, c, "ResetAfter", dec.Buckets[0].ResetAfter, time.Duration(i+1)*20*time.Second)
			}
			dec := take(t, s, demand(alice, l, 1))
			wantAllowed(t, dec, false)
			st := dec.Buckets[0]
			if st.Allowed {
				t.Errorf("the empty bucket's state says Allowed")
			}
			wantRemaining(t, st, 0)
			near(t, c, "RetryAfter", dec.RetryAfter, 20*time.Second)
			near(t, c, "bucket RetryAfter", st.RetryAfter, 20*time.Second)
			near(t, c, "ResetAfter", st.ResetAfter, time.Minute)
		}},
		{"a token worth a fraction of a microsecond is waited for to the next microsecond", func(t *testing.T, s limiter.Store, c clock) {
			l := limiter.Limit{MaxTokens: 3, RefillPeriod: time.Second}
			wantAllowed(t, take(t, s, demand(alice, l, 3)), true)
			dec := take(t, s, demand(alice, l, 1))
			wantAllowed(t, dec, false)
			near(t, c, "RetryAfter", dec.RetryAfter, 333334*time.Microsecond)
		}},
		{"a rejected decision takes nothing from any bucket", func(t *testing.T, s limiter.Store, c clock) {
			roomy, tight := perMinute(5), perMinute(1)
			server := limiter.BucketID{Server: server}
			wantAllowed(t, take(t, s, demand(alice, tight, 1)), true)

			dec := take(t, s, demand(server, roomy, 1), demand(alice, tight, 1))
			wantAllowed(t, dec, false)
			if !dec.Buckets[0].Allowed || dec.Buckets[0].RetryAfter != 0 {
				t.Errorf("the roomy bucket's state = %+v, want Allowed and no RetryAfter", dec.Buckets[0])
			}
			wantRemaining(t, dec.Buckets[0], 5)
			if dec.Buckets[0].ResetAfter != 0 {
				t.Errorf("the untouched roomy bucket has ResetAfter %v, want 0", dec.Buckets[0].ResetAfter)
			}
			if dec.Buckets[1].Allowed {
				t.Errorf("the empty bucket's state says Allowed")
			}
			near(t, c, "RetryAfter", dec.RetryAfter, time.Minute)

			dec = take(t, s, demand(server, roomy, 1))
			wantAllowed(t, dec, true)
			wantRemaining(t, dec.Buckets[0], 4)
		}},
		{"buckets with different ids never share tokens", func(t *testing.T, s limiter.Store, c clock) {
			pairs := []struct {
				why     string
				drained limiter.BucketID
				other   limiter.BucketID
			}{
				{"different users", limiter.BucketID{Server: "s1", Tool: "t", User: "alice"}, limiter.BucketID{Server: "s1", Tool: "t", User: "bob"}},
				{"different tools", limiter.BucketID{Server: "s2", Tool: "search", User: "u"}, limiter.BucketID{Server: "s2", Tool: "fetch", User: "u"}},
				{"different servers", limiter.BucketID{Server: "s3", Tool: "t", User: "u"}, limiter.BucketID{Server: "s3b", Tool: "t", User: "u"}},
				{"a user's bucket and the global one", limiter.BucketID{Server: "s4", Tool: "t", User: "u"}, limiter.BucketID{Server: "s4", Tool: "t"}},
				{"a tool's bucket and the server's", limiter.BucketID{Server: "s5", Tool: "t", User: "u"}, limiter.BucketID{Server: "s5", User: "u"}},
				{"separators inside names", limiter.BucketID{Server: "s6", Tool: "a:b", User: "c"}, limiter.BucketID{Server: "s6", Tool: "a", User: "b:c"}},
				{"a user named like an empty part", limiter.BucketID{Server: "s7", Tool: "t", User: "-"}, limiter.BucketID{Server: "s7", Tool: "t"}},
				{"an empty server name and a server named like it", limiter.BucketID{Tool: "t", User: "u"}, limiter.BucketID{Server: "-", Tool: "t", User: "u"}},
				{"braces in server names", limiter.BucketID{Server: "s8{a}", User: "u"}, limiter.BucketID{Server: "s8{b}", User: "u"}},
			}
			l := perMinute(2)
			for _, p := range pairs {
				wantAllowed(t, take(t, s, demand(p.drained, l, 2)), true)
				if got := remaining(t, s, p.drained, l); got != 0 {
					t.Fatalf("%s: the drained bucket holds %d tokens", p.why, got)
				}
				dec := take(t, s, demand(p.other, l, 1))
				if !dec.Allowed || dec.Buckets[0].Remaining != 1 {
					t.Errorf("%s: draining %+v left %+v with %+v, want it allowed with 1 token left", p.why, p.drained, p.other, dec)
				}
			}
		}},
		{"a demand of several tokens takes them all or none", func(t *testing.T, s limiter.Store, c clock) {
			l := perMinute(10)
			for _, left := range []int64{6, 2} {
				dec := take(t, s, demand(alice, l, 4))
				wantAllowed(t, dec, true)
				wantRemaining(t, dec.Buckets[0], left)
			}
			dec := take(t, s, demand(alice, l, 4))
			wantAllowed(t, dec, false)
			wantRemaining(t, dec.Buckets[0], 2)
			near(t, c, "RetryAfter for the 2 missing tokens", dec.RetryAfter, 12*time.Second)
			dec = take(t, s, demand(alice, l, 2))
			wantAllowed(t, dec, true)
			wantRemaining(t, dec.Buckets[0], 0)
		}},
		{"a demand above MaxTokens is rejected with RetryAfter of one RefillPeriod", func(t *testing.T, s limiter.Store, c clock) {
			l := perMinute(3)
			dec := take(t, s, demand(alice, l, 4))
			wantAllowed(t, dec, false)
			if dec.RetryAfter != time.Minute || dec.Buckets[0].RetryAfter != time.Minute {
				t.Errorf("RetryAfter = %v (bucket %v), want exactly %v", dec.RetryAfter, dec.Buckets[0].RetryAfter, time.Minute)
			}
			wantRemaining(t, dec.Buckets[0], 3)
			wantAllowed(t, take(t, s, demand(alice, l, 3)), true)
		}},
		{"a decision's RetryAfter is the longest of its rejecting buckets", func(t *testing.T, s limiter.Store, c clock) {
			slow, fast, roomy := perMinute(2), perMinute(4), perMinute(10)
			wantAllowed(t, take(t, s, demand(alice, slow, 2)), true)
			wantAllowed(t, take(t, s, demand(bob, fast, 4)), true)
			for _, order := range [][]limiter.Demand{
				{demand(alice, slow, 1), demand(bob, fast, 1), demand(carol, roomy, 1)},
				{demand(carol, roomy, 1), demand(bob, fast, 1), demand(alice, slow, 1)},
			} {
				dec := take(t, s, order...)
				wantAllowed(t, dec, false)
				near(t, c, "RetryAfter", dec.RetryAfter, 30*time.Second)
				for i, d := range order {
					st := dec.Buckets[i]
					switch d.Bucket {
					case alice:
						near(t, c, "slow bucket's RetryAfter", st.RetryAfter, 30*time.Second)
					case bob:
						near(t, c, "fast bucket's RetryAfter", st.RetryAfter, 15*time.Second)
					case carol:
						if !st.Allowed || st.RetryAfter != 0 {
							t.Errorf("the roomy bucket's state = %+v, want Allowed", st)
						}
					}
				}
			}
		}},
		{"demands on one bucket in one decision add up", func(t *testing.T, s limiter.Store, c clock) {
			l := perMinute(3)
			dec := take(t, s, demand(alice, l, 2), demand(alice, l, 2))
			wantAllowed(t, dec, false)
			if !dec.Buckets[0].Allowed || dec.Buckets[1].Allowed {
				t.Errorf("states = %+v, want the first demand to fit and the second not", dec.Buckets)
			}
			near(t, c, "RetryAfter for the missing token", dec.RetryAfter, 20*time.Second)
			wantRemaining(t, dec.Buckets[0], 3)
			wantRemaining(t, dec.Buckets[1], 3)

			dec = take(t, s, demand(alice, l, 1), demand(alice, l, 1))
			wantAllowed(t, dec, true)
			wantRemaining(t, dec.Buckets[0], 2)
			wantRemaining(t, dec.Buckets[1], 1)
			if got := remaining(t, s, alice, l); got != 1 {
				t.Errorf("the bucket holds %d tokens after the decision, want 1", got)
			}
		}},
		{"fractions of a token add up without drift", func(t *testing.T, s limiter.Store, c clock) {
			for _, l := range []limiter.Limit{
				{MaxTokens: 7, RefillPeriod: time.Second},
				{MaxTokens: 3, RefillPeriod: time.Hour + time.Microsecond},
				{MaxTokens: 1000, RefillPeriod: time.Second},
			} {
				b := limiter.BucketID{Server: server, User: fmt.Sprint(l)}
				demands := make([]limiter.Demand, l.MaxTokens)
				for i := range demands {
					demands[i] = demand(b, l, 1)
				}
				// One decision reads the clock once: its results are exact
				// on every clock.
				dec := take(t, s, demands...)
				if !dec.Allowed {
					t.Fatalf("%v: %d demands of one token on a fresh bucket were rejected; the last one reads %+v", l, len(demands), dec.Buckets[len(demands)-1])
				}
				period := l.RefillPeriod.Microseconds()
				for i, st := range dec.Buckets {
					taken := int64(i + 1)
					want := time.Duration((taken*period+l.MaxTokens-1)/l.MaxTokens) * time.Microsecond
					if st.ResetAfter != want || st.Remaining != l.MaxTokens-taken {
						t.Fatalf("%v: after %d tokens the bucket is %+v, want Remaining %d and ResetAfter %v", l, taken, st, l.MaxTokens-taken, want)
					}
				}
			}
		}},
		{"a drained bucket is full again after twice its refill period", func(t *testing.T, s limiter.Store, c clock) {
			l := limiter.Limit{MaxTokens: 3, RefillPeriod: time.Second}
			wantAllowed(t, take(t, s, demand(alice, l, 3)), true)
			wantAllowed(t, take(t, s, demand(alice, l, 3)), false)
			c.Advance(2 * l.RefillPeriod)
			dec := take(t, s, demand(alice, l, 3))
			wantAllowed(t, dec, true)
			wantRemaining(t, dec.Buckets[0], 0)
		}},
		{"a peek reports buckets as they are and changes none", func(t *testing.T, s limiter.Store, c clock) {
			p, ok := s.(limiter.Peeker)
			if !ok {
				t.Fatalf("%T does not implement Peeker", s)
			}
			l := limiter.Limit{MaxTokens: 5, RefillPeriod: 10 * time.Second}
			wantAllowed(t, take(t, s, demand(alice, l, 3)), true)
			c.Advance(2 * time.Second) // one token back
			for range 2 {
				states, err := p.Peek(context.Background(), []limiter.Demand{demand(alice, l, 3), demand(bob, l, 1)})
				if err != nil {
					t.Fatal(err)
				}
				if st := states[0]; st.Remaining != 3 || !st.Allowed || st.ResetAfter != 4*time.Second {
					t.Errorf("alice's bucket peeks as %+v, want 3 left, full in 4s", st)
				}
				if st := states[1]; st.Remaining != 5 || !st.Allowed || st.ResetAfter != 0 {
					t.Errorf("an unused bucket peeks as %+v, want full", st)
				}
			}
			states, err := p.Peek(context.Background(), []limiter.Demand{demand(alice, l, 4)})
			if err != nil || states[0].Allowed {
				t.Errorf("a peek for more than the bucket holds: %+v, %v; want not allowed", states, err)
			}
			wantAllowed(t, take(t, s, demand(alice, l, 3)), true) // nothing was taken by peeking
			wantAllowed(t, take(t, s, demand(alice, l, 1)), false)
			if _, err := p.Peek(context.Background(), nil); err == nil {
				t.Error("a peek of nothing was not refused")
			}
		}},
		{"a quota takes what it holds in its window, and a new window starts afresh", func(t *testing.T, s limiter.Store, c clock) {
			now := c.Now()
			day := limiter.Window{Start: now.Truncate(24 * time.Hour), End: now.Truncate(24 * time.Hour).Add(24 * time.Hour)}
			q := limiter.Demand{Bucket: alice, Limit: limiter.Limit{MaxTokens: 10}, Tokens: 4, Window: day}
			dec := take(t, s, q)
			wantAllowed(t, dec, true)
			wantRemaining(t, dec.Buckets[0], 6)
			if got, want := dec.Buckets[0].ResetAfter, day.End.Sub(now); got != want {
				t.Errorf("ResetAfter %s, want the window's end in %s", got, want)
			}
			wantAllowed(t, take(t, s, q), true) // 8 used
			dec = take(t, s, q)
			wantAllowed(t, dec, false)
			wantRemaining(t, dec.Buckets[0], 2)
			if got, want := dec.RetryAfter, day.End.Sub(now); got != want {
				t.Errorf("RetryAfter %s, want the window's end in %s", got, want)
			}
			// The same bucket id as a token bucket is another thing.
			wantAllowed(t, take(t, s, demand(alice, limiter.Limit{MaxTokens: 1, RefillPeriod: time.Hour}, 1)), true)
			c.Advance(day.End.Sub(now)) // midnight
			next := q
			next.Window = limiter.Window{Start: day.End, End: day.End.Add(24 * time.Hour)}
			dec = take(t, s, next)
			wantAllowed(t, dec, true)
			wantRemaining(t, dec.Buckets[0], 6)
		}},
		{"a quota and a bucket refuse together or not at all", func(t *testing.T, s limiter.Store, c clock) {
			now := c.Now()
			month := limiter.Window{Start: now.Add(-time.Hour), End: now.Add(30 * 24 * time.Hour)}
			l := limiter.Limit{MaxTokens: 5, RefillPeriod: time.Hour}
			quota := limiter.Demand{Bucket: bob, Limit: limiter.Limit{MaxTokens: 3}, Tokens: 2, Window: month}
			wantAllowed(t, take(t, s, quota, demand(bob, l, 2)), true) // quota 1 left, bucket 3
			dec := take(t, s, quota, demand(bob, l, 2))                // the quota refuses: the bucket keeps its 3
			wantAllowed(t, dec, false)
			if dec.Buckets[0].Allowed || !dec.Buckets[1].Allowed {
				t.Errorf("the quota should refuse and the bucket not: %+v", dec.Buckets)
			}
			if got := remaining(t, s, bob, l); got != 3 {
				t.Errorf("the bucket holds %d, want 3: a refused decision took from it", got)
			}
			small := quota
			small.Tokens = 1
			dec = take(t, s, small, demand(bob, l, 4)) // the bucket refuses: the quota keeps its 1
			wantAllowed(t, dec, false)
			wantAllowed(t, take(t, s, small), true)
			wantAllowed(t, take(t, s, small), false)
			if p, ok := s.(limiter.Peeker); ok {
				states, err := p.Peek(context.Background(), []limiter.Demand{small})
				if err != nil || states[0].Remaining != 0 || states[0].Allowed {
					t.Errorf("peek of the spent quota: %+v, %v", states, err)
				}
			}
		}},
		{"a cap holds at most its slots until they are released or their lease ends", func(t *testing.T, s limiter.Store, c clock) {
			r, ok := s.(limiter.Releaser)
			if !ok {
				t.Fatalf("%T does not implement Releaser", s)
			}
			lease := limiter.Limit{MaxTokens: 3, RefillPeriod: 30 * time.Second}
			slot := func(name string, n int64) limiter.Demand {
				return limiter.Demand{Bucket: carol, Limit: lease, Tokens: n, Slot: name}
			}
			dec := take(t, s, slot("a", 2))
			wantAllowed(t, dec, true)
			wantRemaining(t, dec.Buckets[0], 1)
			wantAllowed(t, take(t, s, slot("b", 1)), true)
			dec = take(t, s, slot("c", 1))
			wantAllowed(t, dec, false)
			if dec.RetryAfter != limiter.CapRetryAfter {
				t.Errorf("RetryAfter %s, want %s", dec.RetryAfter, limiter.CapRetryAfter)
			}
			if err := r.Release(context.Background(), []limiter.Demand{slot("a", 2)}); err != nil {
				t.Fatal(err)
			}
			if err := r.Release(context.Background(), []limiter.Demand{slot("a", 2)}); err != nil {
				t.Errorf("releasing twice: %v", err)
			}
			wantAllowed(t, take(t, s, slot("d", 2)), true) // b and d hold 3
			wantAllowed(t, take(t, s, slot("e", 1)), false)
			if p, ok := s.(limiter.Peeker); ok {
				states, err := p.Peek(context.Background(), []limiter.Demand{slot("x", 1)})
				if err != nil || states[0].Remaining != 0 || states[0].Allowed {
					t.Errorf("peek of the full cap: %+v, %v", states, err)
				}
			}
			c.Advance(30 * time.Second) // every lease has ended: a holder that died frees its slots
			dec = take(t, s, slot("f", 3))
			wantAllowed(t, dec, true)
			wantRemaining(t, dec.Buckets[0], 0)
		}},
		{"a cap and a bucket refuse together or not at all", func(t *testing.T, s limiter.Store, c clock) {
			lease := limiter.Limit{MaxTokens: 1, RefillPeriod: time.Minute}
			l := limiter.Limit{MaxTokens: 2, RefillPeriod: time.Hour}
			cap1 := limiter.Demand{Bucket: bob, Limit: lease, Tokens: 1, Slot: "one"}
			wantAllowed(t, take(t, s, cap1, demand(bob, l, 1)), true)
			cap2 := cap1
			cap2.Slot = "two"
			wantAllowed(t, take(t, s, cap2, demand(bob, l, 1)), false) // the cap refuses: the bucket keeps its token
			if got := remaining(t, s, bob, l); got != 1 {
				t.Errorf("the bucket holds %d, want 1", got)
			}
			if err := s.(limiter.Releaser).Release(context.Background(), []limiter.Demand{cap1}); err != nil {
				t.Fatal(err)
			}
			wantAllowed(t, take(t, s, cap2, demand(bob, l, 2)), false) // the bucket refuses: no slot is held
			wantAllowed(t, take(t, s, cap2), true)
		}},
		{"shadow limits refuse nothing, and take only from a call every limit allows", func(t *testing.T, s limiter.Store, c clock) {
			enforced := limiter.Limit{MaxTokens: 5, RefillPeriod: time.Hour}
			shadow := limiter.Limit{MaxTokens: 2, RefillPeriod: time.Hour, Shadow: true}
			both := []limiter.Demand{demand(bob, enforced, 1), demand(alice, shadow, 1)}
			for range 2 {
				dec := take(t, s, both...)
				if !dec.Allowed || dec.ShadowRefused {
					t.Fatalf("within both limits: %+v", dec)
				}
			}
			dec := take(t, s, both...) // the shadow bucket is empty
			if !dec.Allowed || !dec.ShadowRefused || dec.Buckets[1].Allowed || !dec.Buckets[0].Allowed {
				t.Fatalf("only the shadow bucket would refuse: %+v, want Allowed and ShadowRefused", dec)
			}
			wantRemaining(t, dec.Buckets[0], 2) // taken
			wantRemaining(t, dec.Buckets[1], 0) // as it is
			near(t, c, "RetryAfter", dec.RetryAfter, 30*time.Minute)
			dec = take(t, s, demand(bob, enforced, 3), demand(alice, shadow, 1)) // the enforced bucket refuses
			if dec.Allowed || dec.ShadowRefused {
				t.Fatalf("the enforced bucket refuses: %+v", dec)
			}
			near(t, c, "RetryAfter", dec.RetryAfter, 12*time.Minute)
			states, err := s.(limiter.Peeker).Peek(context.Background(), []limiter.Demand{demand(bob, enforced, 1), demand(alice, shadow, 1)})
			if err != nil || states[0].Remaining != 2 || states[1].Remaining != 0 {
				t.Errorf("after: %+v, %v; want 2 enforced tokens left and 0 shadow", states, err)
			}
			c.Advance(30 * time.Minute)
			if dec := take(t, s, both...); !dec.Allowed || dec.ShadowRefused {
				t.Errorf("the shadow bucket refilled a token: %+v", dec)
			}
		}},
		{"a shadow quota and a shadow cap take nothing from a call they would refuse", func(t *testing.T, s limiter.Store, c clock) {
			now := c.Now()
			day := limiter.Window{Start: now.Add(-time.Hour), End: now.Add(time.Hour)}
			quota := limiter.Demand{Bucket: bob, Limit: limiter.Limit{MaxTokens: 1, Shadow: true}, Tokens: 1, Window: day}
			slot := func(name string) limiter.Demand {
				return limiter.Demand{Bucket: carol, Limit: limiter.Limit{MaxTokens: 1, RefillPeriod: time.Minute, Shadow: true}, Tokens: 1, Slot: name}
			}
			l := limiter.Limit{MaxTokens: 10, RefillPeriod: time.Hour}
			if dec := take(t, s, demand(alice, l, 1), quota, slot("a")); !dec.Allowed || dec.ShadowRefused {
				t.Fatalf("first call: %+v", dec)
			}
			dec := take(t, s, demand(alice, l, 1), quota, slot("b"))
			if !dec.Allowed || !dec.ShadowRefused || dec.Buckets[1].Allowed || dec.Buckets[2].Allowed {
				t.Fatalf("second call: %+v, want both shadow limits refusing, and the call allowed", dec)
			}
			wantRemaining(t, dec.Buckets[0], 8)
			states, err := s.(limiter.Peeker).Peek(context.Background(), []limiter.Demand{quota, slot("x")})
			if err != nil || states[0].Remaining != 0 || states[1].Remaining != 0 {
				t.Errorf("peek: %+v, %v; want the quota spent by the first call only, and its slot held", states, err)
			}
			if err := s.(limiter.Releaser).Release(context.Background(), []limiter.Demand{slot("a")}); err != nil {
				t.Fatal(err)
			}
			// b was never held: its release must not free anyone's slot.
			if err := s.(limiter.Releaser).Release(context.Background(), []limiter.Demand{slot("b")}); err != nil {
				t.Fatal(err)
			}
			if dec := take(t, s, slot("c")); !dec.Allowed || dec.ShadowRefused {
				t.Errorf("after a's release: %+v", dec)
			}
			if dec := take(t, s, slot("d")); !dec.Allowed || !dec.ShadowRefused {
				t.Errorf("c holds the slot: %+v, want a shadow refusal", dec)
			}
		}},
		{"invalid demands are refused and take nothing", func(t *testing.T, s limiter.Store, c clock) {
			for _, tc := range invalidDemands {
				if dec, err := s.Take(context.Background(), tc.demands); err == nil {
					t.Errorf("%s: Take = %+v, want an error", tc.why, dec)
				}
			}
			l := validDemand.Limit
			if got := remaining(t, s, alice, l); got != 3 {
				t.Errorf("refused decisions left %d tokens of 3", got)
			}
		}},
		{"64 goroutines taking from one bucket are allowed exactly MaxTokens in total", func(t *testing.T, s limiter.Store, c clock) {
			l := limiter.Limit{MaxTokens: 50, RefillPeriod: 24 * time.Hour}
			var allowed atomic.Int64
			var wg sync.WaitGroup
			for range 64 {
				wg.Go(func() {
					for range 4 {
						dec, err := s.Take(context.Background(), []limiter.Demand{demand(alice, l, 1)})
						if err != nil {
							t.Error(err)
							return
						}
						if dec.Allowed {
							allowed.Add(1)
						}
					}
				})
			}
			wg.Wait()
			if got := allowed.Load(); got != l.MaxTokens {
				t.Errorf("%d decisions were allowed, want %d", got, l.MaxTokens)
			}
			if got := remaining(t, s, alice, l); got != 0 {
				t.Errorf("the bucket holds %d tokens, want 0", got)
			}
		}},
		{"concurrent decisions over shared buckets stay all or nothing", func(t *testing.T, s limiter.Store, c clock) {
			l := limiter.Limit{MaxTokens: 40, RefillPeriod: 24 * time.Hour}
			ids := []limiter.BucketID{alice, bob, carol}
			var allowed [3][3]atomic.Int64 // by pair of buckets
			var wg sync.WaitGroup
			for g := range 64 {
				wg.Go(func() {
					i, j := g%3, (g+1)%3
					if g%2 == 1 {
						i, j = j, i // the same pairs, locked in the other order
					}
					for range 6 {
						dec, err := s.Take(context.Background(), []limiter.Demand{demand(ids[i], l, 1), demand(ids[j], l, 1)})
						if err != nil {
							t.Error(err)
							return
						}
						if dec.Allowed {
							allowed[min(i, j)][max(i, j)].Add(1)
						}
					}
				})
			}
			wg.Wait()
			for k, id := range ids {
				taken := int64(0)
				for i := range 3 {
					for j := i + 1; j < 3; j++ {
						if i == k || j == k {
							taken += allowed[i][j].Load()
						}
					}
				}
				if got := remaining(t, s, id, l); got != l.MaxTokens-taken {
					t.Errorf("%s's bucket holds %d tokens after %d allowed decisions took from it, want %d", id.User, got, taken, l.MaxTokens-taken)
				}
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s, c := newStore(t)
			tt.run(t, s, c)
		})
	}
}
