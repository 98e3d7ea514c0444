package main

// The real binary in front of an MCP server, with a real authorization
// server: Ory Hydra (internal/testhydra), whose tokens are JWTs with the
// scopes in an scp list and an audience from the authorization request's
// audience parameter (Hydra ignores RFC 8707's resource).

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"slices"
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
	"github.com/toolgate/toolgate/internal/testhydra"
)

// hydraAudience is the MCPServer's configured audience in these tests.
const hydraAudience = "toolgate-hydra-test"

// toolsBackend is a go-sdk MCP server (stateless Streamable HTTP) with two
// tools, echo and admin_echo, that counts the calls of each and the
// requests that carry an Authorization header.
type toolsBackend struct {
	addr              string
	requests          atomic.Int64
	withAuthorization atomic.Int64
	echoCalls         atomic.Int64
	adminCalls        atomic.Int64
}

func startToolsBackend(t *testing.T) *toolsBackend {
	t.Helper()
	b := &toolsBackend{}
	server := mcp.NewServer(&mcp.Implementation{Name: "tools-backend", Version: "v1.0.0"}, nil)
	mcp.AddTool(server, &mcp.Tool{Name: "echo", Description: "Answers with its text."}, func(_ context.Context, _ *mcp.CallToolRequest, args echoArgs) (*mcp.CallToolResult, any, error) {
		b.echoCalls.Add(1)
		return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: args.Text}}}, nil, nil
	})
	mcp.AddTool(server, &mcp.Tool{Name: "admin_echo", Description: "Answers with its text, for admins."}, func(_ context.Context, _ *mcp.CallToolRequest, args echoArgs) (*mcp.CallToolResult, any, error) {
		b.adminCalls.Add(1)
		return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: "admin: " + args.Text}}}, nil, nil
	})
	sdk := mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return server }, &mcp.StreamableHTTPOptions{Stateless: true})
	b.addr = serveOnLoopback(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b.requests.Add(1)
		if _, ok := r.Header["Authorization"]; ok {
			b.withAuthorization.Add(1)
		}
		sdk.ServeHTTP(w, r)
	}))
	return b
}

// startHydraGateway runs toolgate standalone with a route to backend
// through an MCPServer that takes Hydra's tokens for hydraAudience or for
// its MCP URL (spec.auth.resourceURL), with more spec lines (indented by
// two spaces) after auth's; it returns the MCP URL once the gateway is
// ready.
func startHydraGateway(t *testing.T, hydra *testhydra.Server, backend *toolsBackend, authLines, specLines string) string {
	t.Helper()
	return testgateway.Start(t, func(port int) string {
		auth := testgateway.OIDC(hydra.IssuerURL(), hydra.JWKSURL(), hydraAudience) +
			fmt.Sprintf("    resourceURL: 'http://127.0.0.1:%d/mcp'\n", port) + authLines
		return testgateway.Config(port, backend.addr, auth+specLines)
	}).URL
}

// unverifiedClaims are the claims of a Hydra JWT access token that these
// tests look at; the gateway is what verifies them.
type unverifiedClaims struct {
	jwt.Claims
	Scopes   []string `json:"scp"`
	ClientID string   `json:"client_id"`
}

func claimsOf(t *testing.T, token string) unverifiedClaims {
	t.Helper()
	var claims unverifiedClaims
	parsed, err := jwt.ParseSigned(token, []jose.SignatureAlgorithm{jose.RS256})
	if err == nil {
		err = parsed.UnsafeClaimsWithoutVerification(&claims)
	}
	if err != nil {
		t.Fatalf("Hydra's access token %q: %v", token, err)
	}
	return claims
}

// postMCP posts a JSON-RPC body to the MCP URL with token and returns the
// answer's status, WWW-Authenticate and body.
func postMCP(t *testing.T, mcpURL, token, body string) (status int, challenge, answer string) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, mcpURL, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	req.Header.Set("Authorization", "Bearer "+token)
	res, err := client.Do(req)
	if err != nil {
		t.Fatalf("POST %s: %v", mcpURL, err)
	}
	defer res.Body.Close()
	data, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatalf("POST %s: %v", mcpURL, err)
	}
	return res.StatusCode, res.Header.Get("WWW-Authenticate"), string(data)
}

