// Command pause is the pod sandbox of toolgate's local cluster: it holds a
// pod's namespaces, reaps the zombies reparented to it, and exits 0 on
// SIGINT or SIGTERM, as Kubernetes' own pause container does.
package main

import (
	"errors"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	signals := make(chan os.Signal, 1)
	signal.Notify(signals, syscall.SIGINT, syscall.SIGTERM, syscall.SIGCHLD)
	os.Exit(wait(signals))
}

// wait reaps children on every SIGCHLD until any other signal arrives, and
// returns the exit code then: 0.
func wait(signals <-chan os.Signal) int {
	for sig := range signals {
		if sig != syscall.SIGCHLD {
			return 0
		}
		reap()
	}
	return 0
}

// reap collects every child that has exited. One SIGCHLD may stand for
// several children, so it loops until none is left to collect.
func reap() {
	for {
		var status syscall.WaitStatus
		pid, err := syscall.Wait4(-1, &status, syscall.WNOHANG, nil)
		if errors.Is(err, syscall.EINTR) {
			continue
		}
		if err != nil || pid <= 0 {
			return
		}
	}
}
