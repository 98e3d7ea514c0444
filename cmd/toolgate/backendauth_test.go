package main

import (
	"context"
	"encoding/base64"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/toolgate/toolgate/internal/testgateway"
	"github.com/toolgate/toolgate/internal/testhydra"
	"github.com/toolgate/toolgate/internal/testissuer"
)

// backendAudience is the audience of the MCP server behind the gateway
// at the authorization server, in these tests.
const backendAudience = "https://backend.example/mcp"

// authorizationsBackend is an MCP server that records the Authorization
// header of every request that reaches it.
type authorizationsBackend struct {
	addr string
	mu   sync.Mutex
	seen []string
}

func startAuthorizationsBackend(t *testing.T) *authorizationsBackend {
	t.Helper()
	b := &authorizationsBackend{}
	server := mcp.NewServer(&mcp.Implementation{Name: "remote", Version: "v1.0.0"}, nil)
	mcp.AddTool(server, &mcp.Tool{Name: "echo"}, func(_ context.Context, _ *mcp.CallToolRequest, args echoArgs) (*mcp.CallToolResult, any, error) {
		return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: args.Text}}}, nil, nil
	})
	sdk := mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return server }, &mcp.StreamableHTTPOptions{Stateless: true})
	b.addr = serveOnLoopback(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b.mu.Lock()
		b.seen = append(b.seen, r.Header.Get("Authorization"))
		b.mu.Unlock()
		sdk.ServeHTTP(w, r)
	}))
	return b
}

func (b *authorizationsBackend) authorizations() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return slices.Clone(b.seen)
}

// hydraClients registers with Hydra the gateway's client for the backend
// and a caller's client for the gateway, both with the client credentials
// grant, and returns the gateway's client id and secret and a token of the
// caller's for the gateway.
func hydraClients(t *testing.T, hydra *testhydra.Server) (gatewayID, gatewaySecret, callerToken string) {
	t.Helper()
	gatewayID, gatewaySecret = hydra.CreateClient(t, testhydra.ClientSpec{
		Name: "toolgate-backend", GrantTypes: []string{"client_credentials"}, ResponseTypes: []string{"token"},
		Scopes: []string{"mcp:tools"}, Audience: []string{backendAudience},
	})
	callerID, callerSecret := hydra.CreateClient(t, testhydra.ClientSpec{
		Name: "caller", GrantTypes: []string{"client_credentials"}, ResponseTypes: []string{"token"},
		Scopes: []string{"mcp:tools"}, Audience: []string{hydraAudience},
	})
	return gatewayID, gatewaySecret, hydra.ClientCredentialsToken(t, callerID, callerSecret, []string{"mcp:tools"}, []string{hydraAudience})
}

// startBackendAuthGateway runs toolgate with the MCPServer of
// startHydraGateway's tests, whose backendAuth takes the gateway's token
// from Hydra as client gatewayID with secret, and more clientCredentials
// lines (indented by six spaces); it returns the MCP URL.
func startBackendAuthGateway(t *testing.T, hydra *testhydra.Server, backend *authorizationsBackend, gatewayID, secret, more string) string {
	t.Helper()
	return testgateway.Start(t, func(port int) string {
		spec := testgateway.OIDC(hydra.IssuerURL(), hydra.JWKSURL(), hydraAudience) + fmt.Sprintf(`  backendAuth:
    clientCredentials:
      tokenURL: %s
      clientID: %s
      clientSecretRef: {name: backend-client, key: secret}
      allowInsecureHTTP: true
`, hydra.TokenURL(), gatewayID) + more
		return testgateway.Config(port, backend.addr, spec) + fmt.Sprintf(`---
apiVersion: v1
kind: Secret
metadata: {name: backend-client}
data: {secret: %s}
`, base64.StdEncoding.EncodeToString([]byte(secret)))
	}).URL
}

// The gateway gets its own token for the backend from Ory Hydra (client
// credentials), once, and sends it in place of each caller's token, which
// the backend never sees.
func TestBackendGetsTheGatewaysOwnTokenFromHydra(t *testing.T) {
	hydra := testhydra.Start(t)
	backend := startAuthorizationsBackend(t)
	gatewayID, gatewaySecret, callerToken := hydraClients(t, hydra)
	mcpURL := startBackendAuthGateway(t, hydra, backend, gatewayID, gatewaySecret, "      scopes: [mcp:tools]\n      audience: "+backendAudience+"\n")
	for i := range 3 {
		status, _, body := postMCP(t, mcpURL, callerToken, fmt.Sprintf(`{"jsonrpc":"2.0","id":%d,"method":"tools/call","params":{"name":"echo","arguments":{"text":"hi"}}}`, i))
		if status != http.StatusOK || !strings.Contains(body, `"hi"`) {
			t.Fatalf("call %d: status %d: %s", i, status, body)
		}
	}
	seen := backend.authorizations()
	if len(seen) != 3 {
		t.Fatalf("the backend got %d requests, want 3", len(seen))
	}
	for _, a := range seen {
		token, ok := strings.CutPrefix(a, "Bearer ")
		if !ok || token == callerToken {
			t.Fatalf("the backend got Authorization %q, want the gateway's own bearer token", a)
		}
		claims := claimsOf(t, token)
		if claims.Subject != gatewayID || !slices.Equal(claims.Audience, jwt.Audience{backendAudience}) || !slices.Equal(claims.Scopes, []string{"mcp:tools"}) {
			t.Errorf("the backend's token has sub %q aud %v scp %v, want %s, [%s], [mcp:tools]", claims.Subject, claims.Audience, claims.Scopes, gatewayID, backendAudience)
		}
	}
	if seen[0] != seen[1] || seen[1] != seen[2] {
		t.Errorf("the gateway asked for a token per call, want one cached: %q", seen)
	}
}

