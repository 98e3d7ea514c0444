package gateway

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// flakyBackend answers each attempt with the next of its statuses (an
// error for 0), and records the bodies it received.
type flakyBackend struct {
	statuses []int
	bodies   []string
}

func (b *flakyBackend) RoundTrip(r *http.Request) (*http.Response, error) {
	var body []byte
	if r.Body != nil {
		body, _ = io.ReadAll(r.Body)
	}
	b.bodies = append(b.bodies, string(body))
	status := b.statuses[0]
	if len(b.statuses) > 1 {
		b.statuses = b.statuses[1:]
	}
	if status == 0 {
		return nil, errors.New("connection refused")
	}
	return &http.Response{StatusCode: status, Body: io.NopCloser(strings.NewReader("answer")), Header: http.Header{}}, nil
}

func TestRetriesFollowTheRulesPolicy(t *testing.T) {
	tests := []struct {
		name     string
		retry    Retry
		statuses []int
		body     string
		want     int // 0: an error
		attempts int
	}{
		{"succeeds after two retries of 500 with three allowed", Retry{Codes: []int{500}, Attempts: 3}, []int{500, 500, 200}, "", 200, 3},
		{"surfaces the last 500 when four retries were needed", Retry{Codes: []int{500}, Attempts: 3}, []int{500, 500, 500, 500, 200}, "", 500, 4},
		{"does not retry a status it does not name", Retry{Codes: []int{500}, Attempts: 3}, []int{503, 200}, "", 503, 1},
		{"retries a failed connection", Retry{Codes: []int{500}, Attempts: 2}, []int{0, 200}, "", 200, 2},
		{"surfaces the last error", Retry{Codes: []int{500}, Attempts: 1}, []int{0, 0}, "", 0, 2},
		{"sends the same body each time", Retry{Codes: []int{502}, Attempts: 2}, []int{502, 502, 200}, `{"jsonrpc":"2.0"}`, 200, 3},
		{"no attempts: sent once", Retry{Codes: []int{500}}, []int{500, 200}, "", 500, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.retry.Backoff = "1ms"
			rt, err := compileRetry(&tt.retry)
			if err != nil {
				t.Fatal(err)
			}
			backend := &flakyBackend{statuses: tt.statuses}
			req, _ := http.NewRequestWithContext(t.Context(), http.MethodPost, "http://backend/", strings.NewReader(tt.body))
			res, err := rt.roundTrip(backend, req)
			switch {
			case tt.want == 0 && err == nil:
				t.Errorf("status %d, want an error", res.StatusCode)
			case tt.want != 0 && (err != nil || res.StatusCode != tt.want):
				t.Errorf("got %v, %v; want %d", res, err, tt.want)
			}
			if len(backend.bodies) != tt.attempts {
				t.Errorf("%d attempts, want %d", len(backend.bodies), tt.attempts)
			}
			for i, b := range backend.bodies {
				if b != tt.body {
					t.Errorf("attempt %d got body %q, want %q", i+1, b, tt.body)
				}
			}
		})
	}
}

// A body too long to keep is sent once, whole.
func TestARequestWithALongBodyIsSentOnce(t *testing.T) {
	rt, _ := compileRetry(&Retry{Codes: []int{500}, Attempts: 3})
	long := strings.Repeat("x", maxRetryBody+10)
	for _, contentLength := range []int64{int64(len(long)), -1} {
		backend := &flakyBackend{statuses: []int{500, 200}}
		req, _ := http.NewRequestWithContext(t.Context(), http.MethodPost, "http://backend/", strings.NewReader(long))
		req.ContentLength = contentLength
		res, err := rt.roundTrip(backend, req)
		if err != nil || res.StatusCode != 500 || len(backend.bodies) != 1 || backend.bodies[0] != long {
			t.Errorf("Content-Length %d: %v, %v, %d attempts; want the 500 of one attempt with the whole body", contentLength, res, err, len(backend.bodies))
		}
	}
}

// The wait between attempts ends with the request.
func TestARetryWaitsNoLongerThanItsRequest(t *testing.T) {
	rt, _ := compileRetry(&Retry{Codes: []int{500}, Attempts: 3, Backoff: "1h"})
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Millisecond)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://backend/", nil)
	_, err := rt.roundTrip(&flakyBackend{statuses: []int{500, 200}}, req)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("err %v, want the request's deadline", err)
	}
}

func TestRetryPoliciesAreChecked(t *testing.T) {
	for _, r := range []Retry{{Attempts: -1}, {Codes: []int{200}, Attempts: 1}, {Codes: []int{500}, Attempts: 1, Backoff: "soon"}} {
		if _, err := compileRetry(&r); err == nil {
			t.Errorf("compileRetry(%+v) accepted it", r)
		}
	}
}

// Through the server: a rule's retry turns two 500s into the backend's
// third answer, with the client's body each time; another rule's requests
// are sent once.
func TestTheServerRetriesARulesBackendRequests(t *testing.T) {
	var attempts atomic.Int64
	var bodies sync.Map
	backend := newHTTPTestServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := attempts.Add(1)
		body, _ := io.ReadAll(r.Body)
		bodies.Store(n, string(body))
		if n%3 != 0 {
			w.WriteHeader(http.StatusInternalServerError)
			return
		}
		_, _ = io.WriteString(w, "third time")
	}))
	s := newServer(t, Options{})
	mustApply(t, s, oneRoute(
		Rule{Matches: []Match{{Path: PathMatch{Type: PathMatchPathPrefix, Value: "/retried"}}},
			Retry: &Retry{Codes: []int{500}, Attempts: 2, Backoff: "1ms"}, Backends: []Backend{backendOf("b", 1, backend)}},
		Rule{Matches: []Match{{Path: PathMatch{Type: PathMatchPathPrefix, Value: "/once"}}}, Backends: []Backend{backendOf("b", 1, backend)}},
	))
	req, _ := http.NewRequest(http.MethodPost, gatewayURL(t, s, "web")+"/retried", strings.NewReader("payload"))
	res, body := do(t, req)
	if res.StatusCode != http.StatusOK || string(body) != "third time" || attempts.Load() != 3 {
		t.Fatalf("status %d, %q after %d attempts; want the third attempt's 200", res.StatusCode, body, attempts.Load())
	}
	for n := int64(1); n <= 3; n++ {
		if b, _ := bodies.Load(n); b != "payload" {
			t.Errorf("attempt %d got body %q", n, b)
		}
	}
	attempts.Store(0)
	if res, _ := get(t, gatewayURL(t, s, "web")+"/once"); res.StatusCode != http.StatusInternalServerError || attempts.Load() != 1 {
		t.Errorf("a rule without retry: status %d after %d attempts, want one 500", res.StatusCode, attempts.Load())
	}
}
