package main

// A test of the real toolgate binary as the OAuth protected resource of
// the MCP authorization specification, driven by go-sdk's own OAuth client:
// knowing only the gateway's URL, the client finds the authorization server,
// logs in and calls tools.

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"github.com/modelcontextprotocol/go-sdk/auth"
	"github.com/modelcontextprotocol/go-sdk/mcp"
	"github.com/modelcontextprotocol/go-sdk/oauthex"

	"github.com/toolgate/toolgate/internal/testgateway"
	"github.com/toolgate/toolgate/internal/testissuer"
)

// echoBackend is a go-sdk MCP server (stateless Streamable HTTP) with one
// tool, echo, that counts the requests reaching it and those among them
// that carry an Authorization header.
type echoBackend struct {
	addr              string
	requests          atomic.Int64
	withAuthorization atomic.Int64
}

type echoArgs struct {
	Text string `json:"text"`
}

func startEchoBackend(t *testing.T) *echoBackend {
	t.Helper()
	server := mcp.NewServer(&mcp.Implementation{Name: "echo-backend", Version: "v1.0.0"}, nil)
	mcp.AddTool(server, &mcp.Tool{Name: "echo", Description: "Answers with its text."}, func(_ context.Context, _ *mcp.CallToolRequest, args echoArgs) (*mcp.CallToolResult, any, error) {
		return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: args.Text}}}, nil, nil
	})
	sdk := mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return server }, &mcp.StreamableHTTPOptions{Stateless: true})
	b := &echoBackend{}
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b.requests.Add(1)
		if _, ok := r.Header["Authorization"]; ok {
			b.withAuthorization.Add(1)
		}
		sdk.ServeHTTP(w, r)
	})
	b.addr = serveOnLoopback(t, handler)
	return b
}

// oauthAudience is the MCPServer's configured audience. The client never
// asks for it: its token is for the resource URL instead (RFC 8707).
const oauthAudience = "toolgate-oauth-test"

// startOAuthGateway runs toolgate standalone with a route to backend
// through an MCPServer that takes tokens from issuer and has no limits, and
// returns its MCP endpoint once it is ready.
func startOAuthGateway(t *testing.T, issuer *testissuer.Issuer, backend *echoBackend) string {
	t.Helper()
	return testgateway.Start(t, func(port int) string {
		// Clients ask the issuer for tokens whose aud is the resource
		// (RFC 8707); the gateway accepts that audience only because the
		// MCPServer names its URL.
		resourceURL := fmt.Sprintf("    resourceURL: 'http://127.0.0.1:%d/mcp'\n", port)
		return testgateway.Config(port, backend.addr, testgateway.OIDC(issuer.URL(), issuer.JWKSURL(), oauthAudience)+resourceURL)
	}).URL
}

// exchange is one HTTP request a client made and what it got.
type exchange struct {
	method, url string
	status      int
	challenge   string // WWW-Authenticate, when the answer had one
}

func (e exchange) String() string {
	s := fmt.Sprintf("%s %s -> %d", e.method, e.url, e.status)
	if e.challenge != "" {
		s += "\n    WWW-Authenticate: " + e.challenge
	}
	return s
}

// exchangeLog is an http.RoundTripper that notes every exchange it carries.
type exchangeLog struct {
	mu        sync.Mutex
	exchanges []exchange
}

func (l *exchangeLog) RoundTrip(req *http.Request) (*http.Response, error) {
	res, err := http.DefaultTransport.RoundTrip(req)
	if err != nil {
		return nil, err
	}
	u := *req.URL
	u.RawQuery = "" // the authorization request's query is long and logged apart
	l.mu.Lock()
	l.exchanges = append(l.exchanges, exchange{method: req.Method, url: u.String(), status: res.StatusCode, challenge: res.Header.Get("WWW-Authenticate")})
	l.mu.Unlock()
	return res, nil
}

func (l *exchangeLog) all() []exchange {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]exchange(nil), l.exchanges...)
}

// has reports whether the log has an exchange of method and url answered
// with status.
func (l *exchangeLog) has(method, url string, status int) bool {
	for _, e := range l.all() {
		if e.method == method && e.url == url && e.status == status {
			return true
		}
	}
	return false
}

