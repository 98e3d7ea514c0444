//go:build unix

package testredis

import (
	"errors"
	"syscall"
)

// Pause stops the server process with SIGSTOP: it keeps its port and its
// connections but answers nothing, as a hung node or a partition would.
func (s *Server) Pause() error { return s.signal(syscall.SIGSTOP) }

// Resume lets a paused server run again (SIGCONT).
func (s *Server) Resume() error { return s.signal(syscall.SIGCONT) }

func (s *Server) signal(sig syscall.Signal) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		return errors.New("testredis: the server is not running")
	}
	return s.cmd.Process.Signal(sig)
}
