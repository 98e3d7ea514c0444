package interop

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/toolgate/toolgate/internal/testgateway"
	"github.com/toolgate/toolgate/internal/testissuer"
)

// The TypeScript client's audience and the limited tool's budget.
const (
	tsAudience   = "interop"
	limitedTool  = "expensive_tool"
	otherTool    = "other_tool"
	limitPerUser = 2
)

// tsReport is what ts-client.mjs prints.
type tsReport struct {
	SDKVersion      string          `json:"sdkVersion"`
	Node            string          `json:"node"`
	Connected       bool            `json:"connected"`
	ProtocolVersion string          `json:"protocolVersion"`
	Session         bool            `json:"session"`
	Tools           []string        `json:"tools"`
	Calls           []tsCall        `json:"calls"`
	AfterRefusal    *tsCall         `json:"afterRefusal"`
	Fatal           *tsError        `json:"fatal"`
	Wire            []tsWireReply   `json:"wire"`
	Server          json.RawMessage `json:"server"`
}

type tsCall struct {
	OK      bool     `json:"ok"`
	IsError bool     `json:"isError"`
	Text    string   `json:"text"`
	Error   *tsError `json:"error"`
}

// tsError is everything an error thrown by the SDK carries.
type tsError struct {
	Class     string          `json:"class"`
	Name      string          `json:"name"`
	Code      json.RawMessage `json:"code"`
	Message   string          `json:"message"`
	OwnFields []string        `json:"ownFields"`
	Data      json.RawMessage `json:"data"`
}

// tsWireReply is a non-2xx HTTP response as the transport received it.
type tsWireReply struct {
	Method      string `json:"method"`
	Status      int    `json:"status"`
	RetryAfter  string `json:"retryAfter"`
	ContentType string `json:"contentType"`
	Body        string `json:"body"`
}

// jsonrpcError is the error object of a JSON-RPC response.
type jsonrpcError struct {
	Error struct {
		Code    int    `json:"code"`
		Message string `json:"message"`
		Data    struct {
			RetryAfterSeconds int `json:"retryAfterSeconds"`
		} `json:"data"`
	} `json:"error"`
}

// startToolsBackend is a go-sdk MCP server with sessions (stateful
// Streamable HTTP) serving the limited tool and another one, both taking
// any arguments.
func startToolsBackend(t *testing.T) string {
	t.Helper()
	server := mcp.NewServer(&mcp.Implementation{Name: "interop-backend", Version: "v1.0.0"}, nil)
	for _, tool := range []string{limitedTool, otherTool} {
		mcp.AddTool(server, &mcp.Tool{Name: tool}, func(context.Context, *mcp.CallToolRequest, map[string]any) (*mcp.CallToolResult, any, error) {
			return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: tool + " done"}}}, nil, nil
		})
	}
	handler := mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return server }, nil)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: handler, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return ln.Addr().String()
}

func TestTypeScriptClientThroughTheGatewayIsRefusedAfterItsLimit(t *testing.T) {
	issuer, err := testissuer.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(issuer.Close)
	token, err := issuer.Token("alice", tsAudience)
	if err != nil {
		t.Fatal(err)
	}
	url := startGateway(t, gatewayRoute{
		backend: startToolsBackend(t),
		policy: testgateway.OIDC(issuer.URL(), issuer.JWKSURL(), tsAudience) + fmt.Sprintf(`  rateLimiting:
    tools:
    - name: %s
      perUser: {maxTokens: %d, refillPeriod: 1h}`, limitedTool, limitPerUser),
	})

	out := runNode(t, []string{"TOOLGATE_TOKEN=" + token}, "ts-client.mjs", url, limitedTool, otherTool, "5")
	var report tsReport
	if err := json.Unmarshal(out, &report); err != nil {
		t.Fatalf("ts-client.mjs printed no report: %v\n%s", err, out)
	}
	t.Logf("TypeScript SDK %s on Node.js %s through toolgate:\n%s", report.SDKVersion, report.Node, out)

	if !report.Connected || report.Fatal != nil {
		t.Fatalf("the client did not connect and list tools through the gateway: %+v", report.Fatal)
	}
	for _, tool := range []string{limitedTool, otherTool} {
		if !strings.Contains(strings.Join(report.Tools, ","), tool) {
			t.Errorf("tools/list through the gateway: %v, want %s among them", report.Tools, tool)
		}
	}
	if len(report.Calls) != limitPerUser+1 {
		t.Fatalf("the client made %d calls of %s before it stopped, want %d admitted and the next refused: %+v",
			len(report.Calls), limitedTool, limitPerUser, report.Calls)
	}
	for i, call := range report.Calls[:limitPerUser] {
		if !call.OK || call.IsError || call.Text != limitedTool+" done" {
			t.Errorf("call %d within the limit: %+v, want the tool's result", i+1, call)
		}
	}

	// What the SDK surfaces for the refusal.
	refused := report.Calls[limitPerUser]
	if refused.OK || refused.Error == nil {
		t.Fatalf("call %d over the limit: %+v, want it refused", limitPerUser+1, refused)
	}
	e := refused.Error
	t.Logf("the SDK's error for the refusal: class %s, name %s, code %s, own fields %v, data %s, message %q",
		e.Class, e.Name, e.Code, e.OwnFields, cmp.Or(string(e.Data), "(none)"), e.Message)
	// TypeScript SDK 1.x: any non-2xx answer to a POST becomes a
	// StreamableHTTPError whose code is the HTTP status and whose message
	// embeds the response body; the Retry-After header is not exposed.
	if e.Class != "StreamableHTTPError" || string(e.Code) != "429" {
		t.Errorf("the refusal surfaced as %s with code %s, want StreamableHTTPError with code 429", e.Class, e.Code)
	}
	body, ok := strings.CutPrefix(e.Message, "Streamable HTTP error: Error POSTing to endpoint: ")
	if !ok {
		t.Errorf("the error message %q does not carry the response body where SDK 1.x puts it", e.Message)
	}
	var rpc jsonrpcError
	if err := json.Unmarshal([]byte(body), &rpc); err != nil {
		t.Errorf("the body in the error message is not a JSON-RPC error: %v: %q", err, body)
	} else if rpc.Error.Code != -32029 || rpc.Error.Data.RetryAfterSeconds <= 0 {
		t.Errorf("the JSON-RPC error in the message: code %d, retryAfterSeconds %d; want -32029 and a positive hint",
			rpc.Error.Code, rpc.Error.Data.RetryAfterSeconds)
	}

	// What the gateway sent, as the transport's fetch received it.
	var wire *tsWireReply
	for i := range report.Wire {
		if report.Wire[i].Status == http.StatusTooManyRequests {
			wire = &report.Wire[i]
		}
	}
	if wire == nil {
		t.Fatalf("no 429 among the non-2xx responses the transport received: %+v", report.Wire)
	}
	t.Logf("on the wire: HTTP %d, Retry-After %q, Content-Type %q, body %s", wire.Status, wire.RetryAfter, wire.ContentType, wire.Body)
	if wire.RetryAfter == "" || wire.Body != body {
		t.Errorf("the 429 on the wire (Retry-After %q, body %q) should carry Retry-After and the body the SDK quoted (%q)",
			wire.RetryAfter, wire.Body, body)
	}

	// The session outlives the refusal: another tool still works.
	if a := report.AfterRefusal; a == nil || !a.OK || a.Text != otherTool+" done" {
		t.Errorf("%s after the refusal, in the same session: %+v, want its result", otherTool, a)
	}
}