// eventData is the data of an answer sent as one server-sent event, or the
// answer itself when it is not an event stream.
func eventData(answer string) string {
	for line := range strings.Lines(answer) {
		if data, ok := strings.CutPrefix(line, "data:"); ok {
			return strings.TrimSpace(data)
		}
	}
	return answer
}

// A token Hydra issues with the client credentials grant for the
// MCPServer's audience lists the tools; one the same Hydra issues to the
// same client for another audience is refused with 401 and never reaches
// the backend.
func TestHydraClientCredentialsTokenIsAcceptedOnlyForTheGatewaysAudience(t *testing.T) {
	hydra := testhydra.Start(t)
	backend := startToolsBackend(t)
	mcpURL := startHydraGateway(t, hydra, backend, "", "")

	const otherAudience = "https://other.example/mcp"
	id, secret := hydra.CreateClient(t, testhydra.ClientSpec{
		Name:          "machine",
		GrantTypes:    []string{"client_credentials"},
		ResponseTypes: []string{"token"},
		Scopes:        []string{"mcp:tools"},
		Audience:      []string{hydraAudience, otherAudience},
	})
	const list = `{"jsonrpc":"2.0","id":1,"method":"tools/list"}`

	token := hydra.ClientCredentialsToken(t, id, secret, []string{"mcp:tools"}, []string{hydraAudience})
	claims := claimsOf(t, token)
	if claims.Issuer != hydra.IssuerURL() || !slices.Equal(claims.Audience, jwt.Audience{hydraAudience}) || claims.Subject != id || !slices.Equal(claims.Scopes, []string{"mcp:tools"}) {
		t.Errorf("Hydra's token has iss %q aud %v sub %q scp %v, want %s, [%s], %s, [mcp:tools]", claims.Issuer, claims.Audience, claims.Subject, claims.Scopes, hydra.IssuerURL(), hydraAudience, id)
	}
	status, _, body := postMCP(t, mcpURL, token, list)
	if status != http.StatusOK {
		t.Fatalf("tools/list with Hydra's token for %s: status %d, want 200: %s", hydraAudience, status, body)
	}
	var listed struct {
		Result struct {
			Tools []struct{ Name string } `json:"tools"`
		} `json:"result"`
	}
	if err := json.Unmarshal([]byte(eventData(body)), &listed); err != nil || len(listed.Result.Tools) != 2 {
		t.Errorf("tools/list answered %s, want the backend's two tools", body)
	}

	before := backend.requests.Load()
	other := hydra.ClientCredentialsToken(t, id, secret, []string{"mcp:tools"}, []string{otherAudience})
	if aud := claimsOf(t, other).Audience; !slices.Equal(aud, jwt.Audience{otherAudience}) {
		t.Fatalf("Hydra's second token is for %v, want [%s]", aud, otherAudience)
	}
	status, challenge, body := postMCP(t, mcpURL, other, list)
	if status != http.StatusUnauthorized {
		t.Errorf("tools/list with Hydra's token for %s: status %d, want 401: %s", otherAudience, status, body)
	}
	if !strings.HasPrefix(challenge, "Bearer ") || !resourceMetadataParam.MatchString(challenge) {
		t.Errorf("the 401's WWW-Authenticate is %q, want a Bearer challenge naming the resource metadata", challenge)
	}
	if n := backend.requests.Load() - before; n != 0 {
		t.Errorf("%d requests with the token for another audience reached the backend, want none", n)
	}
}

