package limiter

import (
	"math"
	"math/bits"
	"time"
)

// The bucket arithmetic, shared by the memory store and mirrored by the Redis
// script (redisTakeScript).
//
// A bucket is stored as the instant it is full again: fullAt whole
// microseconds plus frac/MaxTokens of a microsecond, so that a token, worth
// RefillPeriod/MaxTokens microseconds, is added without rounding. Its debt is
// how far it is from full, in units of 1/MaxTokens µs:
//
//	debt = (fullAt - now) × MaxTokens + frac,  clamped to [0, MaxTokens × RefillPeriod]
//
// which is also the number of missing tokens × RefillPeriod (in µs). Taking
// n tokens adds n × RefillPeriod to the debt and is allowed while the debt
// stays at most MaxTokens × RefillPeriod. Every quantity is an integer, so
// nothing drifts. The memory store computes in 128 bits; the Redis script
// computes in Lua's doubles, exact while MaxTokens × RefillPeriod in µs stays
// below 2^52 (one million tokens per 75 minutes), and off by far less than a
// token beyond.

// bucket is one bucket's state. The zero value is a full bucket.
type bucket struct {
	fullAt int64  // µs on the store's clock
	frac   uint64 // in 1/MaxTokens µs, below MaxTokens
}

// full reports whether the bucket holds all its tokens at now.
func (b bucket) full(now int64) bool {
	return b.fullAt < now || (b.fullAt == now && b.frac == 0)
}

// micros converts a refill period to whole microseconds, rounding up, so
// that a period is never shorter than configured.
func micros(d time.Duration) uint64 {
	q := d / time.Microsecond
	if d%time.Microsecond != 0 {
		q++
	}
	return uint64(q)
}

// duration converts microseconds to a Duration, saturating.
func duration(us uint64) time.Duration {
	if us > math.MaxInt64/uint64(time.Microsecond) {
		return math.MaxInt64
	}
	return time.Duration(us) * time.Microsecond
}

// debt is how far b is from full at now, in 1/capacity µs.
func (b bucket) debt(now int64, capacity, period uint64) u128 {
	if b.full(now) {
		return u128{}
	}
	ahead := uint64(b.fullAt - now)
	if ahead >= period {
		return mul64(capacity, period)
	}
	frac := min(b.frac, capacity-1)
	return mul64(ahead, capacity).add(u128{lo: frac})
}

// state reports a bucket of the given debt as it is, untouched.
func state(debt u128, capacity, period uint64) BucketState {
	return BucketState{
		Allowed:    true,
		Remaining:  int64(capacity - debt.ceilDiv(period)),
		ResetAfter: duration(debt.ceilDiv(capacity)),
	}
}

// take decides one demand on bucket b at now (µs). It returns the bucket
// after the demand (b itself when rejected) and what the demand saw.
func take(b bucket, now int64, d Demand) (bucket, BucketState) {
	capacity, period, tokens := uint64(d.Limit.MaxTokens), micros(d.Limit.RefillPeriod), uint64(d.Tokens)
	debt := b.debt(now, capacity, period)
	if tokens > capacity {
		st := state(debt, capacity, period)
		st.Allowed, st.RetryAfter = false, d.Limit.RefillPeriod
		return b, st
	}
	empty := mul64(capacity, period)
	after := debt.add(mul64(tokens, period))
	if empty.less(after) {
		st := state(debt, capacity, period)
		st.Allowed, st.RetryAfter = false, duration(after.sub(empty).ceilDiv(capacity))
		return b, st
	}
	q, r := after.divMod(capacity)
	return bucket{fullAt: now + int64(q), frac: r}, state(after, capacity, period)
}

// peekState reports bucket b as it is at now, and whether it holds the
// demand's tokens.
func peekState(b bucket, now int64, d Demand) BucketState {
	capacity, period := uint64(d.Limit.MaxTokens), micros(d.Limit.RefillPeriod)
	debt := b.debt(now, capacity, period)
	st := state(debt, capacity, period)
	st.Allowed = d.Tokens <= d.Limit.MaxTokens && !mul64(capacity, period).less(debt.add(mul64(uint64(d.Tokens), period)))
	return st
}

// Quotas count tokens in a calendar window instead: a window's count
// starts at 0 and holds until the window ends.

// quotaState reports a quota that has used u in its window, at wall (Unix
// µs), and whether it can take the demand's tokens.
func quotaState(u, wall int64, d Demand) BucketState {
	left := d.Window.End.UnixMicro() - wall
	st := BucketState{Remaining: max(d.Limit.MaxTokens-u, 0), ResetAfter: duration(uint64(max(left, 0)))}
	st.Allowed = d.Tokens <= d.Limit.MaxTokens-u
	if !st.Allowed {
		st.RetryAfter = duration(uint64(max(left, 1)))
	}
	return st
}

// takeQuota decides one demand on a quota that has used u: the count after
// it, and what the demand saw.
func takeQuota(u, wall int64, d Demand) (int64, BucketState) {
	st := quotaState(u, wall, d)
	if !st.Allowed {
		return u, st
	}
	st.Remaining -= d.Tokens
	return u + d.Tokens, st
}

// In-flight caps count the slots held at once: a demand takes its slots
// while the cap holds that many free, and gives them back when released.

// slotState reports a cap holding h slots, and whether it has the
// demand's slots free.
func slotState(h int64, d Demand) BucketState {
	st := BucketState{Remaining: max(d.Limit.MaxTokens-h, 0), Allowed: d.Tokens <= d.Limit.MaxTokens-h}
	if !st.Allowed {
		st.RetryAfter = CapRetryAfter
	}
	return st
}

// takeSlots decides one demand on a cap holding h slots: how many it holds
// after, and what the demand saw.
func takeSlots(h int64, d Demand) (int64, BucketState) {
	st := slotState(h, d)
	if !st.Allowed {
		return h, st
	}
	st.Remaining -= d.Tokens
	return h + d.Tokens, st
}

// u128 is an unsigned 128-bit integer: capacity × period overflows 64 bits
// for large but valid limits.
type u128 struct{ hi, lo uint64 }

func mul64(a, b uint64) u128 {
	hi, lo := bits.Mul64(a, b)
	return u128{hi, lo}
}

func (x u128) add(y u128) u128 {
	lo, carry := bits.Add64(x.lo, y.lo, 0)
	hi, _ := bits.Add64(x.hi, y.hi, carry)
	return u128{hi, lo}
}

func (x u128) sub(y u128) u128 {
	lo, borrow := bits.Sub64(x.lo, y.lo, 0)
	hi, _ := bits.Sub64(x.hi, y.hi, borrow)
	return u128{hi, lo}
}

func (x u128) less(y u128) bool {
	return x.hi < y.hi || (x.hi == y.hi && x.lo < y.lo)
}

// divMod divides x by y. Its callers keep the quotient within 64 bits; were
// it not, the quotient saturates rather than panic.
func (x u128) divMod(y uint64) (q, r uint64) {
	if x.hi >= y {
		return math.MaxUint64, 0
	}
	return bits.Div64(x.hi, x.lo, y)
}

func (x u128) ceilDiv(y uint64) uint64 {
	q, r := x.divMod(y)
	if r != 0 && q != math.MaxUint64 {
		q++
	}
	return q
}
