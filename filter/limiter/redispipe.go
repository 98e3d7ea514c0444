package limiter

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// call is one decision on its way to Redis. Its state moves from queued to
// sent (by a pipeline) or abandoned (by a caller whose context ended first),
// never both: an abandoned decision is never sent, so a request that was
// refused for lack of time took no tokens.
type call struct {
	demands []Demand
	keys    []string
	args    []byte // its part of redisTakeScript's arguments (scriptArgs)
	state   atomic.Int32
	// carried holds the releases its arguments carry (see capBook).
	carried []carried

	done     chan struct{} // closed once decision and err are set
	decision Decision
	err      error
}

const (
	callQueued int32 = iota
	callSent
	callAbandoned
)

func (c *call) finish(dec Decision, err error) {
	c.decision, c.err = dec, err
	close(c.done)
}

// sendQueued sends the decisions waiting in r.calls, as many as MaxBatch,
// and the releases queued, in one round trip. The caller holds a pipeline
// slot.
func (r *Redis) sendQueued() {
	batch := make([]*call, 0, min(len(r.calls), r.maxBatch))
	for len(batch) < r.maxBatch {
		select {
		case c := <-r.calls:
			batch = append(batch, c)
			continue
		default:
		}
		break
	}
	// Even when no decision is queued: the releaser sends releases so.
	r.send(batch, releaseLinger)
}

// drain answers the decisions left in the queue at Close.
func (r *Redis) drain() {
	for {
		select {
		case c := <-r.calls:
			if c.state.CompareAndSwap(callQueued, callSent) {
				r.caps.failed(c.carried)
				c.finish(Decision{}, ErrClosed)
			}
		default:
			return
		}
	}
}

// send decides a batch, and sends the releases no decision carried that
// have waited minAge, in one round trip (two when Redis lost a script),
// and records the outcome in the store's health. The releases go first; no
// order between pipelines is needed (see Release).
func (r *Redis) send(batch []*call, minAge time.Duration) {
	rels := r.takeReleases(minAge)
	// Decisions whose callers gave up while they were queued are not
	// sent: they took nothing.
	live := batch[:0]
	for _, c := range batch {
		if c.state.CompareAndSwap(callQueued, callSent) {
			live = append(live, c)
		}
	}
	if len(live) == 0 && len(rels) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), r.timeout)
	defer cancel()
	groups := r.groups(live)
	cmds := r.exec(ctx, rels, groups, false)
	// NOSCRIPT: Redis restarted or failed over. What it did not run is
	// sent again with EVAL in one more pipeline.
	var lostRels []*release
	var lostGroups []*takeGroup
	var at []int
	for i, cmd := range cmds {
		if err := cmd.Err(); err == nil || !redis.HasErrorPrefix(err, "NOSCRIPT") {
			continue
		}
		at = append(at, i)
		if i < len(rels) {
			lostRels = append(lostRels, rels[i])
		} else {
			lostGroups = append(lostGroups, groups[i-len(rels)])
		}
	}
	if len(at) > 0 {
		for j, cmd := range r.exec(ctx, lostRels, lostGroups, true) {
			cmds[at[j]] = cmd
		}
	}
	// Health first, so that the callers of a round trip that made the store
	// unavailable learn it from their error and decide elsewhere.
	var failed error
	for _, cmd := range cmds {
		if err := cmd.Err(); err != nil && !errors.Is(err, redis.Nil) {
			failed = err
			break
		}
	}
	if failed != nil {
		r.health.failed(failed)
	} else {
		r.health.succeeded()
	}
	// A failed release is carried again, by the next decision on its cap
	// or by the releaser.
	for i, rel := range rels {
		if err := cmds[i].Err(); err == nil || errors.Is(err, redis.Nil) {
			r.caps.acked(rel.carried)
		} else {
			r.caps.failed(rel.carried)
		}
	}
	for i, g := range groups {
		r.answerGroup(g, cmds[len(rels)+i])
	}
}

// takeGroup is one script call of redisTakeScript: the decisions of one
// server in a pipeline (their keys share a Cluster hash slot), decided in
// order, and their records written once.
type takeGroup struct {
	calls []*call
	keys  []string
	args  []byte
}

// groups makes a script call of each server's decisions, in the order the
// decisions came.
func (r *Redis) groups(calls []*call) []*takeGroup {
	var groups []*takeGroup
	for _, c := range calls {
		server := c.demands[0].Bucket.Server // validate: one server per Take
		var g *takeGroup
		for _, h := range groups {
			if h.calls[0].demands[0].Bucket.Server == server {
				g = h
				break
			}
		}
		if g == nil {
			g = &takeGroup{}
			groups = append(groups, g)
		}
		g.calls = append(g.calls, c)
		g.keys = append(g.keys, c.keys...)
	}
	for _, g := range groups {
		size := 2 * 9
		for _, c := range g.calls {
			size += len(c.args)
		}
		g.args = make([]byte, 0, size+9)
		g.args = appendInt(g.args, r.clock())
		g.args = appendInt(g.args, r.caps.replica)
		g.args = appendInt(g.args, int64(len(g.calls)))
		for _, c := range g.calls {
			g.args = append(g.args, c.args...)
		}
	}
	return groups
}

