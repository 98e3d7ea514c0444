package gateway

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

func TestDrainFailsReadinessAndClosesEachConnectionAfterItsResponseWhileServing(t *testing.T) {
	s := newServer(t, Options{AdminAddress: "127.0.0.1:0"})
	be := echoBackend(t, "echo")
	mustApply(t, s, oneRoute(Rule{Backends: []Backend{backendOf("echo", 1, be)}}))
	admin := "http://" + s.AdminAddr().String()
	url := gatewayURL(t, s, "web") + "/"
	if resp, _ := get(t, url); resp.Close {
		t.Fatal("a response before Drain closes its connection")
	}

	s.Drain()
	if resp, _ := get(t, admin+"/readyz"); resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("/readyz while draining = %d, want 503", resp.StatusCode)
	}
	if resp, _ := get(t, admin+"/healthz"); resp.StatusCode != http.StatusOK {
		t.Errorf("/healthz while draining = %d, want 200: the process is alive", resp.StatusCode)
	}
	// New connections are still served, each closed after its response.
	for i := range 3 {
		resp, body := get(t, url)
		if resp.StatusCode != http.StatusOK || decodeEcho(t, body).Backend != "echo" {
			t.Fatalf("request %d while draining = %d %s", i, resp.StatusCode, body)
		}
		if !resp.Close {
			t.Errorf("request %d while draining: the response keeps its connection open (Connection: %q)", i, resp.Header.Get("Connection"))
		}
	}
	// A configuration that arrives while draining is applied, and does not
	// make the server ready again.
	mustApply(t, s, oneRoute(Rule{Backends: []Backend{backendOf("echo", 1, be)}}))
	if s.Ready() {
		t.Error("Ready after an Apply while draining")
	}
	if resp, _ := get(t, url); resp.StatusCode != http.StatusOK || !resp.Close {
		t.Errorf("after an Apply while draining: %d, closes its connection: %v", resp.StatusCode, resp.Close)
	}
}

// A GET event stream (MCP's standalone stream) lasts as long as its
// session: a shutdown ends it cleanly, as a finished response, so that the
// client reconnects elsewhere, while a call answered as an event stream
// finishes.
func TestShutdownEndsAGetStreamCleanlyAndLetsACallFinish(t *testing.T) {
	held := newHeldStream()
	be := newHTTPTestServer(t, held)
	s := newServer(t, Options{})
	mustApply(t, s, oneRoute(Rule{Backends: []Backend{backendOf("sse", 1, be)}}))
	url := gatewayURL(t, s, "web") + "/"
	listenResp, listen := openStream(t, http.MethodGet, url)
	callResp, call := openStream(t, http.MethodPost, url)
	// The GET stream's connection is not for reuse: a client that pooled
	// it once the stream ended could lose a request on it as the server
	// closes it. The call's is.
	if !listenResp.Close || callResp.Close {
		t.Errorf("closes its connection: the GET stream's %v, want true; the call's %v, want false", listenResp.Close, callResp.Close)
	}
	for _, events := range []*eventReader{listen, call} {
		if got, err := events.next(); err != nil || got != "first" {
			t.Fatalf("first event = %q, %v", got, err)
		}
	}

	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), waitLong)
		defer cancel()
		done <- s.Shutdown(ctx)
	}()
	if got, err := listen.next(); err != io.EOF {
		t.Fatalf("the GET stream after shutdown began: %q, %v; want a clean end (io.EOF)", got, err)
	}
	select {
	case err := <-done:
		t.Fatalf("Shutdown returned (%v) while a call was in flight", err)
	default:
	}
	close(held.release)
	if got, err := call.next(); err != nil || got != "last" {
		t.Fatalf("the call's stream after shutdown began: %q, %v", got, err)
	}
	if _, err := call.next(); err != io.EOF {
		t.Errorf("the call's stream ended with %v, want a clean end", err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Shutdown = %v, want nil", err)
		}
	case <-time.After(waitLong):
		t.Fatal("Shutdown did not return after the call finished")
	}
}

