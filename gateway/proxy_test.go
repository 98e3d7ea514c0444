package gateway

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

// The test client reaches the gateway from 127.0.0.1, its peer address.
func TestForwardingHeadersNameTheClientAsFarAsTrusted(t *testing.T) {
	cases := []struct {
		name        string
		trustedHops int
		xff         []string // header lines the client sends
		realIP      string   // X-Real-IP the client sends
		wantXFF     string
		wantRealIP  string
	}{
		{
			name:    "without trusted hops a client's X-Forwarded-For and X-Real-IP are replaced by its address",
			xff:     []string{"203.0.113.7, 198.51.100.1"},
			realIP:  "203.0.113.8",
			wantXFF: "127.0.0.1", wantRealIP: "127.0.0.1",
		},
		{
			name:    "without trusted hops or forwarding headers both name the peer",
			wantXFF: "127.0.0.1", wantRealIP: "127.0.0.1",
		},
		{
			name:        "with one trusted hop X-Forwarded-For is kept and appended to, and X-Real-IP is its last entry",
			trustedHops: 1,
			xff:         []string{"198.51.100.1, 203.0.113.7"},
			realIP:      "192.0.2.99",
			wantXFF:     "198.51.100.1, 203.0.113.7, 127.0.0.1", wantRealIP: "203.0.113.7",
		},
		{
			name:        "with two trusted hops X-Real-IP is the second entry from the right, across header lines",
			trustedHops: 2,
			xff:         []string{"198.51.100.1", "203.0.113.7,192.0.2.1"},
			wantXFF:     "198.51.100.1, 203.0.113.7,192.0.2.1, 127.0.0.1", wantRealIP: "203.0.113.7",
		},
		{
			name:        "with more trusted hops than entries X-Real-IP falls back to the peer",
			trustedHops: 3,
			xff:         []string{"203.0.113.7, 192.0.2.1"},
			wantXFF:     "203.0.113.7, 192.0.2.1, 127.0.0.1", wantRealIP: "127.0.0.1",
		},
		{
			name:        "with a trusted hop and no X-Forwarded-For both name the peer",
			trustedHops: 1,
			realIP:      "203.0.113.8",
			wantXFF:     "127.0.0.1", wantRealIP: "127.0.0.1",
		},
		{
			name:        "a trusted entry with a port gives its address alone",
			trustedHops: 1,
			xff:         []string{"[2001:db8::7]:4711"},
			wantXFF:     "[2001:db8::7]:4711, 127.0.0.1", wantRealIP: "2001:db8::7",
		},
		{
			name:        "a trusted entry that is not an address falls back to the peer",
			trustedHops: 1,
			xff:         []string{"203.0.113.7, unknown"},
			wantXFF:     "203.0.113.7, unknown, 127.0.0.1", wantRealIP: "127.0.0.1",
		},
	}
	be := echoBackend(t, "b")
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := newServer(t, Options{TrustedHops: tc.trustedHops})
			mustApply(t, s, oneRoute(Rule{Backends: []Backend{backendOf("b", 1, be)}}))
			req, err := http.NewRequest(http.MethodGet, gatewayURL(t, s, "web")+"/", nil)
			if err != nil {
				t.Fatal(err)
			}
			for _, line := range tc.xff {
				req.Header.Add("X-Forwarded-For", line)
			}
			if tc.realIP != "" {
				req.Header.Set("X-Real-IP", tc.realIP)
			}
			resp, body := do(t, req)
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("status %d: %s", resp.StatusCode, body)
			}
			got := decodeEcho(t, body)
			if xff := strings.Join(got.Header.Values("X-Forwarded-For"), " | "); xff != tc.wantXFF {
				t.Errorf("backend got X-Forwarded-For %q, want %q", xff, tc.wantXFF)
			}
			if ip := strings.Join(got.Header.Values("X-Real-IP"), " | "); ip != tc.wantRealIP {
				t.Errorf("backend got X-Real-IP %q, want %q", ip, tc.wantRealIP)
			}
		})
	}
}

func TestNewRefusesNegativeTrustedHops(t *testing.T) {
	if _, err := New(Options{TrustedHops: -1, Logger: quiet}); err == nil || !strings.Contains(err.Error(), "TrustedHops") {
		t.Errorf("New with TrustedHops -1: err = %v, want an error naming TrustedHops", err)
	}
}

