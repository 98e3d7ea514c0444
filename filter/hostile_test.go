package filter_test

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/toolgate/toolgate/filter"
	"github.com/toolgate/toolgate/filter/limiter"
)

func TestOnlyMCPMethodsReachTheBackend(t *testing.T) {
	h := newHarness(t, filter.Policy{Server: testServer, Global: limit(1000, time.Hour)})
	tests := []struct {
		method string
		body   string
		want   int
	}{
		{method: http.MethodPost, body: call(1, "t"), want: http.StatusOK},
		{method: http.MethodGet, want: http.StatusOK},
		{method: http.MethodDelete, want: http.StatusOK},
		{method: http.MethodPut, body: call(1, "t"), want: http.StatusMethodNotAllowed},
		{method: http.MethodPatch, body: call(1, "t"), want: http.StatusMethodNotAllowed},
		{method: "post", body: call(1, "t"), want: http.StatusMethodNotAllowed},
		{method: "FOO", body: call(1, "t"), want: http.StatusMethodNotAllowed},
		{method: http.MethodHead, want: http.StatusMethodNotAllowed},
		{method: http.MethodOptions, want: http.StatusMethodNotAllowed},
		{method: http.MethodGet, body: call(1, "t"), want: http.StatusBadRequest},
		{method: http.MethodDelete, body: call(1, "t"), want: http.StatusBadRequest},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%s with %d body bytes", tt.method, len(tt.body)), func(t *testing.T) {
			before := h.backend.hits.Load()
			r := httptest.NewRequest(tt.method, "/mcp", strings.NewReader(tt.body))
			r.Header.Set("Content-Type", "application/json")
			w := h.serve(r)
			if w.Code != tt.want {
				t.Fatalf("status %d, want %d: %s", w.Code, tt.want, w.Body)
			}
			reached := h.backend.hits.Load() - before
			if want := int64(0); tt.want == http.StatusOK {
				if reached != 1 {
					t.Errorf("the backend saw %d requests, want 1", reached)
				}
			} else if reached != want {
				t.Errorf("the backend saw %d requests, want none", reached)
			}
			if tt.want == http.StatusMethodNotAllowed && w.Header().Get("Allow") != "GET, POST, DELETE, OPTIONS" {
				t.Errorf("Allow = %q", w.Header().Get("Allow"))
			}
		})
	}
}

func TestTheCheckedTokenIsNotPassedToTheBackendUnlessThePolicySaysSo(t *testing.T) {
	iss := newIssuer(t)
	for _, forward := range []bool{false, true} {
		t.Run(fmt.Sprintf("ForwardAuthorization %v", forward), func(t *testing.T) {
			h := newHarness(t, filter.Policy{Server: testServer, Auth: iss.auth(), ForwardAuthorization: forward, PerUser: limit(10, time.Hour)})
			token := iss.token(t, "alice")
			if w := h.post(token, call(1, "t")); w.Code != http.StatusOK {
				t.Fatalf("status %d: %s", w.Code, w.Body)
			}
			r := httptest.NewRequest(http.MethodGet, "/mcp", nil)
			r.Header.Set("Authorization", "Bearer "+token)
			if w := h.serve(r); w.Code != http.StatusOK {
				t.Fatalf("GET: status %d: %s", w.Code, w.Body)
			}
			want := ""
			if forward {
				want = "Bearer " + token
			}
			h.backend.mu.Lock()
			defer h.backend.mu.Unlock()
			for i, got := range h.backend.auths {
				if got != want {
					t.Errorf("request %d reached the backend with Authorization %q, want %q", i, got, want)
				}
			}
		})
	}
}

func TestABatchPastTheBoundIsRefusedWhole(t *testing.T) {
	h := newHarness(t, filter.Policy{Server: testServer, Global: limit(1000, time.Hour)},
		func(o *filter.SharedOptions) { o.MaxBatch = 100 })
	batch := func(n int) string {
		calls := make([]string, n)
		for i := range calls {
			calls[i] = call(i, "t")
		}
		return "[" + strings.Join(calls, ",") + "]"
	}
	if w := h.post("", batch(100)); w.Code != http.StatusOK {
		t.Fatalf("a batch of 100: status %d: %s", w.Code, w.Body)
	}
	w := h.post("", batch(101))
	if w.Code != http.StatusBadRequest || !strings.Contains(w.Body.String(), "at most 100") {
		t.Fatalf("a batch of 101: status %d, body %s; want 400 saying the bound", w.Code, w.Body)
	}
	if got := h.backend.hits.Load(); got != 1 {
		t.Errorf("the backend saw %d requests, want 1", got)
	}
	// The batch of 100 took 100 tokens.
	if !h.bucketHolds(t, limiter.BucketID{Server: testServer}, *limit(1000, time.Hour), 900) || h.bucketHolds(t, limiter.BucketID{Server: testServer}, *limit(1000, time.Hour), 1) {
		t.Error("the batch of 100 did not take exactly 100 tokens")
	}
}

// A body that does not arrive in time gets 408 and its connection closes;
// the filter keeps nothing of it.
func TestASlowBodyGets408AndItsConnectionCloses(t *testing.T) {
	h := newHarness(t, filter.Policy{Server: testServer, Global: limit(1000, time.Hour)},
		func(o *filter.SharedOptions) { o.BodyTimeout = 200 * time.Millisecond })
	srv := httptest.NewServer(h.handler)
	defer srv.Close()

	conn, err := net.Dial("tcp", srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	// Announce 1 MiB and send one byte of it.
	if _, err := fmt.Fprintf(conn, "POST /mcp HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n[", 1<<20); err != nil {
		t.Fatal(err)
	}
	_ = conn.SetReadDeadline(time.Now().Add(30 * time.Second))
	res, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("no response to a slow body: %v", err)
	}
	body, _ := io.ReadAll(res.Body)
	if res.StatusCode != http.StatusRequestTimeout || !strings.Contains(string(body), "did not arrive within 200ms") {
		t.Fatalf("status %d, body %s; want 408 saying the timeout", res.StatusCode, body)
	}
	if !res.Close {
		t.Error("the response does not close the connection")
	}
	if got := h.backend.hits.Load(); got != 0 {
		t.Errorf("the backend saw %d requests, want none", got)
	}
	if got := metricValue(t, h.reg, filter.MetricRejectedRequests, map[string]string{"reason": "body_timeout"}); got != 1 {
		t.Errorf("%s{reason=body_timeout} = %v, want 1", filter.MetricRejectedRequests, got)
	}
}
