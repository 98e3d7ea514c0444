// Package testproc runs the project's binaries, and others, as child
// processes of a test: it builds main packages once per test binary, starts
// them with their output captured, waits until they serve, and kills them
// when the test ends.
package testproc

import (
	"bytes"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/toolgate/toolgate/internal/testport"
)

// waitTimeout bounds how long WaitFor waits: generous, for a loaded machine
// running tests with -race.
const waitTimeout = 30 * time.Second

// pollInterval is how often WaitFor asks again.
const pollInterval = 20 * time.Millisecond

// build is one main package built by this test binary.
type build struct {
	once   sync.Once
	binary string
	err    error
}

var (
	buildsMu sync.Mutex
	builds   = map[string]*build{}
	buildDir string // created by the first Build, removed by Main
)

// Build builds the main package pkg once per test binary and returns the
// path of the executable. pkg is what `go build` takes: a folder relative
// to the test's package (".", "../../cmd/toolgate") or an import path of
// the module graph. The build runs with the test's environment, so `go`
// must be on PATH; a failed build fails the test with go's output, and
// every later Build of the same pkg fails the same way.
//
// The executables go to one folder under os.TempDir for the test binary's
// lifetime; Main removes it, and without Main it stays behind.
func Build(t testing.TB, pkg string) string {
	t.Helper()
	buildsMu.Lock()
	b, ok := builds[pkg]
	if !ok {
		b = &build{}
		builds[pkg] = b
	}
	buildsMu.Unlock()
	b.once.Do(func() { b.binary, b.err = goBuild(pkg) })
	if b.err != nil {
		t.Fatal(b.err)
	}
	return b.binary
}

// goBuild runs go build for pkg into a folder of its own under buildDir.
func goBuild(pkg string) (string, error) {
	root, err := buildRoot()
	if err != nil {
		return "", err
	}
	name, err := binaryName(pkg)
	if err != nil {
		return "", err
	}
	dir, err := os.MkdirTemp(root, name+"-")
	if err != nil {
		return "", fmt.Errorf("build %s: %w", pkg, err)
	}
	binary := filepath.Join(dir, name)
	if out, err := exec.Command("go", "build", "-o", binary, pkg).CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build %s: %v\n%s", pkg, err, out)
	}
	return binary, nil
}

// buildRoot is the folder of this test binary's builds, made on first use.
func buildRoot() (string, error) {
	buildsMu.Lock()
	defer buildsMu.Unlock()
	if buildDir == "" {
		dir, err := os.MkdirTemp("", "testproc-")
		if err != nil {
			return "", fmt.Errorf("make a folder for test builds: %w", err)
		}
		buildDir = dir
	}
	return buildDir, nil
}

// binaryName is the name go build would give pkg's executable: the last
// element of its import path, or of its folder when pkg is relative.
func binaryName(pkg string) (string, error) {
	if pkg == "." || pkg == ".." || strings.HasPrefix(pkg, "./") || strings.HasPrefix(pkg, "../") || filepath.IsAbs(pkg) {
		dir, err := filepath.Abs(pkg)
		if err != nil {
			return "", fmt.Errorf("build %s: %w", pkg, err)
		}
		return filepath.Base(dir), nil
	}
	return path.Base(pkg), nil
}

// Main runs the tests of m, removes what Build built, and exits with the
// tests' status. A package whose tests call Build calls it from TestMain.
func Main(m *testing.M) {
	code := m.Run()
	buildsMu.Lock()
	if buildDir != "" {
		_ = os.RemoveAll(buildDir)
	}
	buildsMu.Unlock()
	os.Exit(code)
}

// Log is the output of a process (or anything else written concurrently),
// safe to read while it is written.
type Log struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

// Write appends p to the log.
func (l *Log) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

// String is everything written so far.
func (l *Log) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

// FreePort is one such port.
func FreePort(t testing.TB) int {
	t.Helper()
	return FreePorts(t, 1)[0]
}

// FreePorts is n distinct free ports on 127.0.0.1, reserved for the test
// until it ends (see package testport): nothing else on the machine takes
// them in the meantime, so a server may be started on them and restarted.
func FreePorts(t testing.TB, n int) []int {
	t.Helper()
	ports, err := testport.Reserve("127.0.0.1", n)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		for _, p := range ports {
			p.Release()
		}
	})
	return testport.Numbers(ports)
}

// Process is a child process a test started. It is killed when the test
// ends, and, on Linux, dies with the test binary if that is killed first.
type Process struct {
	// Name says what the process is in failure messages, such as "toolgate".
	Name string
	// Log holds the process's standard output and error.
	Log *Log

	cmd  *exec.Cmd
	done chan struct{} // closed when the process has exited
}

// Start starts binary with args. When the test ends the process is killed
// and waited for, and if the test failed its output is logged.
func Start(t testing.TB, name, binary string, args ...string) *Process {
	t.Helper()
	p := &Process{Name: name, Log: &Log{}, cmd: exec.Command(binary, args...), done: make(chan struct{})}
	p.cmd.Stdout, p.cmd.Stderr = p.Log, p.Log
	DieWithParent(p.cmd)
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start %s (%s): %v", name, binary, err)
	}
	go func() {
		_ = p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		_ = p.cmd.Process.Kill()
		<-p.done
		if t.Failed() {
			t.Logf("%s (%s %s) output:\n%s", name, binary, strings.Join(args, " "), p.Log.String())
		}
	})
	return p
}

// Pid is the process's id.
func (p *Process) Pid() int { return p.cmd.Process.Pid }

// WaitFor polls ready until it holds. It fails the test, with the
// process's output, when the process exits first or when ready has not
// held within 30 seconds. what says what ready checks, such as "ready" or
// "listening on 127.0.0.1:8080".
func (p *Process) WaitFor(t testing.TB, what string, ready func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for !ready() {
		select {
		case <-p.done:
			t.Fatalf("%s exited before %s (%v):\n%s", p.Name, what, p.cmd.ProcessState, p.Log.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not %s within %s:\n%s", p.Name, what, waitTimeout, p.Log.String())
		}
		time.Sleep(pollInterval)
	}
}

// AcceptsConnections is a condition for WaitFor: addr (host:port) accepts
// TCP connections.
func AcceptsConnections(addr string) func() bool {
	return func() bool {
		conn, err := net.DialTimeout("tcp", addr, time.Second)
		if err != nil {
			return false
		}
		conn.Close()
		return true
	}
}

// AnswersOK is a condition for WaitFor: a GET of url answers 200 OK, as a
// readiness endpoint does once the process serves.
func AnswersOK(url string) func() bool {
	return func() bool {
		res, err := http.Get(url)
		if err != nil {
			return false
		}
		res.Body.Close()
		return res.StatusCode == http.StatusOK
	}
}
