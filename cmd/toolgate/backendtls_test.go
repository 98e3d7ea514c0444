package main

// A remote MCP server behind the real binary: an MCPServer whose Service is
// of type ExternalName, reached over TLS as a BackendTLSPolicy says (a
// private CA from a ConfigMap, the policy's hostname as SNI and as the name
// the certificate must hold), with the MCPServer's limits enforced in
// front of it. A policy whose subject alternative name the certificate
// lacks, or whose CA ConfigMap is missing, gets the client a 5xx and the
// server no call.

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/toolgate/toolgate/controller/pki"
	"github.com/toolgate/toolgate/internal/testgateway"
)

// remoteName is the remote MCP server's name: its certificate's, and the
// policy's hostname. The proxy reaches it through an ExternalName Service
// "localhost" (standalone mode maps localhost to loopback), so the test
// needs no DNS.
const remoteName = "mcp.remote.example"

// tlsMCPBackend is a go-sdk MCP server on loopback over TLS that counts the
// tools/call messages reaching it and records the server names and hosts
// asked for.
type tlsMCPBackend struct {
	port  int
	calls atomic.Int64
	mu    sync.Mutex
	snis  []string
	hosts []string
}

func startTLSMCPBackend(t *testing.T, cert tls.Certificate) *tlsMCPBackend {
	t.Helper()
	b := &tlsMCPBackend{}
	server := mcp.NewServer(&mcp.Implementation{Name: "remote", Version: "v1.0.0"}, nil)
	mcp.AddTool(server, &mcp.Tool{Name: "expensive_tool"}, func(context.Context, *mcp.CallToolRequest, struct{}) (*mcp.CallToolResult, any, error) {
		b.calls.Add(1)
		return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: "done"}}}, nil, nil
	})
	// It stands for a server elsewhere, asked for by its own name (the
	// route's URLRewrite), not for a local one that a page could reach
	// through DNS rebinding: go-sdk's guard for local servers is off.
	sdk := mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return server },
		&mcp.StreamableHTTPOptions{Stateless: true, DisableLocalhostProtection: true})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b.port = ln.Addr().(*net.TCPAddr).Port
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			b.mu.Lock()
			b.snis = append(b.snis, r.TLS.ServerName)
			b.hosts = append(b.hosts, r.Host)
			b.mu.Unlock()
			sdk.ServeHTTP(w, r)
		}),
		TLSConfig:         &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12},
		ReadHeaderTimeout: 10 * time.Second,
	}
	go func() { _ = srv.ServeTLS(ln, "", "") }()
	t.Cleanup(func() { _ = srv.Close() })
	return b
}

func (b *tlsMCPBackend) serverNames() (snis, hosts []string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]string(nil), b.snis...), append([]string(nil), b.hosts...)
}

// remoteConfig is a Gateway with three routes to the same remote server,
// each through an MCPServer of its own whose Service is ExternalName
// localhost at the server's port, each with its own BackendTLSPolicy:
// /mcp verifies the server with caPEM and the limits' policy, /wrong-san
// wants a subject alternative name the certificate lacks, /no-ca names a
// CA ConfigMap that does not exist.
func remoteConfig(port, backendPort int, caPEM, policy string) string {
	var b strings.Builder
	fmt.Fprintf(&b, `apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw}
spec:
  gatewayClassName: toolgate
  listeners:
  - {name: http, protocol: HTTP, port: %d}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: remote-ca}
data:
  ca.crt: |
    %s
`, port, strings.ReplaceAll(strings.TrimSpace(caPEM), "\n", "\n    "))
	for _, r := range []struct{ name, path, policy, validation string }{
		{"remote", "/mcp", policy, "caCertificateRefs: [{group: '', kind: ConfigMap, name: remote-ca}]"},
		{"wrong-san", "/wrong-san", "", "caCertificateRefs: [{group: '', kind: ConfigMap, name: remote-ca}]\n    subjectAltNames: [{type: Hostname, hostname: other.remote.example}]"},
		{"no-ca", "/no-ca", "", "caCertificateRefs: [{group: '', kind: ConfigMap, name: missing-ca}]"},
	} {
		fmt.Fprintf(&b, `---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: %[1]s}
spec:
  parentRefs: [{name: gw}]
  rules:
  - matches: [{path: {type: PathPrefix, value: %[2]s}}]
    filters:
    - type: ExtensionRef
      extensionRef: {group: toolgate.dev, kind: MCPServer, name: %[1]s}
    - type: URLRewrite
      urlRewrite: {hostname: %[3]s}
    backendRefs: [{group: toolgate.dev, kind: MCPServer, name: %[1]s}]
---
apiVersion: toolgate.dev/v1alpha1
kind: MCPServer
metadata: {name: %[1]s}
spec:
  serviceRef: {name: %[1]s, port: %[4]d}
%[5]s---
apiVersion: v1
kind: Service
metadata: {name: %[1]s}
spec:
  type: ExternalName
  externalName: localhost
  ports: [{name: https, port: %[4]d}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: BackendTLSPolicy
metadata: {name: %[1]s}
spec:
  targetRefs: [{group: '', kind: Service, name: %[1]s}]
  validation:
    hostname: %[3]s
    %[6]s
`, r.name, r.path, remoteName, backendPort, r.policy, r.validation)
	}
	return b.String()
}

