package filter

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	lru "github.com/hashicorp/golang-lru/v2"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/toolgate/toolgate/filter/limiter"
)

// Defaults of SharedOptions.
const (
	// DefaultStoreTimeout bounds one bucket decision; past it the request is
	// allowed (fail-open).
	DefaultStoreTimeout = 50 * time.Millisecond
	// DefaultMaxBodyBytes bounds an MCP request body; a larger one gets 413.
	// It matches the MCP Go SDK's own default request limit.
	DefaultMaxBodyBytes = 4 << 20
	// DefaultTokenCacheSize bounds how many verified tokens are remembered.
	DefaultTokenCacheSize = 10000
	// DefaultTokenCacheMaxAge bounds how long a verified token is trusted
	// without checking it again, whatever its expiry.
	DefaultTokenCacheMaxAge = 5 * time.Minute
	// DefaultFailOpenLogInterval is the least time between two log lines
	// saying the bucket store fails.
	DefaultFailOpenLogInterval = time.Minute
	// DefaultOIDCTimeout bounds one OIDC discovery or key-set fetch.
	DefaultOIDCTimeout = 10 * time.Second
)

// discoveryRetryDelay is how long a failed OIDC discovery is remembered
// before the next request tries again, so that an unreachable issuer is not
// asked once per request.
const discoveryRetryDelay = 5 * time.Second

// SharedOptions configure NewShared. The zero value of each field picks the
// default.
type SharedOptions struct {
	// Store keeps the token buckets: limiter.NewRedis for a gateway with
	// several replicas; an in-memory store (limiter.NewMemory) when nil.
	Store limiter.Store
	// Registerer receives the filter's metrics; nil registers them nowhere.
	Registerer prometheus.Registerer
	// Logger receives the filter's logs; nil discards them.
	Logger *slog.Logger
	// StoreTimeout bounds one bucket decision (DefaultStoreTimeout).
	StoreTimeout time.Duration
	// MaxBodyBytes bounds an MCP request body (DefaultMaxBodyBytes).
	MaxBodyBytes int64
	// HTTPClient fetches OIDC discovery documents and key sets; a client
	// with DefaultOIDCTimeout when nil.
	HTTPClient *http.Client
	// TokenCacheSize bounds the verified-token cache (DefaultTokenCacheSize).
	TokenCacheSize int
	// TokenCacheMaxAge bounds how long one verified token is trusted without
	// checking it again (DefaultTokenCacheMaxAge); never past its expiry.
	TokenCacheMaxAge time.Duration
	// FailOpenLogInterval is the least time between two log lines saying
	// the store fails (DefaultFailOpenLogInterval); a recovery is logged
	// once after each failure that was.
	FailOpenLogInterval time.Duration
}

// Shared holds what outlives a configuration: the bucket store, OIDC key sets
// and discovery results, verified tokens, metrics and the store's health.
// Every Filter built from one Shared uses these, so a reload that builds new
// Filters keeps their state. It is safe for concurrent use.
type Shared struct {
	store        limiter.Store
	storeTimeout time.Duration
	maxBodyBytes int64
	logger       *slog.Logger
	metrics      *metrics
	oidcCtx      context.Context // carries the HTTP client; never cancelled
	tokens       *tokenCache
	health       storeHealth

	mu          sync.Mutex
	keySets     map[string]*oidc.RemoteKeySet // by JWKS URL
	discoveries map[string]*discovery         // by issuer
}

// NewShared builds the long-lived part of the filter.
func NewShared(opts SharedOptions) (*Shared, error) {
	if opts.StoreTimeout < 0 || opts.MaxBodyBytes < 0 || opts.TokenCacheSize < 0 || opts.TokenCacheMaxAge < 0 || opts.FailOpenLogInterval < 0 {
		return nil, errors.New("filter: SharedOptions durations and sizes must not be negative (zero picks the default)")
	}
	s := &Shared{
		store:        opts.Store,
		storeTimeout: cmpOr(opts.StoreTimeout, DefaultStoreTimeout),
		maxBodyBytes: cmpOr(opts.MaxBodyBytes, DefaultMaxBodyBytes),
		logger:       opts.Logger,
		keySets:      map[string]*oidc.RemoteKeySet{},
		discoveries:  map[string]*discovery{},
	}
	if s.store == nil {
		s.store = limiter.NewMemory(limiter.MemoryOptions{})
	}
	if s.logger == nil {
		s.logger = slog.New(slog.DiscardHandler)
	}
	s.health.logger = s.logger
	s.health.interval = cmpOr(opts.FailOpenLogInterval, DefaultFailOpenLogInterval)
	client := opts.HTTPClient
	if client == nil {
		client = &http.Client{Timeout: DefaultOIDCTimeout}
	}
	s.oidcCtx = oidc.ClientContext(context.Background(), client)
	cache, err := lru.New[tokenKey, verifiedToken](cmpOr(opts.TokenCacheSize, DefaultTokenCacheSize))
	if err != nil {
		return nil, fmt.Errorf("filter: token cache: %w", err)
	}
	s.tokens = &tokenCache{entries: cache, maxAge: cmpOr(opts.TokenCacheMaxAge, DefaultTokenCacheMaxAge)}
	if s.metrics, err = newMetrics(opts.Registerer); err != nil {
		return nil, fmt.Errorf("filter: %w", err)
	}
	return s, nil
}