// A request body that breaks on its way in (here a chunk line ended by a
// bare LF) is the client's error: 400, logged as such, not as an upstream
// failure.
func TestAMalformedRequestBodyIsAClientError(t *testing.T) {
	var mu sync.Mutex
	var logs bytes.Buffer
	s := newServer(t, Options{Logger: slog.New(slog.NewTextHandler(&lockedWriter{mu: &mu, w: &logs}, nil))})
	mustApply(t, s, oneRoute(Rule{Backends: []Backend{backendOf("echo", 1, echoBackend(t, "echo"))}}))
	host := strings.TrimPrefix(gatewayURL(t, s, "web"), "http://")
	conn, err := net.Dial("tcp", host)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = conn.Close() }()
	_ = conn.SetDeadline(time.Now().Add(waitLong))
	_, _ = io.WriteString(conn, "POST /upload HTTP/1.1\r\nHost: "+host+"\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n5\nworld\r\n0\r\n\r\n")
	res, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("no response: %v", err)
	}
	_ = res.Body.Close()
	if res.StatusCode != http.StatusBadRequest {
		t.Errorf("status %d, want 400", res.StatusCode)
	}
	mu.Lock()
	defer mu.Unlock()
	if strings.Contains(logs.String(), "upstream error") || !strings.Contains(logs.String(), "client error") {
		t.Errorf("logged as:\n%s\nwant a client error", logs.String())
	}
}

// A request framed by Transfer-Encoding, with or without a Content-Length
// beside it, closes its connection after the response (RFC 9112 section
// 6.3), so that no second request can hide in its body.
func TestAConnectionThatCarriedTransferEncodingIsClosed(t *testing.T) {
	s := newServer(t, Options{})
	mustApply(t, s, oneRoute(Rule{Backends: []Backend{backendOf("echo", 1, echoBackend(t, "echo"))}}))
	host := strings.TrimPrefix(gatewayURL(t, s, "web"), "http://")
	for _, framing := range []string{
		"Content-Length: 3\r\nTransfer-Encoding: chunked\r\n",
		"Transfer-Encoding: chunked\r\n",
	} {
		conn, err := net.Dial("tcp", host)
		if err != nil {
			t.Fatal(err)
		}
		_ = conn.SetDeadline(time.Now().Add(waitLong))
		// A second request follows at once on the same connection.
		_, _ = io.WriteString(conn, "POST /a HTTP/1.1\r\nHost: "+host+"\r\n"+framing+"\r\n5\r\nhello\r\n0\r\n\r\nGET /b HTTP/1.1\r\nHost: "+host+"\r\n\r\n")
		br := bufio.NewReader(conn)
		res, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("%q: no response: %v", framing, err)
		}
		_, _ = io.Copy(io.Discard, res.Body)
		_ = res.Body.Close()
		if res.StatusCode != http.StatusOK || !res.Close {
			t.Errorf("%q: status %d, Connection %q; want 200 and close", framing, res.StatusCode, res.Header.Get("Connection"))
		}
		if _, err := http.ReadResponse(br, nil); err == nil {
			t.Errorf("%q: the connection answered a second request", framing)
		}
		_ = conn.Close()
	}
	// Content-Length alone keeps the connection.
	res, _ := get(t, gatewayURL(t, s, "web")+"/c")
	if res.Close {
		t.Error("a request without a body closed its connection")
	}
}

// A backend that answers 101 to a request that asked for no upgrade (the
// only kind an MCP route lets through) gets no tunnel: the client gets 502.
func TestABackendsUnaskedSwitchOfProtocolIsNeverRelayed(t *testing.T) {
	switcher := newHTTPTestServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		conn, rw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		defer func() { _ = conn.Close() }()
		_, _ = rw.WriteString("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\ntunnelled bytes")
		_ = rw.Flush()
	}))
	s := newServer(t, Options{})
	mustApply(t, s, oneRoute(Rule{Backends: []Backend{backendOf("switcher", 1, switcher)}}))
	req, err := http.NewRequest(http.MethodPost, gatewayURL(t, s, "web")+"/mcp", strings.NewReader(`{"jsonrpc":"2.0","id":1,"method":"ping"}`))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	res, body := do(t, req)
	if res.StatusCode != http.StatusBadGateway || strings.Contains(string(body), "tunnelled") {
		t.Errorf("status %d, body %q: want 502 and nothing of the backend's", res.StatusCode, body)
	}
}

// A backend connection's buffers are smaller than net/http's (proxy.go):
// headers longer than them pass whole both ways.
func TestHeadersLongerThanTheBackendBuffersPass(t *testing.T) {
	long := strings.Repeat("v", 3*max(backendReadBufferSize, backendWriteBufferSize))
	be := newHTTPTestServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Long-Response", long)
		w.Header().Set("X-Request-Header-Length", fmt.Sprint(len(r.Header.Get("X-Long-Request"))))
		_, _ = io.WriteString(w, "ok")
	}))
	s := newServer(t, Options{})
	mustApply(t, s, oneRoute(Rule{Backends: []Backend{backendOf("be", 1, be)}}))
	req, _ := http.NewRequest(http.MethodGet, gatewayURL(t, s, "web")+"/", nil)
	req.Header.Set("X-Long-Request", long)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK || string(body) != "ok" {
		t.Fatalf("status %d, body %q", resp.StatusCode, body)
	}
	if got := resp.Header.Get("X-Long-Response"); got != long {
		t.Errorf("response header of %d bytes arrived with %d", len(long), len(got))
	}
	if got := resp.Header.Get("X-Request-Header-Length"); got != fmt.Sprint(len(long)) {
		t.Errorf("the backend got a request header of %s bytes, want %d", got, len(long))
	}
}