// hydraFetcher plays the browser for go-sdk's AuthorizationCodeFetcher with
// Hydra: it adds audience=<the MCP URL> to the authorization URL (Hydra
// takes a token's aud from there, not from RFC 8707's resource), follows
// Hydra's redirects through the login and consent app with Hydra's cookies,
// and reads the code from the redirect to the client's redirect URI. It
// remembers each authorization URL go-sdk gave it.
type hydraFetcher struct {
	audience string
	browser  *http.Client
	mu       sync.Mutex
	asked    []*url.URL
}

func newHydraFetcher(t *testing.T, audience string, transport http.RoundTripper) *hydraFetcher {
	t.Helper()
	jar, err := cookiejar.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	return &hydraFetcher{audience: audience, browser: &http.Client{
		Transport: transport,
		Jar:       jar,
		Timeout:   30 * time.Second,
		// Nothing listens at the redirect URI: the browser stops there.
		CheckRedirect: func(req *http.Request, via []*http.Request) error {
			if strings.HasPrefix(req.URL.String(), oauthRedirectURI+"?") {
				return http.ErrUseLastResponse
			}
			if len(via) >= 10 {
				return fmt.Errorf("more than 10 redirects, the last to %s", req.URL)
			}
			return nil
		},
	}}
}

func (f *hydraFetcher) fetch(ctx context.Context, args *auth.AuthorizationArgs) (*auth.AuthorizationResult, error) {
	u, err := url.Parse(args.URL)
	if err != nil {
		return nil, fmt.Errorf("parse the authorization URL: %w", err)
	}
	f.mu.Lock()
	f.asked = append(f.asked, u)
	f.mu.Unlock()
	withAudience := *u
	q := withAudience.Query()
	q.Set("audience", f.audience)
	withAudience.RawQuery = q.Encode()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, withAudience.String(), nil)
	if err != nil {
		return nil, err
	}
	res, err := f.browser.Do(req)
	if err != nil {
		return nil, fmt.Errorf("follow the authorization URL: %w", err)
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	location, err := res.Location()
	if err != nil || !strings.HasPrefix(location.String(), oauthRedirectURI+"?") {
		return nil, fmt.Errorf("the authorization ended at %s with %d, not with a redirect to %s: %s", res.Request.URL, res.StatusCode, oauthRedirectURI, body)
	}
	back := location.Query()
	if e := back.Get("error"); e != "" {
		return nil, fmt.Errorf("authorization refused: %s: %s %s", e, back.Get("error_description"), back.Get("error_hint"))
	}
	return &auth.AuthorizationResult{Code: back.Get("code"), State: back.Get("state"), Iss: back.Get("iss")}, nil
}

func (f *hydraFetcher) requests() []*url.URL {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]*url.URL(nil), f.asked...)
}

// hydraOAuthClient is go-sdk's OAuth client for a public client registered
// in Hydra, with its HTTP exchanges logged.
type hydraOAuthClient struct {
	exchanges *exchangeLog
	fetcher   *hydraFetcher
	handler   *auth.AuthorizationCodeHandler
	session   *mcp.ClientSession
}

// connectWithHydra registers a public client (PKCE, loopback redirect URI)
// in Hydra that may ask for scopes and for the MCP URL as audience, and
// connects go-sdk's MCP client to mcpURL with nothing else: it finds Hydra
// through the gateway by itself.
func connectWithHydra(t *testing.T, ctx context.Context, hydra *testhydra.Server, mcpURL string, scopes []string) *hydraOAuthClient {
	t.Helper()
	clientID, _ := hydra.CreateClient(t, testhydra.ClientSpec{
		Name:          "mcp-client",
		GrantTypes:    []string{"authorization_code"},
		ResponseTypes: []string{"code"},
		RedirectURIs:  []string{oauthRedirectURI},
		Scopes:        scopes,
		Audience:      []string{mcpURL},
		Public:        true,
	})
	c := &hydraOAuthClient{exchanges: &exchangeLog{}}
	logged := &http.Client{Transport: c.exchanges, Timeout: 30 * time.Second}
	c.fetcher = newHydraFetcher(t, mcpURL, c.exchanges)
	var err error
	c.handler, err = auth.NewAuthorizationCodeHandler(&auth.AuthorizationCodeHandlerConfig{
		PreregisteredClient:      &oauthex.ClientCredentials{ClientID: clientID},
		RedirectURL:              oauthRedirectURI,
		AuthorizationCodeFetcher: c.fetcher.fetch,
		Client:                   logged,
	})
	if err != nil {
		t.Fatal(err)
	}
	mcpClient := mcp.NewClient(&mcp.Implementation{Name: "hydra-test-client", Version: "v1.0.0"}, nil)
	c.session, err = mcpClient.Connect(ctx, &mcp.StreamableClientTransport{Endpoint: mcpURL, OAuthHandler: c.handler, HTTPClient: logged}, nil)
	if err != nil {
		logExchanges(t, c.exchanges)
		t.Fatalf("connect to %s: %v", mcpURL, err)
	}
	t.Cleanup(func() { _ = c.session.Close() })
	return c
}

