package filter

import (
	"context"
	"errors"
	"fmt"
	"iter"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	lru "github.com/hashicorp/golang-lru/v2"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/toolgate/toolgate/filter/audit"
	"github.com/toolgate/toolgate/filter/limiter"
)

// Defaults of SharedOptions.
const (
	// DefaultStoreTimeout bounds one bucket decision; past it the request is
	// refused with 503 (the store is busy), never allowed.
	DefaultStoreTimeout = 50 * time.Millisecond
	// DefaultMaxBodyBytes bounds an MCP request body; a larger one gets 413.
	// It matches the MCP Go SDK's own default request limit.
	DefaultMaxBodyBytes = 4 << 20
	// DefaultMaxBodyBytesInFlight bounds the bytes of MCP request bodies
	// the process holds at once: 16 bodies of the largest size.
	DefaultMaxBodyBytesInFlight = 64 << 20
	// DefaultMaxBodyBytesPerConnection bounds the bytes of request bodies
	// one client connection holds at once: two of the largest size.
	DefaultMaxBodyBytesPerConnection = 2 * DefaultMaxBodyBytes
	// DefaultMaxBatch bounds how many messages one JSON-RPC batch may hold;
	// a larger one gets 400.
	DefaultMaxBatch = 128
	// DefaultBodyTimeout bounds how long a request body may take to
	// arrive; a slower one gets 408 and its connection is closed.
	DefaultBodyTimeout = 10 * time.Second
	// DefaultTokenCacheSize bounds how many verified tokens are remembered.
	DefaultTokenCacheSize = 10000
	// DefaultTokenCacheMaxAge bounds how long a verified token is trusted
	// without checking it again, whatever its expiry.
	DefaultTokenCacheMaxAge = 5 * time.Minute
	// DefaultOIDCTimeout bounds one OIDC discovery or key-set fetch.
	DefaultOIDCTimeout = 10 * time.Second
	// DefaultKeyRefreshInterval is the least time between two fetches of an
	// issuer's key set.
	DefaultKeyRefreshInterval = 10 * time.Second
)

// discoveryRefreshInterval is how long a successful OIDC discovery is used
// before the next request looks the issuer up again (in the background,
// keeping the key set found meanwhile), so that a moved jwks_uri is
// followed without a restart.
const discoveryRefreshInterval = time.Hour

// discoveryRetryDelay is how long a failed OIDC discovery is remembered
// before the next request tries again, so that an unreachable issuer is not
// asked once per request.
const discoveryRetryDelay = 5 * time.Second

// SharedOptions configure NewShared. The zero value of each field picks the
// default.
type SharedOptions struct {
	// Store keeps the token buckets: limiter.NewRedis for a gateway with
	// several replicas; an in-memory store (limiter.NewMemory) when nil.
	// While a store that reports itself unavailable (limiter.ErrUnavailable)
	// is down, decisions are made in a local in-memory store with the same
	// limits: per replica, never unlimited.
	Store limiter.Store
	// Registerer receives the filter's metrics; nil registers them nowhere.
	Registerer prometheus.Registerer
	// Logger receives the filter's logs; nil discards them.
	Logger *slog.Logger
	// StoreTimeout bounds one bucket decision (DefaultStoreTimeout): past
	// it the request gets 503.
	StoreTimeout time.Duration
	// MaxBodyBytes bounds an MCP request body (DefaultMaxBodyBytes).
	MaxBodyBytes int64
	// MaxBodyBytesInFlight bounds the bytes of request bodies held at once
	// across the process (DefaultMaxBodyBytesInFlight); a body that would
	// pass it gets 503 before it is read. At least MaxBodyBytes.
	MaxBodyBytesInFlight int64
	// MaxBodyBytesPerConnection bounds them per client connection
	// (DefaultMaxBodyBytesPerConnection, or MaxBodyBytes when that is
	// larger), for connections whose context came from WithConnection.
	MaxBodyBytesPerConnection int64
	// MaxBatch bounds the messages of one JSON-RPC batch (DefaultMaxBatch).
	MaxBatch int
	// BodyTimeout bounds how long a request body may take to arrive
	// (DefaultBodyTimeout).
	BodyTimeout time.Duration
	// HTTPClient fetches OIDC discovery documents and key sets; when nil, a
	// client with DefaultOIDCTimeout that follows redirects within one
	// origin only.
	HTTPClient *http.Client
	// TokenCacheSize bounds the verified-token cache (DefaultTokenCacheSize).
	TokenCacheSize int
	// TokenCacheMaxAge bounds how long one verified token is trusted without
	// checking it again (DefaultTokenCacheMaxAge); never past its expiry.
	TokenCacheMaxAge time.Duration
	// KeyRefreshInterval is the least time between two fetches of an
	// issuer's key set (DefaultKeyRefreshInterval). A token signed with a
	// key the gateway does not hold fetches the set again only once this has
	// passed since the last fetch, so forged tokens cannot make the gateway
	// hammer the issuer; a new key is accepted at most this long after the
	// first token signed with it is refused.
	KeyRefreshInterval time.Duration
	// Now is the clock KeyRefreshInterval is measured by; time.Now when
	// nil. Tests set it to move time.
	Now func() time.Time
	// Audit, when set, receives one record per decision (audit.Record).
	Audit *audit.Log
	// Origin names the gateway, route and client of a request for the
	// audit trail; when nil, only the client, as the peer's address.
	Origin func(*http.Request) Origin
}

