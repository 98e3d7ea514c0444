//go:build !linux

package interop

import "syscall"

// childAttributes are the defaults where a child's death cannot be tied to
// the test binary's.
func childAttributes() *syscall.SysProcAttr { return nil }
