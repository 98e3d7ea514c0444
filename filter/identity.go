package filter

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	lru "github.com/hashicorp/golang-lru/v2"

	"github.com/toolgate/toolgate/filter/authz"
)

// signingAlgs are the JWS algorithms a token may be signed with: every
// asymmetric one go-oidc knows. A key's type must still match the algorithm,
// so accepting several does not let one stand in for another.
var signingAlgs = []string{
	oidc.RS256, oidc.RS384, oidc.RS512,
	oidc.ES256, oidc.ES384, oidc.ES512,
	oidc.PS256, oidc.PS384, oidc.PS512,
	oidc.EdDSA,
}

// authenticator names the caller of a server with auth.
type authenticator struct {
	shared *Shared
	config OIDCConfig
	// cacheScope makes a token verified for one issuer, audience and claim
	// unusable from the cache by a server that checks another.
	cacheScope string
	verifier   atomic.Pointer[verifier] // nil until the key set is known
}

// verifier checks tokens against one key set.
type verifier struct {
	keys *keySet
	*oidc.IDTokenVerifier
}

func newAuthenticator(shared *Shared, config OIDCConfig) *authenticator {
	if config.UserClaim == "" {
		config.UserClaim = DefaultUserClaim
	}
	a := &authenticator{
		shared:     shared,
		config:     config,
		cacheScope: strings.Join([]string{config.Issuer, config.Audience, config.JWKSURL, config.UserClaim}, "\x00"),
	}
	if config.JWKSURL != "" {
		a.verifier.Store(a.newVerifier(shared.keySet(config.JWKSURL)))
	}
	return a
}

func (a *authenticator) newVerifier(keys *keySet) *verifier {
	return &verifier{keys: keys, IDTokenVerifier: oidc.NewVerifier(a.config.Issuer, keys, &oidc.Config{
		// The audience is checked in identify: the MCPServer's audience or
		// the resource's URL (RFC 8707) will do.
		SkipClientIDCheck:    true,
		SupportedSigningAlgs: signingAlgs,
	})}
}

// currentVerifier returns the verifier of the issuer's key set: the
// configured JWKS URL's, or the one discovery found last (discovery is
// looked up again now and then, and may move the key set).
func (a *authenticator) currentVerifier(ctx context.Context) (*verifier, error) {
	v := a.verifier.Load()
	if a.config.JWKSURL != "" {
		return v, nil
	}
	keys, err := a.shared.discoveredKeySet(ctx, a.config.Issuer)
	if err != nil {
		return nil, err
	}
	if v == nil || v.keys != keys {
		v = a.newVerifier(keys)
		a.verifier.Store(v)
	}
	return v, nil
}

// authFailure says why a request has no identity.
type authFailure struct {
	status int // 401, or 503 when the issuer cannot be reached
	// errorCode is the RFC 6750 error code; empty when the request carried
	// no bearer token at all.
	errorCode   string
	description string // for error_description: no quotes or backslashes
	err         error  // the underlying error, for the log
}

// caller is who a verified token names: the user (the configured claim)
// and all the token's claims, for authorization.
type caller struct {
	user   string
	claims map[string]any
	// decisions remembers the authorization decisions of the caller's
	// token; nil for an anonymous caller.
	decisions *authz.Memo
}