func TestARemoteMCPServerOverTLSBehindTheGateway(t *testing.T) {
	ca, err := pki.NewCA(time.Now())
	if err != nil {
		t.Fatal(err)
	}
	cert, err := ca.IssueServer([]string{remoteName}, nil, time.Now(), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	backend := startTLSMCPBackend(t, cert)
	issuer, token := startIssuer(t)
	g := testgateway.Start(t, func(port int) string {
		return remoteConfig(port, backend.port, string(ca.CertPEM()), testgateway.OIDC(issuer.URL(), issuer.JWKSURL(), "limits")+limits)
	})
	base := strings.TrimSuffix(g.URL, "/mcp")
	alice, bob := token("alice"), token("bob")

	t.Run("the policies' status says which can be used", func(t *testing.T) {
		// Printed once the configuration is applied, which /readyz may
		// tell first.
		g.WaitFor(t, "the status printed", func() bool { return strings.Contains(g.Log.String(), "BackendTLSPolicy default/no-ca") })
		out := g.Log.String()
		for _, want := range []string{
			"BackendTLSPolicy default/remote (Gateway gw): Accepted=True ResolvedRefs=True",
			"BackendTLSPolicy default/wrong-san (Gateway gw): Accepted=True ResolvedRefs=True",
			"BackendTLSPolicy default/no-ca (Gateway gw): Accepted=False ResolvedRefs=False",
			"Accepted NoValidCACertificate",
			"ResolvedRefs InvalidCACertificateRef: spec.validation.caCertificateRefs[0]: ConfigMap default/missing-ca not found",
		} {
			if !strings.Contains(out, want) {
				t.Errorf("the gateway's output lacks %q:\n%s", want, out)
			}
		}
	})
	t.Run("calls reach the server over TLS, within each user's limit", func(t *testing.T) {
		codes := map[int]int{}
		for i := range 3 {
			codes[post(t, g.URL, alice, http.MethodPost, toolCall(i, "expensive_tool"))]++
		}
		codes[post(t, g.URL, bob, http.MethodPost, toolCall(9, "expensive_tool"))]++
		if codes[http.StatusOK] != 3 || codes[http.StatusTooManyRequests] != 1 {
			t.Errorf("statuses %v, want alice's 2 calls and bob's 1 admitted (200) and alice's third refused (429)", codes)
		}
		if n := backend.calls.Load(); n != 3 {
			t.Errorf("the server got %d calls, want 3", n)
		}
		snis, hosts := backend.serverNames()
		for i := range snis {
			if snis[i] != remoteName || hosts[i] != remoteName {
				t.Errorf("the gateway asked for server name %q and host %q, want %q for both", snis[i], hosts[i], remoteName)
			}
		}
	})
	t.Run("a certificate without the policy's subject alternative name is refused with 503", func(t *testing.T) {
		before := backend.calls.Load()
		if code := post(t, base+"/wrong-san", "", http.MethodPost, toolCall(1, "expensive_tool")); code != http.StatusServiceUnavailable {
			t.Errorf("status %d, want 503", code)
		}
		if n := backend.calls.Load() - before; n != 0 {
			t.Errorf("the server got %d calls through the refused policy, want none", n)
		}
		why := "the certificate holds none of the subject alternative names DNS:other.remote.example"
		g.WaitFor(t, "a log line saying why the handshake failed", func() bool { return strings.Contains(g.Log.String(), why) })
	})
	t.Run("a policy without a valid CA certificate answers 500 and dials nothing", func(t *testing.T) {
		snis, _ := backend.serverNames()
		before := len(snis)
		if code := post(t, base+"/no-ca", "", http.MethodPost, toolCall(1, "expensive_tool")); code != http.StatusInternalServerError {
			t.Errorf("status %d, want 500", code)
		}
		if snis, _ = backend.serverNames(); len(snis) != before {
			t.Errorf("the server got %d requests, want none", len(snis)-before)
		}
	})
}
