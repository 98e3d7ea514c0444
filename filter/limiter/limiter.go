// Package limiter keeps token buckets: one decision takes tokens from several
// buckets at once, all or nothing. Two stores share these semantics: Redis,
// for gateways with more than one replica, and memory, the default.
package limiter

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// Limit is a token bucket's shape: it holds at most MaxTokens tokens and
// refills continuously from empty to full in RefillPeriod. A Shadow limit
// is decided and counted as if enforced, but refuses nothing (see Take).
//
// In JSON it is {"maxTokens": 100, "refillPeriod": "1m0s"}: the period is a
// Go duration string, as the MCPServer API spells it; "shadow": true marks
// a shadow limit.
type Limit struct {
	MaxTokens    int64
	RefillPeriod time.Duration
	Shadow       bool
}

// limitJSON is Limit's JSON form.
type limitJSON struct {
	MaxTokens    int64  `json:"maxTokens"`
	RefillPeriod string `json:"refillPeriod"`
	Shadow       bool   `json:"shadow,omitempty"`
}

// MarshalJSON encodes the refill period as a Go duration string.
func (l Limit) MarshalJSON() ([]byte, error) {
	return json.Marshal(limitJSON{MaxTokens: l.MaxTokens, RefillPeriod: l.RefillPeriod.String(), Shadow: l.Shadow})
}

// UnmarshalJSON decodes what MarshalJSON encodes. It checks the syntax
// only; Validate says whether a store can enforce the limit.
func (l *Limit) UnmarshalJSON(data []byte) error {
	if string(data) == "null" {
		return nil // as encoding/json does for values it decodes itself
	}
	var v limitJSON
	if err := json.Unmarshal(data, &v); err != nil {
		return fmt.Errorf("limit: %w", err)
	}
	period, err := time.ParseDuration(v.RefillPeriod)
	if err != nil {
		return fmt.Errorf("limit: refillPeriod: %w", err)
	}
	*l = Limit{MaxTokens: v.MaxTokens, RefillPeriod: period, Shadow: v.Shadow}
	return nil
}

// Validate refuses limits a store cannot enforce, before they reach it.
func (l Limit) Validate() error {
	if l.MaxTokens <= 0 {
		return fmt.Errorf("maxTokens must be at least 1, got %d", l.MaxTokens)
	}
	if l.RefillPeriod <= 0 {
		return fmt.Errorf("refillPeriod must be greater than 0s, got %s", l.RefillPeriod)
	}
	return nil
}

// BucketID names one bucket. Server is the MCP server ("namespace/name");
// Tool is empty for the server's buckets; User is empty for global buckets.
type BucketID struct {
	Server string
	Tool   string
	User   string
}

// Demand asks for Tokens tokens from one bucket of the given Limit, or,
// when Window is set, Tokens of one quota's count.
type Demand struct {
	Bucket BucketID
	Limit  Limit
	Tokens int64
	// Window, when set, makes the demand a quota's: at most
	// Limit.MaxTokens tokens are taken within the calendar window it
	// names, which the caller computes (its time zone, its clock);
	// Limit.RefillPeriod is not used. A quota and buckets in one Take are
	// decided together, all or nothing.
	Window Window
	// Slot, when set, makes the demand an in-flight cap's: at most
	// Limit.MaxTokens slots of the bucket are held at once, and the demand
	// takes Tokens of them, named after Slot, until Release gives them
	// back or Limit.RefillPeriod (the lease) passes, whichever comes
	// first: a holder that died frees its slots at the lease's end (on
	// Redis, up to half a lease later: see redisscript.go). A refused
	// demand's RetryAfter is CapRetryAfter.
	Slot string
}

// CapRetryAfter is how soon a call refused for want of a slot may try
// again: slots are given back as calls end, not on a schedule.
const CapRetryAfter = time.Second

// Releaser gives back the slots of in-flight caps that a Take allowed.
// Both stores implement it.
type Releaser interface {
	// Release gives back the slots the demands of an allowed Take hold;
	// demands that are not caps' are ignored. Slots already given back,
	// or past their lease, are no error. A Take of this store that starts
	// after Release returned sees the slots free; another replica's may
	// see them free a little later (Redis.Release).
	Release(ctx context.Context, demands []Demand) error
}

// Window is a quota's calendar window, [Start, End).
type Window struct {
	Start, End time.Time
}

// IsZero reports whether w names no window.
func (w Window) IsZero() bool { return w.End.IsZero() }

// BucketState is what a decision left in one bucket.
type BucketState struct {
	// Allowed is false when this bucket did not hold the tokens demanded.
	Allowed bool
	// Remaining is the whole number of tokens left after the decision.
	Remaining int64
	// ResetAfter is the time until the bucket is full again.
	ResetAfter time.Duration
	// RetryAfter, when not Allowed, is the time until the bucket holds the
	// tokens demanded (the bucket's refill period when it never can).
	RetryAfter time.Duration
}

