package filter

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/go-jose/go-jose/v4"
)

// maxJWKSBytes bounds a key set document; a larger one is refused, so that
// a misbehaving issuer cannot make the gateway read without end.
const maxJWKSBytes = 1 << 20

// signingAlgorithms is signingAlgs as go-jose names them.
var signingAlgorithms = func() []jose.SignatureAlgorithm {
	algs := make([]jose.SignatureAlgorithm, len(signingAlgs))
	for i, alg := range signingAlgs {
		algs[i] = jose.SignatureAlgorithm(alg)
	}
	return algs
}()

// keySet is the signing keys an issuer publishes at one JWKS URL; it
// implements oidc.KeySet. It fetches the keys on first use, and again when
// none of the keys it holds verifies a token (a new key ID is how an issuer
// rotates its keys, OpenID Connect Core section 10.1.1), but at most once
// per interval: oidc.RemoteKeySet fetches on every unknown key ID, so
// tokens with made-up key IDs made the gateway hammer the issuer. Tokens
// signed with a key it holds never wait for a fetch, concurrent requests
// that need one share it, and a failed fetch counts like any other, so an
// issuer that is down is not hammered either. It is safe for concurrent use.
type keySet struct {
	url      string
	client   *http.Client
	interval time.Duration    // the least time from the end of a fetch to the start of the next
	now      func() time.Time // the clock the interval is measured by
	logger   *slog.Logger

	mu        sync.Mutex
	keys      []jose.JSONWebKey // public keys of the last fetch that succeeded
	fetches   uint64            // fetches ended, whether they succeeded or not
	fetchedAt time.Time         // when the last fetch ended
	err       error             // why the last fetch failed; nil when it succeeded
	fetching  chan struct{}     // closed when the fetch under way ends; nil when none is
}

func newKeySet(url string, client *http.Client, interval time.Duration, now func() time.Time, logger *slog.Logger) *keySet {
	return &keySet{url: url, client: client, interval: interval, now: now, logger: logger}
}

// VerifySignature returns the payload of jwt when one of the issuer's keys
// verifies its signature: a key with the token's key ID, or any key when the
// token names none. It checks nothing else; oidc.IDTokenVerifier, which
// calls it, checks the algorithm and the claims.
func (k *keySet) VerifySignature(ctx context.Context, jwt string) ([]byte, error) {
	// A JWT is in the compact serialization (RFC 7519 section 7.2), which
	// has exactly one signature.
	jws, err := jose.ParseSignedCompact(jwt, signingAlgorithms)
	if err != nil {
		return nil, fmt.Errorf("parse the token: %w", err)
	}
	keys, seen := k.cached()
	k.refreshIfStale()
	if payload, ok := verifyWith(jws, keys); ok {
		return payload, nil
	}
	keyID := jws.Signatures[0].Header.KeyID
	keys, err = k.newerThan(ctx, seen)
	if err != nil {
		return nil, fmt.Errorf("no key verifies the token (key ID %q): %w", keyID, err)
	}
	if payload, ok := verifyWith(jws, keys); ok {
		return payload, nil
	}
	return nil, fmt.Errorf("no key published at %s verifies the token (key ID %q)", k.url, keyID)
}

// keySetMaxAge is how long keys fetched once are used before the set is
// fetched again in the background, so that a key the issuer withdrew (a
// compromised one) stops verifying within it.
const keySetMaxAge = time.Hour

// refreshIfStale starts a fetch in the background when the keys held are
// older than keySetMaxAge; they keep verifying meanwhile, and after a
// failed fetch (see fetch).
func (k *keySet) refreshIfStale() {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.fetches == 0 || k.fetching != nil || k.now().Sub(k.fetchedAt) < keySetMaxAge {
		return
	}
	k.fetching = make(chan struct{})
	go k.fetch(k.fetching) //nolint:gosec // not bound to the request that noticed: see fetch
}

// cached returns the keys held and how many fetches have ended.
func (k *keySet) cached() ([]jose.JSONWebKey, uint64) {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.keys, k.fetches
}

