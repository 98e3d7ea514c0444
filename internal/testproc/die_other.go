//go:build !linux

package testproc

import "os/exec"

// DieWithParent does nothing where a child's death cannot be tied to its
// parent's: there only the test's cleanups stop the process.
func DieWithParent(*exec.Cmd) {}
