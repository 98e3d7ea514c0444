package gateway

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestReloadUnderLoad(t *testing.T) {
	a, b := echoBackend(t, "a"), echoBackend(t, "b")
	held := newHeldStream()
	streamer := newHTTPTestServer(t, held)
	config := func(i int) *Config {
		// Every swap changes the backend weights and the routes' rules.
		return &Config{Listeners: []Listener{httpListener("web", VirtualHost{Routes: []Route{
			{Namespace: "ns", Name: "api", Rules: []Rule{{
				Matches:  []Match{{Path: prefix("/api")}},
				Backends: []Backend{backendOf("a", int32(i%3), a), backendOf("b", 1, b)},
				Filters: []Filter{{Type: FilterRequestHeaderModifier, RequestHeaderModifier: &HeaderModifier{
					Set: []Header{{"X-Generation", fmt.Sprint(i)}},
				}}},
			}}},
			{Namespace: "ns", Name: "stream", Rules: []Rule{{
				Matches:  []Match{{Path: prefix("/stream")}},
				Backends: []Backend{backendOf("stream", 1, streamer)},
			}}},
		}})}}
	}
	s := newServer(t, Options{})
	mustApply(t, s, config(0))
	base := gatewayURL(t, s, "web")

	// A stream opened on the first snapshot must survive every swap.
	_, events := openStream(t, http.MethodGet, base+"/stream")
	if got, err := events.next(); err != nil || got != "first" {
		t.Fatalf("first event = %q, %v", got, err)
	}

	var ok, failed atomic.Int64
	var firstFailure atomic.Value
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := &http.Client{Timeout: waitLong}
			for {
				select {
				case <-stop:
					return
				default:
				}
				resp, err := c.Post(base+"/api/call", "application/json", nil)
				if err != nil {
					failed.Add(1)
					firstFailure.CompareAndSwap(nil, fmt.Sprintf("worker %d: %v", w, err))
					continue
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					failed.Add(1)
					firstFailure.CompareAndSwap(nil, fmt.Sprintf("worker %d: status %d", w, resp.StatusCode))
					continue
				}
				ok.Add(1)
			}
		}()
	}

	addr := s.Addr("web").String()
	for i := 1; i <= 100; i++ {
		mustApply(t, s, config(i))
		// Let requests run on this snapshot before the next swap.
		for before, deadline := ok.Load(), time.Now().Add(waitLong); ok.Load() < before+3; {
			if time.Now().After(deadline) {
				t.Fatal("no request completed after a swap")
			}
			time.Sleep(time.Millisecond)
		}
		if got := s.Addr("web").String(); got != addr {
			t.Fatalf("swap %d moved the listener from %s to %s", i, addr, got)
		}
	}
	close(stop)
	wg.Wait()

	if n := failed.Load(); n != 0 {
		t.Errorf("%d of %d requests failed during 100 swaps; first: %v", n, n+ok.Load(), firstFailure.Load())
	}
	close(held.release)
	if got, err := events.next(); err != nil || got != "last" {
		t.Errorf("the stream opened before the swaps: last event = %q, %v", got, err)
	}
	t.Logf("%d requests during 100 swaps", ok.Load())
}

