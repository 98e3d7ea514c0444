package testproc

import (
	"os/exec"
	"syscall"
)

// DieWithParent makes the kernel kill cmd's process when the test binary
// dies, so that a test killed by its timeout, before its cleanups run,
// leaves nothing behind. Call it before cmd.Start.
func DieWithParent(cmd *exec.Cmd) {
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Pdeathsig = syscall.SIGKILL
}
