//go:build !linux

package env

import "syscall"

// childAttributes are the defaults where the parent's death cannot be
// tied to the child's.
func childAttributes() *syscall.SysProcAttr { return nil }
