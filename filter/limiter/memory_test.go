package limiter_test

import (
	"fmt"
	"math"
	"testing"
	"time"

	"github.com/toolgate/toolgate/filter/limiter"
)

func TestMemoryStore(t *testing.T) {
	runStoreSuite(t, func(t *testing.T) (limiter.Store, clock) {
		c := newFakeClock()
		return limiter.NewMemory(limiter.MemoryOptions{Now: c.Now}), c
	})
}

func TestMemoryStoreWithFewShards(t *testing.T) {
	// Two shards: most multi-bucket decisions lock both.
	runStoreSuite(t, func(t *testing.T) (limiter.Store, clock) {
		c := newFakeClock()
		return limiter.NewMemory(limiter.MemoryOptions{Now: c.Now, Shards: 2}), c
	})
}

func TestMemoryRefillIsExactToTheMicrosecond(t *testing.T) {
	c := newFakeClock()
	s := limiter.NewMemory(limiter.MemoryOptions{Now: c.Now})
	l := limiter.Limit{MaxTokens: 3, RefillPeriod: time.Second}
	one := demand(alice, l, 1)

	wantAllowed(t, take(t, s, demand(alice, l, 3)), true)
	steps := []struct {
		advance    time.Duration
		allowed    bool
		retryAfter time.Duration
		resetAfter time.Duration
	}{
		// The first token is back after 333333.33µs, so at 333334µs.
		{333333 * time.Microsecond, false, time.Microsecond, 666667 * time.Microsecond},
		{time.Microsecond, true, 0, 1000000 * time.Microsecond},
		// The second is back at 666666.67µs after the drain.
		{333332 * time.Microsecond, false, time.Microsecond, 666668 * time.Microsecond},
		{time.Microsecond, true, 0, 1000000 * time.Microsecond},
	}
	for i, step := range steps {
		c.Advance(step.advance)
		dec := take(t, s, one)
		if dec.Allowed != step.allowed || dec.RetryAfter != step.retryAfter || dec.Buckets[0].ResetAfter != step.resetAfter {
			t.Errorf("step %d: %+v, want Allowed %v, RetryAfter %v, ResetAfter %v", i, dec, step.allowed, step.retryAfter, step.resetAfter)
		}
	}
}

func TestMemoryRefillDoesNotDriftOverManyPeriods(t *testing.T) {
	c := newFakeClock()
	s := limiter.NewMemory(limiter.MemoryOptions{Now: c.Now})
	l := limiter.Limit{MaxTokens: 3, RefillPeriod: time.Second}
	wantAllowed(t, take(t, s, demand(alice, l, 3)), true)
	// One token every third of a second, in whole microseconds: the bucket
	// stays exactly one period from full, forever.
	for period := range 1000 {
		for i, step := range []time.Duration{333334, 333333, 333333} {
			c.Advance(step * time.Microsecond)
			dec := take(t, s, demand(alice, l, 1))
			if !dec.Allowed || dec.Buckets[0].Remaining != 0 {
				t.Fatalf("period %d, token %d: %+v, want allowed with 0 left", period, i, dec)
			}
			if i == 2 && dec.Buckets[0].ResetAfter != time.Second {
				t.Fatalf("period %d: ResetAfter = %v, want exactly 1s", period, dec.Buckets[0].ResetAfter)
			}
		}
	}
}

func TestMemoryHandlesLimitsBeyond64BitArithmetic(t *testing.T) {
	c := newFakeClock()
	s := limiter.NewMemory(limiter.MemoryOptions{Now: c.Now})
	huge := limiter.Limit{MaxTokens: math.MaxInt64, RefillPeriod: math.MaxInt64}
	dec := take(t, s, demand(alice, huge, math.MaxInt64/2))
	wantAllowed(t, dec, true)
	wantRemaining(t, dec.Buckets[0], math.MaxInt64-math.MaxInt64/2)
	dec = take(t, s, demand(alice, huge, math.MaxInt64/2+2))
	wantAllowed(t, dec, false)
	if dec.RetryAfter <= 0 {
		t.Errorf("RetryAfter = %v, want positive", dec.RetryAfter)
	}
	c.Advance(200 * 365 * 24 * time.Hour) // over two thirds of the period
	wantAllowed(t, take(t, s, demand(alice, huge, math.MaxInt64/2+2)), true)
}

func TestMemoryForgetsBucketsThatAreFullAgain(t *testing.T) {
	short := limiter.Limit{MaxTokens: 10, RefillPeriod: time.Second}
	long := limiter.Limit{MaxTokens: 10, RefillPeriod: time.Hour}
	tests := []struct {
		name    string
		first   limiter.Limit
		wantLen int
	}{
		{"a bucket full again is dropped by the next sweep", short, 1},
		{"a bucket still refilling is kept", long, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := newFakeClock()
			s := limiter.NewMemory(limiter.MemoryOptions{Now: c.Now, Shards: 1, SweepInterval: time.Minute})
			wantAllowed(t, take(t, s, demand(alice, tt.first, 1)), true)
			if got := s.Len(); got != 1 {
				t.Fatalf("Len = %d after one decision, want 1", got)
			}
			c.Advance(2 * time.Minute)
			wantAllowed(t, take(t, s, demand(bob, short, 1)), true)
			if got := s.Len(); got != tt.wantLen {
				t.Errorf("Len = %d after the sweep, want %d", got, tt.wantLen)
			}
		})
	}
}

func TestMemoryStaysBoundedUnderAStreamOfNewUsers(t *testing.T) {
	c := newFakeClock()
	s := limiter.NewMemory(limiter.MemoryOptions{Now: c.Now, Shards: 4, SweepInterval: time.Second})
	l := limiter.Limit{MaxTokens: 5, RefillPeriod: time.Second}
	const perRound = 1000
	for round := range 50 {
		for i := range perRound {
			b := limiter.BucketID{Server: server, User: fmt.Sprintf("user-%d-%d", round, i)}
			wantAllowed(t, take(t, s, demand(b, l, 1)), true)
		}
		c.Advance(2 * time.Second)
	}
	// Each round's buckets are full two seconds later and swept by the
	// next round's decisions on their shard: at most two rounds are held.
	if got := s.Len(); got > 2*perRound {
		t.Errorf("Len = %d after 50 rounds of %d new users, want at most %d", got, perRound, 2*perRound)
	}
}
