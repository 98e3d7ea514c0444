package testissuer

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
)

const (
	redirectURI = "http://127.0.0.1:4711/callback"
	verifier    = "a-verifier-of-forty-three-characters-or-more-0123456789"
	resource    = "http://127.0.0.1:8080/mcp"
)

// noRedirects is a client that shows redirects instead of following them.
var noRedirects = &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}

func challengeOf(verifier string) string {
	sum := sha256.Sum256([]byte(verifier))
	return base64.RawURLEncoding.EncodeToString(sum[:])
}

func startIssuer(t *testing.T) *Issuer {
	t.Helper()
	i, err := Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(i.Close)
	return i
}

// authorizationRequest is a valid request for a code, for resource.
func authorizationRequest() url.Values {
	return url.Values{
		"response_type":         {"code"},
		"client_id":             {ClientID},
		"redirect_uri":          {redirectURI},
		"state":                 {"xyz"},
		"code_challenge":        {challengeOf(verifier)},
		"code_challenge_method": {"S256"},
		"resource":              {resource},
	}
}

// authorize sends an authorization request and returns the status and the
// query of the redirect, if any.
func authorize(t *testing.T, i *Issuer, q url.Values) (int, url.Values) {
	t.Helper()
	res, err := noRedirects.Get(i.AuthorizationURL() + "?" + q.Encode())
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	location, err := res.Location()
	if err != nil {
		return res.StatusCode, nil
	}
	return res.StatusCode, location.Query()
}

// tokenRequest is a valid token request for code.
func tokenRequest(code string) url.Values {
	return url.Values{
		"grant_type":    {"authorization_code"},
		"client_id":     {ClientID},
		"code":          {code},
		"redirect_uri":  {redirectURI},
		"code_verifier": {verifier},
		"resource":      {resource},
	}
}

type tokenResponse struct {
	AccessToken string `json:"access_token"`
	TokenType   string `json:"token_type"`
	Error       string `json:"error"`
}

func redeem(t *testing.T, i *Issuer, form url.Values, basicAuth bool) (int, tokenResponse) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, i.TokenURL(), strings.NewReader(form.Encode()))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if basicAuth {
		req.SetBasicAuth(ClientID, "")
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	var body tokenResponse
	if err := json.NewDecoder(res.Body).Decode(&body); err != nil {
		t.Fatalf("token response: %v", err)
	}
	return res.StatusCode, body
}

func TestTheIssuerPublishesTheSameAuthorizationServerMetadataAtBothWellKnownPaths(t *testing.T) {
	i := startIssuer(t)
	for _, path := range []string{"/.well-known/oauth-authorization-server", "/.well-known/openid-configuration"} {
		res, err := http.Get(i.URL() + path)
		if err != nil {
			t.Fatal(err)
		}
		var meta struct {
			Issuer                string   `json:"issuer"`
			AuthorizationEndpoint string   `json:"authorization_endpoint"`
			TokenEndpoint         string   `json:"token_endpoint"`
			JWKSURI               string   `json:"jwks_uri"`
			ResponseTypes         []string `json:"response_types_supported"`
			ChallengeMethods      []string `json:"code_challenge_methods_supported"`
			AuthMethods           []string `json:"token_endpoint_auth_methods_supported"`
		}
		err = json.NewDecoder(res.Body).Decode(&meta)
		res.Body.Close()
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		if ct := res.Header.Get("Content-Type"); ct != "application/json" {
			t.Errorf("%s: Content-Type %q, want application/json", path, ct)
		}
		if meta.Issuer != i.URL() || meta.AuthorizationEndpoint != i.AuthorizationURL() || meta.TokenEndpoint != i.TokenURL() || meta.JWKSURI != i.JWKSURL() {
			t.Errorf("%s: %+v names other endpoints than the issuer's", path, meta)
		}
		if strings.Join(meta.ResponseTypes, ",") != "code" || strings.Join(meta.ChallengeMethods, ",") != "S256" || strings.Join(meta.AuthMethods, ",") != "none" {
			t.Errorf("%s: %+v, want code, S256 and none", path, meta)
		}
	}
}

