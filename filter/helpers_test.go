package filter_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/toolgate/toolgate/filter"
	"github.com/toolgate/toolgate/filter/limiter"
)

const (
	testServer   = "team-a/github"
	testAudience = "toolgate"
)

// Keys are made once: RSA key generation is slow on a busy machine.
var (
	keysOnce         sync.Once
	rsaKey, otherRSA *rsa.PrivateKey
	ecKey            *ecdsa.PrivateKey
	errKeys          error
)

func makeKeys() {
	if rsaKey, errKeys = rsa.GenerateKey(rand.Reader, 2048); errKeys != nil {
		return
	}
	if otherRSA, errKeys = rsa.GenerateKey(rand.Reader, 2048); errKeys != nil {
		return
	}
	ecKey, errKeys = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
}

// testIssuer is an OIDC issuer on loopback: a discovery document, a key set
// holding an RSA key ("rsa") and an EC key ("ec"), and token signing.
type testIssuer struct {
	server        *httptest.Server
	discoveryHits atomic.Int64
}

func newIssuer(t testing.TB) *testIssuer {
	t.Helper()
	keysOnce.Do(makeKeys)
	if errKeys != nil {
		t.Fatalf("generate keys: %v", errKeys)
	}
	iss := &testIssuer{}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /.well-known/openid-configuration", func(w http.ResponseWriter, r *http.Request) {
		iss.discoveryHits.Add(1)
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{
			"issuer":                                iss.URL(),
			"jwks_uri":                              iss.JWKSURL(),
			"id_token_signing_alg_values_supported": []string{"RS256", "ES256"},
		})
	})
	mux.HandleFunc("GET /jwks", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{
			{Key: &rsaKey.PublicKey, KeyID: "rsa", Algorithm: string(jose.RS256), Use: "sig"},
			{Key: &ecKey.PublicKey, KeyID: "ec", Algorithm: string(jose.ES256), Use: "sig"},
		}})
	})
	iss.server = httptest.NewServer(mux)
	t.Cleanup(iss.server.Close)
	return iss
}

func (i *testIssuer) URL() string     { return i.server.URL }
func (i *testIssuer) JWKSURL() string { return i.server.URL + "/jwks" }

// auth is the OIDC configuration of a server trusting this issuer through
// its JWKS URL.
func (i *testIssuer) auth() *filter.OIDCConfig {
	return &filter.OIDCConfig{Issuer: i.URL(), Audience: testAudience, JWKSURL: i.JWKSURL(), AllowInsecureHTTP: true}
}

type claims map[string]any

// claims are a valid token's claims for sub, changed by edits.
func (i *testIssuer) claims(sub string, edits ...func(claims)) claims {
	now := time.Now()
	c := claims{
		"iss": i.URL(),
		"aud": testAudience,
		"sub": sub,
		"iat": now.Unix(),
		"exp": now.Add(time.Hour).Unix(),
	}
	for _, edit := range edits {
		edit(c)
	}
	return c
}

// token is a valid RS256 token for sub, changed by edits.
func (i *testIssuer) token(t testing.TB, sub string, edits ...func(claims)) string {
	t.Helper()
	return sign(t, jose.RS256, rsaKey, "rsa", i.claims(sub, edits...))
}

func sign(t testing.TB, alg jose.SignatureAlgorithm, key any, kid string, c claims) string {
	t.Helper()
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: alg, Key: jose.JSONWebKey{Key: key, KeyID: kid, Algorithm: string(alg)}},
		(&jose.SignerOptions{}).WithType("JWT"))
	if err != nil {
		t.Fatalf("signer: %v", err)
	}
	raw, err := jwt.Signed(signer).Claims(map[string]any(c)).Serialize()
	if err != nil {
		t.Fatalf("sign: %v", err)
	}
	return raw
}

// clock is a frozen clock for the in-memory store, moved by tests.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func newClock() *clock { return &clock{now: time.Unix(1_700_000_000, 0)} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// backend is the MCP server behind the filter: it records what reaches it.
type backend struct {
	mu     sync.Mutex
	bodies [][]byte
	auths  []string // the Authorization header of each request, "" when absent
	heads  []http.Header
	hits   atomic.Int64
}

func (b *backend) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	b.hits.Add(1)
	body, err := io.ReadAll(r.Body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	if r.ContentLength != int64(len(body)) && r.Method == http.MethodPost {
		http.Error(w, fmt.Sprintf("Content-Length %d for a body of %d bytes", r.ContentLength, len(body)), http.StatusInternalServerError)
		return
	}
	b.mu.Lock()
	b.bodies = append(b.bodies, body)
	b.auths = append(b.auths, r.Header.Get("Authorization"))
	b.heads = append(b.heads, r.Header.Clone())
	b.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	_, _ = io.WriteString(w, `{"jsonrpc":"2.0","id":1,"result":{}}`)
}

// lastHeader is the header of the last request that reached the backend.
func (b *backend) lastHeader() http.Header {
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.heads) == 0 {
		return nil
	}
	return b.heads[len(b.heads)-1]
}

func (b *backend) last() []byte {
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.bodies) == 0 {
		return nil
	}
	return b.bodies[len(b.bodies)-1]
}

