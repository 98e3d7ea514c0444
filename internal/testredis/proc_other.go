//go:build !linux

package testredis

import "os/exec"

// dieWithParent is Linux-only; elsewhere Close must be called.
func dieWithParent(*exec.Cmd) {}
