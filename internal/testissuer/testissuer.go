// Package testissuer is an OIDC issuer and OAuth 2.0 authorization server
// for tests: on loopback it serves its metadata and JWKS, signs RS256 tokens
// for any user, runs the authorization code flow with PKCE for one public
// client, approving every request at once as a fixed user, and exchanges
// its own tokens for others (RFC 8693) for one confidential client.
package testissuer

import (
	"cmp"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
)

// ClientID is the one client the authorization server knows: a public
// client (no secret, token_endpoint_auth_method "none") that may use any
// http redirect URI on a loopback address, as a native app does (RFC 8252
// section 7.3). There is no dynamic client registration.
const ClientID = "testissuer-client"

// ExchangeClientID and ExchangeClientSecret are the confidential client
// that may exchange tokens (RFC 8693), authenticated with HTTP Basic.
const (
	ExchangeClientID     = "testissuer-exchanger"
	ExchangeClientSecret = "exchanger-secret" //nolint:gosec // a test client's secret, published on purpose
)

// DefaultUser is the user the authorization endpoint approves as until
// SetUser names another.
const DefaultUser = "alice"

// Issuer is a running test issuer. It is safe for concurrent use.
type Issuer struct {
	server      *httptest.Server
	jwksFetches atomic.Int64

	mu        sync.Mutex
	published []jose.JSONWebKey // the public keys the JWKS serves
	key       *rsa.PrivateKey   // signs Token
	keyID     string            // the kid of key
	user      string            // whom the authorization endpoint approves as
	codes     map[string]grant  // authorization codes not yet redeemed
	issued    []IssuedToken     // what the token endpoint issued, in order
}

// grant is what an authorization code stands for until it is redeemed.
type grant struct {
	user          string
	redirectURI   string
	codeChallenge string // S256 of the client's verifier
	resource      string // RFC 8707, "" when not asked for
	scope         string
}

// IssuedToken describes a token the token endpoint issued.
type IssuedToken struct {
	User     string // the sub claim
	ClientID string
	Resource string // the resource parameter (RFC 8707), "" when none was given
	Audience string // the aud claim: Resource, or ClientID without one
	Scope    string // the scope claim, "" when none was asked for
}

// Start starts an issuer on a loopback port, with one key, "test".
func Start() (*Issuer, error) {
	i := &Issuer{user: DefaultUser, codes: map[string]grant{}}
	if err := i.AddKey("test"); err != nil {
		return nil, err
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/.well-known/openid-configuration", func(w http.ResponseWriter, _ *http.Request) {
		meta := i.metadata()
		// Required by OpenID Connect Discovery, meaningless to RFC 8414.
		meta["subject_types_supported"] = []string{"public"}
		meta["id_token_signing_alg_values_supported"] = []string{string(jose.RS256)}
		writeJSON(w, http.StatusOK, meta)
	})
	mux.HandleFunc("/.well-known/oauth-authorization-server", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, i.metadata())
	})
	mux.HandleFunc("/jwks.json", func(w http.ResponseWriter, _ *http.Request) {
		i.jwksFetches.Add(1)
		i.mu.Lock()
		set := jose.JSONWebKeySet{Keys: append([]jose.JSONWebKey(nil), i.published...)}
		i.mu.Unlock()
		writeJSON(w, http.StatusOK, set)
	})
	mux.HandleFunc("GET /authorize", i.authorize)
	mux.HandleFunc("POST /token", i.token)
	i.server = httptest.NewServer(mux)
	return i, nil
}

// URL is the issuer (the iss claim).
func (i *Issuer) URL() string { return i.server.URL }

// JWKSURL is where the signing keys are served.
func (i *Issuer) JWKSURL() string { return i.server.URL + "/jwks.json" }

// AuthorizationURL is the authorization endpoint.
func (i *Issuer) AuthorizationURL() string { return i.server.URL + "/authorize" }

// TokenURL is the token endpoint.
func (i *Issuer) TokenURL() string { return i.server.URL + "/token" }

// JWKSFetches is how many times the JWKS has been served.
func (i *Issuer) JWKSFetches() int64 { return i.jwksFetches.Load() }

// SetUser makes the authorization endpoint approve later requests as user.
func (i *Issuer) SetUser(user string) {
	i.mu.Lock()
	defer i.mu.Unlock()
	i.user = user
}

// IssuedTokens is what the token endpoint has issued so far, oldest first.
// Tokens made with Token or SignedToken are not among them.
func (i *Issuer) IssuedTokens() []IssuedToken {
	i.mu.Lock()
	defer i.mu.Unlock()
	return append([]IssuedToken(nil), i.issued...)
}

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

