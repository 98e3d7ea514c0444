package filter

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"
	"golang.org/x/net/http/httpguts"
	"golang.org/x/sync/singleflight"
)

// BackendAuth says how the gateway authenticates to an MCP server's
// backend: exactly one way. The caller's own token is never forwarded with
// it (ForwardAuthorization and BackendAuth exclude each other).
type BackendAuth struct {
	// Header sets one header of every request to the backend to a static
	// value: an API key or a personal access token, from a Secret.
	Header *StaticHeader `json:"header,omitempty"`
	// ClientCredentials gets the gateway's own token for the backend
	// (OAuth 2.0 client credentials grant), cached until it expires.
	ClientCredentials *OAuth2Client `json:"clientCredentials,omitempty"`
	// TokenExchange exchanges each caller's verified token for one meant
	// for the backend (RFC 8693), cached per caller's token until it
	// expires. It needs Auth.
	TokenExchange *OAuth2Client `json:"tokenExchange,omitempty"`
}

// StaticHeader is a header the backend gets with every request.
type StaticHeader struct {
	// Name is the header's name, such as Authorization or X-API-Key.
	Name string `json:"name"`
	// Value is its value, such as "Bearer <token>": a secret.
	Value string `json:"value"`
}

// OAuth2Client is how the gateway asks an authorization server for the
// backend's tokens: as a confidential client, authenticated with HTTP Basic
// (RFC 6749 section 2.3.1).
type OAuth2Client struct {
	// TokenURL is the authorization server's token endpoint.
	TokenURL string `json:"tokenURL"`
	// ClientID and ClientSecret are the gateway's client credentials; the
	// secret comes from a Secret.
	ClientID     string `json:"clientID"`
	ClientSecret string `json:"clientSecret"`
	// Scopes are asked for (scope); optional.
	Scopes []string `json:"scopes,omitempty"`
	// Audience names the backend to the authorization server (audience);
	// a token exchange needs it.
	Audience string `json:"audience,omitempty"`
	// AllowInsecureHTTP lets TokenURL be a plain http:// URL (a test
	// authorization server); by default it must be https://.
	AllowInsecureHTTP bool `json:"allowInsecureHTTP,omitempty"`
}

// The grant and token types of RFC 8693.
const (
	grantTokenExchange   = "urn:ietf:params:oauth:grant-type:token-exchange" //nolint:gosec // a grant type's URN, not a credential
	tokenTypeAccessToken = "urn:ietf:params:oauth:token-type:access_token"   //nolint:gosec // a token type's URN, not a credential
)

func (b *BackendAuth) clone() *BackendAuth {
	if b == nil {
		return nil
	}
	c := *b
	if b.Header != nil {
		h := *b.Header
		c.Header = &h
	}
	c.ClientCredentials, c.TokenExchange = b.ClientCredentials.clone(), b.TokenExchange.clone()
	return &c
}

func (o *OAuth2Client) clone() *OAuth2Client {
	if o == nil {
		return nil
	}
	c := *o
	c.Scopes = append([]string(nil), o.Scopes...)
	return &c
}

// Redacted returns a copy of b whose secrets read "[redacted]".
func (b *BackendAuth) Redacted() *BackendAuth {
	c := b.clone()
	if c == nil {
		return nil
	}
	if c.Header != nil {
		c.Header.Value = redactedSecret
	}
	for _, o := range []*OAuth2Client{c.ClientCredentials, c.TokenExchange} {
		if o != nil {
			o.ClientSecret = redactedSecret
		}
	}
	return c
}

// redactedSecret stands for a secret where it is shown.
const redactedSecret = "[redacted]"

// validate checks b; withAuth says whether the policy verifies callers.
func (b *BackendAuth) validate(withAuth, forwardAuthorization bool) []error {
	var errs []error
	set := 0
	for _, ok := range []bool{b.Header != nil, b.ClientCredentials != nil, b.TokenExchange != nil} {
		if ok {
			set++
		}
	}
	if set != 1 {
		errs = append(errs, errors.New("backendAuth must set exactly one of header, clientCredentials and tokenExchange"))
	}
	if forwardAuthorization {
		errs = append(errs, errors.New("backendAuth and forwardAuthorization exclude each other: the backend gets the gateway's credential, never the caller's token"))
	}
	if h := b.Header; h != nil {
		if !httpguts.ValidHeaderFieldName(h.Name) {
			errs = append(errs, fmt.Errorf("backendAuth.header.name %q is not a header name", h.Name))
		}
		if h.Value == "" || !httpguts.ValidHeaderFieldValue(h.Value) {
			errs = append(errs, errors.New("backendAuth.header: the Secret's value must be a non-empty header value (no line breaks)"))
		}
	}
	if o := b.ClientCredentials; o != nil {
		errs = append(errs, o.validate("backendAuth.clientCredentials")...)
	}
	if o := b.TokenExchange; o != nil {
		errs = append(errs, o.validate("backendAuth.tokenExchange")...)
		if o.Audience == "" {
			errs = append(errs, errors.New("backendAuth.tokenExchange.audience is required: it names the backend the exchanged token is for"))
		}
		if !withAuth {
			errs = append(errs, errors.New("backendAuth.tokenExchange needs auth: it exchanges the caller's verified token"))
		}
	}
	return errs
}