// identify returns the caller, from the request's bearer token. Only the
// Authorization header is read.
//
// The token's aud must hold the configured audience, or resource when it is
// not "": the configured URL of the protected resource (RFC 8707, as MCP
// clients ask for it). Both come from configuration, never from the
// request: a Host the client chose would let it pick the audience, and
// present a token minted for another service.
func (a *authenticator) identify(ctx context.Context, r *http.Request, resource string) (caller, *authFailure) {
	values := r.Header["Authorization"]
	if len(values) == 0 {
		return caller{}, &authFailure{status: http.StatusUnauthorized, description: "a bearer token is required"}
	}
	if len(values) > 1 {
		return caller{}, invalidToken("more than one Authorization header", nil)
	}
	scheme, token, ok := strings.Cut(values[0], " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		// RFC 6750 section 3.1: no error code for an unsupported scheme.
		return caller{}, &authFailure{status: http.StatusUnauthorized, description: "a bearer token is required"}
	}
	token = strings.Trim(token, " ")
	if token == "" {
		return caller{}, invalidToken("the bearer token is empty", nil)
	}

	key := tokenKey{scope: a.cacheScope, resource: resource, sum: sha256.Sum256([]byte(token))}
	now := time.Now()
	if c, ok := a.shared.tokens.get(key, now); ok {
		return c, nil
	}

	verifier, err := a.currentVerifier(ctx)
	if err != nil {
		return caller{}, &authFailure{status: http.StatusServiceUnavailable, description: "the token issuer cannot be reached", err: err}
	}
	idToken, err := verifier.Verify(ctx, token)
	if err != nil {
		if _, expired := errors.AsType[*oidc.TokenExpiredError](err); expired {
			return caller{}, invalidToken("the token has expired", err)
		}
		return caller{}, invalidToken("the token is not valid for this server", err)
	}
	if !slices.Contains(idToken.Audience, a.config.Audience) && (resource == "" || !slices.Contains(idToken.Audience, resource)) {
		want := quotable(a.config.Audience)
		if resource != "" {
			want += " or " + quotable(resource)
		}
		return caller{}, invalidToken("the token is not for this server: its aud must name "+want, nil)
	}
	var claims map[string]any
	if err := idToken.Claims(&claims); err != nil {
		return caller{}, invalidToken("the token's claims cannot be read", err)
	}
	user, err := a.user(claims)
	if err != nil {
		return caller{}, invalidToken("the token does not name a user in claim "+quotable(a.config.UserClaim), err)
	}
	c := caller{user: user, claims: claims, decisions: new(authz.Memo)}
	a.shared.tokens.add(key, c, idToken.Expiry, now)
	return c, nil
}

// user returns the configured claim of a verified token's claims.
func (a *authenticator) user(claims map[string]any) (string, error) {
	v, ok := claims[a.config.UserClaim]
	if !ok {
		return "", fmt.Errorf("claim %s is missing", a.config.UserClaim)
	}
	user, ok := v.(string)
	if !ok || user == "" {
		return "", fmt.Errorf("claim %s is not a non-empty string", a.config.UserClaim)
	}
	return user, nil
}

func invalidToken(description string, err error) *authFailure {
	return &authFailure{status: http.StatusUnauthorized, errorCode: "invalid_token", description: description, err: err}
}

// quotable drops the characters a quoted-string in WWW-Authenticate cannot
// carry as they are.
func quotable(s string) string {
	return strings.Map(func(r rune) rune {
		if r == '"' || r == '\\' || r < 0x20 || r > 0x7e {
			return -1
		}
		return r
	}, s)
}

// tokenKey names a verified token without keeping it: its SHA-256 and the
// checks it passed.
type tokenKey struct {
	scope    string
	resource string // a token whose aud names only the resource is valid there only
	sum      [sha256.Size]byte
}

type verifiedToken struct {
	caller   caller
	notAfter time.Time // the earlier of the token's expiry and the cache's max age
}

// tokenCache remembers verified tokens, bounded in number (least recently
// used go first) and each for no longer than the token lives. Expired
// entries are dropped when they are next looked up or pushed out by newer
// ones; the cache runs no goroutine.
type tokenCache struct {
	entries *lru.Cache[tokenKey, verifiedToken]
	maxAge  time.Duration
}

func (c *tokenCache) get(key tokenKey, now time.Time) (caller, bool) {
	v, ok := c.entries.Get(key)
	if !ok {
		return caller{}, false
	}
	if !now.Before(v.notAfter) {
		c.entries.Remove(key)
		return caller{}, false
	}
	return v.caller, true
}

func (c *tokenCache) add(key tokenKey, who caller, expiry, now time.Time) {
	notAfter := now.Add(c.maxAge)
	if expiry.Before(notAfter) {
		notAfter = expiry
	}
	if !now.Before(notAfter) {
		return
	}
	c.entries.Add(key, verifiedToken{caller: who, notAfter: notAfter})
}
