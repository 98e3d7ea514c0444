package gateway

import (
	"context"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestWeightedChoiceFollowsWeights(t *testing.T) {
	// The choice is deterministic (a golden-ratio sequence), so these
	// bounds are exact properties, not probabilities: the test cannot
	// flake. The bound is a few requests whatever the count.
	cases := []struct {
		name    string
		weights []int32
		n       int
	}{
		{"equal weights", []int32{1, 1}, 1000},
		{"one to three", []int32{1, 3}, 10000},
		{"zero weight among others", []int32{1, 0, 3, 6}, 10000},
		{"large weights", []int32{1_000_000, 250_000, 1}, 100000},
		{"a short run", []int32{2, 5, 3}, 37},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var backends []Backend
			var total int64
			for i, w := range tc.weights {
				backends = append(backends, Backend{Name: string(rune('a' + i)), Weight: w, Endpoints: []string{"127.0.0.1:1"}})
				total += int64(w)
			}
			set, err := (&compiler{proxy: http.NotFoundHandler()}).newBackendSet(backends)
			if err != nil {
				t.Fatal(err)
			}
			counts := map[string]int{}
			for range tc.n {
				counts[set.pick().name]++
			}
			for _, b := range backends {
				want := float64(tc.n) * float64(b.Weight) / float64(total)
				got := counts[b.Name]
				if b.Weight == 0 && got != 0 {
					t.Errorf("backend %s with weight 0 was chosen %d times", b.Name, got)
				}
				if diff := float64(got) - want; diff > 3 || diff < -3 {
					t.Errorf("backend %s (weight %d) chosen %d times of %d, want %.1f±3", b.Name, b.Weight, got, tc.n, want)
				}
			}
		})
	}
}

func TestWeightsThroughTheGateway(t *testing.T) {
	a, b, c := echoBackend(t, "a"), echoBackend(t, "b"), echoBackend(t, "c")
	s := newServer(t, Options{})
	mustApply(t, s, oneRoute(Rule{Backends: []Backend{backendOf("a", 1, a), backendOf("b", 3, b), backendOf("c", 0, c)}}))
	base := gatewayURL(t, s, "web")

	// Concurrent clients: whatever the interleaving, requests 0..399 take
	// the points 0..399 of the sequence, so the counts are fixed.
	const n = 400
	var mu sync.Mutex
	counts := map[string]int{}
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range n / 4 {
				resp, err := client.Get(base + "/")
				if err != nil {
					t.Errorf("worker %d: %v", w, err)
					return
				}
				resp.Body.Close()
				mu.Lock()
				counts[resp.Header.Get("X-Backend")]++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if counts["c"] != 0 {
		t.Errorf("weight 0 backend served %d requests", counts["c"])
	}
	if got := counts["a"]; got < 97 || got > 103 {
		t.Errorf("weight 1 of 4 served %d of %d requests, want 100±3", got, n)
	}
	if got := counts["b"]; got < 297 || got > 303 {
		t.Errorf("weight 3 of 4 served %d of %d requests, want 300±3", got, n)
	}
}

func TestInvalidBackendShareAnswers500(t *testing.T) {
	a := echoBackend(t, "a")
	s := newServer(t, Options{})
	mustApply(t, s, oneRoute(Rule{Backends: []Backend{
		backendOf("a", 1, a),
		{Name: "missing", Weight: 1, Invalid: true},
	}}))
	codes := map[int]int{}
	for range 200 {
		resp, _ := get(t, gatewayURL(t, s, "web")+"/")
		codes[resp.StatusCode]++
	}
	if got := codes[http.StatusInternalServerError]; got < 97 || got > 103 {
		t.Errorf("%d of 200 requests got 500, want the invalid backend's half (100±3); codes %v", got, codes)
	}
	if codes[http.StatusOK]+codes[http.StatusInternalServerError] != 200 {
		t.Errorf("unexpected codes %v", codes)
	}
}

func TestRulesWithoutUsableBackends(t *testing.T) {
	cases := []struct {
		name     string
		backends []Backend
		code     int
	}{
		{"no backends answers 500", nil, http.StatusInternalServerError},
		{"all weights zero answers 500", []Backend{{Name: "a", Weight: 0, Endpoints: []string{"127.0.0.1:1"}}}, http.StatusInternalServerError},
		{"only invalid backends answer 500", []Backend{{Name: "a", Weight: 1, Invalid: true}}, http.StatusInternalServerError},
		{"no ready endpoints answers 503", []Backend{{Name: "a", Weight: 1}}, http.StatusServiceUnavailable},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := newServer(t, Options{})
			mustApply(t, s, oneRoute(Rule{Backends: tc.backends}))
			resp, body := get(t, gatewayURL(t, s, "web")+"/")
			if resp.StatusCode != tc.code {
				t.Errorf("status %d (%s), want %d", resp.StatusCode, body, tc.code)
			}
		})
	}
}

