package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/toolgate/toolgate/controller"
	"github.com/toolgate/toolgate/filter"
	"github.com/toolgate/toolgate/filter/limiter"
	"github.com/toolgate/toolgate/gateway"
)

// The quickstart's configuration, demo MCP server and demo issuer, served
// by standalone mode on free ports, answer the printed commands as the
// instructions say.
func TestTheQuickstartBehavesAsItsInstructionsSay(t *testing.T) {
	listen := func() (net.Listener, string) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		return ln, ln.Addr().String()
	}
	mcpLn, mcpAddr := listen()
	issuerLn, issuerAddr := listen()
	gatewayLn, gatewayAddr := listen()
	gatewayLn.Close() // the gateway binds it

	// The issuer URL is in the tokens, so the demo's must be served here.
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = http.Serve(mcpLn, mcpHandler()) }()
	go func() { _ = http.Serve(issuerLn, rewriteIssuer(issuerHandler(key), issuerAddr)) }()

	dir := t.TempDir()
	replacer := strings.NewReplacer(
		issuerAddress, issuerAddr,
		"port: 9001", "port: "+portOf(mcpAddr),
		"port: 8080", "port: "+portOf(gatewayAddr),
	)
	for _, name := range []string{"gateway.yaml", "mcpserver.yaml"} {
		raw, err := os.ReadFile(filepath.Join("..", name))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, name), []byte(replacer.Replace(string(raw))), 0o644); err != nil {
			t.Fatal(err)
		}
	}

	shared, err := filter.NewShared(filter.SharedOptions{Store: limiter.NewMemory(limiter.MemoryOptions{})})
	if err != nil {
		t.Fatal(err)
	}
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	server, err := gateway.New(gateway.Options{Logger: quiet, SessionKey: bytes.Repeat([]byte{1}, 32), Extensions: controller.MCPFilterBuilder(shared)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	defer func() { _ = server.Shutdown(context.Background()) }()
	var out bytes.Buffer
	started := make(chan error, 1)
	go func() {
		started <- controller.RunStandalone(ctx, controller.StandaloneOptions{
			Dir: dir, ListenAddress: "127.0.0.1", Server: server, Filters: shared, Out: &out, Logger: quiet,
		})
	}()
	url := "http://" + gatewayAddr + "/mcp"
	deadline := time.Now().Add(30 * time.Second)
	for server.Addr("default/quickstart/http") == nil {
		select {
		case err := <-started:
			t.Fatalf("standalone mode stopped: %v\n%s", err, out.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("the quickstart gateway did not start:\n%s", out.String())
		}
		time.Sleep(20 * time.Millisecond)
	}

	alice, err := tokenFrom(key, "http://"+issuerAddr, "alice")
	if err != nil {
		t.Fatal(err)
	}
	bob, err := tokenFrom(key, "http://"+issuerAddr, "bob")
	if err != nil {
		t.Fatal(err)
	}
	steps := []struct {
		token, tool string
		want        int
	}{
		{alice, "expensive_tool", http.StatusOK},
		{alice, "expensive_tool", http.StatusOK},
		{alice, "expensive_tool", http.StatusTooManyRequests},
		{bob, "expensive_tool", http.StatusOK},
		{alice, "other_tool", http.StatusOK},
		{"nobody", "other_tool", http.StatusUnauthorized},
	}
	for i, s := range steps {
		code, retryAfter, body := call(t, url, s.token, s.tool)
		if code != s.want {
			t.Fatalf("step %d (%s): status %d, want %d; body %s", i+1, s.tool, code, s.want, body)
		}
		if code == http.StatusTooManyRequests {
			var rpc struct {
				ID    int `json:"id"`
				Error struct {
					Code int `json:"code"`
					Data struct {
						RetryAfterSeconds int `json:"retryAfterSeconds"`
					} `json:"data"`
				} `json:"error"`
			}
			if err := json.Unmarshal(body, &rpc); err != nil {
				t.Fatal(err)
			}
			if retryAfter == "" || rpc.ID != 7 || rpc.Error.Code != -32029 || rpc.Error.Data.RetryAfterSeconds < 1 {
				t.Errorf("the 429 says Retry-After %q, body %s", retryAfter, body)
			}
		}
	}
}

func portOf(addr string) string {
	_, port, _ := net.SplitHostPort(addr)
	return port
}

// rewriteIssuer serves the demo issuer's documents with this test's address.
func rewriteIssuer(h http.Handler, addr string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rec := &capture{header: http.Header{}}
		h.ServeHTTP(rec, r)
		body := bytes.ReplaceAll(rec.body.Bytes(), []byte(issuerAddress), []byte(addr))
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(body)
	})
}

type capture struct {
	header http.Header
	body   bytes.Buffer
}

func (c *capture) Header() http.Header         { return c.header }
func (c *capture) Write(b []byte) (int, error) { return c.body.Write(b) }
func (c *capture) WriteHeader(int)             {}

// call is the instructions' call(): a tools/call with id 7.
func call(t *testing.T, url, token, tool string) (int, string, []byte) {
	t.Helper()
	body := fmt.Sprintf(`{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":%q,"arguments":{}}}`, tool)
	req, err := http.NewRequest(http.MethodPost, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header.Get("Retry-After"), raw
}
