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
