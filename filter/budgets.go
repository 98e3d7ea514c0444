package filter

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/toolgate/toolgate/filter/limiter"
)

// Budget is one bucket that applies to a user's calls on an MCP server, as
// it is now.
type Budget struct {
	// Scope is the bucket's scope (global, per_user, tool_per_user, ...);
	// Tool, Prompt, Resource or Method names an entry's bucket.
	Scope    string `json:"scope"`
	Tool     string `json:"tool,omitempty"`
	Prompt   string `json:"prompt,omitempty"`
	Resource string `json:"resource,omitempty"`
	Method   string `json:"method,omitempty"`
	// MaxTokens and RefillPeriod are the bucket's limit; Cost what one
	// call of the entry takes (for the server's buckets, a tool's own).
	MaxTokens    int64  `json:"maxTokens"`
	RefillPeriod string `json:"refillPeriod,omitempty"`
	Cost         int64  `json:"cost,omitempty"`
	// Window is a quota's calendar window (hour, day, week, month): then
	// MaxTokens is its max, and FullInMs the time until it starts afresh.
	Window string `json:"window,omitempty"`
	// InFlight marks an in-flight cap: MaxTokens is its slots, and
	// Remaining those free now.
	InFlight bool `json:"inFlight,omitempty"`
	// Shadow marks a limit in shadow mode (by itself, or with every limit
	// of the server): decided and counted, it refuses nothing.
	Shadow bool `json:"shadow,omitempty"`
	// Remaining is the whole tokens left; FullInMs the time until the
	// bucket is full again.
	Remaining int64 `json:"remaining"`
	FullInMs  int64 `json:"fullInMs"`
}

// Budgets is what an operator reads of one user's limits on one MCP
// server (Shared.Budgets).
type Budgets struct {
	Server string `json:"server"`
	User   string `json:"user,omitempty"`
	Shadow bool   `json:"shadow,omitempty"`
	// Degraded says the shared store is unavailable: these are this
	// replica's local buckets, which decide meanwhile.
	Degraded bool     `json:"degraded,omitempty"`
	Buckets  []Budget `json:"buckets"`
}

