package gateway

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestAdminEndpoints(t *testing.T) {
	be := echoBackend(t, "b")
	s := newServer(t, Options{AdminAddress: "127.0.0.1:0", Extensions: fakeExtensions{"jira": extensionFunc(func(next http.Handler) http.Handler { return next })}.build})
	admin := "http://" + s.AdminAddr().String()

	if resp, _ := get(t, admin+"/healthz"); resp.StatusCode != http.StatusOK {
		t.Errorf("/healthz = %d before any config, want 200", resp.StatusCode)
	}
	if resp, _ := get(t, admin+"/readyz"); resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("/readyz = %d before any config, want 503", resp.StatusCode)
	}
	if resp, _ := get(t, admin+"/config"); resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("/config = %d before any config, want 503", resp.StatusCode)
	}

	cfg := oneRoute(Rule{
		Matches:  []Match{{Path: prefix("/mcp")}, {Path: exact("/health"), Method: http.MethodGet}},
		Filters:  []Filter{{Type: FilterExtensionRef, ExtensionRef: &ExtensionRef{Group: "toolgate.dev", Kind: "MCPServer", Name: "github"}}},
		Backends: []Backend{backendOf("team-a/github-mcp:8080", 1, be)},
		Timeouts: Timeouts{Request: time.Minute},
	}, Rule{
		Matches:  []Match{{Path: prefix("/jira")}},
		Filters:  []Filter{resolvedRef("jira")},
		Backends: []Backend{backendOf("team-a/jira-mcp:8080", 1, be)},
	})
	cfg.Version = "v42"
	https := Listener{Name: "tls", Address: "127.0.0.2", Protocol: ProtocolHTTPS, Hostname: "mcp.example.com", Certificates: testCertificates(t, "mcp.example.com")}
	cfg.Listeners = append(cfg.Listeners, https)
	mustApply(t, s, cfg)

	if resp, _ := get(t, admin+"/readyz"); resp.StatusCode != http.StatusOK {
		t.Errorf("/readyz = %d after Apply, want 200", resp.StatusCode)
	}
	get(t, gatewayURL(t, s, "web")+"/mcp")   // 500: unresolved ExtensionRef
	get(t, gatewayURL(t, s, "web")+"/other") // 404

	_, metrics := get(t, admin+"/metrics")
	for _, want := range []string{
		`toolgate_gateway_requests_total{code="500",route="ns/r"} 1`,
		`toolgate_gateway_requests_total{code="404",route=""} 1`,
		`toolgate_gateway_request_duration_seconds_count{route="ns/r"} 1`,
	} {
		if !strings.Contains(string(metrics), want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}

	resp, body := get(t, admin+"/config")
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("/config = %d", resp.StatusCode)
	}
	if bytes.Contains(body, []byte("PRIVATE")) {
		t.Error("/config exposes a private key")
	}
	// /config is the wire form, indented: it decodes as a Config.
	view, err := DecodeConfig(body)
	if err != nil {
		t.Fatalf("/config is not a config: %v", err)
	}
	if view.Version != "v42" {
		t.Errorf("/config version = %q, want v42", view.Version)
	}
	if len(view.Listeners) != 2 || len(view.Listeners[1].Certificates) != 1 {
		t.Fatalf("/config listeners: %+v", view.Listeners)
	}
	if c := view.Listeners[1].Certificates[0]; c.CertificatePEM != https.Certificates[0].CertificatePEM || c.PrivateKeyPEM != "[redacted]" {
		t.Errorf("/config certificate = %+v, want the certificate PEM and the key redacted", c)
	}
	rules := view.Listeners[0].VirtualHosts[0].Routes[0].Rules
	if ref := rules[0].Filters[0].ExtensionRef; ref == nil || ref.Name != "github" || ref.MCPServer != nil {
		t.Errorf("/config extensionRef = %+v, want github, unresolved", ref)
	}
	if ref := rules[1].Filters[0].ExtensionRef; ref == nil || ref.MCPServer == nil || ref.MCPServer.Server != "ns/jira" {
		t.Errorf("/config extensionRef = %+v, want jira with its policy", ref)
	}
	if rule := rules[0]; rule.Backends[0].Name != "team-a/github-mcp:8080" || rule.Timeouts.Request != time.Minute || rule.Matches[1].Method != "GET" {
		t.Errorf("/config rule = %+v", rule)
	}
	if !bytes.Contains(body, []byte(`"request": "1m0s"`)) {
		t.Errorf("/config does not show timeouts as durations:\n%s", body)
	}
}

