package limiter

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// releaseLinger is how long a queued release waits for a decision to
// carry it before the releaser sends it: while decisions flow, releases
// cost no round trip of their own, and wake no goroutine each (waking the
// releaser for every release, only for it to find that a decision had
// carried it, cost several percent of a decision's time). Its slot is held
// that much longer only when no decision of this store comes along
// meanwhile, which is no time at all next to a call's length.
const releaseLinger = time.Millisecond

// release is one Release on its way to Redis: redisReleaseScript's keys
// and arguments for one server's slots, and the members it gives back per
// key (for pending).
type release struct {
	server  string
	keys    []string
	args    []any
	members [][]string
}

// pendingSlot is a slot given back whose release Redis has not yet been
// seen to run: every Take of its cap carries it (see scriptArgs), until its
// release is answered or its lease has ended anyway.
type pendingSlot struct {
	member string
	until  time.Time
}

// releaseQueue holds the releases waiting for a pipeline, and the slots
// given back that Redis may not have freed yet.
type releaseQueue struct {
	mu     sync.Mutex
	queued []*release // oldest first
	oldest time.Time  // when queued[0] was queued
	max    int        // past it, Release sends on its own
	// pending holds, by cap key, the slots given back whose release is
	// not yet answered.
	pending map[string][]pendingSlot
	// closed is set by Close: from then on Release sends on its own.
	closed bool
	// linger wakes the releaser; it is made, and the releaser started, by
	// the first queued release: a store that never releases runs no
	// goroutine.
	linger *time.Timer
	// armed is set while linger runs. Whenever releases are queued, it is
	// armed or the releaser is looking at them.
	armed   bool
	running sync.WaitGroup // the releaser goroutine
}

// Release implements Releaser without waiting for Redis: it queues the
// release and returns. The release rides in the next pipeline that leaves,
// with the releases of the same server in one script call, and when no
// decision comes along to carry it within a millisecond (releaseLinger),
// the store's releaser goroutine sends it as soon as a pipeline is free. A
// release that fails counts in the store's health like any failed round
// trip, and its slots are freed by their lease; so are they, without a
// try, while the store is unavailable.
//
// A Take of this store that starts after Release returned sees the slots
// free, in whatever pipeline and on whatever connection each travels: until
// the release is answered, the store remembers the slots given back, and
// every Take of their cap gives them back again first, in its own script
// call (see scriptArgs). Pipelines thus never wait for one another. Another
// replica sees them free once the release has run.
//
// Only when the queue is full (more releases than the decisions Take may
// queue), or after Close, does Release send on its own, in one script call
// it waits for, and return that call's error.
func (r *Redis) Release(ctx context.Context, demands []Demand) error {
	var caps []Demand
	for _, d := range demands {
		if d.Slot != "" {
			caps = append(caps, d)
		}
	}
	if len(caps) == 0 {
		return nil
	}
	if !r.health.available() {
		return nil // left to the lease, as the store cannot be reached
	}
	rel := &release{server: caps[0].Bucket.Server, keys: r.keys(caps), args: make([]any, 0, 2*len(caps)), members: make([][]string, len(caps))}
	for i, d := range caps {
		rel.args = append(rel.args, d.Slot, d.Tokens)
		for k := range d.Tokens {
			rel.members[i] = append(rel.members[i], slotMember(d.Slot, k))
		}
	}
	if r.queueRelease(rel, caps) {
		return nil
	}
	return r.releaseNow(ctx, rel)
}

// queueRelease queues rel for the next pipeline, remembers its slots as
// pending, and arms the releaser's timer unless it runs; it reports false
// when the queue is full or the store closed.
func (r *Redis) queueRelease(rel *release, caps []Demand) bool {
	q := &r.releases
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed || len(q.queued) >= q.max {
		return false
	}
	now := time.Now()
	if len(q.queued) == 0 {
		q.oldest = now
	}
	q.queued = append(q.queued, rel)
	if q.pending == nil {
		q.pending = map[string][]pendingSlot{}
	}
	for i, key := range rel.keys {
		for _, m := range rel.members[i] {
			q.pending[key] = append(q.pending[key], pendingSlot{member: m, until: now.Add(caps[i].Limit.RefillPeriod)})
		}
	}
	switch {
	case q.linger == nil:
		q.linger, q.armed = time.NewTimer(releaseLinger), true
		q.running.Add(1)
		go r.releaser(q.linger.C)
	case !q.armed:
		q.linger.Reset(releaseLinger)
		q.armed = true
	}
	return true
}

