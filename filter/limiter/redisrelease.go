package limiter

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// releaseLinger is how long a slot given back waits for a decision on its
// cap to carry its release before the releaser sends it on its own: while
// decisions on a cap flow, its releases cost Redis no command, and wake no
// goroutine each. Its slot is held that much longer only when no decision
// on its cap comes along meanwhile, which is no time at all next to a
// call's length.
const releaseLinger = time.Millisecond

// capBook is what a Redis store knows of the caps' slots it holds: which
// Take holds which slots in which generation (see redisscript.go), and per
// generation how many slots this replica has given back in all. Releases
// are those totals: a script applies the highest it is told, so that a
// release carried twice, or late, or by two round trips at once, counts
// once, and one that was lost is carried again by the next.
type capBook struct {
	// replica names this store's generations in Redis: random, so that a
	// replica that restarts does not give back its former slots.
	replica int64

	mu sync.Mutex
	// holds holds the slots of allowed Takes, by slot name, until they
	// are given back.
	holds map[string][]holding
	// gens holds, by key then start, the generations of this replica
	// that hold slots or whose releases Redis has not been seen to apply.
	gens map[string]map[int64]*generation
	// dirty holds the keys of generations with releases no round trip
	// carries (released above sent), and maybe some whose releases a
	// decision has since carried: the releaser looks at these only.
	dirty     map[string]struct{}
	lastPrune time.Time
	// linger wakes the releaser; it is made, and the releaser started, by
	// the first release: a store that never releases runs no goroutine.
	linger *time.Timer
	// armed is set while linger runs. Whenever a generation has releases
	// no round trip carries, it is armed or the releaser is looking.
	armed   bool
	running sync.WaitGroup // the releaser goroutine
	// closed is set by Close: from then on Release sends on its own.
	closed bool
}

// holding is the slots one Take holds on one cap.
type holding struct {
	bucket BucketID
	key    string
	gen    int64
	slots  int64
}

// generation is this replica's account of one of its generations in
// Redis.
type generation struct {
	key    string        // its record's key
	server string        // its key's server: releases of one server share a script call
	lease  time.Duration // the longest lease of its slots
	last   time.Time     // when it last took a slot, on this replica's clock
	// released counts the slots given back in all; sent, the most that a
	// round trip not known to have failed carried; acked, the most Redis
	// is known to have applied.
	released, sent, acked int64
	// dirtySince is when released last rose above sent.
	dirtySince time.Time
}

// carried is a generation's total of releases as one round trip carries
// it.
type carried struct {
	g     *generation
	total int64
}

// newReplicaID returns a random id for a store's generations, in
// [1, 2^52): exact in the scripts' doubles.
func newReplicaID() int64 {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return int64(binary.BigEndian.Uint64(b[:])>>12) | 1 //nolint:gosec // 52 bits
}

// appendCarried appends to a script's arguments the releases of key's
// generations that Redis has not been seen to apply: their count, then
// (start, total) pairs. The round trip will apply them: they are marked
// sent, and added to into so that its answer can acknowledge them.
func (b *capBook) appendCarried(args []byte, key string, into *[]carried) []byte {
	b.mu.Lock()
	defer b.mu.Unlock()
	gens := b.gens[key]
	k := 0
	for _, g := range gens {
		if g.released > g.acked {
			k++
		}
	}
	args = appendInt(args, int64(k))
	for start, g := range gens {
		if g.released <= g.acked {
			continue
		}
		args = appendInt(args, start)
		args = appendInt(args, g.released)
		g.sent, g.dirtySince = max(g.sent, g.released), time.Time{}
		*into = append(*into, carried{g: g, total: g.released})
	}
	return args
}

// hold records the slots an allowed Take took: gens holds, for each cap's
// demand in order, the start of the generation its slots went to (0 when
// none).
func (b *capBook) hold(demands []Demand, keys []string, gens []int64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	now := time.Now()
	j := 0
	for i, d := range demands {
		if d.Slot == "" {
			continue
		}
		start := gens[j]
		j++
		if start == 0 {
			continue
		}
		if b.gens == nil {
			b.gens, b.holds, b.dirty = map[string]map[int64]*generation{}, map[string][]holding{}, map[string]struct{}{}
		}
		byStart := b.gens[keys[i]]
		if byStart == nil {
			byStart = map[int64]*generation{}
			b.gens[keys[i]] = byStart
		}
		g := byStart[start]
		if g == nil {
			g = &generation{key: keys[i], server: d.Bucket.Server}
			byStart[start] = g
		}
		g.lease, g.last = max(g.lease, d.Limit.RefillPeriod), now
		b.holds[d.Slot] = append(b.holds[d.Slot], holding{bucket: d.Bucket, key: keys[i], gen: start, slots: d.Tokens})
	}
}

