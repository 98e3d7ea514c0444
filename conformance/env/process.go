package env

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Process is one run of the toolgate binary (or any command) owned by the
// suite. Its standard output and error go to a log file, which the suite
// shows when a spec fails.
type Process struct {
	// Name says what the process is, such as "controller" or "proxy-a".
	Name string

	cmd     *exec.Cmd
	logPath string
	logFile *os.File

	binary         string
	args, extraEnv []string

	closeLog sync.Once // Stop may be called again on a stopped process
	closeErr error

	done chan struct{}
	mu   sync.Mutex
	err  error // the exit status, once done is closed
}

// startProcess starts binary with args and extra environment variables,
// writing its output to <logDir>/<name>.log.
func startProcess(name, logDir, binary string, args, extraEnv []string) (*Process, error) {
	return launch(name, filepath.Join(logDir, name+".log"), os.O_TRUNC, binary, args, extraEnv)
}

// restart starts a stopped process again with the same command, appending
// to its log.
func (p *Process) restart() (*Process, error) {
	return launch(p.Name, p.logPath, os.O_APPEND, p.binary, p.args, p.extraEnv)
}

func launch(name, logPath string, mode int, binary string, args, extraEnv []string) (*Process, error) {
	logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|mode, 0o644)
	if err != nil {
		return nil, fmt.Errorf("create the log of %s: %w", name, err)
	}
	fmt.Fprintf(logFile, "# %s %s\n", binary, strings.Join(args, " "))
	cmd := exec.Command(binary, args...)
	cmd.Env = append(os.Environ(), extraEnv...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = childAttributes()
	if err := cmd.Start(); err != nil {
		_ = logFile.Close()
		return nil, fmt.Errorf("start %s (%s): %w", name, binary, err)
	}
	p := &Process{
		Name: name, cmd: cmd, logPath: logPath, logFile: logFile, done: make(chan struct{}),
		binary: binary, args: args, extraEnv: extraEnv,
	}
	go func() {
		err := cmd.Wait()
		p.mu.Lock()
		p.err = err
		p.mu.Unlock()
		close(p.done)
	}()
	return p, nil
}

// Exited reports whether the process has ended, and how.
func (p *Process) Exited() (bool, error) {
	select {
	case <-p.done:
		p.mu.Lock()
		defer p.mu.Unlock()
		return true, p.err
	default:
		return false, nil
	}
}

// Stop asks the process to shut down with SIGTERM and kills it if it is
// still running after grace.
func (p *Process) Stop(grace time.Duration) error {
	if exited, _ := p.Exited(); !exited {
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(grace):
			_ = p.cmd.Process.Kill()
			<-p.done
		}
	}
	p.closeLog.Do(func() { p.closeErr = p.logFile.Close() })
	return p.closeErr
}

// Args are the command-line arguments the process was started with.
func (p *Process) Args() []string { return p.args }

// LogPath is the file holding the process's output.
func (p *Process) LogPath() string { return p.logPath }

// LogSize is the current length of the log, to show only what a spec added.
func (p *Process) LogSize() int64 {
	info, err := os.Stat(p.logPath)
	if err != nil {
		return 0
	}
	return info.Size()
}

// LogSince returns the output written after offset, at most the last
// maxBytes of it.
func (p *Process) LogSince(offset int64, maxBytes int64) string {
	f, err := os.Open(p.logPath)
	if err != nil {
		return fmt.Sprintf("(cannot read %s: %v)", p.logPath, err)
	}
	defer func() { _ = f.Close() }() // read only
	info, err := f.Stat()
	if err != nil {
		return fmt.Sprintf("(cannot read %s: %v)", p.logPath, err)
	}
	start := max(offset, info.Size()-maxBytes, 0)
	if _, err := f.Seek(start, io.SeekStart); err != nil {
		return fmt.Sprintf("(cannot read %s: %v)", p.logPath, err)
	}
	b, _ := io.ReadAll(f)
	if start > offset {
		// Cut the partial first line.
		if i := bytes.IndexByte(b, '\n'); i >= 0 {
			b = b[i+1:]
		}
		return fmt.Sprintf("... (earlier lines in %s)\n%s", p.logPath, b)
	}
	return string(b)
}

// errExited is the error of a process that ended while it was expected to
// serve.
func (p *Process) errExited() error {
	exited, err := p.Exited()
	if !exited {
		return nil
	}
	if err == nil {
		err = errors.New("exit status 0")
	}
	return fmt.Errorf("%s exited (%v); its output:\n%s", p.Name, err, p.LogSince(0, 8<<10))
}