// pendingOf appends to args, for a Take's cap key, the number of its slots
// given back whose release is not yet answered, then their members; it
// forgets those whose lease has ended.
func (r *Redis) pendingOf(args []any, key string) []any {
	q := &r.releases
	q.mu.Lock()
	defer q.mu.Unlock()
	slots := q.pending[key]
	live := slots[:0]
	now := time.Now()
	for _, p := range slots {
		if p.until.After(now) {
			live = append(live, p)
		}
	}
	switch {
	case len(live) == 0:
		delete(q.pending, key)
	case len(live) < len(slots):
		clear(slots[len(live):])
		q.pending[key] = live
	}
	args = append(args, int64(len(live)))
	for _, p := range live {
		args = append(args, p.member)
	}
	return args
}

// answered forgets the pending slots of releases Redis has run.
func (r *Redis) answered(rels []*release) {
	q := &r.releases
	q.mu.Lock()
	defer q.mu.Unlock()
	for _, rel := range rels {
		for i, key := range rel.keys {
			slots := q.pending[key]
			for _, m := range rel.members[i] {
				slots = slices.DeleteFunc(slots, func(p pendingSlot) bool { return p.member == m })
			}
			if len(slots) == 0 {
				delete(q.pending, key)
			} else {
				q.pending[key] = slots
			}
		}
	}
}

// releaseNow sends rel on its own and waits for it, for at most Timeout,
// even when ctx ends sooner: a release is worth finishing, and a caller
// that gave up is no sign of a failing Redis.
func (r *Redis) releaseNow(ctx context.Context, rel *release) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), r.timeout)
	defer cancel()
	if err := r.run(ctx, releaseScript, rel.keys, rel.args...).Err(); err != nil && !errors.Is(err, redis.Nil) {
		r.health.failed(err)
		return fmt.Errorf("limiter: release in redis: %w", err)
	}
	r.health.succeeded()
	r.answered([]*release{rel})
	return nil
}

// releaser sends the releases no decision carried. Each time its timer
// fires, it looks at the queue: when the oldest release has waited
// releaseLinger, it waits for a free pipeline as a caller of Take does and
// sends what is queued, decisions included; when releases are younger, it
// sleeps until the oldest has waited that long; when decisions carried
// them all, it sleeps until queueRelease arms the timer again. There is
// one per store, started by the first queued release and stopped by
// Close; while releases flow with decisions it wakes about once a
// releaseLinger, not once a release.
func (r *Redis) releaser(fired <-chan time.Time) {
	defer r.releases.running.Done()
	for {
		select {
		case <-r.stop:
			return
		case <-fired:
		}
		for !r.lingerOrDisarm() {
			select {
			case r.senders <- struct{}{}:
			case <-r.stop:
				return
			}
			r.sendQueued()
			<-r.senders
		}
	}
}

// lingerOrDisarm reports whether the releaser may sleep: the queue is
// empty (the timer is then disarmed) or its oldest release has waited less
// than releaseLinger (the timer is then armed for the rest). It reports
// false when the queued releases are to be sent now.
func (r *Redis) lingerOrDisarm() bool {
	q := &r.releases
	q.mu.Lock()
	defer q.mu.Unlock()
	if len(q.queued) == 0 {
		q.armed = false
		return true
	}
	if wait := releaseLinger - time.Since(q.oldest); wait > 0 {
		q.linger.Reset(wait)
		q.armed = true
		return true
	}
	return false
}

// takeReleases hands every queued release to the pipeline about to leave,
// grouped by server: one script call gives back the slots of one server's
// releases (their keys share a Cluster hash slot).
func (r *Redis) takeReleases() []*release {
	q := &r.releases
	q.mu.Lock()
	rels := q.queued
	q.queued = nil
	q.mu.Unlock()
	if len(rels) < 2 {
		return rels
	}
	var groups []*release
	at := map[string]int{}
	for _, rel := range rels {
		i, ok := at[rel.server]
		if !ok {
			at[rel.server] = len(groups)
			groups = append(groups, &release{server: rel.server})
			i = len(groups) - 1
		}
		g := groups[i]
		g.keys = append(g.keys, rel.keys...)
		g.args = append(g.args, rel.args...)
		g.members = append(g.members, rel.members...)
	}
	return groups
}

// stopReleaser makes Release send on its own from now on, and waits for
// the releaser to end (Close has closed r.stop). The releaser's pipeline
// in flight, if any, ends within its Timeout.
func (r *Redis) stopReleaser() {
	q := &r.releases
	q.mu.Lock()
	q.closed = true
	if q.linger != nil {
		q.linger.Stop()
	}
	q.mu.Unlock()
	q.running.Wait()
}

// flushReleases sends the releases still queued at Close in one pipeline
// of its own, without waiting for a pipeline slot; while the store is
// unavailable it drops them, and their lease frees the slots.
func (r *Redis) flushReleases() {
	if !r.health.available() {
		r.releases.mu.Lock()
		r.releases.queued = nil
		r.releases.mu.Unlock()
		return
	}
	r.send(nil)
}
