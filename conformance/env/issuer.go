package env

import (
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
)

// Audience is the aud claim of the issuer's tokens, and what the suite's
// MCPServers require.
const Audience = "toolgate-conformance"

// issuerKeyID names the issuer's only signing key in its key set.
const issuerKeyID = "conformance-rs256"

// Issuer is an OpenID Connect issuer on loopback: a discovery document, a
// JSON Web Key Set with one RSA key, and RS256 tokens for any user.
type Issuer struct {
	// URL is the issuer (the iss claim), such as http://127.0.0.1:40000.
	URL string
	// JWKSURL serves the key set.
	JWKSURL string

	key    *rsa.PrivateKey
	signer jose.Signer
	server *http.Server
}

// StartIssuer serves a new issuer on a free port of ip (127.0.0.1 when
// empty).
func StartIssuer(ip string) (*Issuer, error) {
	if ip == "" {
		ip = "127.0.0.1"
	}
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, fmt.Errorf("issuer key: %w", err)
	}
	signer, err := jose.NewSigner(
		jose.SigningKey{Algorithm: jose.RS256, Key: jose.JSONWebKey{Key: key, KeyID: issuerKeyID, Algorithm: string(jose.RS256)}},
		(&jose.SignerOptions{}).WithType("JWT"))
	if err != nil {
		return nil, fmt.Errorf("issuer signer: %w", err)
	}
	ln, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
	if err != nil {
		return nil, fmt.Errorf("issuer listener: %w", err)
	}
	i := &Issuer{key: key, signer: signer}
	i.URL = "http://" + ln.Addr().String()
	i.JWKSURL = i.URL + "/jwks"

	mux := http.NewServeMux()
	mux.HandleFunc("GET /.well-known/openid-configuration", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, map[string]any{
			"issuer":                                i.URL,
			"jwks_uri":                              i.JWKSURL,
			"id_token_signing_alg_values_supported": []string{string(jose.RS256)},
		})
	})
	mux.HandleFunc("GET /jwks", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, jose.JSONWebKeySet{Keys: []jose.JSONWebKey{
			{Key: &key.PublicKey, KeyID: issuerKeyID, Algorithm: string(jose.RS256), Use: "sig"},
		}})
	})
	i.server = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = i.server.Serve(ln) }()
	return i, nil
}

// Token returns a valid token for user (the sub claim), good for an hour.
func (i *Issuer) Token(user string) (string, error) {
	now := time.Now()
	claims := jwt.Claims{
		Issuer:   i.URL,
		Subject:  user,
		Audience: jwt.Audience{Audience},
		IssuedAt: jwt.NewNumericDate(now),
		Expiry:   jwt.NewNumericDate(now.Add(time.Hour)),
	}
	raw, err := jwt.Signed(i.signer).Claims(claims).Serialize()
	if err != nil {
		return "", fmt.Errorf("sign a token for %s: %w", user, err)
	}
	return raw, nil
}

// Close stops serving.
func (i *Issuer) Close() error { return i.server.Close() }

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(v)
}