// accessToken is the token go-sdk's client holds now.
func (c *hydraOAuthClient) accessToken(t *testing.T, ctx context.Context) string {
	t.Helper()
	source, err := c.handler.TokenSource(ctx)
	if err != nil || source == nil {
		t.Fatalf("the handler has no token source (%v)", err)
	}
	token, err := source.Token()
	if err != nil {
		t.Fatal(err)
	}
	return token.AccessToken
}

// call calls tool with text and returns the text of its answer.
func (c *hydraOAuthClient) call(t *testing.T, ctx context.Context, tool, text string) string {
	t.Helper()
	result, err := c.session.CallTool(ctx, &mcp.CallToolParams{Name: tool, Arguments: echoArgs{Text: text}})
	if err != nil {
		logExchanges(t, c.exchanges)
		t.Fatalf("call %s: %v", tool, err)
	}
	if len(result.Content) != 1 || result.IsError {
		t.Fatalf("%s answered %+v", tool, result)
	}
	answer, ok := result.Content[0].(*mcp.TextContent)
	if !ok {
		t.Fatalf("%s answered %+v", tool, result)
	}
	return answer.Text
}

// go-sdk's OAuth client, given nothing but the gateway's MCP URL and a
// public client pre-registered in Hydra, follows the 401 to the resource
// metadata and to Hydra, logs in with the authorization code flow and PKCE
// through Hydra's login and consent, and lists and calls tools.
func TestHydraGoSDKsOAuthClientLogsInThroughTheGatewayByItself(t *testing.T) {
	hydra := testhydra.Start(t)
	hydra.SetSubject("dana")
	backend := startToolsBackend(t)
	mcpURL := startHydraGateway(t, hydra, backend, "", "")

	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	c := connectWithHydra(t, ctx, hydra, mcpURL, []string{"mcp:tools"})
	tools, err := c.session.ListTools(ctx, nil)
	if err != nil {
		t.Fatalf("list tools: %v", err)
	}
	var names []string
	for _, tool := range tools.Tools {
		names = append(names, tool.Name)
	}
	slices.Sort(names)
	if !slices.Equal(names, []string{"admin_echo", "echo"}) {
		t.Errorf("tools %v, want [admin_echo echo]", names)
	}
	if got := c.call(t, ctx, "echo", "hello through the gateway"); got != "hello through the gateway" {
		t.Errorf("echo answered %q, want its text back", got)
	}
	logExchanges(t, c.exchanges)

	// The discovery chain: a 401 naming the resource metadata, the metadata,
	// Hydra's metadata, its authorization endpoint, the login and consent
	// app, and its token endpoint.
	var challenge string
	for _, e := range c.exchanges.all() {
		if e.url == mcpURL && e.status == http.StatusUnauthorized {
			challenge = e.challenge
			break
		}
	}
	m := resourceMetadataParam.FindStringSubmatch(challenge)
	if m == nil {
		t.Fatalf("no 401 from %s with resource_metadata in its challenge", mcpURL)
	}
	var metadata struct {
		Resource             string   `json:"resource"`
		AuthorizationServers []string `json:"authorization_servers"`
	}
	getJSON(t, m[1], &metadata)
	if metadata.Resource != mcpURL || !slices.Equal(metadata.AuthorizationServers, []string{hydra.IssuerURL()}) {
		t.Errorf("the resource metadata is %+v, want resource %s and Hydra (%s) as its authorization server", metadata, mcpURL, hydra.IssuerURL())
	}
	for _, step := range []exchange{
		{method: http.MethodGet, url: m[1], status: http.StatusOK},
		{method: http.MethodGet, url: hydra.MetadataURL(), status: http.StatusOK},
		{method: http.MethodGet, url: hydra.AuthorizationURL(), status: http.StatusSeeOther},
		{method: http.MethodPost, url: hydra.TokenURL(), status: http.StatusOK},
	} {
		if !c.exchanges.has(step.method, step.url, step.status) {
			t.Errorf("the client never made %s", step)
		}
	}

	// One authorization request, with PKCE S256, whose consent the app gave
	// as dana for the MCP URL.
	asked := c.fetcher.requests()
	if len(asked) != 1 {
		t.Fatalf("%d authorization requests, want 1", len(asked))
	}
	q := asked[0].Query()
	t.Logf("authorization request: client_id=%s resource=%s code_challenge_method=%s scope=%q", q.Get("client_id"), q.Get("resource"), q.Get("code_challenge_method"), q.Get("scope"))
	if q.Get("code_challenge_method") != "S256" || q.Get("code_challenge") == "" {
		t.Errorf("authorization request %v: want an S256 code challenge", q)
	}
	consents := hydra.Consents()
	if len(consents) != 1 || consents[0].Subject != "dana" || !slices.Equal(consents[0].Audience, []string{mcpURL}) {
		t.Errorf("Hydra's consents %+v, want one as dana for [%s]", consents, mcpURL)
	}

	// The token is Hydra's, for dana and the MCP URL; it stopped at the
	// gateway.
	claims := claimsOf(t, c.accessToken(t, ctx))
	if claims.Issuer != hydra.IssuerURL() || claims.Subject != "dana" || !slices.Equal(claims.Audience, jwt.Audience{mcpURL}) || claims.ClientID != q.Get("client_id") {
		t.Errorf("the client's token has iss %q sub %q aud %v client_id %q, want %s, dana, [%s], %s", claims.Issuer, claims.Subject, claims.Audience, claims.ClientID, hydra.IssuerURL(), mcpURL, q.Get("client_id"))
	}
	if backend.echoCalls.Load() != 1 {
		t.Errorf("the backend ran echo %d times, want 1", backend.echoCalls.Load())
	}
	if n := backend.withAuthorization.Load(); n != 0 {
		t.Errorf("%d of the backend's %d requests carried an Authorization header, want none", n, backend.requests.Load())
	}
}