func TestEndpointsAreBalancedRoundRobin(t *testing.T) {
	e1, e2, e3 := echoBackend(t, "e1"), echoBackend(t, "e2"), echoBackend(t, "e3")
	s := newServer(t, Options{})
	mustApply(t, s, oneRoute(Rule{Backends: []Backend{backendOf("svc", 1, e1, e2, e3)}}))
	counts := map[string]int{}
	for range 30 {
		resp, _ := get(t, gatewayURL(t, s, "web")+"/")
		counts[resp.Header.Get("X-Backend")]++
	}
	for _, e := range []string{"e1", "e2", "e3"} {
		if counts[e] != 10 {
			t.Errorf("endpoint %s served %d of 30 requests, want 10: %v", e, counts[e], counts)
		}
	}
}

func TestBackendErrors(t *testing.T) {
	hangUp := newHTTPTestServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		conn, _, err := http.NewResponseController(w).Hijack()
		if err == nil {
			conn.Close()
		}
	}))
	slow := newHTTPTestServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select { // answers only when the gateway gives up
		case <-r.Context().Done():
		case <-time.After(waitLong):
		}
	}))
	at := func(addr string) []string { return []string{addr} }
	cases := []struct {
		name     string
		rule     Rule
		code     int
		bodyPart string
	}{
		{"an endpoint that refuses connections answers 503",
			Rule{Backends: []Backend{{Name: "down", Weight: 1, Endpoints: at(closedPort(t))}}},
			http.StatusServiceUnavailable, "connect"},
		{"an endpoint that hangs up answers 502",
			Rule{Backends: []Backend{backendOf("hangup", 1, hangUp)}},
			http.StatusBadGateway, "upstream"},
		{"a backend request timeout answers 504",
			Rule{Backends: []Backend{backendOf("slow", 1, slow)}, Timeouts: Timeouts{BackendRequest: 100 * time.Millisecond}},
			http.StatusGatewayTimeout, "timeout"},
		{"a request timeout answers 504",
			Rule{Backends: []Backend{backendOf("slow", 1, slow)}, Timeouts: Timeouts{Request: 100 * time.Millisecond}},
			http.StatusGatewayTimeout, "timeout"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := newServer(t, Options{})
			mustApply(t, s, oneRoute(tc.rule))
			resp, body := get(t, gatewayURL(t, s, "web")+"/")
			if resp.StatusCode != tc.code {
				t.Fatalf("status %d (%s), want %d", resp.StatusCode, body, tc.code)
			}
			if len(body) > 100 || !strings.Contains(string(body), tc.bodyPart) {
				t.Errorf("body %q: want a short message mentioning %q", body, tc.bodyPart)
			}
		})
	}
}

func TestProxyForwardsFaithfully(t *testing.T) {
	be := echoBackend(t, "b")
	s := newServer(t, Options{})
	mustApply(t, s, oneRoute(Rule{Backends: []Backend{backendOf("b", 1, be)}}))
	base := gatewayURL(t, s, "web")

	body := `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"text":"héllo"}}}`
	req, _ := http.NewRequestWithContext(context.Background(), http.MethodPost, base+"/mcp/a%2Fb?x=1&y=%20", strings.NewReader(body))
	req.Host = "mcp.example.com:8443"
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-Forwarded-For", "203.0.113.7")
	req.Header.Set("Connection", "X-Hop")
	req.Header.Set("X-Hop", "must not pass")
	req.Header.Set("Keep-Alive", "timeout=5")
	resp, out := do(t, req)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d: %s", resp.StatusCode, out)
	}
	got := decodeEcho(t, out)
	checks := []struct{ what, got, want string }{
		{"body", got.Body, body},
		{"method", got.Method, http.MethodPost},
		{"Host", got.Host, "mcp.example.com:8443"},
		{"escaped path", got.RawPath, "/mcp/a%2Fb"},
		{"query", got.RawQuery, "x=1&y=%20"},
		{"X-Forwarded-For (the client's own is not trusted)", got.Header.Get("X-Forwarded-For"), "127.0.0.1"},
		{"X-Forwarded-Proto", got.Header.Get("X-Forwarded-Proto"), "http"},
		{"X-Forwarded-Host", got.Header.Get("X-Forwarded-Host"), "mcp.example.com:8443"},
		{"hop-by-hop header named by Connection", got.Header.Get("X-Hop"), ""},
		{"Keep-Alive", got.Header.Get("Keep-Alive"), ""},
		{"Content-Type", got.Header.Get("Content-Type"), "application/json"},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s: backend got %q, want %q", c.what, c.got, c.want)
		}
	}
}
