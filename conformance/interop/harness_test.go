package interop

// The world the interop tests run in: the installed Node.js packages, the
// toolgate binary and go-sdk's everything-server built from the module
// graph, and processes that die with the test.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/toolgate/toolgate/internal/testgateway"
	"github.com/toolgate/toolgate/internal/testproc"
)

// everythingServerPackage is the conformance server go-sdk ships beside its
// SDK; the version is the one go.mod requires.
const everythingServerPackage = "github.com/modelcontextprotocol/go-sdk/conformance/everything-server"

// nodeRunTimeout bounds one run of a Node.js program: a client, or one
// conformance suite (a few seconds on a quiet machine).
const nodeRunTimeout = 3 * time.Minute

func TestMain(m *testing.M) { testproc.Main(m) }

var (
	nodeOnce sync.Once
	nodeDir  string
	nodeErr  error
)

// nodeInstall is the folder hack/node.sh installed: bin/node (Node.js 22)
// and node_modules. TOOLGATE_NODE_DIR names it (the Makefile sets it);
// without it the test runs hack/node.sh itself, which reuses its cache.
func nodeInstall(t *testing.T) string {
	t.Helper()
	nodeOnce.Do(func() {
		if dir := os.Getenv("TOOLGATE_NODE_DIR"); dir != "" {
			nodeDir = dir
		} else {
			script, err := filepath.Abs(filepath.Join("..", "..", "hack", "node.sh"))
			if err != nil {
				nodeErr = err
				return
			}
			var stdout, stderr bytes.Buffer
			cmd := exec.Command(script)
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			if err := cmd.Run(); err != nil {
				nodeErr = fmt.Errorf("install Node.js and the npm packages with %s: %v\n%s", script, err, stderr.String())
				return
			}
			nodeDir = strings.TrimSpace(stdout.String())
		}
		if _, err := os.Stat(filepath.Join(nodeDir, "bin", "node")); err != nil {
			nodeErr = fmt.Errorf("TOOLGATE_NODE_DIR=%s has no bin/node: run hack/node.sh and export TOOLGATE_NODE_DIR=$(hack/node.sh): %w", nodeDir, err)
		}
	})
	if nodeErr != nil {
		t.Fatal(nodeErr)
	}
	return nodeDir
}

// startEverythingServer runs go-sdk's everything-server on a free loopback
// port and returns its address. stateless picks its transport: stateless
// Streamable HTTP speaks 2026-07-28 (and the older revisions without
// sessions); stateful keeps sessions.
func startEverythingServer(t *testing.T, stateless bool) string {
	t.Helper()
	addr := fmt.Sprintf("127.0.0.1:%d", testproc.FreePort(t))
	p := testproc.Start(t, "everything-server", testproc.Build(t, everythingServerPackage), "-http="+addr, fmt.Sprintf("-stateless=%t", stateless))
	p.WaitFor(t, "listening on "+addr, testproc.AcceptsConnections(addr))
	return addr
}

// gatewayRoute is what a test puts behind toolgate: one MCP backend and
// the spec lines of the MCPServer that guards it, besides serviceRef.
type gatewayRoute struct {
	backend string // host:port on loopback
	policy  string // YAML lines under spec:, indented by two spaces
}

// startGateway runs toolgate standalone with route on free loopback ports,
// waits until it is ready, and returns the URL of its MCP endpoint.
func startGateway(t *testing.T, route gatewayRoute) string {
	t.Helper()
	return testgateway.Start(t, func(port int) string { return testgateway.Config(port, route.backend, route.policy) }).URL
}

// runNode runs script (a file in this package) with Node.js 22 from a
// temporary folder that holds a copy of it beside a link to the installed
// node_modules, where ES module imports resolve. It returns the standard
// output; a run that fails fails the test.
func runNode(t *testing.T, env []string, script string, args ...string) []byte {
	t.Helper()
	install := nodeInstall(t)
	dir := t.TempDir()
	if err := os.Symlink(filepath.Join(install, "node_modules"), filepath.Join(dir, "node_modules")); err != nil {
		t.Fatal(err)
	}
	source, err := os.ReadFile(script)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, filepath.Base(script)), source, 0o644); err != nil {
		t.Fatal(err)
	}
	args = append([]string{filepath.Base(script)}, args...)
	stdout, stderr, err := runNodeIn(t, dir, env, args...)
	if err != nil {
		t.Fatalf("node %s: %v\n%s\n%s", strings.Join(args, " "), err, stdout, stderr)
	}
	return stdout
}

// runNodeIn runs Node.js 22 with args in dir and returns its output and
// exit error. A run that outlives nodeRunTimeout fails the test.
func runNodeIn(t *testing.T, dir string, env []string, args ...string) (stdout, stderr []byte, err error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), nodeRunTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(nodeInstall(t), "bin", "node"), args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	testproc.DieWithParent(cmd)
	cmd.WaitDelay = 5 * time.Second
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err = cmd.Run()
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		t.Fatalf("node %s did not finish within %s:\n%s\n%s", strings.Join(args, " "), nodeRunTimeout, out.String(), errOut.String())
	}
	var exit *exec.ExitError
	if err != nil && !errors.As(err, &exit) {
		t.Fatalf("run node %s: %v", strings.Join(args, " "), err)
	}
	return out.Bytes(), errOut.Bytes(), err
}
