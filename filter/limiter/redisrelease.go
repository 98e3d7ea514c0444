package limiter

import (
	"context"
	"errors"
	"fmt"
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

// release is one Release on its way to Redis: redisReleaseScript's keys and
// arguments.
type release struct {
	keys []string
	args []any
}

// releaseQueue holds the releases waiting for a pipeline, and the flight
// that decisions must let land before they leave (see takeReleases).
type releaseQueue struct {
	mu     sync.Mutex
	queued []*release // oldest first
	oldest time.Time  // when queued[0] was queued
	max    int        // past it, Release sends on its own
	// flight is closed once the latest pipeline that carried releases is
	// answered (or has failed); nil once it has.
	flight chan struct{}
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
// ahead of that pipeline's decisions, so that a Take that starts after
// Release returned sees the slots free (takeReleases says why this holds
// with several pipelines in flight); when no decision comes along to carry
// it within a millisecond (releaseLinger), the store's releaser goroutine
// sends it as soon as a pipeline is free. A release that fails counts in
// the store's health like any failed round trip, and its slots are freed
// by their lease; so are they, without a try, while the store is
// unavailable.
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
	args := make([]any, 0, 1+len(caps))
	args = append(args, caps[0].Slot)
	for _, d := range caps {
		args = append(args, d.Tokens)
	}
	rel := &release{keys: r.keys(caps), args: args}
	if r.queueRelease(rel) {
		return nil
	}
	return r.releaseNow(ctx, rel)
}

// queueRelease queues rel for the next pipeline, and arms the releaser's
// timer unless it runs; it reports false when the queue is full or the
// store closed.
func (r *Redis) queueRelease(rel *release) bool {
	q := &r.releases
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed || len(q.queued) >= q.max {
		return false
	}
	if len(q.queued) == 0 {
		q.oldest = time.Now()
	}
	q.queued = append(q.queued, rel)
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
// and returns the flight that pipeline must wait for before it leaves: the
// latest pipeline that carried releases, until it lands (nil when none is
// in the air). When it hands out releases, the pipeline becomes the latest
// flight: mine is to be given to landed once it is answered. A pipeline's
// releases are sent ahead of its decisions.
//
// Why a release is never lost, and only ever seen late (which refuses a
// decision a slot too early, and never lets a cap be exceeded):
//
//   - A release leaves the queue once, under the queue's lock, into one
//     pipeline that sends it, with its script's text so that Redis cannot
//     have lost the script (see exec). If that round trip fails, the
//     slot's lease frees it. Close sends what is still queued.
//   - A Take that starts after a Release returned sees its slots free. Its
//     decision was queued after the release was, and its pipeline takes
//     its decisions off their queue before it takes the releases (send is
//     called after sendQueued drained r.calls). So when that pipeline takes
//     the releases, the release is either still queued, and leaves in it,
//     ahead of the decision (Redis runs one pipeline's commands in order on
//     one connection, and a Take's keys and those of its release share one
//     Cluster hash slot), or an earlier pipeline took it, under the same
//     lock, and made itself the flight. The decision's pipeline waits for
//     the latest flight to land, and each flight waited for the one before
//     it before it left, so every earlier flight, the release's included,
//     has been answered before the decision is sent.
//   - Two senders whose releases and decisions were queued at the same
//     moment, with no such order between them, send them on two
//     connections, and Redis may run either first. A decision run before a
//     release finds the slot still held: it may be refused although the
//     slot was about to be free, which is late, and never more slots than
//     the cap. A release cannot run before the decision that took its slot,
//     since that decision was answered before Release was called.
//
// Flights follow one another only while releases flow: a pipeline that
// carries no release makes no flight, and leaves at once when the last
// flight has landed.
func (r *Redis) takeReleases() (rels []*release, wait <-chan struct{}, mine chan struct{}) {
	q := &r.releases
	q.mu.Lock()
	defer q.mu.Unlock()
	rels, q.queued, wait = q.queued, nil, q.flight
	if len(rels) > 0 {
		mine = make(chan struct{})
		q.flight = mine
	}
	return rels, wait, mine
}

// landed tells the pipelines waiting for flight mine that it was answered.
func (r *Redis) landed(mine chan struct{}) {
	q := &r.releases
	q.mu.Lock()
	if q.flight == mine {
		q.flight = nil
	}
	q.mu.Unlock()
	close(mine)
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