// oauthRedirectURI is where the issuer sends the browser back: loopback, as
// for a native app; nothing listens there, since the fetcher reads the
// redirect instead of following it.
const oauthRedirectURI = "http://127.0.0.1:4711/callback"

// codeFetcher plays the browser of auth.AuthorizationCodeFetcher: it opens
// the authorization URL, which the test issuer approves at once, and reads
// the code from the redirect. It remembers the authorization URL.
type codeFetcher struct {
	browser *http.Client
	mu      sync.Mutex
	asked   []*url.URL
}

func (f *codeFetcher) fetch(ctx context.Context, args *auth.AuthorizationArgs) (*auth.AuthorizationResult, error) {
	u, err := url.Parse(args.URL)
	if err != nil {
		return nil, fmt.Errorf("parse the authorization URL: %w", err)
	}
	f.mu.Lock()
	f.asked = append(f.asked, u)
	f.mu.Unlock()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, args.URL, nil)
	if err != nil {
		return nil, err
	}
	res, err := f.browser.Do(req)
	if err != nil {
		return nil, fmt.Errorf("open the authorization URL: %w", err)
	}
	_, _ = io.Copy(io.Discard, res.Body)
	res.Body.Close()
	location, err := res.Location()
	if err != nil {
		return nil, fmt.Errorf("the authorization endpoint answered %d without a redirect: %w", res.StatusCode, err)
	}
	if !strings.HasPrefix(location.String(), oauthRedirectURI+"?") {
		return nil, fmt.Errorf("the authorization endpoint redirected to %s, not to %s", location, oauthRedirectURI)
	}
	q := location.Query()
	if e := q.Get("error"); e != "" {
		return nil, fmt.Errorf("authorization refused: %s: %s", e, q.Get("error_description"))
	}
	return &auth.AuthorizationResult{Code: q.Get("code"), State: q.Get("state"), Iss: q.Get("iss")}, nil
}

func (f *codeFetcher) requests() []*url.URL {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]*url.URL(nil), f.asked...)
}

