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
