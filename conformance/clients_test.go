package conformance

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// sessionProtocol is the MCP protocol version the clients speak: the
// session-based Streamable HTTP transport (Mcp-Session-Id).
const sessionProtocol = "2025-06-18"

// requestTimeout bounds one HTTP exchange of a client.
const requestTimeout = 30 * time.Second

// rpcError is a JSON-RPC error object.
type rpcError struct {
	Code    int             `json:"code"`
	Message string          `json:"message"`
	Data    json.RawMessage `json:"data"`
}

// rpcMessage is a JSON-RPC response.
type rpcMessage struct {
	JSONRPC string          `json:"jsonrpc"`
	ID      json.RawMessage `json:"id"`
	Result  json.RawMessage `json:"result"`
	Error   *rpcError       `json:"error"`
}

// rpcResponse is one HTTP exchange of the raw client.
type rpcResponse struct {
	Status int
	Header http.Header
	Body   []byte
	// Message is the JSON-RPC response in the body, from a JSON body or
	// the first event of an event stream that carries one; nil if none.
	Message *rpcMessage
}

func (r *rpcResponse) String() string {
	return fmt.Sprintf("HTTP %d %v\n%s", r.Status, r.Header, r.Body)
}

// rawClient speaks MCP's Streamable HTTP transport with hand-written JSON-RPC
// over net/http, as any non-SDK client would.
type rawClient struct {
	// base is the proxy URL the client sends to unless told otherwise.
	base    string
	path    string
	token   string
	session string
	http    *http.Client
}

func newRawClient(base, path, token string) *rawClient {
	return &rawClient{base: base, path: path, token: token, http: &http.Client{Timeout: requestTimeout}}
}