// A stream is never ended in the middle of an event: one the backend has
// begun to send when the shutdown comes is forwarded whole first.
func TestShutdownEndsAGetStreamAfterTheEventInProgress(t *testing.T) {
	rest := make(chan struct{})
	be := newHTTPTestServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		fmt.Fprint(w, "data: first\n\n")
		_ = http.NewResponseController(w).Flush()
		fmt.Fprint(w, "data: half")
		_ = http.NewResponseController(w).Flush()
		select {
		case <-rest:
		case <-r.Context().Done():
			return
		}
		fmt.Fprint(w, " and the rest\n\n")
		_ = http.NewResponseController(w).Flush()
		<-r.Context().Done() // holds the stream open
	}))
	s := newServer(t, Options{})
	mustApply(t, s, oneRoute(Rule{Backends: []Backend{backendOf("sse", 1, be)}}))
	_, events := openStream(t, http.MethodGet, gatewayURL(t, s, "web")+"/")
	if got, err := events.next(); err != nil || got != "first" {
		t.Fatalf("first event = %q, %v", got, err)
	}
	// The reader reports whole events only: wait until the proxy has
	// forwarded the half one.
	waitFor(t, "the half event to be forwarded", func() bool {
		s.proxy.streams.mu.Lock()
		defer s.proxy.streams.mu.Unlock()
		for b := range s.proxy.streams.open {
			b.endState.mu.Lock()
			mid := !b.endState.atBoundary()
			b.endState.mu.Unlock()
			return mid
		}
		return false
	})

	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), waitLong)
		defer cancel()
		done <- s.Shutdown(ctx)
	}()
	waitFor(t, "the shutdown to end the streams", func() bool {
		s.proxy.streams.mu.Lock()
		defer s.proxy.streams.mu.Unlock()
		return s.proxy.streams.ending
	})
	close(rest)
	if got, err := events.next(); err != nil || got != "half and the rest" {
		t.Fatalf("the event in progress at shutdown = %q, %v; want it whole", got, err)
	}
	if got, err := events.next(); err != io.EOF {
		t.Fatalf("after the event in progress: %q, %v; want a clean end", got, err)
	}
	if err := <-done; err != nil {
		t.Errorf("Shutdown = %v", err)
	}
}

func TestStreamEndKnowsWhetherWholeEventsWereForwarded(t *testing.T) {
	for _, tc := range []struct {
		name   string
		writes []string
		whole  bool
	}{
		{name: "nothing forwarded", whole: true},
		{name: "one event", writes: []string{"data: a\n\n"}, whole: true},
		{name: "an event with CRLF line ends", writes: []string{"data: a\r\n\r\n"}, whole: true},
		{name: "an event with CR line ends", writes: []string{"data: a\r\r"}, whole: true},
		{name: "a comment", writes: []string{": keep-alive\n\n"}, whole: true},
		{name: "a line of an event", writes: []string{"data: a\n"}},
		{name: "part of a line", writes: []string{"data: a"}},
		{name: "an event and part of the next", writes: []string{"data: a\n\ndata: b\n"}},
		{name: "an event's blank line split across writes", writes: []string{"data: a\n", "\n"}, whole: true},
		{name: "CRLF blank line split across writes", writes: []string{"data: a\r\n\r", "\n"}, whole: true},
		{name: "one byte at a time", writes: strings.Split("id: 7\ndata: x\n\n", ""), whole: true},
		{name: "one byte at a time, unfinished", writes: strings.Split("id: 7\ndata: x\n", "")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var e streamEnd
			for _, w := range tc.writes {
				e.push([]byte(w))
			}
			if got := e.atBoundary(); got != tc.whole {
				t.Errorf("atBoundary after %q = %v, want %v", tc.writes, got, tc.whole)
			}
		})
	}
}

// waitFor polls cond until it holds, failing the test after waitLong.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitLong)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("waited in vain for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