// Decision is the outcome of one Take.
//
// Demands whose Limit is Shadow are decided as if enforced, but refuse
// nothing: Allowed says whether every enforced demand held its tokens. When
// every demand held, enforced and shadow, all were taken. When an enforced
// demand did not, nothing was taken. When only shadow demands did not
// (ShadowRefused), the enforced demands' tokens were taken and none of the
// shadow demands': they take what they would take if they were enforced,
// and an enforced Take that is refused takes nothing.
type Decision struct {
	// Allowed is true when every enforced demand held its tokens and they
	// were taken. When false, nothing was taken from any bucket.
	Allowed bool
	// ShadowRefused is true when the Take was Allowed and shadow demands
	// would have refused it.
	ShadowRefused bool
	// RetryAfter, when not Allowed (or ShadowRefused), is the time until
	// every rejecting enforced (or shadow) bucket holds the tokens demanded
	// again.
	RetryAfter time.Duration
	// Buckets holds one state per demand, in order.
	Buckets []BucketState
}

// settle sets the decision's Allowed, ShadowRefused and RetryAfter from its
// bucket states, and says which demands' tokens are to be taken: all, only
// the enforced ones, or none.
func (dec *Decision) settle(demands []Demand) (take takeWhich) {
	enforced, all := true, true
	var enforcedRetry, shadowRetry time.Duration
	for i, st := range dec.Buckets {
		if st.Allowed {
			continue
		}
		all = false
		if demands[i].Limit.Shadow {
			shadowRetry = max(shadowRetry, st.RetryAfter)
		} else {
			enforced = false
			enforcedRetry = max(enforcedRetry, st.RetryAfter)
		}
	}
	dec.Allowed, dec.ShadowRefused = enforced, enforced && !all
	switch {
	case all:
		dec.RetryAfter = 0
		return takeAll
	case enforced:
		dec.RetryAfter = shadowRetry
		return takeEnforced
	}
	dec.RetryAfter = enforcedRetry
	return takeNone
}

// takeWhich says which demands of a decided Take are taken.
type takeWhich uint8

const (
	takeNone takeWhich = iota
	takeAll
	takeEnforced
)

// takes reports whether demand d is taken.
func (t takeWhich) takes(d Demand) bool {
	return t == takeAll || t == takeEnforced && !d.Limit.Shadow
}

// Store takes tokens from buckets.
//
// A bucket is continuous: it starts full, holds at most MaxTokens tokens and
// gains MaxTokens tokens every RefillPeriod, to the microsecond (a
// RefillPeriod that is not a whole number of microseconds is rounded up to
// one), without drift from fractions of a token.
type Store interface {
	// Take takes the demanded tokens from every bucket if each holds them,
	// and from none otherwise. An error means the store could not decide.
	//
	// All demands of one Take name the same Server (so that their Redis keys
	// share one Cluster hash slot). Demands on the same bucket are taken in
	// order, as if they were one demand of their sum. Take refuses invalid
	// demands with an error before it reads or changes any bucket.
	Take(ctx context.Context, demands []Demand) (Decision, error)
}

// ErrNoDemands is returned by Take when it is given nothing to decide.
var ErrNoDemands = errors.New("limiter: no demands")

// validate checks every demand before a store acts on any.
func validate(demands []Demand) error {
	if len(demands) == 0 {
		return ErrNoDemands
	}
	for i, d := range demands {
		if d.Slot != "" && !d.Window.IsZero() {
			return fmt.Errorf("limiter: demand %d (%+v): a demand is a cap's or a quota's, not both", i, d.Bucket)
		}
		if d.Slot != "" {
			for _, e := range demands[:i] {
				if e.Slot != "" && (e.Bucket == d.Bucket || e.Slot != d.Slot) {
					return fmt.Errorf("limiter: demand %d (%+v): one Take holds one slot name, and one demand per cap (add up the slots)", i, d.Bucket)
				}
			}
		}
		if !d.Window.IsZero() {
			if d.Limit.MaxTokens <= 0 {
				return fmt.Errorf("limiter: demand %d (%+v): a quota's maxTokens must be at least 1, got %d", i, d.Bucket, d.Limit.MaxTokens)
			}
			if !d.Window.Start.Before(d.Window.End) {
				return fmt.Errorf("limiter: demand %d (%+v): a quota's window must end after it starts", i, d.Bucket)
			}
		} else if err := d.Limit.Validate(); err != nil {
			return fmt.Errorf("limiter: demand %d (%+v): %w", i, d.Bucket, err)
		}
		if d.Tokens <= 0 {
			return fmt.Errorf("limiter: demand %d (%+v): tokens must be at least 1, got %d", i, d.Bucket, d.Tokens)
		}
		for _, e := range demands[:i] {
			if e.Bucket == d.Bucket && e.Limit.Shadow != d.Limit.Shadow && (e.Slot != "") == (d.Slot != "") && e.Window.IsZero() == d.Window.IsZero() {
				return fmt.Errorf("limiter: demand %d (%+v): demands on one bucket share its limit's mode (shadow or enforced)", i, d.Bucket)
			}
		}
		if d.Bucket.Server != demands[0].Bucket.Server {
			return fmt.Errorf("limiter: demand %d (%+v): server %q differs from demand 0's %q: one decision covers one server's buckets", i, d.Bucket, d.Bucket.Server, demands[0].Bucket.Server)
		}
	}
	return nil
}

// Peeker reads buckets without changing them: what an operator asks of a
// user's limits. Both stores implement it.
type Peeker interface {
	// Peek reports each demand's bucket as it is now: Remaining and
	// ResetAfter; Allowed says whether it holds the demand's Tokens. It
	// takes nothing and writes nothing.
	Peek(ctx context.Context, demands []Demand) ([]BucketState, error)
}
