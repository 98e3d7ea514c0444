package controller_test

import (
	"bytes"
	"context"
	"fmt"
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
	"github.com/toolgate/toolgate/internal/testissuer"
	"github.com/toolgate/toolgate/internal/testproc"
)

const standaloneGateway = `
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: local}
spec:
  gatewayClassName: toolgate
  listeners:
  - {name: http, protocol: HTTP, port: %d}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: tools}
spec:
  parentRefs: [{name: local}]
  rules:
  - filters:
    - type: ExtensionRef
      extensionRef: {group: toolgate.dev, kind: MCPServer, name: tools}
    backendRefs:
    - {group: toolgate.dev, kind: MCPServer, name: tools}
---
apiVersion: v1
kind: Service
metadata: {name: mcp}
spec: {ports: [{name: mcp, port: 80}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: mcp, labels: {kubernetes.io/service-name: mcp}}
addressType: IPv4
ports: [{name: mcp, port: %d}]
endpoints: [{addresses: [127.0.0.1]}]
`

const standaloneMCPServer = `
apiVersion: toolgate.dev/v1alpha1
kind: MCPServer
metadata: {name: tools}
spec:
  serviceRef: {name: mcp, port: 80}
  auth:
    oidc: {issuer: %q, jwksURL: %q, audience: toolgate, allowInsecureHTTP: true}
  rateLimiting:
    perUser: {maxTokens: %d, refillPeriod: 1h}
`

// Standalone mode reads the same manifests from files, prints status,
// serves them, reloads on change and keeps the last good configuration.
func TestStandaloneServesReloadsAndKeepsTheLastGoodConfiguration(t *testing.T) {
	// Plain Go test: no API server needed, so it runs outside the Ginkgo suite.
	issuer, err := testissuer.Start()
	if err != nil {
		t.Fatal(err)
	}
	defer issuer.Close()
	backendPort, stopBackend := startMCPBackendT(t)
	defer stopBackend()
	listenPort := int32(testproc.FreePort(t))

	dir := t.TempDir()
	write := func(name, content string) {
		t.Helper()
		// Write then rename, as editors do, so a reload never sees half a file.
		tmp := filepath.Join(dir, "."+name+".tmp")
		if err := os.WriteFile(tmp, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, filepath.Join(dir, name)); err != nil {
			t.Fatal(err)
		}
	}
	write("gateway.yaml", fmt.Sprintf(standaloneGateway, listenPort, backendPort))
	write("mcpserver.yaml", fmt.Sprintf(standaloneMCPServer, issuer.URL(), issuer.JWKSURL(), 1))

	shared, err := filter.NewShared(filter.SharedOptions{Store: limiter.NewMemory(limiter.MemoryOptions{})})
	if err != nil {
		t.Fatal(err)
	}
	server, err := gateway.New(gateway.Options{Logger: discard, SessionKey: bytes.Repeat([]byte{7}, 32), Extensions: controller.MCPFilterBuilder(shared)})
	if err != nil {
		t.Fatal(err)
	}
	out := &testproc.Log{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- controller.RunStandalone(ctx, controller.StandaloneOptions{
			Dir: dir, ListenAddress: "127.0.0.1", Server: server, Filters: shared, Out: out, Logger: discard,
		})
	}()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("RunStandalone: %v", err)
		}
		sctx, c := context.WithTimeout(context.Background(), 5*time.Second)
		defer c()
		_ = server.Shutdown(sctx)
	}()

	eventually := func(what string, f func() bool) {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for !f() {
			if time.Now().After(deadline) {
				t.Fatalf("%s did not happen within 30s; output:\n%s", what, out.String())
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	url := fmt.Sprintf("http://127.0.0.1:%d/mcp", listenPort)
	user := 0
	newUser := func() string {
		user++
		token, err := issuer.Token(fmt.Sprintf("user-%d", user), "toolgate")
		if err != nil {
			t.Fatal(err)
		}
		return token
	}
	// allowedCalls counts how many of n calls of a new user pass.
	allowedCalls := func(n int) int {
		token, passed := newUser(), 0
		for i := range n {
			if code, _, _ := rawCall(url, token, "other_tool", i); code == http.StatusOK {
				passed++
			}
		}
		return passed
	}

	eventually("the first configuration is served", func() bool { return strings.Contains(out.String(), "RateLimitingConfigValid=True") })
	for _, want := range []string{"Gateway default/local: Accepted=True Programmed=True", "HTTPRoute default/tools (parent local): Accepted=True ResolvedRefs=True", "enforced: perUser 1/1h0m0s"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("status output lacks %q:\n%s", want, out.String())
		}
	}
	if got := allowedCalls(3); got != 1 {
		t.Fatalf("with maxTokens 1, %d of 3 calls passed", got)
	}

	write("mcpserver.yaml", fmt.Sprintf(standaloneMCPServer, issuer.URL(), issuer.JWKSURL(), 2))
	eventually("a changed limit is applied", func() bool { return allowedCalls(3) == 2 })

	// perUser without auth is refused exactly as the API server refuses it;
	// the last good configuration keeps serving.
	write("mcpserver.yaml", "apiVersion: toolgate.dev/v1alpha1\nkind: MCPServer\nmetadata: {name: tools}\nspec:\n  serviceRef: {name: mcp, port: 80}\n  rateLimiting:\n    perUser: {maxTokens: 9, refillPeriod: 1m}\n")
	eventually("the invalid file is reported", func() bool { return strings.Contains(out.String(), "rateLimiting.perUser needs spec.auth.oidc") })
	if !strings.Contains(out.String(), "still serving the last good one") {
		t.Errorf("output does not say the last good configuration is kept:\n%s", out.String())
	}
	if got := allowedCalls(3); got != 2 {
		t.Errorf("after an invalid change, %d of 3 calls passed; the last good limit (2) should hold", got)
	}
}
