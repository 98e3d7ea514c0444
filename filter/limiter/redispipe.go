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
	args    []any
	state   atomic.Int32

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
// in one round trip. The caller holds a pipeline slot.
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
	if len(batch) > 0 {
		r.send(batch)
	}
}

// drain answers the decisions left in the queue at Close.
func (r *Redis) drain() {
	for {
		select {
		case c := <-r.calls:
			if c.state.CompareAndSwap(callQueued, callSent) {
				c.finish(Decision{}, ErrClosed)
			}
		default:
			return
		}
	}
}

// send decides a batch in one round trip (two when Redis lost the script)
// and records the outcome in the store's health.
func (r *Redis) send(batch []*call) {
	live := batch[:0]
	for _, c := range batch {
		if c.state.CompareAndSwap(callQueued, callSent) {
			live = append(live, c)
		}
	}
	if len(live) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), r.timeout)
	defer cancel()
	cmds := r.exec(ctx, live, false)
	var lost []int // NOSCRIPT: Redis restarted or failed over
	for i := range live {
		if err := cmds[i].Err(); err != nil && redis.HasErrorPrefix(err, "NOSCRIPT") {
			lost = append(lost, i)
		}
	}
	if len(lost) > 0 {
		again := make([]*call, len(lost))
		for j, i := range lost {
			again[j] = live[i]
		}
		for j, cmd := range r.exec(ctx, again, true) {
			cmds[lost[j]] = cmd
		}
	}
	// Health first, so that the callers of a round trip that made the store
	// unavailable learn it from their error and decide elsewhere.
	var failed error
	for _, cmd := range cmds {
		if err := cmd.Err(); err != nil {
			failed = err
			break
		}
	}
	if failed != nil {
		r.health.failed(failed)
	} else {
		r.health.succeeded()
	}
	for i, c := range live {
		r.answer(c, cmds[i])
	}
}

// exec sends one pipeline of EVALSHA (or EVAL) commands, one per call.
func (r *Redis) exec(ctx context.Context, calls []*call, eval bool) []*redis.Cmd {
	cmds := make([]*redis.Cmd, len(calls))
	// Errors are read per command below; the pipeline's own error is the
	// first of them.
	_, _ = r.client.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, c := range calls {
			if eval {
				cmds[i] = p.Eval(ctx, redisTakeScript, c.keys, c.args...)
			} else {
				cmds[i] = p.EvalSha(ctx, takeScript.Hash(), c.keys, c.args...)
			}
		}
		return nil
	})
	return cmds
}

// answer hands a command's outcome to its caller.
func (r *Redis) answer(c *call, cmd *redis.Cmd) {
	reply, err := cmd.Result()
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) {
			err = fmt.Errorf("no answer within %s: %w", r.timeout, err)
		}
		if !r.health.available() {
			err = fmt.Errorf("%w: %w", ErrUnavailable, err)
		}
		c.finish(Decision{}, fmt.Errorf("limiter: take from redis: %w", err))
		return
	}
	dec, err := decision(reply, c.demands)
	c.finish(dec, err)
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
	reply, err := takeScript.Run(ctx, r.client, r.keys(probeDemand), r.scriptArgs(probeDemand)...).Result()
	if err != nil {
		return err
	}
	_, err = decision(reply, probeDemand)
	return err
}