func TestTheIssuerGrantsACodeForItsUserAndATokenForTheResource(t *testing.T) {
	i := startIssuer(t)
	i.SetUser("bob")
	status, back := authorize(t, i, authorizationRequest())
	if status != http.StatusFound || back.Get("code") == "" || back.Get("state") != "xyz" || back.Get("iss") != i.URL() {
		t.Fatalf("authorization: status %d, redirect query %v; want 302 with a code, state xyz and iss", status, back)
	}
	status, token := redeem(t, i, tokenRequest(back.Get("code")), false)
	if status != http.StatusOK || token.TokenType != "Bearer" {
		t.Fatalf("token: status %d, %+v", status, token)
	}

	parsed, err := jwt.ParseSigned(token.AccessToken, []jose.SignatureAlgorithm{jose.RS256})
	if err != nil {
		t.Fatal(err)
	}
	var claims jwt.Claims
	if err := parsed.Claims(i.key.Public(), &claims); err != nil {
		t.Fatalf("the token is not signed with the issuer's key: %v", err)
	}
	if claims.Issuer != i.URL() || claims.Subject != "bob" || len(claims.Audience) != 1 || claims.Audience[0] != resource {
		t.Errorf("claims iss %q sub %q aud %v, want %s, bob, [%s]", claims.Issuer, claims.Subject, claims.Audience, i.URL(), resource)
	}
	want := IssuedToken{User: "bob", ClientID: ClientID, Resource: resource, Audience: resource}
	if got := i.IssuedTokens(); len(got) != 1 || got[0] != want {
		t.Errorf("IssuedTokens() = %+v, want [%+v]", got, want)
	}
}

func TestTheIssuerRefusesAuthorizationRequestsItMustNot(t *testing.T) {
	cases := []struct {
		name       string
		change     func(url.Values)
		wantStatus int
		wantError  string // in the redirect; "" when there is none
	}{
		{name: "an unknown client is answered without a redirect", change: func(q url.Values) { q.Set("client_id", "someone") }, wantStatus: http.StatusBadRequest},
		{name: "a redirect off loopback is not followed", change: func(q url.Values) { q.Set("redirect_uri", "http://example.com/callback") }, wantStatus: http.StatusBadRequest},
		{name: "a request without PKCE is refused", change: func(q url.Values) { q.Del("code_challenge") }, wantStatus: http.StatusFound, wantError: "invalid_request"},
		{name: "the plain PKCE method is refused", change: func(q url.Values) { q.Set("code_challenge_method", "plain") }, wantStatus: http.StatusFound, wantError: "invalid_request"},
		{name: "the implicit flow is refused", change: func(q url.Values) { q.Set("response_type", "token") }, wantStatus: http.StatusFound, wantError: "unsupported_response_type"},
		{name: "a relative resource is refused", change: func(q url.Values) { q.Set("resource", "/mcp") }, wantStatus: http.StatusFound, wantError: "invalid_target"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			i := startIssuer(t)
			q := authorizationRequest()
			c.change(q)
			status, back := authorize(t, i, q)
			if status != c.wantStatus || back.Get("error") != c.wantError || back.Get("code") != "" {
				t.Errorf("status %d, redirect query %v; want %d with error %q and no code", status, back, c.wantStatus, c.wantError)
			}
		})
	}
}

func TestTheIssuerRefusesTokenRequestsThatDoNotMatchTheirCode(t *testing.T) {
	cases := []struct {
		name       string
		change     func(url.Values)
		basicAuth  bool
		wantStatus int
		wantError  string
	}{
		{name: "a wrong verifier is refused", change: func(f url.Values) { f.Set("code_verifier", strings.Repeat("x", 43)) }, wantStatus: http.StatusBadRequest, wantError: "invalid_grant"},
		{name: "a missing verifier is refused", change: func(f url.Values) { f.Del("code_verifier") }, wantStatus: http.StatusBadRequest, wantError: "invalid_grant"},
		{name: "another redirect URI is refused", change: func(f url.Values) { f.Set("redirect_uri", "http://127.0.0.1:4712/callback") }, wantStatus: http.StatusBadRequest, wantError: "invalid_grant"},
		{name: "another client is refused", change: func(f url.Values) { f.Set("client_id", "someone") }, wantStatus: http.StatusUnauthorized, wantError: "invalid_client"},
		{name: "a public client sending credentials is refused", change: func(url.Values) {}, basicAuth: true, wantStatus: http.StatusUnauthorized, wantError: "invalid_client"},
		{name: "another resource than the authorized one is refused", change: func(f url.Values) { f.Set("resource", "http://127.0.0.1:9090/mcp") }, wantStatus: http.StatusBadRequest, wantError: "invalid_target"},
		{name: "another grant type is refused", change: func(f url.Values) { f.Set("grant_type", "client_credentials") }, wantStatus: http.StatusBadRequest, wantError: "unsupported_grant_type"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			i := startIssuer(t)
			_, back := authorize(t, i, authorizationRequest())
			form := tokenRequest(back.Get("code"))
			c.change(form)
			status, token := redeem(t, i, form, c.basicAuth)
			if status != c.wantStatus || token.Error != c.wantError || token.AccessToken != "" {
				t.Errorf("status %d, %+v; want %d with error %q", status, token, c.wantStatus, c.wantError)
			}
			if got := i.IssuedTokens(); len(got) != 0 {
				t.Errorf("IssuedTokens() = %+v, want none", got)
			}
		})
	}
}