// TokenWithClaims signs a token like Token, with extra claims beside the
// registered ones (groups, scope, ...).
func (i *Issuer) TokenWithClaims(user, audience string, extra map[string]any) (string, error) {
	i.mu.Lock()
	key, kid := i.key, i.keyID
	i.mu.Unlock()
	return i.signWith(key, kid, user, audience, extra)
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
	return i.sign(key, kid, user, audience, "")
}

// sign signs a token for user and audience, valid for an hour, with key and
// kid (none when ""), and a scope claim unless scope is "".
func (i *Issuer) sign(key *rsa.PrivateKey, kid, user, audience, scope string) (string, error) {
	var extra map[string]any
	if scope != "" {
		extra = map[string]any{"scope": scope}
	}
	return i.signWith(key, kid, user, audience, extra)
}

// signWith signs a token for user and audience, valid for an hour, with key
// and kid (none when ""), and the extra claims.
func (i *Issuer) signWith(key *rsa.PrivateKey, kid, user, audience string, extra map[string]any) (string, error) {
	opts := (&jose.SignerOptions{}).WithType("JWT")
	if kid != "" {
		opts = opts.WithHeader("kid", kid)
	}
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.RS256, Key: key}, opts)
	if err != nil {
		return "", fmt.Errorf("make a signer: %w", err)
	}
	now := time.Now()
	builder := jwt.Signed(signer).Claims(jwt.Claims{
		Issuer: i.URL(), Subject: user, Audience: jwt.Audience{audience},
		IssuedAt: jwt.NewNumericDate(now), Expiry: jwt.NewNumericDate(now.Add(time.Hour)),
	})
	if len(extra) > 0 {
		builder = builder.Claims(extra)
	}
	return builder.Serialize()
}

// Close stops the issuer.
func (i *Issuer) Close() { i.server.Close() }

// metadata is the authorization server's metadata (RFC 8414), which its
// OpenID configuration repeats.
func (i *Issuer) metadata() map[string]any {
	return map[string]any{
		"issuer":                                i.URL(),
		"authorization_endpoint":                i.AuthorizationURL(),
		"token_endpoint":                        i.TokenURL(),
		"jwks_uri":                              i.JWKSURL(),
		"response_types_supported":              []string{"code"},
		"grant_types_supported":                 []string{"authorization_code", grantTokenExchange},
		"code_challenge_methods_supported":      []string{"S256"},
		"token_endpoint_auth_methods_supported": []string{"none"},
		// The authorization response names the issuer (RFC 9207).
		"authorization_response_iss_parameter_supported": true,
	}
}

// authorize is the authorization endpoint (RFC 6749 section 4.1.1): it
// approves every valid request at once as the current user and redirects
// back with a code, or with an error when the request is wrong in a way the
// client should hear about.
func (i *Issuer) authorize(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	// Without a known client and a redirect URI it may use, there is nowhere
	// safe to send an error (RFC 6749 section 4.1.2.1).
	if q.Get("client_id") != ClientID {
		http.Error(w, fmt.Sprintf("unknown client_id %q: the only client is %q", q.Get("client_id"), ClientID), http.StatusBadRequest)
		return
	}
	redirect, err := loopbackRedirect(q.Get("redirect_uri"))
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	fail := func(code, description string) {
		back := redirect.Query()
		back.Set("error", code)
		back.Set("error_description", description)
		if state := q.Get("state"); state != "" {
			back.Set("state", state)
		}
		back.Set("iss", i.URL())
		redirect.RawQuery = back.Encode()
		http.Redirect(w, r, redirect.String(), http.StatusFound)
	}
	if q.Get("response_type") != "code" {
		fail("unsupported_response_type", "only response_type=code is supported")
		return
	}
	if q.Get("code_challenge") == "" || q.Get("code_challenge_method") != "S256" {
		fail("invalid_request", "PKCE is required: send code_challenge with code_challenge_method=S256")
		return
	}
	resource, err := oneResource(q["resource"])
	if err != nil {
		fail("invalid_target", err.Error())
		return
	}
	code := rand.Text()
	i.mu.Lock()
	i.codes[code] = grant{
		user:          i.user,
		redirectURI:   q.Get("redirect_uri"),
		codeChallenge: q.Get("code_challenge"),
		resource:      resource,
		scope:         q.Get("scope"),
	}
	i.mu.Unlock()
	back := redirect.Query()
	back.Set("code", code)
	if state := q.Get("state"); state != "" {
		back.Set("state", state)
	}
	back.Set("iss", i.URL())
	redirect.RawQuery = back.Encode()
	http.Redirect(w, r, redirect.String(), http.StatusFound)
}