func TestListenersFollowTheSetOfPorts(t *testing.T) {
	be := echoBackend(t, "b")
	listener := func(name, address string) Listener {
		l := httpListener(name, VirtualHost{Routes: []Route{{Namespace: "ns", Name: name, Rules: []Rule{{Backends: []Backend{backendOf("b", 1, be)}}}}}})
		l.Address = address
		return l
	}
	s := newServer(t, Options{DrainTimeout: time.Second})
	reachable := func(addr string) bool {
		conn, err := net.DialTimeout("tcp", addr, waitLong)
		if err != nil {
			return false
		}
		conn.Close()
		return true
	}

	mustApply(t, s, &Config{Listeners: []Listener{listener("a", "127.0.0.1")}})
	addrA := s.Addr("a").String()

	mustApply(t, s, &Config{Listeners: []Listener{listener("a", "127.0.0.1"), listener("b", "127.0.0.2")}})
	if got := s.Addr("a").String(); got != addrA {
		t.Errorf("adding a port reopened another: %s became %s", addrA, got)
	}
	addrB := s.Addr("b").String()
	if resp, _ := get(t, "http://"+addrB+"/"); resp.StatusCode != http.StatusOK {
		t.Errorf("the new listener answered %d", resp.StatusCode)
	}

	mustApply(t, s, &Config{Listeners: []Listener{listener("b", "127.0.0.2")}})
	if got := s.Addr("b").String(); got != addrB {
		t.Errorf("removing a port reopened another: %s became %s", addrB, got)
	}
	deadline := time.Now().Add(waitLong)
	for reachable(addrA) {
		if time.Now().After(deadline) {
			t.Fatalf("the removed listener %s still accepts connections", addrA)
		}
		time.Sleep(10 * time.Millisecond)
	}

	t.Run("a failed apply changes nothing", func(t *testing.T) {
		bad := &Config{Listeners: []Listener{listener("b", "127.0.0.2")}}
		bad.Listeners[0].VirtualHosts[0].Routes[0].Rules[0].Matches = []Match{{Path: regex("(")}}
		if err := s.Apply(bad); err == nil {
			t.Fatal("Apply accepted a bad regular expression")
		}
		if resp, _ := get(t, "http://"+addrB+"/"); resp.StatusCode != http.StatusOK {
			t.Errorf("after a failed Apply the listener answered %d", resp.StatusCode)
		}
	})
}

// A call answered as an event stream is a request in flight: a shutdown
// waits for it. (A GET stream, a client's wait for server messages, is
// ended instead: drain_test.go.)
func TestGracefulShutdownLetsAnOpenStreamFinish(t *testing.T) {
	held := newHeldStream()
	be := newHTTPTestServer(t, held)
	s := newServer(t, Options{})
	mustApply(t, s, oneRoute(Rule{Backends: []Backend{backendOf("sse", 1, be)}}))
	addr := s.Addr("web").String()
	_, events := openStream(t, http.MethodPost, "http://"+addr+"/")
	if got, err := events.next(); err != nil || got != "first" {
		t.Fatalf("first event = %q, %v", got, err)
	}

	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), waitLong)
		defer cancel()
		done <- s.Shutdown(ctx)
	}()

	// New connections are refused while the stream is still open.
	deadline := time.Now().Add(waitLong)
	for {
		conn, err := net.DialTimeout("tcp", addr, waitLong)
		if err != nil {
			break
		}
		conn.Close()
		if time.Now().After(deadline) {
			t.Fatal("the gateway still accepts connections during shutdown")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if s.Ready() {
		t.Error("the gateway reports ready during shutdown")
	}
	select {
	case err := <-done:
		t.Fatalf("Shutdown returned (%v) while a stream was open", err)
	default:
	}

	close(held.release)
	if got, err := events.next(); err != nil || got != "last" {
		t.Fatalf("the open stream after shutdown began: %q, %v", got, err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Shutdown = %v, want nil once the stream finished", err)
		}
	case <-time.After(waitLong):
		t.Fatal("Shutdown did not return after the last stream finished")
	}
	if err := s.Apply(oneRoute()); err != ErrServerClosed {
		t.Errorf("Apply after Shutdown = %v, want ErrServerClosed", err)
	}
}

func TestShutdownDeadlineCutsStreams(t *testing.T) {
	held := newHeldStream() // never released
	be := newHTTPTestServer(t, held)
	s := newServer(t, Options{})
	mustApply(t, s, oneRoute(Rule{Backends: []Backend{backendOf("sse", 1, be)}}))
	_, events := openStream(t, http.MethodPost, gatewayURL(t, s, "web")+"/")
	if got, err := events.next(); err != nil || got != "first" {
		t.Fatalf("first event = %q, %v", got, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if err := s.Shutdown(ctx); err != context.DeadlineExceeded {
		t.Errorf("Shutdown = %v, want the deadline's error", err)
	}
	if got, err := events.next(); err == nil {
		t.Errorf("got event %q after the deadline, want the stream closed", got)
	}
}
