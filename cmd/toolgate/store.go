package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/redis/go-redis/v9"

	"github.com/toolgate/toolgate/controller"
	"github.com/toolgate/toolgate/filter"
	"github.com/toolgate/toolgate/filter/audit"
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
	maxBatch     int
	bodyTimeout  time.Duration
	keyRefresh   time.Duration

	bodyBytesInFlight      int64
	bodyBytesPerConnection int64
	writeTimeout           time.Duration

	auditLog   string
	auditQueue int

	pprofAddress string
}

func (s *storeFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&s.redisURL, "redis-url", "", "Redis for shared token buckets, as redis://[user@]host:port/db or rediss:// for TLS; the password comes from $TOOLGATE_REDIS_PASSWORD. Empty keeps buckets in memory (one replica only)")
	fs.StringVar(&s.redisAddrs, "redis-addrs", "", "comma-separated Redis Cluster or Sentinel addresses, instead of --redis-url")
	fs.StringVar(&s.redisMaster, "redis-master-name", "", "Sentinel master name (with --redis-addrs)")
	fs.DurationVar(&s.storeTimeout, "store-timeout", filter.DefaultStoreTimeout, "longest wait for a rate-limit decision from Redis; a request whose decision takes longer gets 503")
	fs.Int64Var(&s.maxBody, "max-body-bytes", filter.DefaultMaxBodyBytes, "largest MCP request body accepted (413 past it)")
	fs.IntVar(&s.maxBatch, "max-batch", filter.DefaultMaxBatch, "most JSON-RPC messages in one batch (400 past it)")
	fs.DurationVar(&s.bodyTimeout, "body-timeout", filter.DefaultBodyTimeout, "longest time an MCP request body may take to arrive (408 past it, and the connection closes)")
	fs.Int64Var(&s.bodyBytesInFlight, "max-body-bytes-in-flight", filter.DefaultMaxBodyBytesInFlight, "most bytes of MCP request bodies held at once by the process; a body past it gets 503 before it is read")
	fs.Int64Var(&s.bodyBytesPerConnection, "max-body-bytes-per-connection", filter.DefaultMaxBodyBytesPerConnection, "most bytes of MCP request bodies held at once for one client connection (HTTP/2 carries many requests); 503 past it")
	fs.DurationVar(&s.writeTimeout, "write-timeout", gateway.DefaultWriteTimeout, "longest time writing a response that is not an event stream may make no progress; a client that stops reading is disconnected (0 disables)")
	fs.StringVar(&s.auditLog, "audit-log", "", "where to write the audit trail, one JSON record per MCP decision: a file (appended to) or - for stdout; empty writes none")
	fs.IntVar(&s.auditQueue, "audit-queue-size", audit.DefaultQueueSize, "most audit records waiting to be written; past it records are dropped and counted in "+audit.MetricRecords)
	fs.DurationVar(&s.keyRefresh, "jwks-refresh-interval", filter.DefaultKeyRefreshInterval, "least time between two fetches of an issuer's signing keys; a token with an unknown key id waits for the next one")
	fs.StringVar(&s.pprofAddress, "pprof-address", "0", "address of Go's /debug/pprof profiles, for performance work (hack/streams takes heap profiles from it); 0 (the default) disables it")
}

// dataPlane is what proxy and standalone modes serve with: the gateway
// server and the filter state, on one metrics registry.
type dataPlane struct {
	server   *gateway.Server
	filters  *filter.Shared
	registry prometheus.Registerer
	audit    *audit.Log // nil without --audit-log
	closers  []io.Closer
	pprof    *http.Server // nil without --pprof-address
}

// apply serves cfg and forgets the filter state (metric series) of MCP
// servers it no longer holds.
func (d *dataPlane) apply(cfg *gateway.Config) error {
	if err := d.server.Apply(cfg); err != nil {
		return err
	}
	d.filters.Retain(cfg.MCPServers())
	return nil
}

// metricReady is the gauge of the data plane's readiness, for dashboards
// that draw it beside the proxies' other metrics.
const metricReady = "toolgate_gateway_ready"

// newDataPlane builds the gateway server from gw (the mode's settings; its
// Metrics, Logger and Extensions are set here) and the filter state from the
// store flags. The server builds the MCP filters of each snapshot on that
// state.
func (s *storeFlags) newDataPlane(ctx context.Context, gw gateway.Options, log *slog.Logger) (*dataPlane, error) {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	if err := registerBuildInfo(reg); err != nil {
		return nil, err
	}
	auditLog, closers, err := s.openAudit(reg)
	if err != nil {
		return nil, err
	}
	filters, err := s.shared(ctx, reg, log, auditLog)
	if err != nil {
		return nil, err
	}
	metrics, err := gateway.NewMetrics(reg)
	if err != nil {
		return nil, err
	}
	gw.Metrics, gw.Logger = metrics, log
	gw.Extensions = controller.MCPFilterBuilder(filters)
	gw.Budgets = filters.Budgets
	gw.WriteTimeout = s.writeTimeout
	if s.writeTimeout == 0 {
		gw.WriteTimeout = -1 // the flag's 0 disables it
	}
	gw.ConnContext = func(ctx context.Context, _ net.Conn) context.Context { return filters.WithConnection(ctx) }
	server, err := gateway.New(gw)
	if err != nil {
		return nil, err
	}
	d := &dataPlane{server: server, filters: filters, registry: reg, audit: auditLog, closers: closers}
	err = reg.Register(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: metricReady,
		Help: "1 while the gateway serves a configuration and is not shutting down (when /readyz answers 200), else 0.",
	}, func() float64 {
		if server.Ready() {
			return 1
		}
		return 0
	}))
	if err != nil {
		return nil, fmt.Errorf("register %s: %w", metricReady, err)
	}
	if d.pprof, err = servePprof(s.pprofAddress, log); err != nil {
		return nil, err
	}
	return d, nil
}

