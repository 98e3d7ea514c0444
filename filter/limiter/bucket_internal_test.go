package limiter

import (
	"math"
	"math/big"
	"math/rand/v2"
	"testing"
	"time"
)

// referenceTake is take written the obvious way, in exact rationals: count
// the tokens in the bucket, compare, and move the time it is full again.
func referenceTake(b bucket, now int64, d Demand) (bucket, BucketState) {
	capacity := big.NewRat(d.Limit.MaxTokens, 1)
	period := new(big.Rat).SetUint64(micros(d.Limit.RefillPeriod))
	tokens := big.NewRat(d.Tokens, 1)

	frac := min(b.frac, uint64(d.Limit.MaxTokens-1))
	fullAt := new(big.Rat).Add(big.NewRat(b.fullAt, 1), new(big.Rat).SetFrac(new(big.Int).SetUint64(frac), capacity.Num()))
	ahead := new(big.Rat).Sub(fullAt, big.NewRat(now, 1))
	if ahead.Sign() < 0 {
		ahead.SetInt64(0)
	}
	if ahead.Cmp(period) > 0 {
		ahead.Set(period)
	}
	missing := new(big.Rat).Quo(new(big.Rat).Mul(ahead, capacity), period)
	held := new(big.Rat).Sub(capacity, missing)

	floor := func(r *big.Rat) *big.Int { return new(big.Int).Div(r.Num(), r.Denom()) } // r >= 0
	ceil := func(r *big.Rat) *big.Int {
		q, m := new(big.Int).DivMod(r.Num(), r.Denom(), new(big.Int))
		if m.Sign() != 0 {
			q.Add(q, big.NewInt(1))
		}
		return q
	}
	us := func(i *big.Int) time.Duration { return duration(i.Uint64()) }

	untouched := BucketState{Remaining: floor(held).Int64(), ResetAfter: us(ceil(ahead))}
	if d.Tokens > d.Limit.MaxTokens {
		untouched.RetryAfter = d.Limit.RefillPeriod
		return b, untouched
	}
	if held.Cmp(tokens) < 0 {
		short := new(big.Rat).Sub(tokens, held)
		untouched.RetryAfter = us(ceil(new(big.Rat).Quo(new(big.Rat).Mul(short, period), capacity)))
		return b, untouched
	}
	newMissing := new(big.Rat).Add(missing, tokens)
	newAhead := new(big.Rat).Quo(new(big.Rat).Mul(newMissing, period), capacity)
	newFullAt := new(big.Rat).Add(big.NewRat(now, 1), newAhead)
	whole := floor(newFullAt)
	rest := new(big.Rat).Mul(new(big.Rat).Sub(newFullAt, new(big.Rat).SetInt(whole)), capacity)
	if !rest.IsInt() {
		panic("the fraction of a microsecond is not a whole number of 1/MaxTokens µs")
	}
	return bucket{fullAt: whole.Int64(), frac: rest.Num().Uint64()}, BucketState{
		Allowed:    true,
		Remaining:  floor(new(big.Rat).Sub(held, tokens)).Int64(),
		ResetAfter: us(ceil(newAhead)),
	}
}

func TestTakeAgreesWithExactArithmetic(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	// Small values hit rounding edges; large ones overflow 64 bits.
	pick := func(limit int64) int64 {
		switch r.IntN(3) {
		case 0:
			return 1 + r.Int64N(min(limit, 10))
		case 1:
			return 1 + r.Int64N(min(limit, 1_000_000))
		default:
			return 1 + r.Int64N(limit)
		}
	}
	const now = int64(1_000_000_000_000)
	var allowed, rejected int
	for range 20_000 {
		l := Limit{MaxTokens: pick(math.MaxInt64 - 1), RefillPeriod: time.Duration(pick(math.MaxInt64 - 1))}
		d := Demand{Limit: l, Tokens: pick(l.MaxTokens + 1)}
		period := int64(micros(l.RefillPeriod))
		b := bucket{fullAt: now - period + r.Int64N(3*period), frac: uint64(r.Int64N(l.MaxTokens + 2))}
		gotB, got := take(b, now, d)
		wantB, want := referenceTake(b, now, d)
		if got != want || gotB != wantB {
			t.Fatalf("take(%+v, %d, %+v) = %+v, %+v; want %+v, %+v", b, now, d, gotB, got, wantB, want)
		}
		if got.Allowed {
			allowed++
		} else {
			rejected++
		}
	}
	if allowed < 1000 || rejected < 1000 {
		t.Errorf("the cases were %d allowed and %d rejected, want plenty of both", allowed, rejected)
	}
}

func TestMicrosRoundsUp(t *testing.T) {
	for _, tc := range []struct {
		d    time.Duration
		want uint64
	}{
		{1, 1},
		{time.Microsecond, 1},
		{time.Microsecond + 1, 2},
		{time.Second, 1_000_000},
		{math.MaxInt64, math.MaxInt64/1000 + 1},
	} {
		if got := micros(tc.d); got != tc.want {
			t.Errorf("micros(%d) = %d, want %d", tc.d, got, tc.want)
		}
	}
}
