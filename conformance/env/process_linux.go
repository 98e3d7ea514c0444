package env

import "syscall"

// childAttributes make a child die with the suite, even when the test
// binary is killed before AfterSuite runs.
func childAttributes() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
