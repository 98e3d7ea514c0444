package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/redis/go-redis/v9"

	"github.com/toolgate/toolgate/filter"
	"github.com/toolgate/toolgate/filter/limiter"
	"github.com/toolgate/toolgate/gateway"
)

// storeFlags are the bucket store and filter settings of proxy and
// standalone modes.
type storeFlags struct {
	redisURL     string
	redisAddrs   string
	redisMaster  string
	storeTimeout time.Duration
	maxBody      int64
}

func (s *storeFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&s.redisURL, "redis-url", "", "Redis for shared token buckets, as redis://[user@]host:port/db or rediss:// for TLS; the password comes from $TOOLGATE_REDIS_PASSWORD. Empty keeps buckets in memory (one replica only)")
	fs.StringVar(&s.redisAddrs, "redis-addrs", "", "comma-separated Redis Cluster or Sentinel addresses, instead of --redis-url")
	fs.StringVar(&s.redisMaster, "redis-master-name", "", "Sentinel master name (with --redis-addrs)")
	fs.DurationVar(&s.storeTimeout, "store-timeout", filter.DefaultStoreTimeout, "longest wait for a rate-limit decision before failing open")
	fs.Int64Var(&s.maxBody, "max-body-bytes", filter.DefaultMaxBodyBytes, "largest MCP request body accepted (413 past it)")
}

// dataPlane is what proxy and standalone modes serve with: the gateway
// server and the filter state, on one metrics registry.
type dataPlane struct {
	server  *gateway.Server
	filters *filter.Shared
}

// newDataPlane builds the gateway server (with its admin endpoints on
// adminAddress) and the filter state from the store flags.
func (s *storeFlags) newDataPlane(ctx context.Context, adminAddress string, sessionKey []byte, log *slog.Logger) (*dataPlane, error) {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	filters, err := s.shared(ctx, reg, log)
	if err != nil {
		return nil, err
	}
	metrics, err := gateway.NewMetrics(reg)
	if err != nil {
		return nil, err
	}
	server, err := gateway.New(gateway.Options{SessionKey: sessionKey, Metrics: metrics, Logger: log, AdminAddress: adminAddress})
	if err != nil {
		return nil, err
	}
	return &dataPlane{server: server, filters: filters}, nil
}

// shutdown stops serving, letting requests in flight finish.
func (d *dataPlane) shutdown(log *slog.Logger) {
	ctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
	defer cancel()
	if err := d.server.Shutdown(ctx); err != nil {
		log.Warn("shutdown", "error", err)
	}
}

// shared builds the long-lived filter state: the bucket store (Redis or
// memory) and the metrics on reg. Only a malformed setting is an error: an
// unreachable Redis is logged and requests fail open until it answers.
func (s *storeFlags) shared(ctx context.Context, reg prometheus.Registerer, log *slog.Logger) (*filter.Shared, error) {
	var store limiter.Store
	switch {
	case s.redisURL != "" && s.redisAddrs != "":
		return nil, fmt.Errorf("set --redis-url or --redis-addrs, not both")
	case s.redisURL != "":
		opts, err := redis.ParseURL(s.redisURL)
		if err != nil {
			return nil, fmt.Errorf("--redis-url %q: %w (expected redis://host:port/db or rediss://host:port)", s.redisURL, err)
		}
		if pw := os.Getenv("TOOLGATE_REDIS_PASSWORD"); pw != "" {
			opts.Password = pw
		}
		client := redis.NewClient(opts)
		store = limiter.NewRedis(client, limiter.RedisOptions{})
		ping(ctx, client, s.redisURL, log)
	case s.redisAddrs != "":
		client := redis.NewUniversalClient(&redis.UniversalOptions{
			Addrs:      strings.Split(s.redisAddrs, ","),
			MasterName: s.redisMaster,
			Password:   os.Getenv("TOOLGATE_REDIS_PASSWORD"),
		})
		store = limiter.NewRedis(client, limiter.RedisOptions{})
		ping(ctx, client, s.redisAddrs, log)
	default:
		store = limiter.NewMemory(limiter.MemoryOptions{})
	}
	return filter.NewShared(filter.SharedOptions{
		Store:        store,
		Registerer:   reg,
		Logger:       log,
		StoreTimeout: s.storeTimeout,
		MaxBodyBytes: s.maxBody,
	})
}

func ping(ctx context.Context, c redis.UniversalClient, where string, log *slog.Logger) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	if err := c.Ping(ctx).Err(); err != nil {
		log.Warn("Redis does not answer yet: tool calls pass unlimited (fail-open) until it does", "redis", where, "error", err)
	}
}
