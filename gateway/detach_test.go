package gateway

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/toolgate/toolgate/filter"
	"github.com/toolgate/toolgate/filter/audit"
)

// rawStream opens a GET event stream with a client of its own over one
// HTTP/1.1 connection (no pooling transport, whose goroutines would hide
// the proxy's own in a goroutine dump), and returns the connection and the
// stream's events. accept is the request's Accept field.
func rawStream(t *testing.T, addr, path, accept string) (net.Conn, *eventReader) {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, waitLong)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	fmt.Fprintf(conn, "GET %s HTTP/1.1\r\nHost: %s\r\nAccept: %s\r\n\r\n", path, addr, accept)
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("open stream: %v", err)
	}
	if resp.StatusCode != http.StatusOK || !resp.Close || len(resp.TransferEncoding) == 0 || resp.TransferEncoding[0] != "chunked" {
		t.Fatalf("open stream: status %d, closes %v, transfer encoding %v; want 200, closing, chunked", resp.StatusCode, resp.Close, resp.TransferEncoding)
	}
	return conn, newEventReader(t, resp.Body)
}

// stacksHolding counts the goroutines of this process running function fn
// (a frame of their stacks, not the function that created them).
func stacksHolding(fn string) int {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	count := 0
	for g := range strings.SplitSeq(string(buf), "\n\n") {
		if strings.Contains(g, fn+"(") {
			count++
		}
	}
	return count
}

// openDetached counts the detached streams of s's gateway sockets.
func openDetached(s *Server) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, sk := range s.sockets {
		d := detachedOf(sk.srv)
		d.mu.Lock()
		n += len(d.open)
		d.mu.Unlock()
	}
	return n
}

// An idle GET event stream holds no handler: its connection is taken over
// and the stream handed on. A GET that asks for an event stream reaches its
// backend on a connection of its own, without net/http's Transport (whose
// connections keep two goroutines each), and waits in the poller with no
// goroutine at all; any other is copied by a goroutine of the proxy's own
// while another watches its client. Either way events arrive as they are
// sent, the response ends cleanly when the backend ends it, and the access
// log and the audit trail record it then.
func TestAnIdleEventStreamHoldsNoHandlerAndIsRecordedWhenItEnds(t *testing.T) {
	const streams = 5
	for _, tc := range []struct {
		accept string
		// copying and watching are the goroutines per idle stream that
		// copy it and watch its client; transport says net/http's
		// Transport holds its backend connection.
		copying, watching int
		transport         bool
	}{
		{accept: "application/json, text/event-stream"},
		{accept: "*/*", copying: 1, watching: 1, transport: true},
	} {
		t.Run(tc.accept, func(t *testing.T) {
			held := newHeldStream()
			be := newHTTPTestServer(t, held)
			var access, trail accessLogBuffer
			auditLog, err := audit.New(&trail, audit.Options{})
			if err != nil {
				t.Fatal(err)
			}
			shared, err := filter.NewShared(filter.SharedOptions{Audit: auditLog})
			if err != nil {
				t.Fatal(err)
			}
			build := func(ref *ExtensionRef) (ExtensionFilter, error) { return filter.New(*ref.MCPServer, shared) }
			s := newServer(t, Options{Extensions: build, AccessLog: slog.New(slog.NewJSONHandler(&access, nil))})
			mustApply(t, s, oneRoute(Rule{Filters: []Filter{resolvedRef("mcp")}, Backends: []Backend{backendOf("sse", 1, be)}}))
			addr := s.Addr("web").String()

			var events []*eventReader
			for range streams {
				_, er := rawStream(t, addr, "/mcp", tc.accept)
				if got, err := er.next(); err != nil || got != "first" {
					t.Fatalf("first event = %q, %v", got, err)
				}
				events = append(events, er)
			}
			waitFor(t, "every stream detached", func() bool { return openDetached(s) == streams })
			// Goroutines of earlier tests (their clients' pooled
			// connections, their streams' ends) may linger a moment: the
			// counts are awaited, not read once.
			waitFor(t, "the streams' goroutines settled", func() bool {
				transportLoops := stacksHolding("net/http.(*persistConn).readLoop")
				return stacksHolding("gateway.(*entryHandler).ServeHTTP") == 0 &&
					stacksHolding("gateway.(*continuation).start")+stacksHolding("gateway.(*continuation).pump") == tc.copying*streams &&
					stacksHolding("gateway.(*continuation).watchClient") == tc.watching*streams &&
					(transportLoops >= streams) == tc.transport && (transportLoops == 0) == !tc.transport
			})
			if strings.Contains(access.String(), `"path":"/mcp"`) || trail.String() != "" {
				t.Fatalf("open streams were recorded before their end:\naccess log: %s\naudit trail: %s", access.String(), trail.String())
			}

			close(held.release)
			for i, er := range events {
				if got, err := er.next(); err != nil || got != "last" {
					t.Fatalf("stream %d: last event = %q, %v", i, got, err)
				}
				if got, err := er.next(); err != io.EOF {
					t.Fatalf("stream %d ended with %q, %v; want a clean end", i, got, err)
				}
			}
			waitFor(t, "every stream recorded", func() bool {
				return strings.Count(access.String(), `"stream":true`) == streams && strings.Count(trail.String(), "\n") == streams
			})
			for rec := range strings.Lines(access.String()) {
				if !strings.Contains(rec, `"status":200`) || strings.Contains(rec, `"aborted"`) || !strings.Contains(rec, `"bytes":`) || strings.Contains(rec, `"bytes":0`) {
					t.Errorf("access record of an ended stream: %s", rec)
				}
			}
			for rec := range strings.Lines(trail.String()) {
				if !strings.Contains(rec, `"status":200`) || !strings.Contains(rec, `"httpMethod":"GET"`) {
					t.Errorf("audit record of an ended stream: %s", rec)
				}
			}
			if n := openDetached(s); n != 0 {
				t.Errorf("%d detached streams left after they ended", n)
			}
		})
	}
}

