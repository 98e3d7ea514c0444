package limiter

import (
	"time"

	"github.com/redis/go-redis/v9"
)

// NewRedisWithClock is NewRedis whose decisions use now instead of the
// server's TIME, so that a test can move time.
func NewRedisWithClock(client redis.UniversalClient, opts RedisOptions, now func() time.Time) *Redis {
	return newRedis(client, opts, now)
}

// HoldPipeline takes one of the store's pipeline slots until the returned
// function gives it back, so that a test can make decisions and releases
// wait for a pipeline.
func (r *Redis) HoldPipeline() (giveBack func()) {
	r.senders <- struct{}{}
	return func() { <-r.senders }
}

// Queued reports how many decisions wait for a pipeline, and how many
// slots given back Redis has not been seen to free.
func (r *Redis) Queued() (decisions, releases int) {
	r.caps.mu.Lock()
	defer r.caps.mu.Unlock()
	return len(r.calls), int(r.caps.unacked())
}

// DropQueuedReleases makes the releaser forget the slots given back that
// Redis has not been seen to free, as if their releases were lost on
// their way, and reports how many there were; decisions on their caps
// still carry them.
func (r *Redis) DropQueuedReleases() int {
	r.caps.mu.Lock()
	defer r.caps.mu.Unlock()
	n := r.caps.unacked()
	for _, gens := range r.caps.gens {
		for _, g := range gens {
			g.sent, g.dirtySince = g.released, time.Time{}
		}
	}
	return int(n)
}

// unacked counts the slots given back that Redis has not been seen to
// free. The caller holds b.mu.
func (b *capBook) unacked() int64 {
	var n int64
	for _, gens := range b.gens {
		for _, g := range gens {
			n += g.released - g.acked
		}
	}
	return n
}
