// Package testissuer is an OIDC issuer for tests: it serves a discovery
// document and a JWKS on loopback and signs RS256 tokens for any user.
package testissuer

import (
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
)

// Issuer is a running test issuer. It is safe for concurrent use.
type Issuer struct {
	server      *httptest.Server
	jwksFetches atomic.Int64

	mu        sync.Mutex
	published []jose.JSONWebKey // the public keys the JWKS serves
	key       *rsa.PrivateKey   // signs Token
	keyID     string            // the kid of key
}

// Start starts an issuer on a loopback port, with one key, "test".
func Start() (*Issuer, error) {
	i := &Issuer{}
	if err := i.AddKey("test"); err != nil {
		return nil, err
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/.well-known/openid-configuration", func(w http.ResponseWriter, _ *http.Request) {
		_ = json.NewEncoder(w).Encode(map[string]any{"issuer": i.URL(), "jwks_uri": i.JWKSURL()})
	})
	mux.HandleFunc("/jwks.json", func(w http.ResponseWriter, _ *http.Request) {
		i.jwksFetches.Add(1)
		i.mu.Lock()
		set := jose.JSONWebKeySet{Keys: append([]jose.JSONWebKey(nil), i.published...)}
		i.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(set)
	})
	i.server = httptest.NewServer(mux)
	return i, nil
}

// URL is the issuer (the iss claim).
func (i *Issuer) URL() string { return i.server.URL }

// JWKSURL is where the signing keys are served.
func (i *Issuer) JWKSURL() string { return i.server.URL + "/jwks.json" }

// JWKSFetches is how many times the JWKS has been served.
func (i *Issuer) JWKSFetches() int64 { return i.jwksFetches.Load() }

// AddKey makes a new RSA key and publishes it under kid beside the keys
// published before, as an issuer rotating its keys does; Token signs with it
// from now on.
func (i *Issuer) AddKey(kid string) error {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return fmt.Errorf("generate key %s: %w", kid, err)
	}
	i.mu.Lock()
	defer i.mu.Unlock()
	i.published = append(i.published, jose.JSONWebKey{Key: &key.PublicKey, KeyID: kid, Algorithm: string(jose.RS256), Use: "sig"})
	i.key, i.keyID = key, kid
	return nil
}

// Token signs a token for user and audience, valid for an hour, with the
// newest key.
func (i *Issuer) Token(user, audience string) (string, error) {
	i.mu.Lock()
	key, kid := i.key, i.keyID
	i.mu.Unlock()
	return i.SignedToken(key, kid, user, audience)
}

// SignedToken signs a token like Token, but with key (the newest key when
// nil) and kid in its header (no kid when ""), whether or not the issuer
// publishes them: tests forge tokens with it.
func (i *Issuer) SignedToken(key *rsa.PrivateKey, kid, user, audience string) (string, error) {
	if key == nil {
		i.mu.Lock()
		key = i.key
		i.mu.Unlock()
	}
	opts := (&jose.SignerOptions{}).WithType("JWT")
	if kid != "" {
		opts = opts.WithHeader("kid", kid)
	}
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.RS256, Key: key}, opts)
	if err != nil {
		return "", fmt.Errorf("make a signer: %w", err)
	}
	now := time.Now()
	return jwt.Signed(signer).Claims(jwt.Claims{
		Issuer: i.URL(), Subject: user, Audience: jwt.Audience{audience},
		IssuedAt: jwt.NewNumericDate(now), Expiry: jwt.NewNumericDate(now.Add(time.Hour)),
	}).Serialize()
}

// Close stops the issuer.
func (i *Issuer) Close() { i.server.Close() }
