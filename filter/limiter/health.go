package limiter

import (
	"context"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"
)

// health is a shared store's state, available or unavailable, judged from
// the outcome of its round trips. A store that fails and has not succeeded
// for a window is unavailable: a slow or dead Redis is then not waited on by
// every request. Requests stop using an unavailable store, so from then on
// only a background probe tries it, every interval, until it succeeds.
//
// One failure among successes (a timeout while the gateway is overloaded, a
// reset connection) changes nothing: the window must pass without a single
// success. After a quiet period, though, the first failure counts at once,
// since no success is recent.
type health struct {
	opts        healthOptions
	down        atomic.Bool
	lastSuccess atomic.Int64 // time.Now().UnixNano() of the last success; 0 before one
	probing     sync.WaitGroup
	mu          sync.Mutex // serializes state changes
}

type healthOptions struct {
	window   time.Duration
	interval time.Duration
	probe    func(context.Context) error
	logger   *slog.Logger
	stop     <-chan struct{}
	now      func() time.Time // time.Now when nil
}

func newHealth(opts healthOptions) *health {
	if opts.now == nil {
		opts.now = time.Now
	}
	// No success yet: a store that fails from the start is unavailable
	// from its first failure.
	return &health{opts: opts}
}

func (h *health) available() bool { return !h.down.Load() }

// succeeded records a round trip that worked.
func (h *health) succeeded() {
	h.lastSuccess.Store(h.opts.now().UnixNano())
}

// failed records a round trip that failed, and makes the store unavailable
// when nothing has succeeded within the window.
func (h *health) failed(err error) {
	if h.down.Load() {
		return
	}
	now := h.opts.now()
	quiet := now.Sub(time.Unix(0, h.lastSuccess.Load()))
	if quiet < h.opts.window {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.down.Load() {
		return
	}
	select {
	case <-h.opts.stop:
		return
	default:
	}
	h.down.Store(true)
	h.opts.logger.Warn("rate-limit store unavailable: each replica now enforces the limits on its own (fail-open) until it answers again",
		"error", err, "noSuccessFor", quiet.Round(time.Millisecond), "probeEvery", h.opts.interval)
	h.probing.Add(1)
	go h.probeUntilAvailable(now)
}

// probeUntilAvailable tries the store every interval until it succeeds.
func (h *health) probeUntilAvailable(since time.Time) {
	defer h.probing.Done()
	ticker := time.NewTicker(h.opts.interval)
	defer ticker.Stop()
	// A probe may take longer than a request's round trip: nobody waits
	// for it, and a store that answers slowly is better than none.
	timeout := max(h.opts.interval, time.Second)
	for {
		select {
		case <-h.opts.stop:
			return
		case <-ticker.C:
		}
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		err := h.opts.probe(ctx)
		cancel()
		if err != nil {
			continue
		}
		h.mu.Lock()
		h.succeeded()
		h.down.Store(false)
		h.mu.Unlock()
		h.opts.logger.Info("rate-limit store available again: limits are shared by every replica again",
			"unavailableFor", h.opts.now().Sub(since).Round(time.Millisecond))
		return
	}
}

// wait waits for the probe to stop after the stop channel closed.
func (h *health) wait() { h.probing.Wait() }
