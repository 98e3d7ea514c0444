package gateway

import (
	"net/http"
	"strings"
	"testing"
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