func cmpOr[T comparable](v, def T) T {
	var zero T
	if v == zero {
		return def
	}
	return v
}

// remoteKeySet returns the one key set for jwksURL, made on first use.
func (s *Shared) remoteKeySet(jwksURL string) *oidc.RemoteKeySet {
	s.mu.Lock()
	defer s.mu.Unlock()
	ks, ok := s.keySets[jwksURL]
	if !ok {
		// The key set fetches lazily, on the first token it checks, with
		// s.oidcCtx, which outlives any request.
		ks = oidc.NewRemoteKeySet(s.oidcCtx, jwksURL)
		s.keySets[jwksURL] = ks
	}
	return ks
}

// discovery is the outcome of looking up one issuer's OpenID configuration.
type discovery struct {
	issuer string

	mu      sync.Mutex
	keys    *oidc.RemoteKeySet // set once discovery succeeded
	err     error              // the last failure
	retryAt time.Time          // no new attempt before this after a failure
	running chan struct{}      // closed when the attempt under way ends
}

// discoveredKeySet returns the key set of issuer, found through its
// discovery document. Discovery runs once, in the background with a context
// of its own, and requests wait for it only as long as their context lives.
func (s *Shared) discoveredKeySet(ctx context.Context, issuer string) (*oidc.RemoteKeySet, error) {
	s.mu.Lock()
	d, ok := s.discoveries[issuer]
	if !ok {
		d = &discovery{issuer: issuer}
		s.discoveries[issuer] = d
	}
	s.mu.Unlock()
	for {
		d.mu.Lock()
		if d.keys != nil {
			d.mu.Unlock()
			return d.keys, nil
		}
		running := d.running
		if running == nil {
			if d.err != nil && time.Now().Before(d.retryAt) {
				err := d.err
				d.mu.Unlock()
				return nil, err
			}
			running = make(chan struct{})
			d.running = running
			go s.discover(d, running)
		}
		d.mu.Unlock()
		select {
		case <-running:
		case <-ctx.Done():
			return nil, fmt.Errorf("discover OIDC issuer %s: %w", issuer, ctx.Err())
		}
	}
}

func (s *Shared) discover(d *discovery, done chan struct{}) {
	ctx, cancel := context.WithTimeout(s.oidcCtx, DefaultOIDCTimeout)
	defer cancel()
	keys, err := func() (*oidc.RemoteKeySet, error) {
		p, err := oidc.NewProvider(ctx, d.issuer)
		if err != nil {
			return nil, err
		}
		var meta struct {
			JWKSURI string `json:"jwks_uri"`
		}
		if err := p.Claims(&meta); err != nil {
			return nil, err
		}
		if meta.JWKSURI == "" {
			return nil, errors.New("the discovery document has no jwks_uri")
		}
		return s.remoteKeySet(meta.JWKSURI), nil
	}()
	d.mu.Lock()
	defer d.mu.Unlock()
	d.running = nil
	close(done)
	if err != nil {
		d.err = fmt.Errorf("discover OIDC issuer %s: %w", d.issuer, err)
		d.retryAt = time.Now().Add(discoveryRetryDelay)
		s.logger.Warn("OIDC discovery failed; requests to servers using this issuer get 503 until it succeeds",
			"issuer", d.issuer, "error", err, "retryIn", discoveryRetryDelay)
		return
	}
	d.keys, d.err = keys, nil
}

// storeHealth follows whether the bucket store works, to log when it starts
// failing and when it recovers rather than once per request. While the store
// flaps, at most one line about a failure is written per interval, and a
// recovery is logged only when the failure before it was.
type storeHealth struct {
	logger   *slog.Logger
	interval time.Duration
	failing  atomic.Bool // read without the lock on every decision

	mu          sync.Mutex
	failLogged  bool      // the current failure has been logged
	lastFailLog time.Time // when a failure was last logged
	unlogged    int64     // fail-opens since the last log line
}

// failed records one fail-open.
func (h *storeHealth) failed(server string, err error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.unlogged++
	now := time.Now()
	if !h.lastFailLog.IsZero() && now.Sub(h.lastFailLog) < h.interval {
		h.failing.Store(true)
		return
	}
	msg := "rate-limit store failing; allowing requests without limits (fail-open)"
	if h.failing.Load() {
		msg = "rate-limit store still failing; allowing requests without limits (fail-open)"
	}
	h.logger.Warn(msg, "server", server, "error", err, "failOpenRequests", h.unlogged)
	h.failing.Store(true)
	h.failLogged, h.lastFailLog, h.unlogged = true, now, 0
}

// succeeded records a decision the store made.
func (h *storeHealth) succeeded() {
	if !h.failing.Load() {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if !h.failing.Load() {
		return
	}
	h.failing.Store(false)
	if h.failLogged {
		h.logger.Info("rate-limit store recovered; limits apply again", "failOpenRequests", h.unlogged)
		h.failLogged, h.unlogged = false, 0
	}
}