// servePprof serves Go's /debug/pprof profiles on addr, as the controller's
// --pprof-address does; nil when addr is "" or "0".
func servePprof(addr string, log *slog.Logger) (*http.Server, error) {
	if addr == "" || addr == "0" {
		return nil, nil
	}
	ln, err := (&net.ListenConfig{}).Listen(context.Background(), "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("--pprof-address: %w", err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Warn("pprof listener stopped", "error", err)
		}
	}()
	return srv, nil
}

// openAudit starts the audit trail of --audit-log, nil without one.
func (s *storeFlags) openAudit(reg prometheus.Registerer) (*audit.Log, []io.Closer, error) {
	if s.auditLog == "" {
		return nil, nil, nil
	}
	var w io.Writer = os.Stdout
	var closers []io.Closer
	if s.auditLog != "-" {
		f, err := os.OpenFile(s.auditLog, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
		if err != nil {
			return nil, nil, fmt.Errorf("--audit-log: %w", err)
		}
		w, closers = f, []io.Closer{f}
	}
	l, err := audit.New(w, audit.Options{QueueSize: s.auditQueue, Registerer: reg})
	if err != nil {
		return nil, nil, fmt.Errorf("--audit-log: %w", err)
	}
	return l, closers, nil
}

// shutdown stops serving, letting requests in flight finish for up to
// timeout, and ending GET event streams (gateway.Server.Shutdown).
func (d *dataPlane) shutdown(log *slog.Logger, timeout time.Duration) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	if err := d.server.Shutdown(ctx); err != nil {
		log.Warn("shutdown: connections still busy at the end of the drain timeout were closed", "timeout", timeout, "error", err)
	} else {
		log.Info("shutdown: every request finished")
	}
	if d.pprof != nil {
		_ = d.pprof.Close()
	}
	if d.audit != nil {
		// Requests have ended: what they recorded is written before exit.
		_ = d.audit.Close()
	}
	for _, c := range d.closers {
		if err := c.Close(); err != nil {
			log.Warn("close the audit log", "error", err)
		}
	}
}

// shared builds the long-lived filter state: the bucket store (Redis or
// memory) and the metrics on reg. Only a malformed setting is an error: an
// unreachable Redis is logged, and each replica enforces the limits on its
// own until Redis answers.
func (s *storeFlags) shared(ctx context.Context, reg prometheus.Registerer, log *slog.Logger, auditLog *audit.Log) (*filter.Shared, error) {
	var store limiter.Store
	if s.redisURL != "" || s.redisAddrs != "" {
		cfg := limiter.RedisConfig{
			URL:        s.redisURL,
			MasterName: s.redisMaster,
			Password:   os.Getenv("TOOLGATE_REDIS_PASSWORD"),
			Timeout:    s.storeTimeout,
		}
		where := s.redisURL
		if s.redisAddrs != "" {
			cfg.Addrs, where = strings.Split(s.redisAddrs, ","), s.redisAddrs
		}
		if s.redisURL != "" && s.redisAddrs != "" {
			return nil, fmt.Errorf("set --redis-url or --redis-addrs, not both")
		}
		if s.redisMaster != "" && s.redisAddrs == "" {
			return nil, fmt.Errorf("--redis-master-name needs the Sentinel addresses in --redis-addrs")
		}
		client, err := limiter.NewRedisClient(cfg)
		if err != nil {
			flag := "--redis-url"
			if s.redisAddrs != "" {
				flag = "--redis-addrs"
			}
			return nil, fmt.Errorf("%s: %w", flag, err)
		}
		ping(ctx, client, where, log)
		store = limiter.NewRedis(client, limiter.RedisOptions{Timeout: s.storeTimeout, Logger: log})
	}
	return filter.NewShared(filter.SharedOptions{
		Store:              store,
		Registerer:         reg,
		Logger:             log,
		StoreTimeout:       s.storeTimeout,
		MaxBodyBytes:       s.maxBody,
		MaxBatch:           s.maxBatch,
		BodyTimeout:        s.bodyTimeout,
		KeyRefreshInterval: s.keyRefresh,
		Audit:              auditLog,
		Origin:             gateway.OriginOf,

		MaxBodyBytesInFlight:      s.bodyBytesInFlight,
		MaxBodyBytesPerConnection: max(s.bodyBytesPerConnection, s.maxBody),
	})
}

func ping(ctx context.Context, c redis.UniversalClient, where string, log *slog.Logger) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	if err := c.Ping(ctx).Err(); err != nil {
		log.Warn("Redis does not answer yet: each replica enforces the limits on its own until it does", "redis", where, "error", err)
	}
}