func TestACodeIsRedeemedOnceAndAFailedAttemptSpendsIt(t *testing.T) {
	i := startIssuer(t)
	_, back := authorize(t, i, authorizationRequest())
	wrong := tokenRequest(back.Get("code"))
	wrong.Set("code_verifier", strings.Repeat("y", 43))
	if status, _ := redeem(t, i, wrong, false); status != http.StatusBadRequest {
		t.Fatalf("a wrong verifier: status %d, want 400", status)
	}
	if status, token := redeem(t, i, tokenRequest(back.Get("code")), false); token.Error != "invalid_grant" {
		t.Errorf("the right verifier after a wrong one: status %d, %+v; want invalid_grant", status, token)
	}

	_, back = authorize(t, i, authorizationRequest())
	if status, _ := redeem(t, i, tokenRequest(back.Get("code")), false); status != http.StatusOK {
		t.Fatalf("a fresh code: status %d, want 200", status)
	}
	if status, token := redeem(t, i, tokenRequest(back.Get("code")), false); token.Error != "invalid_grant" {
		t.Errorf("the same code again: status %d, %+v; want invalid_grant", status, token)
	}
	if got := len(i.IssuedTokens()); got != 1 {
		t.Errorf("%d tokens issued, want 1", got)
	}
}

func TestWithoutAResourceTheTokenIsForTheClient(t *testing.T) {
	i := startIssuer(t)
	q := authorizationRequest()
	q.Del("resource")
	_, back := authorize(t, i, q)
	form := tokenRequest(back.Get("code"))
	form.Del("resource")
	if status, token := redeem(t, i, form, false); status != http.StatusOK {
		t.Fatalf("status %d, %+v", status, token)
	}
	want := IssuedToken{User: DefaultUser, ClientID: ClientID, Audience: ClientID}
	if got := i.IssuedTokens(); len(got) != 1 || got[0] != want {
		t.Errorf("IssuedTokens() = %+v, want [%+v]", got, want)
	}
}

// The exchanging client trades one of the issuer's tokens for a token of
// the same user for the audience it asks for; a wrong secret, a token the
// issuer did not sign, and a missing audience are refused.
func TestTheIssuerExchangesItsTokens(t *testing.T) {
	i := startIssuer(t)
	subject, err := i.Token("alice", "gateway")
	if err != nil {
		t.Fatal(err)
	}
	other, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	forged, err := i.SignedToken(other, "test", "alice", "gateway")
	if err != nil {
		t.Fatal(err)
	}
	exchange := func(secret, token, audience string) (int, map[string]any) {
		form := url.Values{"grant_type": {grantTokenExchange}, "subject_token": {token},
			"subject_token_type": {"urn:ietf:params:oauth:token-type:access_token"}, "audience": {audience}}
		req, _ := http.NewRequest(http.MethodPost, i.TokenURL(), strings.NewReader(form.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.SetBasicAuth(ExchangeClientID, secret)
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		var body map[string]any
		_ = json.NewDecoder(res.Body).Decode(&body)
		return res.StatusCode, body
	}
	status, body := exchange(ExchangeClientSecret, subject, "backend")
	if status != http.StatusOK {
		t.Fatalf("exchange: status %d, %v", status, body)
	}
	token, _ := body["access_token"].(string)
	parsed, err := jwt.ParseSigned(token, []jose.SignatureAlgorithm{jose.RS256})
	if err != nil {
		t.Fatal(err)
	}
	var claims struct {
		jwt.Claims
		Act struct {
			Sub string `json:"sub"`
		} `json:"act"`
	}
	if err := parsed.UnsafeClaimsWithoutVerification(&claims); err != nil {
		t.Fatal(err)
	}
	if claims.Subject != "alice" || !slices.Equal(claims.Audience, jwt.Audience{"backend"}) || claims.Act.Sub != ExchangeClientID {
		t.Errorf("exchanged token: sub %q aud %v act %q", claims.Subject, claims.Audience, claims.Act.Sub)
	}
	for _, tc := range []struct {
		name, secret, token, audience string
		want                          int
	}{
		{"a wrong secret", "wrong", subject, "backend", http.StatusUnauthorized},
		{"a forged subject token", ExchangeClientSecret, forged, "backend", http.StatusBadRequest},
		{"no audience", ExchangeClientSecret, subject, "", http.StatusBadRequest},
	} {
		if status, body := exchange(tc.secret, tc.token, tc.audience); status != tc.want {
			t.Errorf("%s: status %d %v, want %d", tc.name, status, body, tc.want)
		}
	}
}