// acked records that Redis applied what a round trip carried.
func (b *capBook) acked(cs []carried) {
	if len(cs) == 0 {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, c := range cs {
		c.g.acked = max(c.g.acked, c.total)
	}
}

// failed records that a round trip that carried releases failed, or never
// left: what it carried is sent again, by the next decision on its cap or
// by the releaser.
func (b *capBook) failed(cs []carried) {
	if len(cs) == 0 {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	now := time.Now()
	for _, c := range cs {
		g := c.g
		if g.sent > g.acked {
			g.sent = g.acked
		}
		if g.released > g.sent {
			if g.dirtySince.IsZero() {
				g.dirtySince = now
			}
			b.dirty[g.key] = struct{}{}
		}
	}
}

// prune forgets, at most once a second, the generations whose slots Redis
// has surely dropped (their leases ended: a generation takes slots for
// half a lease, each held for a lease) and the holdings in them. The
// caller holds b.mu.
func (b *capBook) prune(now time.Time) {
	if now.Sub(b.lastPrune) < time.Second {
		return
	}
	b.lastPrune = now
	for key, gens := range b.gens {
		for start, g := range gens {
			if now.Sub(g.last) > 2*g.lease {
				delete(gens, start)
			}
		}
		if len(gens) == 0 {
			delete(b.gens, key)
			delete(b.dirty, key)
		}
	}
	for slot, hs := range b.holds {
		hs = slices.DeleteFunc(hs, func(h holding) bool { return b.gens[h.key][h.gen] == nil })
		if len(hs) == 0 {
			delete(b.holds, slot)
		} else {
			b.holds[slot] = hs
		}
	}
}

// Release implements Releaser without waiting for Redis: it counts the
// slots given back in their generations and returns. The next decision on
// the same cap carries the release (see redisTakeScript), at no cost of
// its own; when none comes along within a millisecond (releaseLinger), the
// store's releaser goroutine sends it as soon as a pipeline is free, with
// the releases of the same server in one script call. A release that fails
// counts in the store's health like any failed round trip, and is sent
// again; while the store is unavailable it waits.
//
// A Take of this store that starts after Release returned sees the slots
// free, in whatever pipeline and on whatever connection each travels:
// every decision on a cap carries the releases of its generations that
// Redis has not been seen to apply. Another replica sees them free once
// one of those round trips has run. Slots that no Take of this store
// holds (refused, or given back already) are ignored.
//
// After Close, Release sends on its own, in one script call it waits for,
// and returns that call's error.
func (r *Redis) Release(ctx context.Context, demands []Demand) error {
	b := &r.caps
	b.mu.Lock()
	now := time.Now()
	released := false
	for _, d := range demands {
		if d.Slot == "" {
			continue
		}
		hs := b.holds[d.Slot]
		for i := 0; i < len(hs); {
			h := hs[i]
			if h.bucket != d.Bucket {
				i++
				continue
			}
			hs = slices.Delete(hs, i, i+1)
			g := b.gens[h.key][h.gen]
			if g == nil {
				continue // its lease ended long ago
			}
			if g.released <= g.sent || g.dirtySince.IsZero() {
				g.dirtySince = now
			}
			g.released += h.slots
			b.dirty[h.key] = struct{}{}
			released = true
		}
		if len(hs) == 0 {
			delete(b.holds, d.Slot)
		} else {
			b.holds[d.Slot] = hs
		}
	}
	b.prune(now)
	closed := b.closed
	if released && !closed {
		r.armReleaser()
	}
	b.mu.Unlock()
	if released && closed {
		return r.releaseNow(ctx)
	}
	return nil
}

// armReleaser starts the releaser's timer unless it runs, and the releaser
// with the first release. The caller holds r.caps.mu.
func (r *Redis) armReleaser() {
	b := &r.caps
	switch {
	case b.linger == nil:
		b.linger, b.armed = time.NewTimer(releaseLinger), true
		b.running.Add(1)
		go r.releaser(b.linger.C)
	case !b.armed:
		b.linger.Reset(releaseLinger)
		b.armed = true
	}
}

// release is one script call of redisReleaseScript: the releases of one
// server's caps.
type release struct {
	server  string
	keys    []string
	args    []byte
	carried []carried
}

// takeReleases returns the releases no round trip carries that have
// waited at least minAge, a script call per server (their keys share a
// Cluster hash slot), and marks them sent.
func (r *Redis) takeReleases(minAge time.Duration) []*release {
	b := &r.caps
	b.mu.Lock()
	defer b.mu.Unlock()
	now := time.Now()
	var rels []*release
	for key := range b.dirty {
		gens := b.gens[key]
		var rel *release
		waiting := false
		for _, g := range gens {
			if g.released > g.sent {
				waiting = true
			}
			if g.released > g.sent && now.Sub(g.dirtySince) >= minAge {
				i := slices.IndexFunc(rels, func(rel *release) bool { return rel.server == g.server })
				if i < 0 {
					rels = append(rels, &release{server: g.server, args: appendInt(appendInt(nil, r.clock()), b.replica)})
					i = len(rels) - 1
				}
				rel = rels[i]
				break
			}
		}
		if rel == nil {
			if !waiting {
				delete(b.dirty, key) // decisions carried them
			}
			continue
		}
		delete(b.dirty, key)
		rel.keys = append(rel.keys, key)
		k := 0
		for _, g := range gens {
			if g.released > g.acked {
				k++
			}
		}
		rel.args = appendInt(rel.args, int64(k))
		for start, g := range gens {
			if g.released <= g.acked {
				continue
			}
			rel.args = appendInt(rel.args, start)
			rel.args = appendInt(rel.args, g.released)
			g.sent = max(g.sent, g.released)
			g.dirtySince = time.Time{}
			rel.carried = append(rel.carried, carried{g: g, total: g.released})
		}
	}
	return rels
}

// releaseNow sends the releases no round trip carries, each server's in
// one script call of its own, and waits for them for at most Timeout,
// even when ctx ends sooner: a release is worth finishing, and a caller
// that gave up is no sign of a failing Redis.
func (r *Redis) releaseNow(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), r.timeout)
	defer cancel()
	var errs []error
	for _, rel := range r.takeReleases(0) {
		if err := r.run(ctx, releaseScript, rel.keys, string(rel.args)).Err(); err != nil && !errors.Is(err, redis.Nil) {
			r.health.failed(err)
			r.caps.failed(rel.carried)
			errs = append(errs, err)
			continue
		}
		r.health.succeeded()
		r.caps.acked(rel.carried)
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("limiter: release in redis: %w", err)
	}
	return nil
}