func (o *OAuth2Client) validate(field string) []error {
	var errs []error
	u, err := url.Parse(o.TokenURL)
	switch {
	case err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "":
		errs = append(errs, fmt.Errorf("%s.tokenURL must be an absolute https:// URL, got %q", field, o.TokenURL))
	case u.Scheme == "http" && !o.AllowInsecureHTTP:
		errs = append(errs, fmt.Errorf("%s.tokenURL must be an https:// URL, got %q: the client secret would cross the network in clear (allowInsecureHTTP lets a test server use http)", field, o.TokenURL))
	}
	if o.ClientID == "" || o.ClientSecret == "" {
		errs = append(errs, fmt.Errorf("%s needs a clientID and a client secret", field))
	}
	return errs
}

// backendCredentials sets the backend's credential on requests that pass
// the filter.
type backendCredentials struct {
	header            *StaticHeader
	client            *OAuth2Client
	exchange          bool
	tokens            *backendTokens
	key               string // the client's part of token cache keys
	tokenRequestLimit time.Duration
}

func newBackendCredentials(b *BackendAuth, tokens *backendTokens) *backendCredentials {
	c := &backendCredentials{header: b.Header, tokens: tokens, tokenRequestLimit: tokenRequestTimeout}
	switch {
	case b.ClientCredentials != nil:
		c.client = b.ClientCredentials.clone()
	case b.TokenExchange != nil:
		c.client, c.exchange = b.TokenExchange.clone(), true
	}
	if c.client != nil {
		sum := sha256.Sum256([]byte(strings.Join(append([]string{c.client.TokenURL, c.client.ClientID, c.client.ClientSecret, c.client.Audience}, c.client.Scopes...), "\x00")))
		c.key = hex.EncodeToString(sum[:])
	}
	return c
}

// tokenRequestTimeout bounds one request to the token endpoint.
const tokenRequestTimeout = 5 * time.Second

// credentialError is why the backend's credential could not be had.
type credentialError struct {
	// unavailable is true when the authorization server could not be
	// reached or answered an error of its own (503); false when it
	// refused (502).
	unavailable bool
	message     string
	err         error
}

func (e *credentialError) Error() string { return e.message + ": " + e.err.Error() }
func (e *credentialError) Unwrap() error { return e.err }

// apply sets the credential on r, for the caller's token subject (token
// exchange only).
func (c *backendCredentials) apply(ctx context.Context, r *http.Request, subject string) error {
	if c.header != nil {
		r.Header.Set(c.header.Name, c.header.Value)
		return nil
	}
	key := c.key
	if c.exchange {
		sum := sha256.Sum256([]byte(subject))
		key += ":" + hex.EncodeToString(sum[:])
	}
	token, err := c.tokens.get(ctx, key, func(ctx context.Context) (backendToken, error) {
		ctx, cancel := context.WithTimeout(ctx, c.tokenRequestLimit)
		defer cancel()
		return c.request(ctx, subject)
	})
	if err != nil {
		return err
	}
	r.Header.Set("Authorization", "Bearer "+token)
	return nil
}