// Origin is where a request came from, as the server in front of the filter
// knows it.
type Origin struct {
	Gateway, Route, Client string
}

// Shared holds what outlives a configuration: the bucket store and its local
// fallback, OIDC key sets and discovery results, verified tokens and metrics.
// Every Filter built from one Shared uses these, so a reload that builds new
// Filters keeps their state. It is safe for concurrent use.
type Shared struct {
	store        limiter.Store
	fallback     *limiter.Memory // decides while store is unavailable
	storeTimeout time.Duration
	maxBodyBytes int64
	// bodyBudget bounds the bytes of bodies held at once;
	// maxBodyBytesPerConnection, those of one connection.
	bodyBudget                *byteBudget
	maxBodyBytesPerConnection int64
	maxBatch                  int
	bodyTimeout               time.Duration
	logger                    *slog.Logger
	metrics                   *metrics
	audit                     *audit.Log
	origin                    func(*http.Request) Origin
	oidcCtx                   context.Context // carries the HTTP client; never cancelled
	tokens                    *tokenCache
	backendTokens             *backendTokens

	httpClient         *http.Client     // fetches key sets
	keyRefreshInterval time.Duration    // the least time between two fetches of a key set
	now                func() time.Time // the clock of keyRefreshInterval

	mu          sync.Mutex
	keySets     map[string]*keySet    // by JWKS URL
	discoveries map[string]*discovery // by issuer
}

// NewShared builds the long-lived part of the filter.
func NewShared(opts SharedOptions) (*Shared, error) {
	if opts.StoreTimeout < 0 || opts.MaxBodyBytes < 0 || opts.MaxBatch < 0 || opts.BodyTimeout < 0 ||
		opts.MaxBodyBytesInFlight < 0 || opts.MaxBodyBytesPerConnection < 0 ||
		opts.TokenCacheSize < 0 || opts.TokenCacheMaxAge < 0 || opts.KeyRefreshInterval < 0 {
		return nil, errors.New("filter: SharedOptions durations and sizes must not be negative (zero picks the default)")
	}
	s := &Shared{
		store:        opts.Store,
		fallback:     limiter.NewMemory(limiter.MemoryOptions{}),
		storeTimeout: cmpOr(opts.StoreTimeout, DefaultStoreTimeout),
		maxBodyBytes: cmpOr(opts.MaxBodyBytes, DefaultMaxBodyBytes),
		maxBatch:     cmpOr(opts.MaxBatch, DefaultMaxBatch),
		bodyTimeout:  cmpOr(opts.BodyTimeout, DefaultBodyTimeout),
		logger:       opts.Logger,
		audit:        opts.Audit,
		origin:       opts.Origin,
		keySets:      map[string]*keySet{},
		discoveries:  map[string]*discovery{},
	}
	if s.store == nil {
		s.store = limiter.NewMemory(limiter.MemoryOptions{})
	}
	inFlight := cmpOr(opts.MaxBodyBytesInFlight, DefaultMaxBodyBytesInFlight)
	if inFlight < s.maxBodyBytes {
		return nil, fmt.Errorf("filter: MaxBodyBytesInFlight %d is below MaxBodyBytes %d: no body of the largest size could be read", inFlight, s.maxBodyBytes)
	}
	s.bodyBudget = &byteBudget{limit: inFlight}
	s.maxBodyBytesPerConnection = cmpOr(opts.MaxBodyBytesPerConnection, max(DefaultMaxBodyBytesPerConnection, s.maxBodyBytes))
	if s.maxBodyBytesPerConnection < s.maxBodyBytes {
		return nil, fmt.Errorf("filter: MaxBodyBytesPerConnection %d is below MaxBodyBytes %d: no body of the largest size could be read", s.maxBodyBytesPerConnection, s.maxBodyBytes)
	}
	if s.logger == nil {
		s.logger = slog.New(slog.DiscardHandler)
	}
	client := opts.HTTPClient
	if client == nil {
		client = &http.Client{Timeout: DefaultOIDCTimeout, CheckRedirect: sameOriginRedirects}
	}
	s.oidcCtx = oidc.ClientContext(context.Background(), client)
	s.httpClient = client
	s.keyRefreshInterval = cmpOr(opts.KeyRefreshInterval, DefaultKeyRefreshInterval)
	s.now = opts.Now
	if s.now == nil {
		s.now = time.Now
	}
	cache, err := lru.New[tokenKey, verifiedToken](cmpOr(opts.TokenCacheSize, DefaultTokenCacheSize))
	if err != nil {
		return nil, fmt.Errorf("filter: token cache: %w", err)
	}
	s.tokens = &tokenCache{entries: cache, maxAge: cmpOr(opts.TokenCacheMaxAge, DefaultTokenCacheMaxAge)}
	// Backends' tokens are asked for with the same client: a token
	// endpoint, like an issuer, is reached with its own timeout.
	if s.backendTokens, err = newBackendTokens(client, cmpOr(opts.TokenCacheSize, DefaultTokenCacheSize)); err != nil {
		return nil, fmt.Errorf("filter: %w", err)
	}
	if s.metrics, err = newMetrics(opts.Registerer, s.store); err != nil {
		return nil, fmt.Errorf("filter: %w", err)
	}
	return s, nil
}

