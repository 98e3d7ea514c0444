package env

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// The tools every backend MCP server offers.
const (
	ExpensiveTool = "expensive_tool"
	OtherTool     = "other_tool"
)

// Backend is an MCP server built with the go-sdk, served over Streamable HTTP
// with sessions on a free port of a host address. It answers on every path; the first path
// segment of the request that opened a session (a tenant, in the suite's
// terms) selects which server, and which call counters, the session uses,
// so that specs sharing the backend can still count their own calls.
type Backend struct {
	// IP and Port are where the backend listens. The IP is not a loopback
	// address: the API server refuses those in EndpointSlices.
	IP   string
	Port int

	server  *http.Server
	mu      sync.Mutex
	tenants map[string]*tenantServer
}

type tenantServer struct {
	server *mcp.Server
	calls  map[string]*atomic.Int64 // by tool
}

// StartBackend serves a new backend on a free port of ip.
func StartBackend(ip string) (*Backend, error) {
	ln, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
	if err != nil {
		return nil, fmt.Errorf("backend listener on %s: %w", ip, err)
	}
	b := &Backend{IP: ip, Port: ln.Addr().(*net.TCPAddr).Port, tenants: map[string]*tenantServer{}}
	handler := mcp.NewStreamableHTTPHandler(func(r *http.Request) *mcp.Server {
		return b.tenant(tenantOf(r.URL.Path)).server
	}, nil)
	b.server = &http.Server{Handler: handler, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = b.server.Serve(ln) }()
	return b, nil
}

// tenantOf is the first segment of a path.
func tenantOf(path string) string {
	first, _, _ := strings.Cut(strings.TrimPrefix(path, "/"), "/")
	return first
}

func (b *Backend) tenant(name string) *tenantServer {
	b.mu.Lock()
	defer b.mu.Unlock()
	if t, ok := b.tenants[name]; ok {
		return t
	}
	t := &tenantServer{
		server: mcp.NewServer(&mcp.Implementation{Name: "conformance-backend-" + name, Version: "v1.0.0"}, nil),
		calls:  map[string]*atomic.Int64{},
	}
	for _, tool := range []string{ExpensiveTool, OtherTool} {
		counter := &atomic.Int64{}
		t.calls[tool] = counter
		mcp.AddTool(t.server, &mcp.Tool{Name: tool, Description: "Answers " + tool + " done."},
			func(context.Context, *mcp.CallToolRequest, struct{}) (*mcp.CallToolResult, any, error) {
				counter.Add(1)
				return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: tool + " done"}}}, nil, nil
			})
	}
	b.tenants[name] = t
	return t
}

// Calls is how many times tool was called in sessions opened under
// /<tenant>/.
func (b *Backend) Calls(tenant, tool string) int64 {
	t := b.tenant(tenant)
	if c, ok := t.calls[tool]; ok {
		return c.Load()
	}
	return 0
}

// Close stops serving.
func (b *Backend) Close() error { return b.server.Close() }

// EndpointSliceFor points a selector-less Service's port at the backend.
// The API server refuses loopback IPs in EndpointSlices, so a backend on
// loopback is named by an FQDN slice under localhost, which toolgate
// resolves to the loopback address (RFC 6761) in standalone mode and, with
// --dev-localhost-endpoints (startProxies passes it), in proxy mode; a
// backend on another address (--backend-address) gets an IPv4 slice.
func (e *Env) EndpointSliceFor(svc *corev1.Service) *discoveryv1.EndpointSlice {
	port := svc.Spec.Ports[0]
	ready := true
	addressType, address := discoveryv1.AddressTypeIPv4, e.Backend.IP
	if ip := net.ParseIP(e.Backend.IP); ip != nil && ip.IsLoopback() {
		addressType, address = discoveryv1.AddressTypeFQDN, "mcp-backend.localhost"
	}
	return &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{
			Name:      svc.Name + "-backend",
			Namespace: svc.Namespace,
			Labels:    map[string]string{discoveryv1.LabelServiceName: svc.Name},
		},
		AddressType: addressType,
		Ports: []discoveryv1.EndpointPort{{
			Name:     &port.Name,
			Port:     ptrTo(int32(e.Backend.Port)),
			Protocol: ptrTo(corev1.ProtocolTCP),
		}},
		Endpoints: []discoveryv1.Endpoint{{
			Addresses:  []string{address},
			Conditions: discoveryv1.EndpointConditions{Ready: &ready},
		}},
	}
}

func ptrTo[T any](v T) *T { return &v }
