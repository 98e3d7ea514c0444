package env

import (
	"errors"

	"github.com/toolgate/toolgate/internal/testredis"
)

// Redis is the store the proxies share buckets through.
type Redis struct {
	// URL is what the proxies get as --redis-url.
	URL string

	server *testredis.Server // nil for a Redis the suite did not start
}

// ErrRedisNotOwned is returned by Stop and Start for a Redis given with
// --redis-url.
var ErrRedisNotOwned = errors.New("the suite can only stop and start the redis-server it started itself: run without --redis-url, or leave out the specs labelled redis-outage (--ginkgo.label-filter='!redis-outage')")

// Owned reports whether the suite started this Redis and can stop it.
func (r *Redis) Owned() bool { return r.server != nil }

// Stop stops Redis; Start brings it back on the same address, empty.
func (r *Redis) Stop() error {
	if r.server == nil {
		return ErrRedisNotOwned
	}
	return r.server.Stop()
}

// Start starts Redis again after Stop.
func (r *Redis) Start() error {
	if r.server == nil {
		return ErrRedisNotOwned
	}
	return r.server.Restart()
}

func (r *Redis) close() error {
	if r.server == nil {
		return nil
	}
	return r.server.Close()
}
