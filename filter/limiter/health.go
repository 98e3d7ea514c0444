package limiter

import (
	"context"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"
)

// health is a shared store's state, available or unavailable, judged from
// the outcome of its round trips. A slow or dead Redis is then not waited on
// by every request, and a busy gateway is never taken for a dead Redis.
//
// When the store has failed (an error or a timeout) and has not succeeded
// for a window, it is suspect: a probe then tries it once with a generous
// timeout. A store that answers the probe is alive, only slow to answer the
// gateway's requests (the gateway is overloaded, or Redis is busy): it stays
// available, and requests whose decisions are late keep being refused with
// 503. A store that does not answer the probe is unavailable: requests stop
// using it, and the probe tries it every interval until it succeeds.
//
// One failure among successes changes nothing: the window must pass without
// a single success. After a quiet period, though, the first failure makes
// the store suspect at once, since no success is recent.
type health struct {
	opts        healthOptions
	down        atomic.Bool
	suspect     atomic.Bool  // a confirming probe is under way
	lastSuccess atomic.Int64 // time.Now().UnixNano() of the last success; 0 before one
	probing     sync.WaitGroup
	mu          sync.Mutex // serializes state changes
}

type healthOptions struct {
	window   time.Duration
	interval time.Duration
	// confirm bounds the probe that decides whether a suspect store is
	// unavailable.
	confirm time.Duration
	probe   func(context.Context) error
	logger  *slog.Logger
	stop    <-chan struct{}
	now     func() time.Time // time.Now when nil
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

// failed records a round trip that failed. When nothing has succeeded
// within the window, a probe decides whether the store is unavailable.
func (h *health) failed(err error) {
	if h.down.Load() || h.suspect.Load() {
		return
	}
	now := h.opts.now()
	quiet := now.Sub(time.Unix(0, h.lastSuccess.Load()))
	if quiet < h.opts.window {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.down.Load() || h.suspect.Load() {
		return
	}
	select {
	case <-h.opts.stop:
		return
	default:
	}
	h.suspect.Store(true)
	h.probing.Add(1)
	go h.confirm(err, now)
}

// confirm probes a suspect store once, with the generous confirm timeout:
// it stays available if it answers, and becomes unavailable otherwise.
func (h *health) confirm(cause error, since time.Time) {
	defer h.probing.Done()
	ctx, cancel := context.WithTimeout(context.Background(), h.opts.confirm)
	err := h.opts.probe(ctx)
	cancel()
	h.mu.Lock()
	defer h.mu.Unlock()
	// The state is settled before suspect is cleared.
	defer h.suspect.Store(false)
	if err == nil {
		// Alive, only slow for the gateway's deadlines: busy, not down.
		h.succeeded()
		return
	}
	select {
	case <-h.opts.stop:
		return
	default:
	}
	h.down.Store(true)
	h.opts.logger.Warn("rate-limit store unavailable: each replica now enforces the limits on its own (fail-open) until it answers again",
		"error", cause, "probeError", err, "probeEvery", h.opts.interval)
	h.probing.Add(1)
	go h.probeUntilAvailable(since)
}

// probeUntilAvailable tries the store every interval until it succeeds.
func (h *health) probeUntilAvailable(since time.Time) {
	defer h.probing.Done()
	ticker := time.NewTicker(h.opts.interval)
	defer ticker.Stop()
	for {
		select {
		case <-h.opts.stop:
			return
		case <-ticker.C:
		}
		ctx, cancel := context.WithTimeout(context.Background(), h.opts.confirm)
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