// post sends one JSON-RPC message to the proxy at base.
func (c *rawClient) post(ctx context.Context, base string, message any) (*rpcResponse, error) {
	body, err := json.Marshal(message)
	if err != nil {
		return nil, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+c.path, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	req.Header.Set("Mcp-Protocol-Version", sessionProtocol)
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	if c.session != "" {
		req.Header.Set("Mcp-Session-Id", c.session)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	out := &rpcResponse{Status: resp.StatusCode, Header: resp.Header}
	if out.Body, err = io.ReadAll(resp.Body); err != nil {
		return nil, fmt.Errorf("read the response to %s: %w", body, err)
	}
	out.Message = decodeMessage(resp.Header.Get("Content-Type"), out.Body)
	return out, nil
}

// decodeMessage finds the JSON-RPC response in a JSON body or an event
// stream.
func decodeMessage(contentType string, body []byte) *rpcMessage {
	decode := func(b []byte) *rpcMessage {
		var m rpcMessage
		if json.Unmarshal(b, &m) != nil || m.JSONRPC == "" || (m.Result == nil && m.Error == nil) {
			return nil
		}
		return &m
	}
	if !strings.HasPrefix(contentType, "text/event-stream") {
		return decode(body)
	}
	var data []byte
	scanner := bufio.NewScanner(bytes.NewReader(body))
	scanner.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for scanner.Scan() {
		line := scanner.Text()
		switch {
		case strings.HasPrefix(line, "data:"):
			data = append(data, strings.TrimPrefix(strings.TrimPrefix(line, "data:"), " ")...)
		case line == "":
			if m := decode(data); m != nil {
				return m
			}
			data = nil
		}
	}
	return decode(data)
}

// initialize opens an MCP session through the proxy at base and keeps its
// id, which any replica accepts: they share the key that seals it.
func (c *rawClient) initialize(ctx context.Context) error {
	resp, err := c.post(ctx, c.base, map[string]any{
		"jsonrpc": "2.0", "id": "init", "method": "initialize",
		"params": map[string]any{
			"protocolVersion": sessionProtocol,
			"capabilities":    map[string]any{},
			"clientInfo":      map[string]any{"name": "conformance-raw-client", "version": "v1"},
		},
	})
	if err != nil {
		return err
	}
	if resp.Status != http.StatusOK || resp.Message == nil || resp.Message.Error != nil {
		return fmt.Errorf("initialize: %s", resp)
	}
	c.session = resp.Header.Get("Mcp-Session-Id")
	if c.session == "" {
		return fmt.Errorf("initialize: no Mcp-Session-Id in %s", resp)
	}
	resp, err = c.post(ctx, c.base, map[string]any{"jsonrpc": "2.0", "method": "notifications/initialized"})
	if err != nil {
		return err
	}
	if resp.Status != http.StatusAccepted {
		return fmt.Errorf("notifications/initialized: %s", resp)
	}
	return nil
}

// callTool sends tools/call with the given JSON-RPC id to the client's
// proxy.
func (c *rawClient) callTool(ctx context.Context, id any, tool string) (*rpcResponse, error) {
	return c.callToolVia(ctx, c.base, id, tool)
}

// callToolVia sends tools/call to the proxy at base.
func (c *rawClient) callToolVia(ctx context.Context, base string, id any, tool string) (*rpcResponse, error) {
	return c.post(ctx, base, map[string]any{
		"jsonrpc": "2.0", "id": id, "method": "tools/call",
		"params": map[string]any{"name": tool, "arguments": map[string]any{}},
	})
}

// bearer adds a bearer token to every request of the go-sdk client.
type bearer struct {
	token string
	next  http.RoundTripper
}

func (b *bearer) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("Authorization", "Bearer "+b.token)
	return b.next.RoundTrip(r)
}

// exchange is a request of the go-sdk client that the gateway refused, as
// it went over the wire.
type exchange struct {
	RequestBody []byte
	Status      int
	Header      http.Header
	Body        []byte
}

// recorder keeps the refused exchanges (HTTP status 400 or more) of the
// go-sdk client, to show what the SDK received but does not surface.
type recorder struct {
	next    http.RoundTripper
	mu      sync.Mutex
	refused []exchange
}

func (rec *recorder) RoundTrip(r *http.Request) (*http.Response, error) {
	var reqBody []byte
	if r.Body != nil {
		b, err := io.ReadAll(r.Body)
		if err != nil {
			return nil, err
		}
		r.Body.Close()
		reqBody = b
		r = r.Clone(r.Context())
		r.Body = io.NopCloser(bytes.NewReader(b))
	}
	resp, err := rec.next.RoundTrip(r)
	if err != nil || resp.StatusCode < http.StatusBadRequest {
		return resp, err
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return nil, err
	}
	resp.Body = io.NopCloser(bytes.NewReader(body))
	rec.mu.Lock()
	rec.refused = append(rec.refused, exchange{RequestBody: reqBody, Status: resp.StatusCode, Header: resp.Header.Clone(), Body: body})
	rec.mu.Unlock()
	return resp, nil
}

func (rec *recorder) exchanges() []exchange {
	rec.mu.Lock()
	defer rec.mu.Unlock()
	return append([]exchange(nil), rec.refused...)
}

// connectSDK opens a go-sdk client session through the proxy at base, as
// the user whose token is given. A non-nil rec sees every exchange.
func connectSDK(ctx context.Context, base, path, token string, rec *recorder) (*mcp.ClientSession, error) {
	transport := http.DefaultTransport
	if rec != nil {
		rec.next = transport
		transport = rec
	}
	httpClient := &http.Client{Transport: &bearer{token: token, next: transport}}
	client := mcp.NewClient(&mcp.Implementation{Name: "conformance-go-sdk-client", Version: "v1"}, nil)
	return client.Connect(ctx, &mcp.StreamableClientTransport{Endpoint: base + path, HTTPClient: httpClient},
		&mcp.ClientSessionOptions{ProtocolVersion: sessionProtocol})
}

// callSDK calls a tool through a go-sdk session and returns its text.
func callSDK(ctx context.Context, cs *mcp.ClientSession, tool string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: tool, Arguments: map[string]any{}})
	if err != nil {
		return "", err
	}
	if res.IsError || len(res.Content) != 1 {
		return "", fmt.Errorf("call %s: unexpected result %+v", tool, res)
	}
	text, ok := res.Content[0].(*mcp.TextContent)
	if !ok {
		return "", fmt.Errorf("call %s: content %T, want text", tool, res.Content[0])
	}
	return text.Text, nil
}
