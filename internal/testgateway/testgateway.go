// Package testgateway runs the toolgate binary in standalone mode for tests:
// a configuration of one Gateway with one MCP route, and the process that
// serves it on free loopback ports.
package testgateway

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/toolgate/toolgate/internal/testproc"
)

// Config is a Gateway listening on port with one HTTPRoute that sends /mcp
// through an ExtensionRef filter to the MCPServer "mcp", whose Service's
// EndpointSlice is the backend at backendAddr on loopback. policy holds the
// MCPServer's spec lines besides serviceRef (auth, rateLimiting, ...),
// indented by two spaces; "" for none.
func Config(port int, backendAddr, policy string) string {
	return ConfigWithFilters(port, backendAddr, policy, "")
}

// ConfigWithFilters is Config whose route rule has more filters after the
// ExtensionRef: filters holds their list items, indented by four spaces.
func ConfigWithFilters(port int, backendAddr, policy, filters string) string {
	_, backendPort, _ := net.SplitHostPort(backendAddr)
	if policy != "" {
		policy = strings.TrimRight(policy, "\n") + "\n"
	}
	if filters != "" {
		filters = strings.TrimRight(filters, "\n") + "\n"
	}
	return fmt.Sprintf(`apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw}
spec:
  gatewayClassName: toolgate
  listeners:
  - {name: http, protocol: HTTP, port: %d}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: mcp}
spec:
  parentRefs: [{name: gw}]
  rules:
  - matches: [{path: {type: PathPrefix, value: /mcp}}]
    filters:
    - type: ExtensionRef
      extensionRef: {group: toolgate.dev, kind: MCPServer, name: mcp}
%s    backendRefs: [{group: toolgate.dev, kind: MCPServer, name: mcp}]
---
apiVersion: toolgate.dev/v1alpha1
kind: MCPServer
metadata: {name: mcp}
spec:
  serviceRef: {name: mcp, port: %s}
%s---
apiVersion: v1
kind: Service
metadata: {name: mcp}
spec:
  ports: [{name: mcp, port: %s}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: mcp
  labels: {kubernetes.io/service-name: mcp}
addressType: IPv4
ports: [{name: mcp, port: %s}]
endpoints: [{addresses: [127.0.0.1]}]
`, port, filters, backendPort, policy, backendPort, backendPort)
}

// OIDC is the spec lines of an MCPServer whose callers prove who they are
// with tokens of issuer for audience, for Config's policy.
func OIDC(issuer, jwksURL, audience string) string {
	return fmt.Sprintf("  auth:\n    oidc: {issuer: '%s', jwksURL: '%s', audience: %s, allowInsecureHTTP: true}\n", issuer, jwksURL, audience)
}

// Gateway is a running toolgate standalone process.
type Gateway struct {
	URL   string // the MCP endpoint
	Admin string // host:port of the admin listener
	// Config is the configuration file, which the gateway reloads when it
	// changes.
	Config string
	*testproc.Process
}

// Start runs toolgate standalone on free loopback ports with the
// configuration config makes for its listener port, and extra flags, and
// waits until it is ready.
func Start(t *testing.T, config func(port int) string, flags ...string) *Gateway {
	t.Helper()
	ports := testproc.FreePorts(t, 2)
	port, adminPort := ports[0], ports[1]
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "gateway.yaml"), []byte(config(port)), 0o600); err != nil {
		t.Fatal(err)
	}
	g := &Gateway{
		URL:    fmt.Sprintf("http://127.0.0.1:%d/mcp", port),
		Admin:  fmt.Sprintf("127.0.0.1:%d", adminPort),
		Config: filepath.Join(dir, "gateway.yaml"),
	}
	args := append([]string{"standalone", "--config", dir, "--listen-address", "127.0.0.1", "--admin-address", g.Admin}, flags...)
	g.Process = testproc.Start(t, "toolgate", testproc.Build(t, "github.com/toolgate/toolgate/cmd/toolgate"), args...)
	g.WaitFor(t, "ready", testproc.AnswersOK("http://"+g.Admin+"/readyz"))
	return g
}
