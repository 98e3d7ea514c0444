// Package testissuer is an OIDC issuer for tests: it serves a discovery
// document and a JWKS on loopback and signs RS256 tokens for any user.
package testissuer

import (
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
)

// Issuer is a running test issuer.
type Issuer struct {
	server *httptest.Server
	key    *rsa.PrivateKey
	signer jose.Signer
}

// Start starts an issuer on a loopback port.
func Start() (*Issuer, error) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, err
	}
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.RS256, Key: key},
		(&jose.SignerOptions{}).WithType("JWT").WithHeader("kid", "test"))
	if err != nil {
		return nil, err
	}
	i := &Issuer{key: key, signer: signer}
	mux := http.NewServeMux()
	mux.HandleFunc("/.well-known/openid-configuration", func(w http.ResponseWriter, _ *http.Request) {
		_ = json.NewEncoder(w).Encode(map[string]any{"issuer": i.URL(), "jwks_uri": i.JWKSURL()})
	})
	mux.HandleFunc("/jwks.json", func(w http.ResponseWriter, _ *http.Request) {
		_ = json.NewEncoder(w).Encode(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: &key.PublicKey, KeyID: "test", Algorithm: "RS256", Use: "sig"}}})
	})
	i.server = httptest.NewServer(mux)
	return i, nil
}

// URL is the issuer (the iss claim).
func (i *Issuer) URL() string { return i.server.URL }

// JWKSURL is where the signing keys are served.
func (i *Issuer) JWKSURL() string { return i.server.URL + "/jwks.json" }

// Token signs a token for user and audience, valid for an hour.
func (i *Issuer) Token(user, audience string) (string, error) {
	now := time.Now()
	return jwt.Signed(i.signer).Claims(jwt.Claims{
		Issuer: i.URL(), Subject: user, Audience: jwt.Audience{audience},
		IssuedAt: jwt.NewNumericDate(now), Expiry: jwt.NewNumericDate(now.Add(time.Hour)),
	}).Serialize()
}

// Close stops the issuer.
func (i *Issuer) Close() { i.server.Close() }