// go-sdk's OAuth client, given nothing but the gateway's MCP URL and a
// client id the issuer knows, follows the 401 to the resource metadata and
// the issuer, logs in with the authorization code flow, PKCE and a token
// for the gateway's URL (RFC 8707), and then lists and calls tools.
func TestGoSDKsOAuthClientLogsInThroughTheGatewayByItself(t *testing.T) {
	issuer, _ := startIssuer(t)
	issuer.SetUser("dana")
	backend := startEchoBackend(t)
	mcpURL := startOAuthGateway(t, issuer, backend)

	exchanges := &exchangeLog{}
	logged := &http.Client{Transport: exchanges, Timeout: 30 * time.Second}
	fetcher := &codeFetcher{browser: &http.Client{
		Transport:     exchanges,
		Timeout:       30 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}}
	handler, err := auth.NewAuthorizationCodeHandler(&auth.AuthorizationCodeHandlerConfig{
		PreregisteredClient:      &oauthex.ClientCredentials{ClientID: testissuer.ClientID},
		RedirectURL:              oauthRedirectURI,
		AuthorizationCodeFetcher: fetcher.fetch,
		Client:                   logged,
	})
	if err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	mcpClient := mcp.NewClient(&mcp.Implementation{Name: "oauth-test-client", Version: "v1.0.0"}, nil)
	session, err := mcpClient.Connect(ctx, &mcp.StreamableClientTransport{Endpoint: mcpURL, OAuthHandler: handler, HTTPClient: logged}, nil)
	if err != nil {
		logExchanges(t, exchanges)
		t.Fatalf("connect to %s: %v", mcpURL, err)
	}
	defer func() { _ = session.Close() }()
	tools, err := session.ListTools(ctx, nil)
	if err != nil {
		t.Fatalf("list tools: %v", err)
	}
	if len(tools.Tools) != 1 || tools.Tools[0].Name != "echo" {
		t.Errorf("tools %v, want [echo]", tools.Tools)
	}
	result, err := session.CallTool(ctx, &mcp.CallToolParams{Name: "echo", Arguments: echoArgs{Text: "hello through the gateway"}})
	if err != nil {
		t.Fatalf("call echo: %v", err)
	}
	if text, ok := result.Content[0].(*mcp.TextContent); result.IsError || !ok || text.Text != "hello through the gateway" {
		t.Errorf("echo answered %+v, want its text back", result)
	}
	logExchanges(t, exchanges)

	// The discovery chain: a 401 naming the resource metadata, the metadata,
	// the issuer's metadata, the authorization and token endpoints.
	var challenge string
	for _, e := range exchanges.all() {
		if e.url == mcpURL && e.status == http.StatusUnauthorized {
			challenge = e.challenge
			break
		}
	}
	m := resourceMetadataParam.FindStringSubmatch(challenge)
	if m == nil {
		t.Fatalf("no 401 from %s with resource_metadata in its challenge", mcpURL)
	}
	metadataURL := m[1]
	issuerMetadataURL := issuer.URL() + "/.well-known/oauth-authorization-server"
	t.Logf("discovery chain:\n  challenge: %s\n  resource metadata: %s\n  authorization server: %s\n  its metadata: %s", challenge, metadataURL, issuer.URL(), issuerMetadataURL)
	for _, step := range []exchange{
		{method: http.MethodGet, url: metadataURL, status: http.StatusOK},
		{method: http.MethodGet, url: issuerMetadataURL, status: http.StatusOK},
		{method: http.MethodGet, url: issuer.AuthorizationURL(), status: http.StatusFound},
		{method: http.MethodPost, url: issuer.TokenURL(), status: http.StatusOK},
	} {
		if !exchanges.has(step.method, step.url, step.status) {
			t.Errorf("the client never made %s", step)
		}
	}

	// The authorization request: PKCE with S256, and the gateway's URL as
	// the resource.
	asked := fetcher.requests()
	if len(asked) != 1 {
		t.Fatalf("%d authorization requests, want 1", len(asked))
	}
	q := asked[0].Query()
	t.Logf("authorization request: client_id=%s resource=%s code_challenge_method=%s scope=%q", q.Get("client_id"), q.Get("resource"), q.Get("code_challenge_method"), q.Get("scope"))
	if q.Get("resource") != mcpURL || q.Get("code_challenge_method") != "S256" || q.Get("code_challenge") == "" {
		t.Errorf("authorization request %v: want resource %s and an S256 code challenge", q, mcpURL)
	}

	// One token, for the gateway's URL and the user the issuer approved.
	want := testissuer.IssuedToken{User: "dana", ClientID: testissuer.ClientID, Resource: mcpURL, Audience: mcpURL}
	if issued := issuer.IssuedTokens(); len(issued) != 1 || issued[0] != want {
		t.Errorf("the issuer issued %+v, want exactly [%+v]", issued, want)
	}
	source, err := handler.TokenSource(ctx)
	if err != nil || source == nil {
		t.Fatalf("the handler has no token source (%v)", err)
	}
	token, err := source.Token()
	if err != nil {
		t.Fatal(err)
	}
	var claims jwt.Claims
	parsed, err := jwt.ParseSigned(token.AccessToken, []jose.SignatureAlgorithm{jose.RS256})
	if err == nil {
		err = parsed.UnsafeClaimsWithoutVerification(&claims)
	}
	if err != nil {
		t.Fatalf("the client's access token: %v", err)
	}
	if claims.Issuer != issuer.URL() || claims.Subject != "dana" || len(claims.Audience) != 1 || claims.Audience[0] != mcpURL {
		t.Errorf("the client's token has iss %q sub %q aud %v, want %s, dana, [%s]", claims.Issuer, claims.Subject, claims.Audience, issuer.URL(), mcpURL)
	}

	// The gateway kept the token to itself.
	if backend.requests.Load() == 0 {
		t.Error("no request reached the backend")
	}
	if n := backend.withAuthorization.Load(); n != 0 {
		t.Errorf("%d of the backend's %d requests carried an Authorization header, want none", n, backend.requests.Load())
	}
}

func logExchanges(t *testing.T, l *exchangeLog) {
	t.Helper()
	var b strings.Builder
	for _, e := range l.all() {
		fmt.Fprintf(&b, "  %s\n", e)
	}
	t.Logf("the client's HTTP exchanges:\n%s", b.String())
}
