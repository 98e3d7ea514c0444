//go:build linux

package gateway

import (
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"syscall"
)

// poller tells idle detached streams (detach.go) that one of their
// connections became readable, with one epoll instance of its own and one
// goroutine for every stream of the process: an idle stream holds no
// goroutine. Each registration is one-shot: a stream re-arms its backend's
// connection when it goes idle again, and its client's is armed once (any
// byte or the end of the client's connection ends the stream).
//
// Every epoll operation on a connection's file descriptor runs inside that
// connection's syscall.RawConn.Control, which holds the descriptor open: a
// closed connection's descriptor, whose number the kernel may have handed
// to another connection already, is never touched. Closing a connection
// removes it from the epoll set by itself.
type poller struct {
	epfd int
	mu   sync.Mutex
	// streams by their id, which events carry instead of descriptors.
	streams map[int32]*continuation
	next    int32
}

// Which of a stream's connections an event is about.
const (
	sideBackend int32 = iota
	sideClient
)

var (
	pollerOnce    sync.Once
	processPoller *poller
)

// streamPoller returns the process's poller, started on first use; nil
// when epoll is not available, which leaves each stream a goroutine that
// waits on its client.
func streamPoller() *poller {
	pollerOnce.Do(func() {
		epfd, err := syscall.EpollCreate1(syscall.EPOLL_CLOEXEC)
		if err != nil {
			slog.Warn("no epoll instance for idle event streams: each keeps a goroutine", "error", err)
			return
		}
		processPoller = &poller{epfd: epfd, streams: map[int32]*continuation{}}
		go processPoller.run()
	})
	return processPoller
}

// add gives c an id for events.
func (p *poller) add(c *continuation) int32 {
	p.mu.Lock()
	defer p.mu.Unlock()
	for {
		p.next++
		if p.next <= 0 {
			p.next = 1
		}
		if _, used := p.streams[p.next]; !used {
			p.streams[p.next] = c
			return p.next
		}
	}
}

// remove forgets id: events still queued for it are dropped.
func (p *poller) remove(id int32) {
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.streams, id)
}

// arm asks for one event, reported for id and side, when conn becomes
// readable or its peer closes it. It fails when conn is closed.
func (p *poller) arm(conn syscall.RawConn, id, side int32) error {
	var err error
	cerr := conn.Control(func(fd uintptr) {
		ev := syscall.EpollEvent{Events: syscall.EPOLLIN | syscall.EPOLLRDHUP | syscall.EPOLLONESHOT, Fd: id, Pad: side}
		err = syscall.EpollCtl(p.epfd, syscall.EPOLL_CTL_MOD, int(fd), &ev)
		if errors.Is(err, syscall.ENOENT) {
			err = syscall.EpollCtl(p.epfd, syscall.EPOLL_CTL_ADD, int(fd), &ev)
		}
	})
	if cerr != nil {
		return cerr
	}
	if err != nil {
		return fmt.Errorf("epoll: %w", err)
	}
	return nil
}

// disarm removes conn from the epoll set, when it is still open.
func (p *poller) disarm(conn syscall.RawConn) {
	_ = conn.Control(func(fd uintptr) {
		_ = syscall.EpollCtl(p.epfd, syscall.EPOLL_CTL_DEL, int(fd), nil)
	})
}

func (p *poller) run() {
	events := make([]syscall.EpollEvent, 128)
	for {
		n, err := syscall.EpollWait(p.epfd, events, -1)
		if err != nil {
			if errors.Is(err, syscall.EINTR) {
				continue
			}
			// Not expected of a valid epoll instance; the streams it
			// watches would never wake, so say so loudly.
			slog.Error("epoll wait failed: idle event streams no longer wake", "error", err)
			return
		}
		for _, ev := range events[:n] {
			p.mu.Lock()
			c := p.streams[ev.Fd]
			p.mu.Unlock()
			if c != nil {
				c.ready(ev.Pad)
			}
		}
	}
}
