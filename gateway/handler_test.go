package gateway

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

// A request that got no answer is recorded with the status the client got
// or would have got, never as the 200 of an empty handler.
func TestUnansweredRequestsAreRecordedByWhyNothingWasAnswered(t *testing.T) {
	cases := []struct {
		name string
		// setup returns the rule to serve, the filters its ExtensionRefs
		// name and how the client behaves.
		setup       func(t *testing.T) (rule Rule, filters fakeExtensions, send func(base string))
		wantStatus  int
		wantAborted bool
	}{
		{
			name: "a client that sends part of its body and disconnects is recorded as 499",
			setup: func(t *testing.T) (Rule, fakeExtensions, func(string)) {
				// Like the MCP filter: a body that cannot be read because
				// the client left gets no answer.
				rule, filters := extensionRule(func(http.Handler) http.Handler {
					return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
						if _, err := io.ReadAll(r.Body); err != nil && r.Context().Err() != nil {
							return
						}
						writeError(w, http.StatusTeapot, "the whole body arrived")
					})
				})
				return rule, filters, func(base string) {
					conn, err := net.Dial("tcp", strings.TrimPrefix(base, "http://"))
					if err != nil {
						t.Fatal(err)
					}
					defer conn.Close()
					_, err = io.WriteString(conn, "POST /mcp HTTP/1.1\r\nHost: mcp.example.com\r\nContent-Type: application/json\r\n"+
						"Content-Length: 1000\r\n\r\n{\"jsonrpc\":\"2.0\",")
					if err != nil {
						t.Fatal(err)
					}
				}
			},
			wantStatus: statusClientClosedRequest,
		},
		{
			name: "a client that gives up while the backend has not answered is recorded as 499",
			setup: func(t *testing.T) (Rule, fakeExtensions, func(string)) {
				arrived := make(chan struct{})
				be := newHTTPTestServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					close(arrived)
					<-r.Context().Done() // the gateway hangs up when its client does
				}))
				return Rule{Backends: []Backend{backendOf("slow", 1, be)}}, nil, func(base string) {
					ctx, cancel := context.WithCancel(context.Background())
					defer cancel()
					go func() { <-arrived; cancel() }()
					req, _ := http.NewRequestWithContext(ctx, http.MethodGet, base+"/slow", nil)
					if resp, err := client.Do(req); err == nil {
						resp.Body.Close()
						t.Errorf("the request was answered with %d, want the client to give up", resp.StatusCode)
					}
				}
			},
			wantStatus: statusClientClosedRequest,
		},
		{
			name: "a filter that panics before answering is recorded as 502 and aborted",
			setup: func(t *testing.T) (Rule, fakeExtensions, func(string)) {
				rule, filters := extensionRule(func(http.Handler) http.Handler {
					return http.HandlerFunc(func(http.ResponseWriter, *http.Request) { panic(http.ErrAbortHandler) })
				})
				return rule, filters, func(base string) {
					if resp, err := client.Get(base + "/"); err == nil {
						resp.Body.Close()
						t.Errorf("a panicking filter answered %d, want the connection cut", resp.StatusCode)
					}
				}
			},
			wantStatus:  http.StatusBadGateway,
			wantAborted: true,
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			log := &accessLogBuffer{}
			rule, filters, send := tc.setup(t)
			s := newServer(t, Options{AdminAddress: "127.0.0.1:0", AccessLog: slog.New(slog.NewJSONHandler(log, nil)), Extensions: filters.build})
			mustApply(t, s, oneRoute(rule))
			send(gatewayURL(t, s, "web"))

			record := log.waitForRecord(t)
			if got := record["status"]; got != float64(tc.wantStatus) {
				t.Errorf("access log status = %v, want %d", got, tc.wantStatus)
			}
			if got, _ := record["aborted"].(bool); got != tc.wantAborted {
				t.Errorf("access log aborted = %v, want %v", got, tc.wantAborted)
			}
			_, metrics := get(t, "http://"+s.AdminAddr().String()+"/metrics")
			want := `toolgate_gateway_requests_total{code="` + statusLabel(tc.wantStatus) + `",route="ns/r"} 1`
			if !strings.Contains(string(metrics), want) {
				t.Errorf("/metrics lacks %s", want)
			}
		})
	}
}

// extensionRule is a rule whose one ExtensionRef filter runs wrap, and the
// fake filters that build it.
func extensionRule(wrap func(next http.Handler) http.Handler) (Rule, fakeExtensions) {
	return Rule{Filters: []Filter{resolvedRef("f")}}, fakeExtensions{"f": extensionFunc(wrap)}
}

// accessLogBuffer collects JSON access log records.
type accessLogBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *accessLogBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// String returns what was written so far.
func (b *accessLogBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// waitForRecord returns the first record, which is written after the
// response.
func (b *accessLogBuffer) waitForRecord(t *testing.T) map[string]any {
	t.Helper()
	deadline := time.Now().Add(waitLong)
	for {
		b.mu.Lock()
		line, _, found := bytes.Cut(b.buf.Bytes(), []byte("\n"))
		line = bytes.Clone(line)
		b.mu.Unlock()
		if found {
			var record map[string]any
			if err := json.Unmarshal(line, &record); err != nil {
				t.Fatalf("access log line %q: %v", line, err)
			}
			return record
		}
		if time.Now().After(deadline) {
			t.Fatal("no access log record")
		}
		time.Sleep(5 * time.Millisecond)
	}
}
