package filter_test

import (
	"encoding/base64"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"

	"github.com/toolgate/toolgate/filter"
	"github.com/toolgate/toolgate/filter/limiter"
)

func TestTokensThatCannotBeTrustedGet401(t *testing.T) {
	iss := newIssuer(t)
	const missing = `Bearer realm="toolgate", resource_metadata="http://example.com/.well-known/oauth-protected-resource/mcp"`
	invalid := func(description string) string {
		return `Bearer realm="toolgate", resource_metadata="http://example.com/.well-known/oauth-protected-resource/mcp", error="invalid_token", error_description="` + description + `"`
	}
	unsigned := base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"none","typ":"JWT"}`)) + "." +
		base64.RawURLEncoding.EncodeToString([]byte(`{"iss":"`+iss.URL()+`","aud":"toolgate","sub":"alice","exp":4102444800}`)) + "."
	tests := []struct {
		name          string
		authorization string // the whole header; none when ""
		challenge     string
	}{
		{"a missing token", "", missing},
		{"another scheme", "Basic YWxpY2U6c2VjcmV0", missing},
		{"an empty bearer token", "Bearer ", invalid("the bearer token is empty")},
		{"an expired token", "Bearer " + iss.token(t, "alice", func(c claims) {
			c["exp"] = time.Now().Add(-time.Minute).Unix()
			c["iat"] = time.Now().Add(-time.Hour).Unix()
		}), invalid("the token has expired")},
		{"a token for another audience", "Bearer " + iss.token(t, "alice", func(c claims) { c["aud"] = "another-server" }), invalid("the token is not for this server: its aud must name toolgate")},
		{"a token from another issuer", "Bearer " + iss.token(t, "alice", func(c claims) { c["iss"] = "https://evil.example" }), invalid("the token is not valid for this server")},
		{"a token signed by another key under a trusted key id", "Bearer " + sign(t, jose.RS256, otherRSA, "rsa", iss.claims("alice")), invalid("the token is not valid for this server")},
		{"a token signed by a key the issuer does not publish", "Bearer " + sign(t, jose.RS256, otherRSA, "unknown", iss.claims("alice")), invalid("the token is not valid for this server")},
		{"a token signed with a shared secret", "Bearer " + sign(t, jose.HS256, []byte("0123456789abcdef0123456789abcdef"), "rsa", iss.claims("alice")), invalid("the token is not valid for this server")},
		{"an unsigned token", "Bearer " + unsigned, invalid("the token is not valid for this server")},
		{"a token without exp", "Bearer " + iss.token(t, "alice", func(c claims) { delete(c, "exp") }), invalid("the token has expired")},
		{"a token without a user", "Bearer " + iss.token(t, ""), invalid(`the token does not name a user in claim sub`)},
		{"not a JWT", "Bearer not-a-jwt", invalid("the token is not valid for this server")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, filter.Policy{Server: testServer, Auth: iss.auth(), PerUser: limit(10, time.Minute)})
			r := httptest.NewRequest(http.MethodPost, "/mcp", strings.NewReader(call(1, "t")))
			r.Header.Set("Content-Type", "application/json")
			if tt.authorization != "" {
				r.Header.Set("Authorization", tt.authorization)
			}
			w := h.serve(r)
			if w.Code != http.StatusUnauthorized {
				t.Fatalf("status %d, want 401: %s", w.Code, w.Body)
			}
			if got := w.Header().Get("WWW-Authenticate"); got != tt.challenge {
				t.Errorf("WWW-Authenticate = %s\nwant                %s", got, tt.challenge)
			}
			if resp := decodeError(t, w); resp.Error.Code != filter.CodeUnauthenticated || string(resp.ID) != "null" {
				t.Errorf("error %d with id %s, want %d with id null", resp.Error.Code, resp.ID, filter.CodeUnauthenticated)
			}
			if h.backend.hits.Load() != 0 {
				t.Errorf("the backend saw the request")
			}
		})
	}
}

func TestAValidTokenNamesTheCaller(t *testing.T) {
	iss := newIssuer(t)
	perUser := limit(1, time.Hour)
	tests := []struct {
		name  string
		auth  func() *filter.OIDCConfig
		token func(t *testing.T) string
		user  string
	}{
		{"an RS256 token through the JWKS URL", iss.auth, func(t *testing.T) string { return iss.token(t, "alice") }, "alice"},
		{"an ES256 token through the JWKS URL", iss.auth, func(t *testing.T) string { return sign(t, jose.ES256, ecKey, "ec", iss.claims("alice")) }, "alice"},
		{"a token whose audience is one of several", iss.auth, func(t *testing.T) string {
			return iss.token(t, "alice", func(c claims) { c["aud"] = []string{"other", testAudience} })
		}, "alice"},
		{"a token through discovery", func() *filter.OIDCConfig {
			return &filter.OIDCConfig{Issuer: iss.URL(), Audience: testAudience, AllowInsecureHTTP: true}
		}, func(t *testing.T) string { return sign(t, jose.ES256, ecKey, "ec", iss.claims("alice")) }, "alice"},
		{"a configured user claim", func() *filter.OIDCConfig {
			a := iss.auth()
			a.UserClaim = "email"
			return a
		}, func(t *testing.T) string {
			return iss.token(t, "alice", func(c claims) { c["email"] = "alice@example.com" })
		}, "alice@example.com"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, filter.Policy{Server: testServer, Auth: tt.auth(), PerUser: perUser})
			token := tt.token(t)
			for i := 1; i <= 2; i++ { // the second request finds the token in the cache
				w := h.post(token, call(i, "t"))
				want := http.StatusOK
				if i == 2 {
					want = http.StatusTooManyRequests
				}
				if w.Code != want {
					t.Fatalf("request %d: status %d, want %d: %s", i, w.Code, want, w.Body)
				}
			}
			// The caller's bucket is the one that was used.
			if h.bucketHolds(t, limiter.BucketID{Server: testServer, User: tt.user}, *perUser, 1) {
				t.Errorf("the bucket of %q is untouched", tt.user)
			}
		})
	}
}

func TestAConfiguredUserClaimMustBeANonEmptyString(t *testing.T) {
	iss := newIssuer(t)
	auth := iss.auth()
	auth.UserClaim = "email"
	h := newHarness(t, filter.Policy{Server: testServer, Auth: auth})
	for name, value := range map[string]any{"missing": nil, "empty": "", "a number": 7, "a list": []string{"a"}} {
		token := iss.token(t, "alice", func(c claims) {
			if value != nil {
				c["email"] = value
			}
		})
		if w := h.post(token, call(1, "t")); w.Code != http.StatusUnauthorized {
			t.Errorf("email %s: status %d, want 401", name, w.Code)
		}
	}
}

func TestNoHeaderButAuthorizationChoosesTheUser(t *testing.T) {
	iss := newIssuer(t)
	h := newHarness(t, filter.Policy{Server: testServer, Auth: iss.auth(), PerUser: limit(1, time.Hour)})
	alice := iss.token(t, "alice")
	if w := h.post(alice, call(1, "t")); w.Code != http.StatusOK {
		t.Fatalf("first call: status %d", w.Code)
	}
	w := h.post(alice, call(2, "t"),
		"X-User", "bob", "X-Forwarded-User", "bob", "X-Remote-User", "bob", "X-Auth-Request-User", "bob",
		"Mcp-Session-Id", "bob", "Cookie", "user=bob")
	if w.Code != http.StatusTooManyRequests {
		t.Errorf("alice claiming to be bob in headers: status %d, want 429", w.Code)
	}
}

func TestDiscoveryIsSharedAcrossReloads(t *testing.T) {
	iss := newIssuer(t)
	h := newHarness(t, filter.Policy{Server: testServer, Auth: &filter.OIDCConfig{Issuer: iss.URL(), Audience: testAudience, AllowInsecureHTTP: true}})
	if w := h.post(iss.token(t, "alice"), call(1, "t")); w.Code != http.StatusOK {
		t.Fatalf("status %d: %s", w.Code, w.Body)
	}
	// A reload builds a new filter from the same Shared.
	f, err := filter.New(filter.Policy{Server: testServer, Auth: &filter.OIDCConfig{Issuer: iss.URL(), Audience: testAudience, AllowInsecureHTTP: true}}, h.shared)
	if err != nil {
		t.Fatal(err)
	}
	h.handler = f.Wrap(h.backend)
	if w := h.post(iss.token(t, "bob"), call(2, "t")); w.Code != http.StatusOK {
		t.Fatalf("after the reload: status %d: %s", w.Code, w.Body)
	}
	if got := iss.discoveryHits.Load(); got != 1 {
		t.Errorf("the discovery document was fetched %d times, want 1", got)
	}
}

func TestAnIssuerThatCannotBeReachedGets503(t *testing.T) {
	down := httptest.NewServer(http.NotFoundHandler())
	down.Close()
	h := newHarness(t, filter.Policy{Server: testServer, Auth: &filter.OIDCConfig{Issuer: down.URL, Audience: testAudience, AllowInsecureHTTP: true}})
	w := h.post("some.jwt.token", call(1, "t"))
	if w.Code != http.StatusServiceUnavailable {
		t.Fatalf("status %d, want 503: %s", w.Code, w.Body)
	}
	if w.Header().Get("Retry-After") == "" {
		t.Errorf("no Retry-After")
	}
	if resp := decodeError(t, w); resp.Error.Code != filter.CodeInternalError {
		t.Errorf("code %d, want %d", resp.Error.Code, filter.CodeInternalError)
	}
	if h.backend.hits.Load() != 0 {
		t.Errorf("the backend saw the request")
	}
}