// token is the token endpoint for the authorization code grant (RFC 6749
// section 4.1.3): it redeems a code once, for the client and redirect URI
// it was issued to and the PKCE verifier of its challenge (RFC 7636), and
// answers with a JWT whose aud is the resource asked for (RFC 8707).
func (i *Issuer) token(w http.ResponseWriter, r *http.Request) {
	if err := r.ParseForm(); err != nil {
		tokenError(w, http.StatusBadRequest, "invalid_request", fmt.Sprintf("read the form: %v", err))
		return
	}
	if r.PostForm.Get("grant_type") == grantTokenExchange {
		i.exchange(w, r)
		return
	}
	// The client is public: it authenticates with nothing, and a client
	// that tries to (golang.org/x/oauth2 first tries HTTP Basic) is told so.
	if r.Header.Get("Authorization") != "" {
		w.Header().Set("WWW-Authenticate", `Basic realm="testissuer"`)
		tokenError(w, http.StatusUnauthorized, "invalid_client", "the client is public: send client_id in the body and no Authorization header")
		return
	}
	form := r.PostForm
	if form.Get("grant_type") != "authorization_code" {
		tokenError(w, http.StatusBadRequest, "unsupported_grant_type", "only grant_type=authorization_code is supported")
		return
	}
	if form.Get("client_id") != ClientID {
		tokenError(w, http.StatusUnauthorized, "invalid_client", fmt.Sprintf("unknown client_id %q", form.Get("client_id")))
		return
	}
	// A code is spent by any attempt to redeem it, right or wrong.
	i.mu.Lock()
	g, ok := i.codes[form.Get("code")]
	delete(i.codes, form.Get("code"))
	i.mu.Unlock()
	switch {
	case !ok:
		tokenError(w, http.StatusBadRequest, "invalid_grant", "unknown or already redeemed code")
		return
	case form.Get("redirect_uri") != g.redirectURI:
		tokenError(w, http.StatusBadRequest, "invalid_grant", "redirect_uri differs from the authorization request's")
		return
	case !verifierMatches(form.Get("code_verifier"), g.codeChallenge):
		tokenError(w, http.StatusBadRequest, "invalid_grant", "code_verifier does not match the code_challenge")
		return
	}
	resource, err := oneResource(form["resource"])
	if err != nil {
		tokenError(w, http.StatusBadRequest, "invalid_target", err.Error())
		return
	}
	switch {
	case resource == "":
		resource = g.resource
	case g.resource != "" && resource != g.resource:
		tokenError(w, http.StatusBadRequest, "invalid_target", fmt.Sprintf("resource %q was not authorized; %q was", resource, g.resource))
		return
	}
	issued := IssuedToken{User: g.user, ClientID: ClientID, Resource: resource, Audience: cmp.Or(resource, ClientID), Scope: g.scope}
	i.mu.Lock()
	key, kid := i.key, i.keyID
	i.mu.Unlock()
	token, err := i.sign(key, kid, issued.User, issued.Audience, issued.Scope)
	if err != nil {
		tokenError(w, http.StatusInternalServerError, "server_error", err.Error())
		return
	}
	i.mu.Lock()
	i.issued = append(i.issued, issued)
	i.mu.Unlock()
	body := map[string]any{"access_token": token, "token_type": "Bearer", "expires_in": int(time.Hour.Seconds())}
	if issued.Scope != "" {
		body["scope"] = issued.Scope
	}
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, http.StatusOK, body)
}

// grantTokenExchange is the grant type of RFC 8693.
const grantTokenExchange = "urn:ietf:params:oauth:grant-type:token-exchange" //nolint:gosec // a grant type's URN