// releaser sends the releases no decision carried. Each time its timer
// fires, it looks at them: when the oldest has waited releaseLinger, it
// waits for a free pipeline as a caller of Take does and sends them,
// decisions queued included; when they are younger, it sleeps until the
// oldest has waited that long; when decisions carried them all, it sleeps
// until a release arms the timer again. There is one per store, started
// by the first release and stopped by Close; while releases flow with
// decisions it wakes about once a releaseLinger, not once a release.
func (r *Redis) releaser(fired <-chan time.Time) {
	defer r.caps.running.Done()
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

// unavailableRetry is how often the releaser looks again at releases it
// holds while the store is unavailable.
const unavailableRetry = 100 * releaseLinger

// lingerOrDisarm reports whether the releaser may sleep: no release waits
// (the timer is then disarmed), the oldest has waited less than
// releaseLinger, or the store is unavailable (the timer is then armed for
// the rest). It reports false when releases are to be sent now.
func (r *Redis) lingerOrDisarm() bool {
	b := &r.caps
	b.mu.Lock()
	defer b.mu.Unlock()
	var oldest time.Time
	for key := range b.dirty {
		waiting := false
		for _, g := range b.gens[key] {
			if g.released > g.sent {
				waiting = true
				if oldest.IsZero() || g.dirtySince.Before(oldest) {
					oldest = g.dirtySince
				}
			}
		}
		if !waiting {
			delete(b.dirty, key) // decisions carried them
		}
	}
	if oldest.IsZero() {
		b.armed = false
		return true
	}
	if !r.health.available() {
		b.linger.Reset(unavailableRetry)
		b.armed = true
		return true
	}
	if wait := releaseLinger - time.Since(oldest); wait > 0 {
		b.linger.Reset(wait)
		b.armed = true
		return true
	}
	return false
}

// stopReleaser makes Release send on its own from now on, and waits for
// the releaser to end (Close has closed r.stop). The releaser's pipeline
// in flight, if any, ends within its Timeout.
func (r *Redis) stopReleaser() {
	b := &r.caps
	b.mu.Lock()
	b.closed = true
	if b.linger != nil {
		b.linger.Stop()
	}
	b.mu.Unlock()
	b.running.Wait()
}

// flushReleases sends the releases no round trip carried, at Close, in
// one pipeline of its own, without waiting for a pipeline slot; while the
// store is unavailable it does not try. Releases that could not be sent
// are given up: their lease frees the slots.
func (r *Redis) flushReleases() {
	if r.health.available() {
		r.send(nil, 0)
	}
	b := &r.caps
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, gens := range b.gens {
		for _, g := range gens {
			g.sent, g.acked, g.dirtySince = g.released, g.released, time.Time{}
		}
	}
}