// newerThan returns keys from a fetch that ended after the first seen
// fetches: one that ended since, the one under way, or a new one when the
// last ended an interval ago or more (or never ran). It waits for the fetch
// as long as ctx lives; the fetch itself goes on without it. The error says
// why there are no newer keys: the fetch failed, or it is too early for
// another one.
func (k *keySet) newerThan(ctx context.Context, seen uint64) ([]jose.JSONWebKey, error) {
	k.mu.Lock()
	if k.fetches > seen {
		defer k.mu.Unlock()
		return k.keys, k.err
	}
	done := k.fetching
	if done == nil {
		if seen > 0 {
			if since := k.now().Sub(k.fetchedAt); since < k.interval {
				err := k.err
				k.mu.Unlock()
				if err == nil {
					err = fmt.Errorf("the keys of %s were fetched %s ago, and are fetched again after %s at the earliest",
						k.url, since.Round(time.Millisecond), k.interval)
				}
				return nil, err
			}
		}
		done = make(chan struct{})
		k.fetching = done
		go k.fetch(done) //nolint:gosec // shared by every waiting request: not bound to this one's context (see fetch)
	}
	k.mu.Unlock()
	select {
	case <-done:
	case <-ctx.Done():
		return nil, fmt.Errorf("wait for the keys of %s: %w", k.url, context.Cause(ctx))
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.keys, k.err
}

// fetch fetches the keys with a context of its own, so that the request
// that started it going away does not fail the others waiting for it, and
// closes done when it ends.
func (k *keySet) fetch(done chan struct{}) {
	ctx, cancel := context.WithTimeout(context.Background(), DefaultOIDCTimeout)
	defer cancel()
	keys, err := fetchKeys(ctx, k.client, k.url)

	k.mu.Lock()
	defer k.mu.Unlock()
	k.fetches++
	k.fetchedAt = k.now()
	k.fetching = nil
	if err != nil {
		// The keys held stay: tokens signed with them keep working while
		// the issuer cannot be reached.
		k.err = fmt.Errorf("fetch the keys of %s: %w", k.url, err)
		k.logger.Warn("fetching an OIDC key set failed; tokens signed with keys not fetched before get 401",
			"jwksURL", k.url, "error", err, "retryAfter", k.interval)
	} else {
		k.keys, k.err = keys, nil
	}
	close(done)
}

// fetchKeys reads the key set at url and returns the keys in it that can
// verify a token (see signatureKey).
func fetchKeys(ctx context.Context, client *http.Client, url string) ([]jose.JSONWebKey, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "application/jwk-set+json, application/json")
	// A cache on the way must not answer with the keys from before a
	// rotation.
	req.Header.Set("Cache-Control", "no-cache")
	resp, err := client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("the issuer answered %s", resp.Status)
	}
	doc, err := io.ReadAll(io.LimitReader(resp.Body, maxJWKSBytes+1))
	if err != nil {
		return nil, fmt.Errorf("read the key set: %w", err)
	}
	if len(doc) > maxJWKSBytes {
		return nil, fmt.Errorf("the key set is larger than %d bytes", maxJWKSBytes)
	}
	return parseKeySet(doc)
}

// parseKeySet returns the keys of a JWKS document that can verify a token.
// It skips the others, as RFC 7517 section 5 asks, but a set with none it
// can use is an error, so that the keys held before stay.
func parseKeySet(doc []byte) ([]jose.JSONWebKey, error) {
	var set struct {
		Keys []json.RawMessage `json:"keys"`
	}
	if err := json.Unmarshal(doc, &set); err != nil {
		return nil, fmt.Errorf("decode the key set: %w", err)
	}
	if len(set.Keys) == 0 {
		return nil, errors.New("the key set holds no keys")
	}
	if len(set.Keys) > maxKeysPerSet {
		// Every key may be tried against a token without a key ID: a set
		// this large is a mistake or an attack, not a rotation.
		return nil, fmt.Errorf("the key set holds %d keys, more than %d", len(set.Keys), maxKeysPerSet)
	}
	var keys []jose.JSONWebKey
	var skipped []error
	for i, raw := range set.Keys {
		key, err := signatureKey(raw)
		if err != nil {
			skipped = append(skipped, fmt.Errorf("key %d: %w", i, err))
			continue
		}
		keys = append(keys, key)
	}
	if len(keys) == 0 {
		return nil, fmt.Errorf("the key set holds no key usable to verify tokens: %w", errors.Join(skipped...))
	}
	return keys, nil
}

// signatureKey decodes one key of a key set: the public part of an
// asymmetric key whose use, when given, is "sig" and whose algorithm, when
// given, is one of signingAlgs.
func signatureKey(raw json.RawMessage) (jose.JSONWebKey, error) {
	var key jose.JSONWebKey
	if err := key.UnmarshalJSON(raw); err != nil {
		return jose.JSONWebKey{}, err
	}
	if key.Use != "" && key.Use != "sig" {
		return jose.JSONWebKey{}, fmt.Errorf("its use is %q, not \"sig\"", key.Use)
	}
	if key.Algorithm != "" && !slices.Contains(signingAlgs, key.Algorithm) {
		return jose.JSONWebKey{}, fmt.Errorf("its algorithm %q is not one of %v", key.Algorithm, signingAlgs)
	}
	public := key.Public()
	if !public.Valid() || !public.IsPublic() {
		return jose.JSONWebKey{}, fmt.Errorf("it is a %T, not a public key", key.Key)
	}
	return public, nil
}

// verifyWith returns the payload of jws when one of keys verifies it: a key
// with the token's key ID, or any key when the token names none. A key that
// names its algorithm verifies only tokens signed with that algorithm.
func verifyWith(jws *jose.JSONWebSignature, keys []jose.JSONWebKey) ([]byte, bool) {
	header := jws.Signatures[0].Header
	for _, key := range keys {
		if header.KeyID != "" && key.KeyID != header.KeyID {
			continue
		}
		if key.Algorithm != "" && key.Algorithm != header.Algorithm {
			continue
		}
		if payload, err := jws.Verify(key.Key); err == nil {
			return payload, true
		}
	}
	return nil, false
}

// maxKeysPerSet bounds the keys of one key set. Issuers publish a few (the
// current key and those being rotated in or out).
const maxKeysPerSet = 64

// sameOriginRedirects is the CheckRedirect of the client that fetches
// discovery documents and key sets: a redirect may change the path, never
// the scheme, host or port, so that an issuer's documents cannot send the
// gateway to plain HTTP or to another host (an address inside the cluster).
func sameOriginRedirects(req *http.Request, via []*http.Request) error {
	if len(via) >= 5 {
		return errors.New("stopped after 5 redirects")
	}
	first := via[0].URL
	if req.URL.Scheme != first.Scheme || req.URL.Host != first.Host {
		return fmt.Errorf("redirected from %s://%s to another origin, %s://%s", first.Scheme, first.Host, req.URL.Scheme, req.URL.Host)
	}
	return nil
}