// A client that goes away from a detached stream cancels its request to the
// backend, as it would a stream served by its handler.
func TestAClientLeavingADetachedStreamCancelsItsBackendRequest(t *testing.T) {
	forEachWaitingMode(t, testClientLeavingADetachedStream)
}

// forEachWaitingMode runs test with a stream that waits in the poller and
// with one that a goroutine copies (see the Accept fields above).
func forEachWaitingMode(t *testing.T, test func(t *testing.T, accept string)) {
	for _, accept := range []string{"text/event-stream", "*/*"} {
		t.Run(accept, func(t *testing.T) { test(t, accept) })
	}
}

func testClientLeavingADetachedStream(t *testing.T, accept string) {
	gone := make(chan struct{})
	be := newHTTPTestServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		fmt.Fprint(w, "data: first\n\n")
		_ = http.NewResponseController(w).Flush()
		<-r.Context().Done()
		close(gone)
	}))
	var access accessLogBuffer
	s := newServer(t, Options{AccessLog: slog.New(slog.NewJSONHandler(&access, nil))})
	mustApply(t, s, oneRoute(Rule{Backends: []Backend{backendOf("sse", 1, be)}}))
	conn, er := rawStream(t, s.Addr("web").String(), "/", accept)
	if got, err := er.next(); err != nil || got != "first" {
		t.Fatalf("first event = %q, %v", got, err)
	}
	waitFor(t, "the stream detached", func() bool { return openDetached(s) == 1 })
	conn.Close()
	select {
	case <-gone:
	case <-time.After(waitLong):
		t.Fatal("the backend's request was not cancelled after the client went away")
	}
	waitFor(t, "the stream recorded", func() bool { return strings.Contains(access.String(), `"stream":true`) })
	if n := openDetached(s); n != 0 {
		t.Errorf("%d detached streams left after the client went away", n)
	}
}

// Removing a listener cuts its detached streams once the drain timeout is
// over, as it cuts the requests it still serves.
func TestRemovingAListenerCutsItsDetachedStreamsAfterTheDrainTimeout(t *testing.T) {
	forEachWaitingMode(t, testRemovingAListenerCutsItsDetachedStreams)
}

