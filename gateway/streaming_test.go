package gateway

import (
	"bufio"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

// heldStream is a backend that sends one event, then holds the stream open
// until released, then sends a last event and ends the response.
type heldStream struct {
	release chan struct{}
	started chan struct{}
}

func newHeldStream() *heldStream {
	return &heldStream{release: make(chan struct{}), started: make(chan struct{}, 16)}
}

func (h *heldStream) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	w.WriteHeader(http.StatusOK)
	fmt.Fprint(w, "id: 1\nevent: message\ndata: first\n\n")
	_ = http.NewResponseController(w).Flush()
	h.started <- struct{}{}
	select {
	case <-h.release:
	case <-r.Context().Done():
		return
	}
	fmt.Fprint(w, "id: 2\nevent: message\ndata: last\n\n")
}

// eventReader reads server-sent events, each wait bounded by waitLong.
type eventReader struct {
	t     *testing.T
	lines chan line
}

// line is one line of the stream, or the error that ended it.
type line struct {
	text string
	err  error
}

func newEventReader(t *testing.T, body io.Reader) *eventReader {
	er := &eventReader{t: t, lines: make(chan line, 64)}
	go func() {
		sc := bufio.NewScanner(body)
		for sc.Scan() {
			er.lines <- line{text: sc.Text()}
		}
		err := sc.Err()
		if err == nil {
			err = io.EOF
		}
		er.lines <- line{err: err}
	}()
	return er
}

// next returns the data of the next event, or the error ending the stream.
func (er *eventReader) next() (string, error) {
	er.t.Helper()
	var data []string
	for {
		select {
		case l := <-er.lines:
			if l.err != nil {
				er.lines <- l // the stream stays ended
				return "", l.err
			}
			if l.text == "" {
				if len(data) > 0 {
					return strings.Join(data, "\n"), nil
				}
				continue
			}
			if d, ok := strings.CutPrefix(l.text, "data:"); ok {
				data = append(data, strings.TrimPrefix(d, " "))
			}
		case <-time.After(waitLong):
			er.t.Fatal("no event within the wait limit")
		}
	}
}

func openStream(t *testing.T, method, url string) (*http.Response, *eventReader) {
	t.Helper()
	var body io.Reader
	if method == http.MethodPost {
		body = strings.NewReader(`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"slow"}}`)
	}
	req, _ := http.NewRequest(method, url, body)
	req.Header.Set("Accept", "application/json, text/event-stream")
	resp, err := (&http.Client{}).Do(req) // no client timeout: streams are long
	if err != nil {
		t.Fatalf("open stream: %v", err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("open stream: status %d", resp.StatusCode)
	}
	return resp, newEventReader(t, resp.Body)
}

func TestFirstEventArrivesWhileTheBackendHoldsTheStream(t *testing.T) {
	for _, method := range []string{http.MethodGet, http.MethodPost} {
		t.Run(method, func(t *testing.T) {
			held := newHeldStream()
			be := newHTTPTestServer(t, held)
			s := newServer(t, Options{})
			mustApply(t, s, oneRoute(Rule{Backends: []Backend{backendOf("sse", 1, be)}}))

			resp, events := openStream(t, method, gatewayURL(t, s, "web")+"/mcp")
			if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
				t.Errorf("Content-Type %q", ct)
			}
			if got, err := events.next(); err != nil || got != "first" {
				t.Fatalf("first event = %q, %v", got, err)
			}
			// The backend is still holding the stream: it has not been
			// released yet, so the first event was not buffered.
			close(held.release)
			if got, err := events.next(); err != nil || got != "last" {
				t.Fatalf("last event = %q, %v", got, err)
			}
			if _, err := events.next(); err != io.EOF {
				t.Errorf("after the last event: %v, want the end of the stream", err)
			}
		})
	}
}

func TestALongStreamIsNotCut(t *testing.T) {
	// Server timeouts far shorter than the stream; no route timeouts.
	const events = 20
	be := newHTTPTestServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		for i := range events {
			fmt.Fprintf(w, "data: %d\n\n", i)
			_ = http.NewResponseController(w).Flush()
			time.Sleep(25 * time.Millisecond) // makes the stream outlast the server timeouts
		}
	}))
	s := newServer(t, Options{ReadHeaderTimeout: 50 * time.Millisecond, IdleTimeout: 50 * time.Millisecond})
	mustApply(t, s, oneRoute(Rule{Backends: []Backend{backendOf("sse", 1, be)}}))
	_, er := openStream(t, http.MethodGet, gatewayURL(t, s, "web")+"/")
	for i := range events {
		got, err := er.next()
		if err != nil || got != fmt.Sprint(i) {
			t.Fatalf("event %d = %q, %v", i, got, err)
		}
	}
	if _, err := er.next(); err != io.EOF {
		t.Errorf("stream ended with %v, want a clean end", err)
	}
}

func TestABackendRequestTimeoutCutsAStreamWhenTheRouteAsks(t *testing.T) {
	held := newHeldStream()
	be := newHTTPTestServer(t, held)
	s := newServer(t, Options{})
	mustApply(t, s, oneRoute(Rule{Backends: []Backend{backendOf("sse", 1, be)}, Timeouts: Timeouts{BackendRequest: 200 * time.Millisecond}}))
	_, er := openStream(t, http.MethodGet, gatewayURL(t, s, "web")+"/")
	if got, err := er.next(); err != nil || got != "first" {
		t.Fatalf("first event = %q, %v", got, err)
	}
	got, err := er.next()
	if err == nil {
		t.Fatalf("got event %q after the timeout, want the stream cut", got)
	}
	if err == io.EOF {
		t.Errorf("the cut stream ended cleanly: a client could not tell it was cut")
	}
}