func TestAccessLog(t *testing.T) {
	var mu sync.Mutex
	var buf bytes.Buffer
	be := echoBackend(t, "b")
	s := newServer(t, Options{AccessLog: slog.New(slog.NewJSONHandler(&lockedWriter{mu: &mu, w: &buf}, nil))})
	mustApply(t, s, oneRoute(Rule{Backends: []Backend{backendOf("svc", 1, be)}}))
	get(t, gatewayURL(t, s, "web")+"/tools?x=1", "Host", "mcp.example.com")

	// The record is written after the response: wait for it.
	deadline := time.Now().Add(waitLong)
	var record map[string]any
	for record == nil {
		mu.Lock()
		if line, _, found := bytes.Cut(buf.Bytes(), []byte("\n")); found {
			if err := json.Unmarshal(line, &record); err != nil {
				t.Fatalf("access log line %q: %v", line, err)
			}
		}
		mu.Unlock()
		if record == nil && time.Now().After(deadline) {
			t.Fatal("no access log record")
		}
		time.Sleep(5 * time.Millisecond)
	}
	want := map[string]any{
		"msg": "request", "method": "GET", "host": "mcp.example.com", "path": "/tools",
		"status": float64(200), "route": "ns/r", "listener": "web", "backend": "svc",
		"endpoint": strings.TrimPrefix(be.URL, "http://"),
	}
	for k, v := range want {
		if record[k] != v {
			t.Errorf("access log %s = %v, want %v", k, record[k], v)
		}
	}
	if _, ok := record["duration"]; !ok {
		t.Error("access log has no duration")
	}
}