// request asks the token endpoint for a token.
func (c *backendCredentials) request(ctx context.Context, subject string) (backendToken, error) {
	form := url.Values{}
	if c.exchange {
		form.Set("grant_type", grantTokenExchange)
		form.Set("subject_token", subject)
		form.Set("subject_token_type", tokenTypeAccessToken)
		form.Set("requested_token_type", tokenTypeAccessToken)
	} else {
		form.Set("grant_type", "client_credentials")
	}
	if len(c.client.Scopes) > 0 {
		form.Set("scope", strings.Join(c.client.Scopes, " "))
	}
	if c.client.Audience != "" {
		form.Set("audience", c.client.Audience)
	}
	// The token URL is the MCPServer's, which its owner configured; no
	// request chooses it.
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.client.TokenURL, strings.NewReader(form.Encode())) //nolint:gosec // see above
	if err != nil {
		return backendToken{}, &credentialError{message: "the token request cannot be made", err: err}
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Accept", "application/json")
	req.SetBasicAuth(url.QueryEscape(c.client.ClientID), url.QueryEscape(c.client.ClientSecret))
	res, err := c.tokens.client.Do(req) //nolint:gosec // the configured token URL, as above
	if err != nil {
		return backendToken{}, &credentialError{unavailable: true, message: "the authorization server cannot be reached", err: err}
	}
	defer res.Body.Close()
	body, err := io.ReadAll(io.LimitReader(res.Body, 1<<16))
	if err != nil {
		return backendToken{}, &credentialError{unavailable: true, message: "the authorization server's answer cannot be read", err: err}
	}
	var answer struct {
		AccessToken      string          `json:"access_token"`
		TokenType        string          `json:"token_type"`
		ExpiresIn        json.Number     `json:"expires_in"`
		Error            string          `json:"error"`
		ErrorDescription string          `json:"error_description"`
		IssuedTokenType  json.RawMessage `json:"issued_token_type"`
	}
	_ = json.Unmarshal(body, &answer) // an unreadable body is judged below
	switch {
	case res.StatusCode >= 500:
		return backendToken{}, &credentialError{unavailable: true, message: "the authorization server failed",
			err: fmt.Errorf("status %d %s", res.StatusCode, answer.Error)}
	case res.StatusCode != http.StatusOK || answer.Error != "":
		what := strings.TrimSpace(answer.Error + " " + answer.ErrorDescription)
		return backendToken{}, &credentialError{message: "the authorization server refused the gateway's token request",
			err: fmt.Errorf("status %d: %s", res.StatusCode, what)}
	case answer.AccessToken == "" || !strings.EqualFold(answer.TokenType, "Bearer") || !httpguts.ValidHeaderFieldValue(answer.AccessToken):
		return backendToken{}, &credentialError{message: "the authorization server answered no bearer token",
			err: fmt.Errorf("token_type %q", answer.TokenType)}
	}
	lifetime := defaultTokenLifetime
	if s, err := strconv.ParseInt(answer.ExpiresIn.String(), 10, 64); err == nil && s > 0 {
		lifetime = time.Duration(s) * time.Second
	}
	// Renewed ahead of its end, so that a token is not sent just as it
	// expires.
	return backendToken{value: answer.AccessToken, until: time.Now().Add(lifetime - min(lifetime/10, time.Minute))}, nil
}

// defaultTokenLifetime is how long a token without expires_in is used.
const defaultTokenLifetime = time.Minute

// backendToken is a cached token for a backend.
type backendToken struct {
	value string
	until time.Time
}

// backendTokens caches the backends' tokens of every server, by client
// and (for a token exchange) by caller's token, the least recently used
// dropped first, and makes one request at a time per key.
type backendTokens struct {
	client *http.Client
	group  singleflight.Group
	tokens *lru.Cache[string, backendToken]
}

func newBackendTokens(client *http.Client, size int) (*backendTokens, error) {
	cache, err := lru.New[string, backendToken](size)
	if err != nil {
		return nil, fmt.Errorf("backend token cache: %w", err)
	}
	return &backendTokens{client: client, tokens: cache}, nil
}

// get returns key's token, from the cache or from fetch.
func (t *backendTokens) get(ctx context.Context, key string, fetch func(context.Context) (backendToken, error)) (string, error) {
	if tok, ok := t.tokens.Get(key); ok && time.Now().Before(tok.until) {
		return tok.value, nil
	}
	v, err, _ := t.group.Do(key, func() (any, error) {
		// Not the first caller's context: its end must not fail the
		// others that wait for the same token.
		tok, err := fetch(context.WithoutCancel(ctx))
		if err != nil {
			return "", err
		}
		t.tokens.Add(key, tok)
		return tok.value, nil
	})
	if err != nil {
		return "", err
	}
	return v.(string), nil
}

// withBackendCredentials returns next with the backend's credential put on
// each request, for the caller's bearer token subject (token exchange). A
// credential that cannot be had fails the request: the backend is never
// called without it, nor with the caller's.
func (f *Filter) withBackendCredentials(next http.Handler, subject string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		err := f.backend.apply(r.Context(), r, subject)
		if err == nil {
			next.ServeHTTP(w, r)
			return
		}
		if r.Context().Err() != nil {
			return // the client went away; there is no one to answer
		}
		f.shared.logger.Warn("the backend's credential could not be had; the request is refused", "server", f.server, "error", err)
		var ce *credentialError
		status, message := http.StatusBadGateway, "Bad Gateway: the gateway's credential for this MCP server could not be had"
		if errors.As(err, &ce) {
			if ce.unavailable {
				status = http.StatusServiceUnavailable
				w.Header().Set(headerRetryAfter, "5")
			}
			message = http.StatusText(status) + ": the gateway's credential for this MCP server could not be had: " + ce.message
		}
		f.refuse(w, status, reasonBackendCredentials, nil, CodeInternalError, message)
	})
}

// bearerToken is r's bearer token, "" when it has none.
func bearerToken(r *http.Request) string {
	scheme, token, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return ""
	}
	return strings.Trim(token, " ")
}
