package interop

import "syscall"

// childAttributes make a child die with the test binary, even when it is
// killed before the test's cleanups run.
func childAttributes() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