// harness is a filter in front of a recording backend, on an in-memory
// store with a frozen clock.
type harness struct {
	reg     *prometheus.Registry
	clock   *clock
	store   limiter.Store
	shared  *filter.Shared
	handler http.Handler
	backend *backend
}

type harnessOption func(*filter.SharedOptions)

func newHarness(t testing.TB, policy filter.Policy, opts ...harnessOption) *harness {
	t.Helper()
	h := &harness{reg: prometheus.NewRegistry(), clock: newClock(), backend: &backend{}}
	h.store = limiter.NewMemory(limiter.MemoryOptions{Now: h.clock.Now})
	so := filter.SharedOptions{Store: h.store, Registerer: h.reg, StoreTimeout: 5 * time.Second, Now: h.clock.Now}
	for _, o := range opts {
		o(&so)
	}
	h.store = so.Store
	shared, err := filter.NewShared(so)
	if err != nil {
		t.Fatalf("NewShared: %v", err)
	}
	h.shared = shared
	f, err := filter.New(policy, shared)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	h.handler = f.Wrap(h.backend)
	return h
}

// post sends body as an MCP POST with token (none when "") and headers
// given as name, value pairs.
func (h *harness) post(token, body string, headers ...string) *httptest.ResponseRecorder {
	r := httptest.NewRequest(http.MethodPost, "/mcp", strings.NewReader(body))
	r.Header.Set("Content-Type", "application/json")
	r.Header.Set("Accept", "application/json, text/event-stream")
	if token != "" {
		r.Header.Set("Authorization", "Bearer "+token)
	}
	for i := 0; i+1 < len(headers); i += 2 {
		r.Header.Set(headers[i], headers[i+1])
	}
	return h.serve(r)
}

func (h *harness) serve(r *http.Request) *httptest.ResponseRecorder {
	w := httptest.NewRecorder()
	h.handler.ServeHTTP(w, r)
	return w
}

// call is the body of a tools/call of tool with the given id.
func call(id int, tool string) string {
	return fmt.Sprintf(`{"jsonrpc":"2.0","id":%d,"method":"tools/call","params":{"name":%q,"arguments":{}}}`, id, tool)
}

// bucketHolds reports whether the bucket id of limit still holds tokens,
// taking them if so: a probe of what earlier requests consumed.
func (h *harness) bucketHolds(t testing.TB, id limiter.BucketID, limit limiter.Limit, tokens int64) bool {
	t.Helper()
	d, err := h.store.Take(context.Background(), []limiter.Demand{{Bucket: id, Limit: limit, Tokens: tokens}})
	if err != nil {
		t.Fatalf("probe %+v: %v", id, err)
	}
	return d.Allowed
}

// rpcResponse is a JSON-RPC error response as the filter writes it.
type rpcResponse struct {
	JSONRPC string          `json:"jsonrpc"`
	ID      json.RawMessage `json:"id"`
	Error   struct {
		Code    int    `json:"code"`
		Message string `json:"message"`
		Data    struct {
			RetryAfterSeconds int64 `json:"retryAfterSeconds"`
		} `json:"data"`
	} `json:"error"`
}

func decodeError(t testing.TB, w *httptest.ResponseRecorder) rpcResponse {
	t.Helper()
	if ct := w.Header().Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type = %q, want application/json", ct)
	}
	var resp rpcResponse
	if err := json.Unmarshal(w.Body.Bytes(), &resp); err != nil {
		t.Fatalf("decode %q: %v", w.Body.String(), err)
	}
	if resp.JSONRPC != "2.0" {
		t.Errorf("jsonrpc = %q in %s", resp.JSONRPC, w.Body.String())
	}
	return resp
}

// metricValue reads one series of a counter (its value) or a histogram (its
// sample count) from reg; 0 when absent.
func metricValue(t testing.TB, reg prometheus.Gatherer, name string, labels map[string]string) float64 {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	for _, mf := range families {
		if mf.GetName() != name {
			continue
		}
	series:
		for _, m := range mf.GetMetric() {
			got := map[string]string{}
			for _, l := range m.GetLabel() {
				got[l.GetName()] = l.GetValue()
			}
			for k, v := range labels {
				if got[k] != v {
					continue series
				}
			}
			if m.GetHistogram() != nil {
				return float64(m.GetHistogram().GetSampleCount())
			}
			if m.GetGauge() != nil {
				return m.GetGauge().GetValue()
			}
			return m.GetCounter().GetValue()
		}
	}
	return 0
}

// logRecords keeps the log records of a test.
type logRecords struct {
	mu      sync.Mutex
	records []slog.Record
}

func (l *logRecords) Enabled(context.Context, slog.Level) bool { return true }
func (l *logRecords) Handle(_ context.Context, r slog.Record) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.records = append(l.records, r)
	return nil
}
func (l *logRecords) WithAttrs([]slog.Attr) slog.Handler { return l }
func (l *logRecords) WithGroup(string) slog.Handler      { return l }

// messages returns the messages logged at level or above.
func (l *logRecords) messages(level slog.Level) []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
	for _, r := range l.records {
		if r.Level >= level {
			out = append(out, r.Message)
		}
	}
	return out
}

func limit(maxTokens int64, refill time.Duration) *limiter.Limit {
	return &limiter.Limit{MaxTokens: maxTokens, RefillPeriod: refill}
}