type lockedWriter struct {
	mu *sync.Mutex
	w  *bytes.Buffer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

func TestActiveStreamsMetric(t *testing.T) {
	held := newHeldStream()
	be := newHTTPTestServer(t, held)
	s := newServer(t, Options{AdminAddress: "127.0.0.1:0"})
	mustApply(t, s, oneRoute(Rule{Backends: []Backend{backendOf("sse", 1, be)}}))
	admin := "http://" + s.AdminAddr().String()
	waitFor := func(want string) {
		t.Helper()
		deadline := time.Now().Add(waitLong)
		for {
			_, body := get(t, admin+"/metrics")
			if strings.Contains(string(body), want) {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("/metrics never showed %s", want)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	_, events := openStream(t, http.MethodGet, gatewayURL(t, s, "web")+"/")
	if _, err := events.next(); err != nil {
		t.Fatal(err)
	}
	waitFor(`toolgate_gateway_active_streams{route="ns/r"} 1`)
	close(held.release)
	_, _ = events.next() // the end of the stream, its error or EOF
	waitFor(`toolgate_gateway_active_streams{route="ns/r"} 0`)
}

func TestHTTPSListenersChooseCertificatesBySNI(t *testing.T) {
	be := echoBackend(t, "b")
	route := func(name string) VirtualHost {
		return VirtualHost{Routes: []Route{{Namespace: "ns", Name: name, Rules: []Rule{{Backends: []Backend{backendOf("b", 1, be)}}}}}}
	}
	certA, certB := testCertificates(t, "a.example.com"), testCertificates(t, "x.b.example.com", "*.b.example.com")
	listeners := func(a []Certificate) *Config {
		return &Config{Listeners: []Listener{
			{Name: "a", Address: "127.0.0.1", Protocol: ProtocolHTTPS, Hostname: "a.example.com", Certificates: a, VirtualHosts: []VirtualHost{route("a")}},
			{Name: "b", Address: "127.0.0.1", Protocol: ProtocolHTTPS, Hostname: "*.b.example.com", Certificates: certB, VirtualHosts: []VirtualHost{route("b")}},
		}}
	}
	s := newServer(t, Options{})
	mustApply(t, s, listeners(certA))
	addr := s.Addr("a").String()
	if s.Addr("b").String() != addr {
		t.Fatal("listeners on one port got different sockets")
	}
	pool := certPool(t, certA[0], certB[0])

	fetch := func(host string, roots *x509.CertPool) (*http.Response, echoed) {
		t.Helper()
		c := &http.Client{Timeout: waitLong, Transport: &http.Transport{TLSClientConfig: &tls.Config{ServerName: host, RootCAs: roots}}}
		req, _ := http.NewRequest(http.MethodGet, "https://"+addr+"/", nil)
		req.Host = host
		resp, err := c.Do(req)
		if err != nil {
			t.Fatalf("GET https://%s: %v", host, err)
		}
		defer resp.Body.Close()
		var e echoed
		if err := json.NewDecoder(resp.Body).Decode(&e); err != nil {
			t.Fatal(err)
		}
		return resp, e
	}
	for _, host := range []string{"a.example.com", "x.b.example.com"} {
		resp, e := fetch(host, pool)
		if got := resp.TLS.PeerCertificates[0].DNSNames[0]; !strings.HasSuffix(host, strings.TrimPrefix(got, "*")) && got != host {
			t.Errorf("%s got the certificate for %s", host, got)
		}
		if e.Header.Get("X-Forwarded-Proto") != "https" {
			t.Errorf("X-Forwarded-Proto = %q, want https", e.Header.Get("X-Forwarded-Proto"))
		}
	}

	// A new certificate takes effect with a swap, on the same socket.
	rotated := testCertificates(t, "a.example.com")
	mustApply(t, s, listeners(rotated))
	if s.Addr("a").String() != addr {
		t.Fatal("a certificate change reopened the socket")
	}
	fetch("a.example.com", certPool(t, rotated[0]))
}

func TestConfigShowsHeaderNamesButNotTheirValues(t *testing.T) {
	be := echoBackend(t, "b")
	s := newServer(t, Options{AdminAddress: "127.0.0.1:0"})
	injected := &HeaderModifier{
		Set:    []Header{{Name: "Authorization", Value: "Bearer secret-set"}},
		Add:    []Header{{Name: "X-Api-Key", Value: "secret-add"}},
		Remove: []string{"X-Drop"},
	}
	backend := backendOf("b", 1, be)
	backend.Filters = []Filter{{Type: FilterRequestHeaderModifier, RequestHeaderModifier: &HeaderModifier{Set: []Header{{Name: "X-Backend-Key", Value: "secret-backend"}}}}}
	mustApply(t, s, oneRoute(Rule{
		Matches: []Match{{
			Path:        prefix("/"),
			Headers:     []HeaderMatch{{Name: "X-Tenant", Value: "secret-match"}},
			QueryParams: []QueryParamMatch{{Type: MatchRegularExpression, Name: "token", Value: "secret-.*"}},
		}},
		Filters: []Filter{
			{Type: FilterRequestHeaderModifier, RequestHeaderModifier: injected},
			{Type: FilterResponseHeaderModifier, ResponseHeaderModifier: &HeaderModifier{Set: []Header{{Name: "Set-Cookie", Value: "secret-cookie"}}}},
		},
		Backends: []Backend{backend},
	}))

	resp, body := get(t, "http://"+s.AdminAddr().String()+"/config")
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("/config from loopback = %d (%s), want 200", resp.StatusCode, body)
	}
	if bytes.Contains(body, []byte("secret")) {
		t.Errorf("/config shows a header or query parameter value:\n%s", body)
	}
	for _, name := range []string{"Authorization", "X-Api-Key", "X-Drop", "Set-Cookie", "X-Backend-Key", "X-Tenant", "token"} {
		if !bytes.Contains(body, []byte(`"`+name+`"`)) {
			t.Errorf("/config does not name %s", name)
		}
	}
	view, err := DecodeConfig(body)
	if err != nil {
		t.Fatal(err)
	}
	rule := view.Listeners[0].VirtualHosts[0].Routes[0].Rules[0]
	if v := rule.Filters[0].RequestHeaderModifier.Set[0].Value; v != redacted {
		t.Errorf("/config requestHeaderModifier value = %q, want %q", v, redacted)
	}
	if m := rule.Matches[0]; m.Headers[0].Value != redacted || m.QueryParams[0].Type != MatchRegularExpression {
		t.Errorf("/config match = %+v, want values redacted and types kept", m)
	}

	// Redaction is of the view only: the snapshot and the traffic keep
	// the values.
	if injected.Set[0].Value != "Bearer secret-set" {
		t.Errorf("serving /config changed the applied config: %+v", injected)
	}
	resp, body = get(t, gatewayURL(t, s, "web")+"/?token=secret-1", "X-Tenant", "secret-match")
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("request through the gateway: %d %s", resp.StatusCode, body)
	}
	if got := decodeEcho(t, body).Header.Get("Authorization"); got != "Bearer secret-set" {
		t.Errorf("backend got Authorization %q, want the configured value", got)
	}
}

func TestConfigIsAnsweredToLoopbackClientsOnlyByDefault(t *testing.T) {
	cases := []struct {
		name        string
		remoteAddr  string
		header      []string
		allowRemote bool
		path        string
		want        int
	}{
		{name: "an IPv4 loopback client gets /config", remoteAddr: "127.0.0.1:40000", path: "/config", want: http.StatusOK},
		{name: "any 127/8 address is loopback", remoteAddr: "127.0.0.53:40000", path: "/config", want: http.StatusOK},
		{name: "an IPv6 loopback client gets /config", remoteAddr: "[::1]:40000", path: "/config", want: http.StatusOK},
		{name: "an IPv4-mapped loopback client gets /config", remoteAddr: "[::ffff:127.0.0.1]:40000", path: "/config", want: http.StatusOK},
		{name: "a client on another address is refused /config", remoteAddr: "10.0.0.7:40000", path: "/config", want: http.StatusForbidden},
		{name: "a forwarding header does not make a client loopback", remoteAddr: "10.0.0.7:40000", header: []string{"X-Forwarded-For", "127.0.0.1", "X-Real-IP", "127.0.0.1"}, path: "/config", want: http.StatusForbidden},
		{name: "a client on another address gets /config when remote access is allowed", remoteAddr: "10.0.0.7:40000", allowRemote: true, path: "/config", want: http.StatusOK},
		{name: "a client on another address gets /healthz", remoteAddr: "10.0.0.7:40000", path: "/healthz", want: http.StatusOK},
		{name: "a client on another address gets /readyz", remoteAddr: "10.0.0.7:40000", path: "/readyz", want: http.StatusOK},
		{name: "a client on another address gets /metrics", remoteAddr: "10.0.0.7:40000", path: "/metrics", want: http.StatusOK},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := newServer(t, Options{AllowRemoteConfig: tc.allowRemote})
			mustApply(t, s, oneRoute(Rule{}))
			req := httptest.NewRequest(http.MethodGet, "http://admin"+tc.path, nil)
			req.RemoteAddr = tc.remoteAddr
			for i := 0; i+1 < len(tc.header); i += 2 {
				req.Header.Set(tc.header[i], tc.header[i+1])
			}
			rec := httptest.NewRecorder()
			s.AdminHandler().ServeHTTP(rec, req)
			if rec.Code != tc.want {
				t.Fatalf("%s from %s = %d (%s), want %d", tc.path, tc.remoteAddr, rec.Code, rec.Body, tc.want)
			}
			if rec.Code == http.StatusForbidden && !strings.Contains(rec.Body.String(), "loopback") {
				t.Errorf("403 body %q does not say who may read /config", rec.Body)
			}
		})
	}
}

