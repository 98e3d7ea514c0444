package testredis

import (
	"os/exec"
	"syscall"
)

// dieWithParent makes the kernel kill the child (redis-server,
// redis-sentinel, redis-cli) when the test process dies, so that a test
// binary killed by its timeout leaves nothing behind.
func dieWithParent(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