// Step-up with Hydra: the MCPServer requires mcp:tools of every request
// and tools:admin of admin_echo. go-sdk's client logs in with what the
// resource metadata advertises (mcp:tools), calls echo, then admin_echo:
// the gateway answers 403 insufficient_scope naming tools:admin, and the
// client authorizes again with both scopes and retries, once.
func TestHydraGoSDKsOAuthClientStepsUpOnAScopeChallenge(t *testing.T) {
	hydra := testhydra.Start(t)
	backend := startToolsBackend(t)
	mcpURL := startHydraGateway(t, hydra, backend, "    scopes: [mcp:tools]\n", `  authorization:
    rules:
    - name: everyone
      tools: [echo]
    - name: admins
      tools: [admin_echo]
      scopes: ["tools:admin"]
`)

	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	c := connectWithHydra(t, ctx, hydra, mcpURL, []string{"mcp:tools", "tools:admin"})
	first := claimsOf(t, c.accessToken(t, ctx))
	if !slices.Equal(first.Scopes, []string{"mcp:tools"}) {
		t.Errorf("the first token's scp is %v, want [mcp:tools] (what the resource metadata advertises)", first.Scopes)
	}
	if got := c.call(t, ctx, "echo", "ordinary"); got != "ordinary" {
		t.Errorf("echo answered %q, want %q", got, "ordinary")
	}
	if len(c.fetcher.requests()) != 1 {
		t.Errorf("%d authorization requests before admin_echo, want 1", len(c.fetcher.requests()))
	}
	if got := c.call(t, ctx, "admin_echo", "stepped up"); got != "admin: stepped up" {
		t.Errorf("admin_echo answered %q, want %q", got, "admin: stepped up")
	}
	logExchanges(t, c.exchanges)

	// The gateway's 403: insufficient_scope, naming tools:admin and the
	// resource metadata.
	var refusals []exchange
	for _, e := range c.exchanges.all() {
		if e.url == mcpURL && e.status == http.StatusForbidden {
			refusals = append(refusals, e)
		}
	}
	if len(refusals) != 1 {
		t.Fatalf("the gateway answered 403 %d times, want once", len(refusals))
	}
	challenges, err := oauthex.ParseWWWAuthenticate([]string{refusals[0].challenge})
	if err != nil || len(challenges) != 1 {
		t.Fatalf("the 403's WWW-Authenticate %q: %v", refusals[0].challenge, err)
	}
	params := challenges[0].Params
	wantMetadata := strings.Replace(mcpURL, "/mcp", "/.well-known/oauth-protected-resource/mcp", 1)
	if challenges[0].Scheme != "bearer" || params["error"] != "insufficient_scope" || params["scope"] != "tools:admin" || params["resource_metadata"] != wantMetadata {
		t.Errorf("the 403's WWW-Authenticate is %q, want Bearer error=\"insufficient_scope\", scope=\"tools:admin\", resource_metadata=%q", refusals[0].challenge, wantMetadata)
	}

	// Two authorization requests: mcp:tools, then both scopes; Hydra's
	// consent app granted each, and the token now holds both.
	asked := c.fetcher.requests()
	if len(asked) != 2 {
		t.Fatalf("%d authorization requests, want 2", len(asked))
	}
	scopes := func(u *url.URL) []string {
		s := strings.Fields(u.Query().Get("scope"))
		slices.Sort(s)
		return s
	}
	t.Logf("authorization requests asked for %v, then %v", scopes(asked[0]), scopes(asked[1]))
	if got := scopes(asked[0]); !slices.Equal(got, []string{"mcp:tools"}) {
		t.Errorf("the first authorization request asked for %v, want [mcp:tools]", got)
	}
	if got := scopes(asked[1]); !slices.Equal(got, []string{"mcp:tools", "tools:admin"}) {
		t.Errorf("the second authorization request asked for %v, want [mcp:tools tools:admin]", got)
	}
	consents := hydra.Consents()
	if len(consents) != 2 {
		t.Fatalf("Hydra's consents %+v, want 2", consents)
	}
	granted := slices.Sorted(slices.Values(consents[1].Scopes))
	if !slices.Equal(granted, []string{"mcp:tools", "tools:admin"}) {
		t.Errorf("the second consent granted %v, want [mcp:tools tools:admin]", granted)
	}
	if got := slices.Sorted(slices.Values(claimsOf(t, c.accessToken(t, ctx)).Scopes)); !slices.Equal(got, []string{"mcp:tools", "tools:admin"}) {
		t.Errorf("the stepped-up token's scp is %v, want [mcp:tools tools:admin]", got)
	}

	// The refused call never reached the backend; the retried one did, once.
	if n := backend.adminCalls.Load(); n != 1 {
		t.Errorf("admin_echo reached the backend %d times, want 1", n)
	}
	if n := backend.echoCalls.Load(); n != 1 {
		t.Errorf("echo reached the backend %d times, want 1", n)
	}
}
