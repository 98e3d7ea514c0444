package limiter

import (
	"errors"
	"fmt"
	"runtime"
	"time"

	"github.com/redis/go-redis/v9"
)

// RedisConfig says how to reach Redis. Exactly one of URL and Addrs is set.
type RedisConfig struct {
	// URL is one Redis server: redis://[user@]host:port/db, or rediss://
	// for TLS.
	URL string
	// Addrs are Redis Cluster nodes, or Sentinels when MasterName is set.
	Addrs []string
	// MasterName is the Sentinel master name (with Addrs).
	MasterName string
	// Password overrides the URL's; for Cluster and Sentinel it is the
	// servers' password.
	Password string
	// Timeout bounds one round trip to Redis: the socket reads and writes,
	// the wait for a pooled connection and (with a floor) dialing. It is the
	// store timeout of the filter; zero means DefaultRedisTimeout.
	Timeout time.Duration
	// PoolSize is the number of connections per Redis node; zero means
	// DefaultRedisPoolSize().
	PoolSize int
}

// DefaultRedisTimeout bounds one round trip when RedisConfig.Timeout is zero.
const DefaultRedisTimeout = 50 * time.Millisecond

// minDialTimeout keeps dialing possible when the round-trip timeout is a
// few milliseconds: a TCP (and TLS) handshake may take longer than a
// command, and a request never waits for it past its own deadline.
const minDialTimeout = 250 * time.Millisecond

// DefaultRedisPoolSize is the connection pool size per node: enough for the
// store's pipelines (DefaultPipelines) and a background probe.
func DefaultRedisPoolSize() int { return DefaultPipelines() + 2 }

// DefaultPipelines is how many pipelines a Redis store keeps in flight at
// once: with each carrying many decisions, a few per core are enough.
func DefaultPipelines() int { return max(4, 2*runtime.GOMAXPROCS(0)) }

// NewRedisClient returns the Redis client of every toolgate mode, standalone,
// Sentinel or Cluster. Its timeouts follow cfg.Timeout and are enforced on
// every socket read (go-redis ignores a context deadline on reads unless
// told otherwise), and it never retries a command: a retry would spend a
// second round trip of the decision's time budget.
func NewRedisClient(cfg RedisConfig) (redis.UniversalClient, error) {
	if cfg.Timeout < 0 || cfg.PoolSize < 0 {
		return nil, errors.New("redis: timeout and pool size must not be negative (zero picks the default)")
	}
	timeout := cfg.Timeout
	if timeout == 0 {
		timeout = DefaultRedisTimeout
	}
	pool := cfg.PoolSize
	if pool == 0 {
		pool = DefaultRedisPoolSize()
	}
	switch {
	case cfg.URL != "" && len(cfg.Addrs) > 0:
		return nil, errors.New("redis: set a URL or addresses, not both")
	case cfg.URL != "":
		opts, err := redis.ParseURL(cfg.URL)
		if err != nil {
			return nil, fmt.Errorf("redis URL %q: %w (expected redis://host:port/db or rediss://host:port)", cfg.URL, err)
		}
		if cfg.Password != "" {
			opts.Password = cfg.Password
		}
		opts.ContextTimeoutEnabled = true
		opts.DialTimeout = max(timeout, minDialTimeout)
		opts.ReadTimeout, opts.WriteTimeout, opts.PoolTimeout = timeout, timeout, timeout
		opts.PoolSize = pool
		opts.MaxRetries = -1
		return redis.NewClient(opts), nil
	case len(cfg.Addrs) > 0:
		return redis.NewUniversalClient(&redis.UniversalOptions{
			Addrs:                 cfg.Addrs,
			MasterName:            cfg.MasterName,
			Password:              cfg.Password,
			ContextTimeoutEnabled: true,
			DialTimeout:           max(timeout, minDialTimeout),
			ReadTimeout:           timeout,
			WriteTimeout:          timeout,
			PoolTimeout:           timeout,
			PoolSize:              pool,
			MaxRetries:            -1,
			// A Cluster redirect (MOVED, ASK) is not a retry of a failure:
			// it is how a resharded slot is found.
			MaxRedirects: 3,
		}), nil
	default:
		return nil, errors.New("redis: set a URL or addresses")
	}
}
