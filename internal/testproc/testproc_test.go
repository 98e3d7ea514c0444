package testproc

import (
	"fmt"
	"os"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestMain(m *testing.M) { Main(m) }

const greeter = "./testdata/greeter"

func TestBuildBuildsAPackageOnceAndReturnsTheSameExecutable(t *testing.T) {
	first := Build(t, greeter)
	if !strings.HasSuffix(first, string(os.PathSeparator)+"greeter") {
		t.Errorf("Build(%q) = %s, want an executable named greeter", greeter, first)
	}
	if _, err := os.Stat(first); err != nil {
		t.Fatal(err)
	}
	if again := Build(t, greeter); again != first {
		t.Errorf("a second Build(%q) = %s, want the first build %s", greeter, again, first)
	}
}

func TestAStartedProcessIsWaitedForAndItsOutputLogged(t *testing.T) {
	addr := fmt.Sprintf("127.0.0.1:%d", FreePort(t))
	p := Start(t, "greeter", Build(t, greeter), "-listen", addr)
	p.WaitFor(t, "listening on "+addr, AcceptsConnections(addr))
	if p.Pid() <= 0 {
		t.Errorf("Pid() = %d, want the child's id", p.Pid())
	}
	if log := p.Log.String(); !strings.Contains(log, "hello from greeter") {
		t.Errorf("the log %q lacks the greeting", log)
	}
}

// recorder is a testing.TB whose Fatalf records the message and ends the
// calling goroutine, as the real one does, without failing the test.
type recorder struct {
	*testing.T
	mu    sync.Mutex
	fatal string
}

func (r *recorder) Fatalf(format string, args ...any) {
	r.mu.Lock()
	r.fatal = fmt.Sprintf(format, args...)
	r.mu.Unlock()
	runtime.Goexit()
}

func TestWaitForFailsWithTheOutputWhenTheProcessExitsFirst(t *testing.T) {
	p := Start(t, "greeter", Build(t, greeter), "-exit", "3")
	r := &recorder{T: t}
	done := make(chan struct{})
	go func() {
		defer close(done)
		p.WaitFor(r, "ready", func() bool { return false })
	}()
	select {
	case <-done:
	case <-time.After(2 * waitTimeout):
		t.Fatal("WaitFor did not return after the process exited")
	}
	for _, want := range []string{"greeter exited before ready", "exit status 3", "hello from greeter"} {
		if !strings.Contains(r.fatal, want) {
			t.Errorf("WaitFor failed with %q, want it to say %q", r.fatal, want)
		}
	}
}

func TestLogKeepsEveryConcurrentWrite(t *testing.T) {
	var log Log
	var wg sync.WaitGroup
	for range 50 {
		wg.Go(func() { fmt.Fprint(&log, "line\n") })
	}
	wg.Wait()
	if n := strings.Count(log.String(), "line\n"); n != 50 {
		t.Errorf("the log has %d lines, want 50", n)
	}
}
