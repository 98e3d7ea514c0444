package main

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestWaitReturnsZeroOnTermination(t *testing.T) {
	for _, sig := range []os.Signal{syscall.SIGTERM, syscall.SIGINT} {
		t.Run(sig.String(), func(t *testing.T) {
			signals := make(chan os.Signal, 2)
			signals <- syscall.SIGCHLD
			signals <- sig
			if code := wait(signals); code != 0 {
				t.Fatalf("wait returned %d, want 0", code)
			}
		})
	}
}

func TestReapCollectsExitedChildren(t *testing.T) {
	path, err := exec.LookPath("true")
	if err != nil {
		t.Skip("no true(1) to start as a child")
	}
	// Started but never waited for: once it exits it stays a zombie until
	// reap collects it.
	pid, err := syscall.ForkExec(path, []string{"true"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	// Wait until it is a zombie, without collecting it ourselves.
	stat := fmt.Sprintf("/proc/%d/stat", pid)
	deadline := time.Now().Add(10 * time.Second)
	for {
		b, err := os.ReadFile(stat)
		if err != nil {
			t.Skipf("cannot read the child's state: %v", err)
		}
		// The state follows the command name in parentheses: "pid (comm) Z ...".
		if f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:])); len(f) > 0 && f[0] == "Z" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("child %d did not exit within 10s", pid)
		}
		time.Sleep(10 * time.Millisecond)
	}

	reap()

	var status syscall.WaitStatus
	if _, err := syscall.Wait4(pid, &status, syscall.WNOHANG, nil); !errors.Is(err, syscall.ECHILD) {
		t.Fatalf("child %d was not reaped: wait4 returned %v, want ECHILD", pid, err)
	}
}