func testRemovingAListenerCutsItsDetachedStreams(t *testing.T, accept string) {
	held := newHeldStream()
	be := newHTTPTestServer(t, held)
	s := newServer(t, Options{DrainTimeout: 50 * time.Millisecond})
	mustApply(t, s, oneRoute(Rule{Backends: []Backend{backendOf("sse", 1, be)}}))
	_, er := rawStream(t, s.Addr("web").String(), "/", accept)
	if got, err := er.next(); err != nil || got != "first" {
		t.Fatalf("first event = %q, %v", got, err)
	}
	waitFor(t, "the stream detached", func() bool { return openDetached(s) == 1 })
	mustApply(t, s, &Config{})
	if got, err := er.next(); err == nil || err == io.EOF {
		t.Fatalf("the stream of a removed listener went on: %q, %v; want it cut", got, err)
	}
}

// A backend may end an event stream by closing its connection instead of
// framing it in chunks; the detached stream waits in the poller all the
// same, and ends cleanly when the backend closes.
func TestAnEventStreamEndedByItsConnectionIsRelayed(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	release := make(chan struct{})
	go func() {
		conn, err := ln.Accept()
		if err != nil {
			return
		}
		defer conn.Close()
		if _, err := http.ReadRequest(bufio.NewReader(conn)); err != nil {
			return
		}
		fmt.Fprint(conn, "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\ndata: first\n\n")
		<-release
		fmt.Fprint(conn, "data: last\n\n")
	}()
	s := newServer(t, Options{})
	mustApply(t, s, oneRoute(Rule{Backends: []Backend{{Name: "raw", Weight: 1, Endpoints: []string{ln.Addr().String()}}}}))
	_, er := rawStream(t, s.Addr("web").String(), "/", "text/event-stream")
	if got, err := er.next(); err != nil || got != "first" {
		t.Fatalf("first event = %q, %v", got, err)
	}
	waitFor(t, "the stream idle in the poller", func() bool {
		return openDetached(s) == 1 && stacksHolding("gateway.(*continuation).pump") == 0 && stacksHolding("gateway.(*continuation).start") == 0
	})
	close(release)
	if got, err := er.next(); err != nil || got != "last" {
		t.Fatalf("last event = %q, %v", got, err)
	}
	if got, err := er.next(); err != io.EOF {
		t.Fatalf("the stream ended with %q, %v; want a clean end", got, err)
	}
}

// On an HTTPS listener a stream over HTTP/1.1 is detached and waits in the
// poller too, watched on the TCP connection under its TLS; one over HTTP/2
// stays with its handler.
func TestAnEventStreamOverTLSIsDetachedOnHTTP1Only(t *testing.T) {
	for _, tc := range []struct {
		proto    string
		detached int
	}{{"HTTP/1.1", 1}, {"HTTP/2.0", 0}} {
		t.Run(tc.proto, func(t *testing.T) {
			held := newHeldStream()
			be := newHTTPTestServer(t, held)
			certs := testCertificates(t, "mcp.example.com")
			s := newServer(t, Options{})
			l := Listener{Name: "tls", Address: "127.0.0.1", Protocol: ProtocolHTTPS, Certificates: certs,
				VirtualHosts: []VirtualHost{{Routes: []Route{{Namespace: "ns", Name: "r", Rules: []Rule{{Backends: []Backend{backendOf("sse", 1, be)}}}}}}}}
			mustApply(t, s, &Config{Listeners: []Listener{l}})
			tr := &http.Transport{
				TLSClientConfig: &tls.Config{RootCAs: certPool(t, certs...), ServerName: "mcp.example.com", MinVersion: tls.VersionTLS12},
				DialContext:     dialTo(s.Addr("tls").String()),
			}
			tr.Protocols = new(http.Protocols)
			tr.Protocols.SetHTTP1(tc.proto == "HTTP/1.1")
			tr.Protocols.SetHTTP2(tc.proto == "HTTP/2.0")
			t.Cleanup(tr.CloseIdleConnections)
			req, _ := http.NewRequest(http.MethodGet, "https://mcp.example.com:"+portOf(t, s, "tls")+"/", nil)
			req.Header.Set("Accept", "text/event-stream")
			resp, err := (&http.Client{Transport: tr}).Do(req)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { resp.Body.Close() })
			if resp.Proto != tc.proto {
				t.Fatalf("the stream came over %s, want %s", resp.Proto, tc.proto)
			}
			events := newEventReader(t, resp.Body)
			if got, err := events.next(); err != nil || got != "first" {
				t.Fatalf("first event = %q, %v", got, err)
			}
			if tc.detached > 0 {
				waitFor(t, "the stream idle in the poller", func() bool {
					return openDetached(s) == 1 && stacksHolding("gateway.(*continuation).pump") == 0 && stacksHolding("gateway.(*continuation).start") == 0
				})
			} else if n := openDetached(s); n != 0 {
				t.Errorf("%d streams detached over HTTP/2", n)
			}
			close(held.release)
			if got, err := events.next(); err != nil || got != "last" {
				t.Fatalf("last event = %q, %v", got, err)
			}
			if got, err := events.next(); err != io.EOF {
				t.Fatalf("the stream ended with %q, %v; want a clean end", got, err)
			}
		})
	}
}

