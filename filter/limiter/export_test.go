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

// Queued reports how many decisions and releases wait for a pipeline.
func (r *Redis) Queued() (decisions, releases int) {
	r.releases.mu.Lock()
	defer r.releases.mu.Unlock()
	return len(r.calls), len(r.releases.queued)
}

// DropQueuedReleases forgets the releases that wait for a pipeline, as if
// they were lost on their way, and reports how many there were; their
// slots stay pending.
func (r *Redis) DropQueuedReleases() int {
	r.releases.mu.Lock()
	defer r.releases.mu.Unlock()
	n := len(r.releases.queued)
	r.releases.queued = nil
	return n
}
