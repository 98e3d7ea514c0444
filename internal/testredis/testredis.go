// Package testredis runs real Redis processes for tests on free loopback
// ports: a single redis-server that can be stopped and started again on the
// same port (to test fail-open), a Sentinel deployment (to test failover) and
// a three-master Cluster.
package testredis

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/toolgate/toolgate/internal/testport"
)

// Server is a redis-server (or redis-sentinel) process owned by a test.
type Server struct {
	mu      sync.Mutex
	port    int
	dir     string
	program string
	ip      string // the address it listens on
	args    []string
	cmd     *exec.Cmd
	exited  chan struct{} // closed when cmd has exited
	// reserved are the ports released when the server is closed: its own,
	// unless it belongs to a deployment that holds them.
	reserved []*testport.Port
}

// Start starts redis-server on a free loopback port. It fails, never skips,
// when redis-server is not installed: `make test` installs it.
func Start() (*Server, error) { return StartOn("127.0.0.1") }

// StartOn starts redis-server on a free port of ip: an address of this
// machine, or of a network namespace the test created, that the clients
// reach (pods of a local cluster).
func StartOn(ip string) (*Server, error) {
	if err := lookPath("redis-server", "redis-server"); err != nil {
		return nil, err
	}
	reserved, err := testport.Reserve(ip, 1)
	if err != nil {
		return nil, err
	}
	ports := testport.Numbers(reserved)
	more := []string{"--bind", ip}
	if parsed := net.ParseIP(ip); parsed == nil || !parsed.IsLoopback() {
		// Protected mode answers only loopback clients when there is no
		// password; ip is where the clients are.
		more = append(more, "--protected-mode", "no")
	}
	s, err := startServer("redis-server", ports[0], func(dir string) ([]string, error) {
		return serverArgs(ports[0], dir, more...), nil
	}, ip)
	if err != nil {
		release(reserved)
		return nil, err
	}
	s.reserved = reserved
	return s, nil
}

// startServer makes a temporary directory, asks args for the program's
// arguments (it may write files there) and starts the program. Nothing is
// left behind when it fails.
func startServer(program string, port int, args func(dir string) ([]string, error), ip ...string) (*Server, error) {
	dir, err := os.MkdirTemp("", "toolgate-"+program+"-")
	if err != nil {
		return nil, fmt.Errorf("start %s: %w", program, err)
	}
	argv, err := args(dir)
	if err != nil {
		_ = os.RemoveAll(dir)
		return nil, fmt.Errorf("start %s: %w", program, err)
	}
	s := &Server{port: port, dir: dir, program: program, args: argv, ip: "127.0.0.1"}
	if len(ip) > 0 {
		s.ip = ip[0]
	}
	if err := s.Restart(); err != nil {
		_ = os.RemoveAll(dir)
		return nil, err
	}
	return s, nil
}

// serverArgs are the arguments of a redis-server on port keeping its files in
// dir: loopback only, no persistence, warnings logged to a file in dir.
func serverArgs(port int, dir string, more ...string) []string {
	return append([]string{
		"--port", strconv.Itoa(port),
		"--bind", "127.0.0.1",
		"--dir", dir,
		"--save", "",
		"--appendonly", "no",
		"--protected-mode", "yes",
		"--loglevel", "warning",
		"--logfile", logFile(dir),
	}, more...)
}

func logFile(dir string) string { return filepath.Join(dir, "redis.log") }

// lookPath fails, with what to do, when program is not installed.
func lookPath(program, debianPackage string) error {
	if _, err := exec.LookPath(program); err != nil {
		return fmt.Errorf("%s is not installed: run the tests with 'make test', which installs it (or 'apt-get install %s'): %w", program, debianPackage, err)
	}
	return nil
}

// Addr is the server's host:port.
func (s *Server) Addr() string { return net.JoinHostPort(s.ip, strconv.Itoa(s.port)) }

// URL is the server's redis:// URL.
func (s *Server) URL() string { return "redis://" + s.Addr() }

// Log is what the server logged (warnings and worse, and Sentinel events),
// for a test's failure message.
func (s *Server) Log() string {
	b, err := os.ReadFile(logFile(s.dir))
	if err != nil {
		return fmt.Sprintf("(no log: %v)", err)
	}
	return string(b)
}

// Restart starts the server again on the same port after Stop. It is a
// no-op when the server is running.
func (s *Server) Restart() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd != nil {
		return nil
	}
	cmd := exec.Command(s.program, s.args...)
	// Redis logs to a file; only errors before the log is open reach stderr.
	cmd.Stderr = os.Stderr
	dieWithParent(cmd)
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", s.program, err)
	}
	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(exited)
	}()
	// The server is ready when it answers, and it must be this process that
	// answers: another test may have taken the port since it was found free.
	err := poll(10*time.Second, func() error {
		select {
		case <-exited:
			return errStop{fmt.Errorf("it exited: %v", cmd.ProcessState)}
		default:
		}
		return isProcess(s.Addr(), cmd.Process.Pid)
	})
	if err != nil {
		_ = cmd.Process.Kill()
		<-exited
		return fmt.Errorf("%s on %s did not start: %w; its log:\n%s", s.program, s.Addr(), err, tail(s.Log(), 20))
	}
	s.cmd, s.exited = cmd, exited
	return nil
}

// Stop kills the server (SIGKILL, no shutdown); the port stays reserved for
// Restart.
func (s *Server) Stop() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		return nil
	}
	_ = s.cmd.Process.Kill()
	<-s.exited
	s.cmd, s.exited = nil, nil
	return nil
}

// Close stops the server, removes its files and releases its port.
func (s *Server) Close() error {
	err := s.Stop()
	release(s.reserved)
	s.reserved = nil
	if rmErr := os.RemoveAll(s.dir); rmErr != nil {
		err = errors.Join(err, fmt.Errorf("remove %s: %w", s.dir, rmErr))
	}
	return err
}

// closeAll closes servers, last started first.
func closeAll(servers []*Server) error {
	var errs []error
	for i := len(servers) - 1; i >= 0; i-- {
		errs = append(errs, servers[i].Close())
	}
	return errors.Join(errs...)
}

// isProcess checks that the server on addr answers and is process pid.
func isProcess(addr string, pid int) error {
	reply, err := command(addr, "INFO", "server")
	if err != nil {
		return err
	}
	info, _ := reply.(string)
	want := "process_id:" + strconv.Itoa(pid)
	for line := range strings.Lines(info) {
		if strings.TrimSpace(line) == want {
			return nil
		}
	}
	return errStop{fmt.Errorf("another process answers on %s (INFO has no %q)", addr, want)}
}

// errStop ends a poll at once.
type errStop struct{ error }

func (e errStop) Unwrap() error { return e.error }

// poll calls check until it returns nil, returns an errStop, or timeout has
// passed; the error is check's last.
func poll(timeout time.Duration, check func() error) error {
	deadline := time.Now().Add(timeout)
	for {
		err := check()
		if err == nil {
			return nil
		}
		if stop, ok := err.(errStop); ok {
			return stop.error
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not within %s: %w", timeout, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// release gives reserved ports back.
func release(ports []*testport.Port) {
	for _, p := range ports {
		p.Release()
	}
}

// tail is the last n lines of s.
func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}
