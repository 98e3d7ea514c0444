// Package testport reserves TCP ports for the servers that tests start as
// separate processes (redis-server, Hydra, toolgate), which must be told
// their port before they bind it.
//
// A port found by binding port 0 and closing it is in the kernel's
// ephemeral range, which every outgoing connection and every other bind to
// port 0 on the machine draws from: between the close and the server's own
// bind, any of them may take it. The ports reserved here lie below that
// range (and below the NodePort range of Kubernetes), where the kernel never
// hands a port out by itself, and each is held by an exclusive lock on a
// file shared by every test process on the machine, so two tests never get
// the same one. A lock dies with its process, so a killed test leaves none.
package testport

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
)

// The range ports are reserved from: below Linux's default ephemeral range
// (32768-60999) and Kubernetes' NodePort range (30000-32767).
const (
	first = 20000
	last  = 29999
)

// Port is a reserved TCP port.
type Port struct {
	// Number is the port number.
	Number int
	lock   *os.File
}

// Release gives the port back. The server on it should have exited: a later
// test may reserve it at once.
func (p *Port) Release() {
	if p.lock != nil {
		_ = p.lock.Close() // closing drops the lock; nothing else to undo
		p.lock = nil
	}
}

// Reserve reserves n distinct ports that nothing listens on at ip.
func Reserve(ip string, n int) ([]*Port, error) {
	dir, err := lockDir()
	if err != nil {
		return nil, err
	}
	ports := make([]*Port, 0, n)
	release := func() {
		for _, p := range ports {
			p.Release()
		}
	}
	start := first + rand.IntN(last-first+1)
	for i := 0; i <= last-first && len(ports) < n; i++ {
		number := first + (start-first+i)%(last-first+1)
		port, err := reserve(dir, ip, number)
		if err != nil {
			release()
			return nil, err
		}
		if port != nil {
			ports = append(ports, port)
		}
	}
	if len(ports) < n {
		release()
		return nil, fmt.Errorf("reserve %d ports on %s: only %d of %d-%d are free", n, ip, len(ports), first, last)
	}
	return ports, nil
}

// lockDir is the directory of the ports' lock files, shared by every test
// process on the machine.
func lockDir() (string, error) {
	dir := filepath.Join(os.TempDir(), "toolgate-test-ports")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", fmt.Errorf("reserve a port: %w", err)
	}
	return dir, nil
}

// reserve locks number's file and checks that the port can be bound on ip.
// It returns nil, and no error, when another test holds the port or
// something listens on it.
func reserve(dir, ip string, number int) (*Port, error) {
	lock, err := os.OpenFile(filepath.Join(dir, strconv.Itoa(number)), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("reserve port %d: %w", number, err)
	}
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		_ = lock.Close() // not ours: nothing was locked
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, nil
		}
		return nil, fmt.Errorf("reserve port %d: lock %s: %w", number, lock.Name(), err)
	}
	l, err := net.Listen("tcp", net.JoinHostPort(ip, strconv.Itoa(number)))
	if err != nil {
		_ = lock.Close() // drops the lock
		if errors.Is(err, syscall.EADDRINUSE) {
			return nil, nil
		}
		return nil, fmt.Errorf("reserve port %d on %s: %w", number, ip, err)
	}
	if err := l.Close(); err != nil {
		_ = lock.Close() // drops the lock
		return nil, fmt.Errorf("reserve port %d on %s: %w", number, ip, err)
	}
	return &Port{Number: number, lock: lock}, nil
}

// Numbers are the ports' numbers.
func Numbers(ports []*Port) []int {
	numbers := make([]int, len(ports))
	for i, p := range ports {
		numbers[i] = p.Number
	}
	return numbers
}