// Many streams at once, their events and their ends racing: each client
// gets the events in order, whole, however the backend's writes and the
// idle periods fall; streams whose clients leave end; a shutdown ends the
// rest cleanly; and no stream is left open.
func TestDetachedStreamsUnderChurn(t *testing.T) {
	forEachWaitingMode(t, testDetachedStreamsUnderChurn)
}

func testDetachedStreamsUnderChurn(t *testing.T, accept string) {
	const streams, events = 40, 30
	be := newHTTPTestServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		rc := http.NewResponseController(w)
		for i := 0; i < events; i++ {
			// Events in pieces of every kind: whole, split in two writes,
			// two at once; sometimes after a pause, so that the stream
			// idles in between.
			event := fmt.Sprintf("id: %d\ndata: %s\n\n", i, strings.Repeat("x", i*37%300))
			switch i % 3 {
			case 0:
				fmt.Fprint(w, event)
			case 1:
				fmt.Fprint(w, event[:len(event)/2])
				_ = rc.Flush()
				fmt.Fprint(w, event[len(event)/2:])
			case 2:
				fmt.Fprint(w, event)
				i++
				if i < events {
					fmt.Fprintf(w, "id: %d\ndata: %s\n\n", i, strings.Repeat("x", i*37%300))
				}
			}
			_ = rc.Flush()
			if i%4 == 0 {
				time.Sleep(time.Millisecond)
			}
		}
		<-r.Context().Done()
	}))
	s := newServer(t, Options{})
	mustApply(t, s, oneRoute(Rule{Backends: []Backend{backendOf("sse", 1, be)}}))
	addr := s.Addr("web").String()
	var wg sync.WaitGroup
	errs := make(chan error, streams)
	for n := range streams {
		wg.Go(func() {
			conn, er := rawStream(t, addr, "/", accept)
			leaveAfter := events
			if n%2 == 0 {
				leaveAfter = n % events // half the clients leave early
			}
			for i := range leaveAfter {
				got, err := er.next()
				if want := strings.Repeat("x", i*37%300); err != nil || got != want {
					errs <- fmt.Errorf("stream %d event %d: %d bytes, %v; want %d bytes", n, i, len(got), err, len(want))
					return
				}
			}
			if leaveAfter < events {
				conn.Close()
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	waitFor(t, "the streams whose clients left to end", func() bool { return openDetached(s) == streams/2 })
	ctx, cancel := context.WithTimeout(context.Background(), waitLong)
	defer cancel()
	if err := s.Shutdown(ctx); err != nil {
		t.Errorf("Shutdown = %v", err)
	}
	if n := openDetached(s); n != 0 {
		t.Errorf("%d streams left open after the shutdown", n)
	}
}