// Budgets reads, without taking anything, every bucket of policy that
// applies to user's calls (only the global ones when user is ""), in the
// shared store, or in this replica's local buckets while the store is
// unavailable.
func (s *Shared) Budgets(ctx context.Context, p *Policy, user string) (Budgets, error) {
	out := Budgets{Server: p.Server, User: user, Shadow: p.Shadow}
	var demands []limiter.Demand
	add := func(b Budget, entry string, global, perUser *limiter.Limit) {
		if global != nil {
			g := b
			g.Scope, g.MaxTokens, g.RefillPeriod = scopeNameOf(b.Scope, false), global.MaxTokens, global.RefillPeriod.String()
			g.Shadow = global.Shadow || p.Shadow
			out.Buckets = append(out.Buckets, g)
			demands = append(demands, limiter.Demand{Bucket: limiter.BucketID{Server: p.Server, Tool: entry}, Limit: *global, Tokens: 1})
		}
		if perUser != nil && user != "" {
			u := b
			u.Scope, u.MaxTokens, u.RefillPeriod = scopeNameOf(b.Scope, true), perUser.MaxTokens, perUser.RefillPeriod.String()
			u.Shadow = perUser.Shadow || p.Shadow
			out.Buckets = append(out.Buckets, u)
			demands = append(demands, limiter.Demand{Bucket: limiter.BucketID{Server: p.Server, Tool: entry, User: user}, Limit: *perUser, Tokens: 1})
		}
	}
	loc, err := time.LoadLocation(p.TimeZone)
	if err != nil {
		return Budgets{}, fmt.Errorf("filter: timeZone: %w", err)
	}
	now := s.now()
	addQuotas := func(b Budget, kind, tool string, global, perUser *Quota) {
		for _, q := range []struct {
			scope scope
			quota *Quota
			user  string
		}{{scopeQuotaGlobal, global, ""}, {scopeQuotaPerUser, perUser, user}} {
			if q.quota == nil || q.scope == scopeQuotaPerUser && user == "" {
				continue
			}
			bq := b
			bq.Scope, bq.MaxTokens, bq.Window = q.scope.String(), q.quota.Max, q.quota.Window
			bq.Shadow = q.quota.Shadow || p.Shadow
			if kind != "" {
				bq.Scope = kind + "_" + bq.Scope
			}
			out.Buckets = append(out.Buckets, bq)
			demands = append(demands, quotaDemand(limiter.BucketID{Server: p.Server, Tool: tool, User: q.user}, q.quota, 1, now, loc))
		}
	}
	lease := p.concurrencyLease()
	addCaps := func(b Budget, kind, tool string, global, perUser int64, shadow bool) {
		for _, c := range []struct {
			scope scope
			max   int64
			user  string
		}{{scopeConcurrentGlobal, global, ""}, {scopeConcurrentPerUser, perUser, user}} {
			if c.max <= 0 || c.scope == scopeConcurrentPerUser && user == "" {
				continue
			}
			bc := b
			bc.Scope, bc.MaxTokens, bc.InFlight = c.scope.String(), c.max, true
			bc.Shadow = shadow || p.Shadow
			if kind != "" {
				bc.Scope = kind + "_" + bc.Scope
			}
			out.Buckets = append(out.Buckets, bc)
			demands = append(demands, limiter.Demand{Bucket: limiter.BucketID{Server: p.Server, Tool: tool, User: c.user},
				Limit: limiter.Limit{MaxTokens: c.max, RefillPeriod: lease}, Tokens: 1, Slot: "peek"})
		}
	}
	add(Budget{Scope: ""}, "", p.Global, p.PerUser)
	addQuotas(Budget{}, "", "", p.GlobalQuota, p.PerUserQuota)
	addCaps(Budget{}, "", "", p.GlobalMaxConcurrent, p.PerUserMaxConcurrent, p.MaxConcurrentShadow)
	entries := func(kind string, m map[string]ToolLimits, prefix string, named func(b *Budget, name string)) {
		for _, name := range slices.Sorted(maps.Keys(m)) {
			l := m[name]
			b := Budget{Scope: kind, Cost: l.cost()}
			named(&b, name)
			add(b, prefix+name, l.Global, l.PerUser)
			b.Scope = ""
			addQuotas(b, kind, prefix+name, l.GlobalQuota, l.PerUserQuota)
			b.Cost = 0
			addCaps(b, kind, prefix+name, l.GlobalMaxConcurrent, l.PerUserMaxConcurrent, l.MaxConcurrentShadow)
		}
	}
	entries("tool", p.Tools, "", func(b *Budget, name string) { b.Tool = name })
	entries("prompt", p.Prompts, promptBucketPrefix, func(b *Budget, name string) { b.Prompt = name })
	entries("resource", p.Resources, resourceBucketPrefix, func(b *Budget, name string) { b.Resource = name })
	entries("method", p.Methods, methodBucketPrefix, func(b *Budget, name string) { b.Method = name })
	if len(demands) == 0 {
		out.Buckets = []Budget{}
		return out, nil
	}
	peek := func(store limiter.Store) ([]limiter.BucketState, error) {
		p, ok := store.(limiter.Peeker)
		if !ok {
			return nil, errors.New("filter: the bucket store cannot be read without taking")
		}
		return p.Peek(ctx, demands)
	}
	states, err := peek(s.store)
	if errors.Is(err, limiter.ErrUnavailable) {
		out.Degraded = true
		states, err = peek(s.fallback)
	}
	if err != nil {
		return Budgets{}, err
	}
	for i, st := range states {
		out.Buckets[i].Remaining, out.Buckets[i].FullInMs = st.Remaining, st.ResetAfter.Milliseconds()
	}
	return out, nil
}

// scopeNameOf names the scope of an entry kind's global or per-user bucket.
func scopeNameOf(kind string, perUser bool) string {
	switch {
	case kind == "" && perUser:
		return scopePerUser.String()
	case kind == "":
		return scopeGlobal.String()
	case perUser:
		return kind + "_per_user"
	}
	return kind + "_global"
}
