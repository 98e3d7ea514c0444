package controller_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"

	"github.com/modelcontextprotocol/go-sdk/mcp"
	"k8s.io/client-go/util/retry"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// fataler is the part of testing.TB (and GinkgoT) the helpers need.
type fataler interface{ Fatal(args ...any) }

// startMCPBackendT serves a go-sdk MCP server with two tools on loopback.
func startMCPBackendT(t fataler) (port int32, stop func()) {
	server := mcp.NewServer(&mcp.Implementation{Name: "backend", Version: "1.0.0"}, nil)
	type args struct{}
	for _, name := range []string{"expensive_tool", "other_tool"} {
		mcp.AddTool(server, &mcp.Tool{Name: name}, func(context.Context, *mcp.CallToolRequest, args) (*mcp.CallToolResult, any, error) {
			return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: name + " done"}}}, nil, nil
		})
	}
	handler := mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return server },
		&mcp.StreamableHTTPOptions{Stateless: true, JSONResponse: true})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: handler}
	go func() { _ = srv.Serve(ln) }()
	return int32(ln.Addr().(*net.TCPAddr).Port), func() { _ = srv.Close() }
}

// rawCall sends a raw JSON-RPC tools/call and returns the status, the
// Retry-After header and the decoded body (status 0 when the request
// failed).
func rawCall(url, token, tool string, id int) (int, string, map[string]any) {
	body := fmt.Sprintf(`{"jsonrpc":"2.0","id":%d,"method":"tools/call","params":{"name":%q,"arguments":{}}}`, id, tool)
	req, err := http.NewRequest(http.MethodPost, url, strings.NewReader(body))
	if err != nil {
		return 0, "", nil
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, "", nil
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var decoded map[string]any
	_ = json.Unmarshal(raw, &decoded)
	return resp.StatusCode, resp.Header.Get("Retry-After"), decoded
}

// change reads obj afresh, applies mutate and writes it, again on a
// conflict: the controller writes status and owned objects concurrently.
func change(obj client.Object, mutate func()) error {
	return retry.RetryOnConflict(retry.DefaultRetry, func() error {
		if err := k8sClient.Get(ctx, client.ObjectKeyFromObject(obj), obj); err != nil {
			return err
		}
		mutate()
		return k8sClient.Update(ctx, obj)
	})
}

// changeStatus is change for the status subresource.
func changeStatus(obj client.Object, mutate func()) error {
	return retry.RetryOnConflict(retry.DefaultRetry, func() error {
		if err := k8sClient.Get(ctx, client.ObjectKeyFromObject(obj), obj); err != nil {
			return err
		}
		mutate()
		return k8sClient.Status().Update(ctx, obj)
	})
}