// exec sends one pipeline: a script call per release (per server), then
// one per group of decisions, EVALSHA (EVAL when eval is set), and returns
// their commands in that order.
func (r *Redis) exec(ctx context.Context, rels []*release, groups []*takeGroup, eval bool) []*redis.Cmd {
	cmds := make([]*redis.Cmd, len(rels)+len(groups))
	r.roundTrips.Add(1)
	// Errors are read per command below; the pipeline's own error is the
	// first of them.
	_, _ = r.client.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, rel := range rels {
			if eval {
				cmds[i] = p.Eval(ctx, redisReleaseScript, rel.keys, string(rel.args))
			} else {
				cmds[i] = p.EvalSha(ctx, releaseScript.Hash(), rel.keys, string(rel.args))
			}
		}
		for i, g := range groups {
			if eval {
				cmds[len(rels)+i] = p.Eval(ctx, redisTakeScript, g.keys, string(g.args))
			} else {
				cmds[len(rels)+i] = p.EvalSha(ctx, takeScript.Hash(), g.keys, string(g.args))
			}
		}
		return nil
	})
	return cmds
}

// run sends one script call of its own, EVALSHA, then EVAL when Redis lost
// the script, and counts its round trips.
func (r *Redis) run(ctx context.Context, script *redis.Script, keys []string, args ...any) *redis.Cmd {
	r.roundTrips.Add(1)
	cmd := script.EvalSha(ctx, r.client, keys, args...)
	if err := cmd.Err(); err != nil && redis.HasErrorPrefix(err, "NOSCRIPT") {
		r.roundTrips.Add(1)
		cmd = script.Eval(ctx, r.client, keys, args...)
	}
	return cmd
}

// answerGroup hands a group's outcome to each of its callers.
func (r *Redis) answerGroup(g *takeGroup, cmd *redis.Cmd) {
	reply, err := cmd.Result()
	replies, ok := reply.([]any)
	if err == nil && (!ok || len(replies) != len(g.calls)) {
		err = fmt.Errorf("unexpected reply %v to %d decisions", reply, len(g.calls))
	}
	for i, c := range g.calls {
		if err != nil {
			r.answer(c, nil, err)
		} else {
			r.answer(c, replies[i], nil)
		}
	}
}

// answer hands one decision's outcome to its caller.
func (r *Redis) answer(c *call, reply any, err error) {
	if err != nil {
		r.caps.failed(c.carried)
		if errors.Is(err, context.DeadlineExceeded) {
			err = fmt.Errorf("no answer within %s: %w", r.timeout, err)
		}
		if !r.health.available() {
			err = fmt.Errorf("%w: %w", ErrUnavailable, err)
		}
		c.finish(Decision{}, fmt.Errorf("limiter: take from redis: %w", err))
		return
	}
	// Redis ran the script: what it carried was applied.
	r.caps.acked(c.carried)
	dec, gens, err := decision(reply, c.demands)
	if err != nil {
		c.finish(Decision{}, err)
		return
	}
	r.caps.hold(c.demands, c.keys, gens)
	c.finish(dec, nil)
}

// probeBucket is the bucket the health probe decides on: a server name no
// MCP server can have, with a limit whose key expires within a millisecond.
var probeDemand = []Demand{{
	Bucket: BucketID{Server: "\x00toolgate-health-probe"},
	Limit:  Limit{MaxTokens: 1 << 20, RefillPeriod: time.Millisecond},
	Tokens: 1,
}}

// probe makes one real decision through the script, as requests do, so that
// a Redis that answers PING but cannot run or write (a replica, OOM, a lost
// script it cannot reload) is not taken for a working one.
func (r *Redis) probe(ctx context.Context) error {
	c := &call{demands: probeDemand, keys: r.keys(probeDemand)}
	c.args = r.scriptArgs(c)
	g := r.groups([]*call{c})[0]
	reply, err := r.run(ctx, takeScript, g.keys, string(g.args)).Result()
	if err != nil {
		return err
	}
	replies, ok := reply.([]any)
	if !ok || len(replies) != 1 {
		return fmt.Errorf("limiter: probe: unexpected reply %v", reply)
	}
	_, _, err = decision(replies[0], probeDemand)
	return err
}
