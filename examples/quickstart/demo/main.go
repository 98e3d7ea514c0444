// Command demo runs toolgate's quickstart on this machine: a demo MCP
// server, a demo OIDC issuer with its signing key, and the toolgate
// standalone gateway serving examples/quickstart. It prints commands, with
// tokens for two users, that show the rate limits at work.
package main

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"syscall"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"github.com/modelcontextprotocol/go-sdk/mcp"
)

const (
	mcpAddress    = "127.0.0.1:9001" // examples/quickstart/mcpserver.yaml, EndpointSlice
	issuerAddress = "127.0.0.1:9002" // examples/quickstart/mcpserver.yaml, auth.oidc
	issuer        = "http://" + issuerAddress
	audience      = "toolgate-quickstart"
	gatewayURL    = "http://127.0.0.1:8080/mcp"
)

func main() {
	toolgate := flag.String("toolgate", "bin/toolgate", "the toolgate binary")
	config := flag.String("config", "examples/quickstart", "the folder toolgate standalone serves")
	flag.Parse()
	if err := run(*toolgate, *config); err != nil {
		log.Fatalf("quickstart: %v", err)
	}
}

func run(toolgate, config string) error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	if err := serve(mcpAddress, mcpHandler()); err != nil {
		return fmt.Errorf("demo MCP server: %w", err)
	}
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return err
	}
	if err := serve(issuerAddress, issuerHandler(key)); err != nil {
		return fmt.Errorf("demo OIDC issuer: %w", err)
	}
	alice, err := token(key, "alice")
	if err != nil {
		return err
	}
	bob, err := token(key, "bob")
	if err != nil {
		return err
	}

	cmd := exec.CommandContext(ctx, toolgate, "standalone", "--config", config)
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	cmd.Cancel = func() error { return cmd.Process.Signal(os.Interrupt) }
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", toolgate, err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	if err := waitForPort("127.0.0.1:8080", exited); err != nil {
		return err
	}
	fmt.Printf(instructions, alice, bob)
	select {
	case <-ctx.Done():
		<-exited //nolint:errcheck // interrupted: however toolgate exits, the demo is over
		return nil
	case err := <-exited:
		return fmt.Errorf("toolgate exited: %v", err)
	}
}

const instructions = `
================================================================================
toolgate quickstart is running. In another terminal, paste:

export ALICE=%s
export BOB=%s
call() { curl -s -i http://127.0.0.1:8080/mcp -H "Authorization: Bearer $1" \
  -H 'Content-Type: application/json' -H 'Accept: application/json, text/event-stream' \
  -d '{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"'"$2"'","arguments":{}}}'; echo; }

call "$ALICE" expensive_tool   # 200: passes
call "$ALICE" expensive_tool   # 200: passes (expensive_tool allows 2 per minute per user)
call "$ALICE" expensive_tool   # 429 with Retry-After and JSON-RPC error -32029
call "$BOB"   expensive_tool   # 200: bob has his own buckets
call "$ALICE" other_tool       # 200: other_tool is not limited by expensive_tool's bucket
call nobody   other_tool       # 401: no valid token

Limits are in examples/quickstart/mcpserver.yaml; edit it and toolgate reloads.
Metrics: curl -s http://127.0.0.1:9901/metrics | grep toolgate_ratelimit
Ctrl-C stops everything.
================================================================================
`

func serve(addr string, h http.Handler) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	return nil
}

func waitForPort(addr string, exited <-chan error) error {
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case err := <-exited:
			return fmt.Errorf("toolgate exited before serving: %v", err)
		default:
		}
		if c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond); err == nil {
			c.Close()
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return errors.New("toolgate did not open 127.0.0.1:8080 within 30s")
}

// mcpHandler is a stateless MCP server with two tools.
func mcpHandler() http.Handler {
	server := mcp.NewServer(&mcp.Implementation{Name: "toolgate-demo", Version: "1.0.0"}, nil)
	type args struct{}
	mcp.AddTool(server, &mcp.Tool{Name: "expensive_tool", Description: "A tool worth rate limiting hard."},
		func(context.Context, *mcp.CallToolRequest, args) (*mcp.CallToolResult, any, error) {
			return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: "expensive result"}}}, nil, nil
		})
	mcp.AddTool(server, &mcp.Tool{Name: "other_tool", Description: "A cheap tool."},
		func(context.Context, *mcp.CallToolRequest, args) (*mcp.CallToolResult, any, error) {
			return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: "cheap result"}}}, nil, nil
		})
	return mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return server },
		&mcp.StreamableHTTPOptions{Stateless: true, JSONResponse: true})
}

// issuerHandler serves the demo issuer's discovery document and keys.
func issuerHandler(key *rsa.PrivateKey) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/.well-known/openid-configuration", func(w http.ResponseWriter, _ *http.Request) {
		_ = json.NewEncoder(w).Encode(map[string]any{"issuer": issuer, "jwks_uri": issuer + "/jwks.json"})
	})
	mux.HandleFunc("/jwks.json", func(w http.ResponseWriter, _ *http.Request) {
		_ = json.NewEncoder(w).Encode(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: &key.PublicKey, KeyID: "demo", Algorithm: "RS256", Use: "sig"}}})
	})
	return mux
}

func token(key *rsa.PrivateKey, user string) (string, error) {
	return tokenFrom(key, issuer, user)
}

// tokenFrom signs a day-long token of iss for user.
func tokenFrom(key *rsa.PrivateKey, iss, user string) (string, error) {
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.RS256, Key: key}, (&jose.SignerOptions{}).WithType("JWT").WithHeader("kid", "demo"))
	if err != nil {
		return "", err
	}
	now := time.Now()
	return jwt.Signed(signer).Claims(jwt.Claims{
		Issuer: iss, Subject: user, Audience: jwt.Audience{audience},
		IssuedAt: jwt.NewNumericDate(now), Expiry: jwt.NewNumericDate(now.Add(24 * time.Hour)),
	}).Serialize()
}
