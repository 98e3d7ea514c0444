//go:build !linux

package gateway

import "syscall"

// poller is Linux's (poller_linux.go); elsewhere every detached stream
// keeps a goroutine that waits on its client.
type poller struct{}

const (
	sideBackend int32 = iota
	sideClient
)

func streamPoller() *poller { return nil }

func (p *poller) add(*continuation) int32 { return 0 }

func (p *poller) remove(int32) {}

func (p *poller) arm(syscall.RawConn, int32, int32) error { return syscall.ENOTSUP }

func (p *poller) disarm(syscall.RawConn) {}