// A client secret Hydra refuses fails each call with 502 and a JSON-RPC
// error: the backend is never called, neither without a token nor with
// the caller's.
func TestBackendIsNotCalledWhenHydraRefusesTheGateway(t *testing.T) {
	hydra := testhydra.Start(t)
	backend := startAuthorizationsBackend(t)
	gatewayID, _, callerToken := hydraClients(t, hydra)
	mcpURL := startBackendAuthGateway(t, hydra, backend, gatewayID, "wrong", "")
	status, _, body := postMCP(t, mcpURL, callerToken, `{"jsonrpc":"2.0","id":1,"method":"tools/list"}`)
	if status != http.StatusBadGateway || !strings.Contains(body, "refused the gateway's token request") {
		t.Errorf("status %d: %s; want 502 saying the authorization server refused", status, body)
	}
	if seen := backend.authorizations(); len(seen) != 0 {
		t.Errorf("the backend was called: %q", seen)
	}
}

// Each caller's token is exchanged at the authorization server (RFC 8693)
// for one of the same user for the backend's audience, once per caller's
// token: the backend sees alice's and bob's exchanged tokens, never theirs.
func TestBackendGetsEachCallersTokenExchanged(t *testing.T) {
	issuer, token := startIssuer(t)
	backend := startAuthorizationsBackend(t)
	g := testgateway.Start(t, func(port int) string {
		spec := testgateway.OIDC(issuer.URL(), issuer.JWKSURL(), "limits") + fmt.Sprintf(`  backendAuth:
    tokenExchange:
      tokenURL: %s
      clientID: %s
      clientSecretRef: {name: exchanger, key: secret}
      audience: %s
      allowInsecureHTTP: true
`, issuer.TokenURL(), testissuer.ExchangeClientID, backendAudience)
		return testgateway.Config(port, backend.addr, spec) + fmt.Sprintf(`---
apiVersion: v1
kind: Secret
metadata: {name: exchanger}
data: {secret: %s}
`, base64.StdEncoding.EncodeToString([]byte(testissuer.ExchangeClientSecret)))
	})
	alice, bob := token("alice"), token("bob")
	callers := []struct{ user, token string }{{"alice", alice}, {"bob", bob}, {"alice", alice}}
	for i, c := range callers {
		status, _, body := postMCP(t, g.URL, c.token, fmt.Sprintf(`{"jsonrpc":"2.0","id":%d,"method":"tools/call","params":{"name":"echo","arguments":{"text":"hi"}}}`, i))
		if status != http.StatusOK {
			t.Fatalf("%s: status %d: %s", c.user, status, body)
		}
	}
	seen := backend.authorizations()
	if len(seen) != len(callers) {
		t.Fatalf("the backend got %d requests, want %d", len(seen), len(callers))
	}
	for i, a := range seen {
		exchanged, ok := strings.CutPrefix(a, "Bearer ")
		if !ok || exchanged == callers[i].token {
			t.Fatalf("call %d: the backend got Authorization %q, want an exchanged token", i, a)
		}
		parsed, err := jwt.ParseSigned(exchanged, []jose.SignatureAlgorithm{jose.RS256})
		var claims jwt.Claims
		if err == nil {
			err = parsed.UnsafeClaimsWithoutVerification(&claims)
		}
		if err != nil || claims.Subject != callers[i].user || !slices.Equal(claims.Audience, jwt.Audience{backendAudience}) {
			t.Errorf("call %d: the backend's token has sub %q aud %v (%v), want %s for %s", i, claims.Subject, claims.Audience, err, callers[i].user, backendAudience)
		}
	}
	if seen[0] != seen[2] {
		t.Errorf("alice's token was exchanged twice")
	}
	exchanges := 0
	for _, it := range issuer.IssuedTokens() {
		if it.ClientID == testissuer.ExchangeClientID {
			exchanges++
		}
	}
	if exchanges != 2 {
		t.Errorf("%d exchanges, want 2 (one per caller's token)", exchanges)
	}
}