// TestHTTPSRequestsForAnotherListenerThanTheirServerNameGet421 follows the
// Gateway API's misdirected-request rule: on one port, a request whose
// Host selects another listener than its connection's TLS server name is
// answered 421, whatever routes exist; same listener, normal routing.
func TestHTTPSRequestsForAnotherListenerThanTheirServerNameGet421(t *testing.T) {
	be := echoBackend(t, "b")
	route := func(name string, hostnames ...string) VirtualHost {
		return VirtualHost{Hostnames: hostnames, Routes: []Route{{Namespace: "ns", Name: name, Rules: []Rule{{Backends: []Backend{backendOf("b", 1, be)}}}}}}
	}
	any, exact, wild := testCertificates(t, "example.org"), testCertificates(t, "second.example.org"), testCertificates(t, "*.wildcard.org")
	s := newServer(t, Options{})
	mustApply(t, s, &Config{Listeners: []Listener{
		{Name: "any", Address: "127.0.0.1", Protocol: ProtocolHTTPS, Certificates: any, VirtualHosts: []VirtualHost{route("any", "example.org")}},
		{Name: "exact", Address: "127.0.0.1", Protocol: ProtocolHTTPS, Hostname: "second.example.org", Certificates: exact, VirtualHosts: []VirtualHost{route("exact")}},
		{Name: "wild", Address: "127.0.0.1", Protocol: ProtocolHTTPS, Hostname: "*.wildcard.org", Certificates: wild, VirtualHosts: []VirtualHost{route("wild")}},
	}})
	addr := s.Addr("any").String()
	tests := []struct {
		serverName, host string
		want             int
	}{
		{"example.org", "example.org", http.StatusOK},
		{"example.org", "second.example.org", http.StatusMisdirectedRequest},
		{"example.org", "unknown.org", http.StatusNotFound}, // same listener, no route
		{"second.example.org", "second.example.org", http.StatusOK},
		{"second.example.org", "example.org", http.StatusMisdirectedRequest},
		{"a.wildcard.org", "b.wildcard.org", http.StatusOK}, // one wildcard listener
		{"a.wildcard.org", "second.example.org", http.StatusMisdirectedRequest},
		{"unknown.org", "example.org", http.StatusOK}, // both select the listener without hostname
	}
	for _, tt := range tests {
		t.Run(tt.serverName+" "+tt.host, func(t *testing.T) {
			c := &http.Client{Timeout: waitLong, Transport: &http.Transport{TLSClientConfig: &tls.Config{ServerName: tt.serverName, InsecureSkipVerify: true}}} //nolint:gosec // the test checks routing, not certificates
			defer c.CloseIdleConnections()
			req, _ := http.NewRequest(http.MethodGet, "https://"+addr+"/", nil)
			req.Host = tt.host
			resp, err := c.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != tt.want {
				t.Errorf("server name %s, Host %s: %d, want %d", tt.serverName, tt.host, resp.StatusCode, tt.want)
			}
		})
	}
}
