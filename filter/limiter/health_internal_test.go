package limiter

import (
	"context"
	"errors"
	"log/slog"
	"testing"
	"time"
)

func TestAStoreIsUnavailableOnlyWhenItsProbeFailsToo(t *testing.T) {
	tests := []struct {
		name  string
		probe func(context.Context) error
		down  bool
	}{
		{name: "a store that answers the probe, however slowly, is busy, not down", probe: func(ctx context.Context) error {
			select {
			case <-time.After(50 * time.Millisecond):
				return nil
			case <-ctx.Done():
				return ctx.Err()
			}
		}},
		{name: "a store that refuses the probe is down", probe: func(context.Context) error { return errors.New("connection refused") }, down: true},
		{name: "a store that does not answer the probe in time is down", probe: func(ctx context.Context) error {
			<-ctx.Done()
			return ctx.Err()
		}, down: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			stop := make(chan struct{})
			h := newHealth(healthOptions{
				window: time.Hour, interval: time.Hour, confirm: 200 * time.Millisecond,
				probe: tt.probe, logger: slog.New(slog.DiscardHandler), stop: stop,
			})
			defer func() { close(stop); h.wait() }()

			h.succeeded()
			h.failed(errors.New("i/o timeout"))
			if !h.available() || h.suspect.Load() {
				t.Fatal("one failure right after a success changed the state")
			}
			h.lastSuccess.Store(0) // no success within the window
			h.failed(errors.New("i/o timeout"))
			for h.suspect.Load() {
				time.Sleep(time.Millisecond)
			}
			if got := !h.available(); got != tt.down {
				t.Errorf("unavailable = %v, want %v", got, tt.down)
			}
		})
	}
}