// exchange is the token endpoint for the token exchange grant (RFC 8693):
// the exchanging client authenticates with HTTP Basic, the subject token
// is one of this issuer's access tokens, unexpired, and the new token has
// the subject's sub, the audience asked for, and an act claim naming the
// client.
func (i *Issuer) exchange(w http.ResponseWriter, r *http.Request) {
	id, secret, ok := r.BasicAuth()
	if !ok || id != ExchangeClientID || subtle.ConstantTimeCompare([]byte(secret), []byte(ExchangeClientSecret)) != 1 {
		w.Header().Set("WWW-Authenticate", `Basic realm="testissuer"`)
		tokenError(w, http.StatusUnauthorized, "invalid_client", "the exchanging client must authenticate with HTTP Basic")
		return
	}
	form := r.PostForm
	if form.Get("subject_token_type") != "urn:ietf:params:oauth:token-type:access_token" {
		tokenError(w, http.StatusBadRequest, "invalid_request", "subject_token_type must be urn:ietf:params:oauth:token-type:access_token")
		return
	}
	audience := form.Get("audience")
	if audience == "" {
		tokenError(w, http.StatusBadRequest, "invalid_target", "audience is required")
		return
	}
	subject, err := i.verify(form.Get("subject_token"))
	if err != nil {
		tokenError(w, http.StatusBadRequest, "invalid_grant", "the subject token is not valid: "+err.Error())
		return
	}
	issued := IssuedToken{User: subject.Subject, ClientID: id, Audience: audience, Scope: form.Get("scope")}
	extra := map[string]any{"act": map[string]any{"sub": id}}
	if issued.Scope != "" {
		extra["scope"] = issued.Scope
	}
	i.mu.Lock()
	key, kid := i.key, i.keyID
	i.mu.Unlock()
	token, err := i.signWith(key, kid, issued.User, audience, extra)
	if err != nil {
		tokenError(w, http.StatusInternalServerError, "server_error", err.Error())
		return
	}
	i.mu.Lock()
	i.issued = append(i.issued, issued)
	i.mu.Unlock()
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, http.StatusOK, map[string]any{"access_token": token, "token_type": "Bearer", "expires_in": int(time.Hour.Seconds()),
		"issued_token_type": "urn:ietf:params:oauth:token-type:access_token"})
}

// verify checks that token is one of the issuer's, signed by a key it
// publishes, unexpired, and returns its claims.
func (i *Issuer) verify(token string) (jwt.Claims, error) {
	parsed, err := jwt.ParseSigned(token, []jose.SignatureAlgorithm{jose.RS256})
	if err != nil {
		return jwt.Claims{}, err
	}
	i.mu.Lock()
	keys := jose.JSONWebKeySet{Keys: append([]jose.JSONWebKey(nil), i.published...)}
	i.mu.Unlock()
	var claims jwt.Claims
	if err := parsed.Claims(keys, &claims); err != nil {
		return jwt.Claims{}, err
	}
	if err := claims.ValidateWithLeeway(jwt.Expected{Issuer: i.URL(), Time: time.Now()}, 0); err != nil {
		return jwt.Claims{}, err
	}
	return claims, nil
}

// loopbackRedirect parses a redirect URI the client may use: http, on a
// loopback address, without a fragment.
func loopbackRedirect(raw string) (*url.URL, error) {
	u, err := url.Parse(raw)
	if err != nil || raw == "" {
		return nil, fmt.Errorf("redirect_uri %q is not a URL", raw)
	}
	loopback := u.Hostname() == "127.0.0.1" || u.Hostname() == "::1" || u.Hostname() == "localhost"
	if u.Scheme != "http" || !loopback || u.Fragment != "" {
		return nil, fmt.Errorf("redirect_uri %q: want an http URL on a loopback address, without a fragment", raw)
	}
	return u, nil
}

// oneResource is the resource parameter of a request (RFC 8707): "" when
// absent, else one absolute URI without a fragment.
func oneResource(values []string) (string, error) {
	switch len(values) {
	case 0:
		return "", nil
	case 1:
	default:
		return "", fmt.Errorf("%d resource parameters; this server grants one resource per token", len(values))
	}
	u, err := url.Parse(values[0])
	if err != nil || !u.IsAbs() || u.Fragment != "" {
		return "", fmt.Errorf("resource %q is not an absolute URI without a fragment", values[0])
	}
	return values[0], nil
}

// verifierMatches reports whether verifier is a well-formed PKCE code
// verifier whose S256 transform is challenge (RFC 7636 sections 4.1, 4.6).
func verifierMatches(verifier, challenge string) bool {
	if len(verifier) < 43 || len(verifier) > 128 {
		return false
	}
	for _, c := range verifier {
		if !strings.ContainsRune("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~", c) {
			return false
		}
	}
	sum := sha256.Sum256([]byte(verifier))
	return subtle.ConstantTimeCompare([]byte(base64.RawURLEncoding.EncodeToString(sum[:])), []byte(challenge)) == 1
}

// tokenError writes a token endpoint error response (RFC 6749 section 5.2).
func tokenError(w http.ResponseWriter, status int, code, description string) {
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, status, map[string]string{"error": code, "error_description": description})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