// A stream waits for its backend with a small buffer and takes a larger one
// while data flows (responseBody). Whatever the size of an event, relative
// to those buffers, it reaches the client while the backend still holds
// the stream: no byte waits for the next read.
func TestAnEventOfAnySizeArrivesWhileTheBackendHoldsTheStream(t *testing.T) {
	for _, size := range []int{2, idleBufferSize - 1, idleBufferSize, idleBufferSize + 1, 2 * idleBufferSize, copyBufferSize, copyBufferSize + idleBufferSize, 3 * copyBufferSize} {
		t.Run(fmt.Sprint(size), func(t *testing.T) {
			event := strings.Repeat("x", size-2) + "\n\n" // size bytes
			release := make(chan struct{})
			be := newHTTPTestServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", "text/event-stream")
				w.WriteHeader(http.StatusOK)
				_ = http.NewResponseController(w).Flush()
				for range 2 {
					_, _ = io.WriteString(w, event)
					_ = http.NewResponseController(w).Flush()
				}
				select {
				case <-release:
				case <-r.Context().Done():
				}
			}))
			defer close(release)
			s := newServer(t, Options{})
			mustApply(t, s, oneRoute(Rule{Backends: []Backend{backendOf("sse", 1, be)}}))
			req, _ := http.NewRequest(http.MethodGet, gatewayURL(t, s, "web")+"/mcp", nil)
			req.Header.Set("Accept", "text/event-stream")
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			got := make(chan error, 1)
			go func() {
				buf := make([]byte, 2*len(event))
				_, err := io.ReadFull(resp.Body, buf)
				if err == nil && string(buf) != event+event {
					err = fmt.Errorf("got %d bytes unlike the %d sent", len(buf), 2*len(event))
				}
				got <- err
			}()
			select {
			case err := <-got:
				if err != nil {
					t.Fatal(err)
				}
			case <-time.After(waitLong):
				t.Fatal("the events did not arrive while the backend held the stream")
			}
		})
	}
}

func TestResponseBodiesOfEverySizePassUnchanged(t *testing.T) {
	sizes := []int{0, 1, idleBufferSize - 1, idleBufferSize, idleBufferSize + 1, copyBufferSize, copyBufferSize + 1, 1 << 20}
	for _, framing := range []string{"content-length", "chunked", "event-stream"} {
		for _, size := range sizes {
			t.Run(fmt.Sprintf("%s/%d", framing, size), func(t *testing.T) {
				body := make([]byte, size)
				for i := range body {
					body[i] = byte('a' + i%26)
				}
				be := newHTTPTestServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					switch framing {
					case "content-length":
						w.Header().Set("Content-Length", fmt.Sprint(size))
					case "event-stream":
						w.Header().Set("Content-Type", "text/event-stream")
					}
					// Written in uneven pieces, flushed now and then.
					for off, i := 0, 0; off < len(body); i++ {
						n := min(len(body)-off, 1+i*7919%(3*idleBufferSize))
						_, _ = w.Write(body[off : off+n])
						off += n
						if i%3 == 0 {
							_ = http.NewResponseController(w).Flush()
						}
					}
				}))
				s := newServer(t, Options{})
				mustApply(t, s, oneRoute(Rule{Backends: []Backend{backendOf("be", 1, be)}}))
				resp, err := http.Get(gatewayURL(t, s, "web") + "/")
				if err != nil {
					t.Fatal(err)
				}
				defer resp.Body.Close()
				got, err := io.ReadAll(resp.Body)
				if err != nil {
					t.Fatal(err)
				}
				if string(got) != string(body) {
					t.Fatalf("got %d bytes unlike the %d sent", len(got), len(body))
				}
			})
		}
	}
}

func TestResponseTrailersPass(t *testing.T) {
	be := newHTTPTestServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Trailer", "X-Checksum")
		w.Header().Set("Content-Type", "text/event-stream")
		_, _ = io.WriteString(w, "data: 1\n\n")
		_ = http.NewResponseController(w).Flush()
		_, _ = io.WriteString(w, "data: 2\n\n")
		w.Header().Set("X-Checksum", "abc")
	}))
	s := newServer(t, Options{})
	mustApply(t, s, oneRoute(Rule{Backends: []Backend{backendOf("be", 1, be)}}))
	resp, err := http.Get(gatewayURL(t, s, "web") + "/")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	got, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != "data: 1\n\ndata: 2\n\n" {
		t.Errorf("body %q", got)
	}
	if v := resp.Trailer.Get("X-Checksum"); v != "abc" {
		t.Errorf("trailer X-Checksum = %q, want abc", v)
	}
}

// A backend that dies in the middle of a response cuts the client's
// response: the client never takes what it got for the whole body.
func TestABackendThatDiesMidResponseCutsTheClientsResponse(t *testing.T) {
	for _, framing := range []string{"content-length", "event-stream"} {
		t.Run(framing, func(t *testing.T) {
			be := newHTTPTestServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if framing == "content-length" {
					w.Header().Set("Content-Length", "100000")
				} else {
					w.Header().Set("Content-Type", "text/event-stream")
				}
				_, _ = io.WriteString(w, "data: partial\n\n")
				_ = http.NewResponseController(w).Flush()
				panic(http.ErrAbortHandler)
			}))
			s := newServer(t, Options{})
			mustApply(t, s, oneRoute(Rule{Backends: []Backend{backendOf("be", 1, be)}}))
			resp, err := http.Get(gatewayURL(t, s, "web") + "/")
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			got, err := io.ReadAll(resp.Body)
			if err == nil {
				t.Fatalf("the response ended cleanly with %q, want it cut", got)
			}
			if string(got) != "data: partial\n\n" {
				t.Errorf("got %q before the cut, want what the backend sent", got)
			}
		})
	}
}