// Retain deletes what policies, the policies of the configuration now
// served, no longer use: the metric series of MCP servers they do not name,
// so that servers removed by reloads leave no series behind, and the key
// sets and discovery results of issuers none of them trusts. Call it after
// each configuration is applied, from the one place that applies them.
//
// A Filter of an earlier configuration may still serve in-flight requests
// for a removed server; it keeps counting into series that are no longer
// exported, and verifying with the key set it holds, which is harmless; a
// server or issuer that comes back starts afresh.
func (s *Shared) Retain(policies iter.Seq[*Policy]) {
	keep := map[serverLabels]bool{}
	jwksURLs, issuers := map[string]bool{}, map[string]bool{}
	for p := range policies {
		if namespace, name, ok := strings.Cut(p.Server, "/"); ok {
			keep[serverLabels{namespace, name}] = true
		}
		switch {
		case p.Auth == nil:
		case p.Auth.JWKSURL != "":
			jwksURLs[p.Auth.JWKSURL] = true
		default:
			issuers[p.Auth.Issuer] = true
		}
	}
	s.metrics.retain(keep)

	s.mu.Lock()
	defer s.mu.Unlock()
	for issuer, d := range s.discoveries {
		if !issuers[issuer] {
			delete(s.discoveries, issuer)
			continue
		}
		d.mu.Lock()
		if d.keys != nil {
			jwksURLs[d.keys.url] = true
		}
		d.mu.Unlock()
	}
	for url := range s.keySets {
		if !jwksURLs[url] {
			delete(s.keySets, url)
		}
	}
}

// issuerState counts the key sets and discovery results held, for tests.
func (s *Shared) issuerState() (keySets, discoveries int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.keySets), len(s.discoveries)
}

func cmpOr[T comparable](v, def T) T {
	var zero T
	if v == zero {
		return def
	}
	return v
}

// keySet returns the one key set for jwksURL, made on first use. It fetches
// the keys lazily, on the first token it checks.
func (s *Shared) keySet(jwksURL string) *keySet {
	s.mu.Lock()
	defer s.mu.Unlock()
	ks, ok := s.keySets[jwksURL]
	if !ok {
		ks = newKeySet(jwksURL, s.httpClient, s.keyRefreshInterval, s.now, s.logger)
		s.keySets[jwksURL] = ks
	}
	return ks
}

// discovery is the outcome of looking up one issuer's OpenID configuration.
type discovery struct {
	issuer string

	mu      sync.Mutex
	keys    *keySet       // set once discovery succeeded
	foundAt time.Time     // when keys was found
	err     error         // the last failure
	retryAt time.Time     // no new attempt before this after a failure
	running chan struct{} // closed when the attempt under way ends
}

// discoveredKeySet returns the key set of issuer, found through its
// discovery document. Discovery runs once, in the background with a context
// of its own, and requests wait for it only as long as their context lives.
func (s *Shared) discoveredKeySet(ctx context.Context, issuer string) (*keySet, error) {
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
			if d.running == nil && s.now().Sub(d.foundAt) >= discoveryRefreshInterval && !s.now().Before(d.retryAt) {
				// Look again in the background; this request and those
				// meanwhile use the keys found before.
				d.running = make(chan struct{})
				go s.discover(d, d.running)
			}
			keys := d.keys
			d.mu.Unlock()
			return keys, nil
		}
		running := d.running
		if running == nil {
			if d.err != nil && s.now().Before(d.retryAt) {
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
	keys, err := func() (*keySet, error) {
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
		if strings.HasPrefix(strings.ToLower(d.issuer), "https://") && !strings.HasPrefix(strings.ToLower(meta.JWKSURI), "https://") {
			return nil, fmt.Errorf("the discovery document's jwks_uri %q is not https://, as the issuer is", meta.JWKSURI)
		}
		return s.keySet(meta.JWKSURI), nil
	}()
	d.mu.Lock()
	defer d.mu.Unlock()
	d.running = nil
	close(done)
	if err != nil {
		d.err = fmt.Errorf("discover OIDC issuer %s: %w", d.issuer, err)
		d.retryAt = s.now().Add(discoveryRetryDelay)
		if d.keys != nil {
			s.logger.Warn("OIDC rediscovery failed; the key set found before stays in use",
				"issuer", d.issuer, "error", err, "retryIn", discoveryRetryDelay)
			return
		}
		s.logger.Warn("OIDC discovery failed; requests to servers using this issuer get 503 until it succeeds",
			"issuer", d.issuer, "error", err, "retryIn", discoveryRetryDelay)
		return
	}
	d.keys, d.err, d.foundAt = keys, nil, s.now()
}
