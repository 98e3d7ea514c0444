package gateway

import (
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"io"
	"log"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
)

// testCA is a certificate authority made for one test.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pem  string
}

func newTestCA(t *testing.T) *testCA {
	t.Helper()
	key, tmpl := servingTemplate(t, "test CA")
	tmpl.KeyUsage, tmpl.ExtKeyUsage = x509.KeyUsageCertSign, nil
	tmpl.BasicConstraintsValid, tmpl.IsCA = true, true
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &testCA{cert: cert, key: key, pem: string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))}
}

// issue makes a serving certificate for dnsNames and uris.
func (ca *testCA) issue(t *testing.T, dnsNames []string, uris ...string) tls.Certificate {
	t.Helper()
	key, tmpl := servingTemplate(t, "backend", dnsNames...)
	tmpl.SerialNumber = big.NewInt(2)
	for _, u := range uris {
		parsed, err := url.Parse(u)
		if err != nil {
			t.Fatal(err)
		}
		tmpl.URIs = append(tmpl.URIs, parsed)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// tlsBackend is an HTTPS backend that answers the SNI it was asked for (as
// JSON {"sni": NAME}) and counts the connections it accepted.
type tlsBackend struct {
	*httptest.Server
	conns atomic.Int64
}

func startTLSBackend(t *testing.T, cert tls.Certificate) *tlsBackend {
	t.Helper()
	b := &tlsBackend{}
	b.Server = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]string{"sni": r.TLS.ServerName})
	}))
	b.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			b.conns.Add(1)
		}
	}
	b.Config.ErrorLog = nil
	b.TLS = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	b.StartTLS()
	t.Cleanup(b.Close)
	return b
}

func (b *tlsBackend) endpoint() string { return b.Listener.Addr().String() }

// getBody sends GET url and returns the status and body, "sni=NAME" when
// it is a tlsBackend's answer.
func getBody(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := client.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	var answer struct{ SNI string }
	if json.Unmarshal(body, &answer) == nil && answer.SNI != "" {
		return resp.StatusCode, "sni=" + answer.SNI
	}
	return resp.StatusCode, string(body)
}

func TestBackendTLSVerifiesTheBackendAsThePolicySays(t *testing.T) {
	ca, otherCA := newTestCA(t), newTestCA(t)
	named := startTLSBackend(t, ca.issue(t, []string{"abc.example.com"}))
	spiffe := startTLSBackend(t, ca.issue(t, []string{"abc.example.com"}, "spiffe://abc.example.com/test-identity"))
	plain := echoBackend(t, "plain")
	cases := []struct {
		name       string
		endpoint   string
		tls        BackendTLS
		wantStatus int
		wantBody   string
	}{
		{
			name: "a certificate of the CA for the server name is trusted, and the server name is the SNI", endpoint: named.endpoint(),
			tls:        BackendTLS{ServerName: "abc.example.com", CACertificatesPEM: ca.pem},
			wantStatus: 200, wantBody: "sni=abc.example.com",
		},
		{
			name: "a certificate for another name is refused", endpoint: named.endpoint(),
			tls:        BackendTLS{ServerName: "mismatch.example.com", CACertificatesPEM: ca.pem},
			wantStatus: 503, wantBody: "upstream TLS handshake failed",
		},
		{
			name: "a certificate of another CA is refused", endpoint: named.endpoint(),
			tls:        BackendTLS{ServerName: "abc.example.com", CACertificatesPEM: otherCA.pem},
			wantStatus: 503, wantBody: "upstream TLS handshake failed",
		},
		{
			name: "a private CA is not trusted with the system roots", endpoint: named.endpoint(),
			tls:        BackendTLS{ServerName: "abc.example.com", SystemRoots: true},
			wantStatus: 503, wantBody: "upstream TLS handshake failed",
		},
		{
			name: "a hostname subject alternative name the certificate holds is trusted", endpoint: named.endpoint(),
			tls:        BackendTLS{ServerName: "other.example.com", CACertificatesPEM: ca.pem, SubjectAltNames: []SubjectAltName{{Hostname: "abc.example.com"}}},
			wantStatus: 200, wantBody: "sni=other.example.com",
		},
		{
			name: "with subject alternative names, the server name alone is not enough", endpoint: named.endpoint(),
			tls:        BackendTLS{ServerName: "abc.example.com", CACertificatesPEM: ca.pem, SubjectAltNames: []SubjectAltName{{Hostname: "dce.example.com"}}},
			wantStatus: 503, wantBody: "upstream TLS handshake failed",
		},
		{
			name: "a URI subject alternative name the certificate holds is trusted", endpoint: spiffe.endpoint(),
			tls:        BackendTLS{ServerName: "abc.example.com", CACertificatesPEM: ca.pem, SubjectAltNames: []SubjectAltName{{URI: "spiffe://abc.example.com/test-identity"}}},
			wantStatus: 200, wantBody: "sni=abc.example.com",
		},
		{
			name: "a URI subject alternative name the certificate lacks is refused", endpoint: spiffe.endpoint(),
			tls:        BackendTLS{ServerName: "abc.example.com", CACertificatesPEM: ca.pem, SubjectAltNames: []SubjectAltName{{URI: "spiffe://def.example.com/test-identity"}}},
			wantStatus: 503, wantBody: "upstream TLS handshake failed",
		},
		{
			name: "one of several subject alternative names is enough", endpoint: spiffe.endpoint(),
			tls: BackendTLS{ServerName: "abc.example.com", CACertificatesPEM: ca.pem, SubjectAltNames: []SubjectAltName{
				{URI: "spiffe://def.example.com/test-identity"}, {Hostname: "abc.example.com"},
			}},
			wantStatus: 200, wantBody: "sni=abc.example.com",
		},
		{
			name: "subject alternative names are checked against the CA too", endpoint: named.endpoint(),
			tls:        BackendTLS{ServerName: "abc.example.com", CACertificatesPEM: otherCA.pem, SubjectAltNames: []SubjectAltName{{Hostname: "abc.example.com"}}},
			wantStatus: 503, wantBody: "upstream TLS handshake failed",
		},
		{
			name: "a backend that does not speak TLS is refused", endpoint: strings.TrimPrefix(plain.URL, "http://"),
			tls:        BackendTLS{ServerName: "abc.example.com", CACertificatesPEM: ca.pem},
			wantStatus: 503, wantBody: "upstream TLS handshake failed",
		},
		{
			name: "a policy without a valid CA certificate answers 500", endpoint: named.endpoint(),
			tls:        BackendTLS{Policy: "ns/broken", ServerName: "abc.example.com"},
			wantStatus: 500, wantBody: "its BackendTLSPolicy ns/broken has no valid CA certificate",
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := newServer(t, Options{})
			mustApply(t, s, oneRoute(Rule{Backends: []Backend{{Name: "b", Weight: 1, Endpoints: []string{tc.endpoint}, TLS: &tc.tls}}}))
			status, body := getBody(t, gatewayURL(t, s, "web")+"/")
			if status != tc.wantStatus || !strings.Contains(body, tc.wantBody) {
				t.Errorf("got %d %q, want %d with %q", status, body, tc.wantStatus, tc.wantBody)
			}
		})
	}
}

func TestABackendWithoutAValidCACertificateIsNeverDialed(t *testing.T) {
	ca := newTestCA(t)
	b := startTLSBackend(t, ca.issue(t, []string{"abc.example.com"}))
	s := newServer(t, Options{})
	mustApply(t, s, oneRoute(Rule{Backends: []Backend{{Name: "b", Weight: 1, Endpoints: []string{b.endpoint()}, TLS: &BackendTLS{ServerName: "abc.example.com"}}}}))
	for range 3 {
		if status, _ := getBody(t, gatewayURL(t, s, "web")+"/"); status != http.StatusInternalServerError {
			t.Fatalf("status %d, want 500", status)
		}
	}
	if n := b.conns.Load(); n != 0 {
		t.Errorf("the backend accepted %d connections, want none", n)
	}
}

func TestTLSBackendsKeepTheirConnectionsAcrossReloads(t *testing.T) {
	ca := newTestCA(t)
	b := startTLSBackend(t, ca.issue(t, []string{"abc.example.com", "other.example.com"}))
	s := newServer(t, Options{})
	config := func(path, serverName string) *Config {
		return oneRoute(Rule{
			Matches:  []Match{{Path: PathMatch{Type: PathMatchPathPrefix, Value: path}}},
			Backends: []Backend{{Name: "b", Weight: 1, Endpoints: []string{b.endpoint()}, TLS: &BackendTLS{ServerName: serverName, CACertificatesPEM: ca.pem}}},
		})
	}
	get := func(path, wantSNI string) {
		t.Helper()
		if status, body := getBody(t, gatewayURL(t, s, "web")+path); status != 200 || body != "sni="+wantSNI {
			t.Fatalf("GET %s: %d %q, want 200 sni=%s", path, status, body, wantSNI)
		}
	}
	mustApply(t, s, config("/a", "abc.example.com"))
	get("/a", "abc.example.com")
	get("/a", "abc.example.com")
	if n := b.conns.Load(); n != 1 {
		t.Fatalf("%d connections for two requests, want 1", n)
	}
	// A reload that changes the routes but not the policy keeps the
	// backend's connection.
	mustApply(t, s, config("/b", "abc.example.com"))
	get("/b", "abc.example.com")
	if n := b.conns.Load(); n != 1 {
		t.Errorf("%d connections after a reload with the same policy, want 1", n)
	}
	// Another server name is another transport.
	mustApply(t, s, config("/b", "other.example.com"))
	get("/b", "other.example.com")
	if n := b.conns.Load(); n != 2 {
		t.Errorf("%d connections after the server name changed, want 2", n)
	}
	if len(s.transports.byKey) != 1 {
		t.Errorf("%d TLS transports kept, want only the one in use", len(s.transports.byKey))
	}
}

func TestHostNamesOfBackendsMayNotResolveToLoopback(t *testing.T) {
	backend := echoBackend(t, "local")
	_, port, err := net.SplitHostPort(strings.TrimPrefix(backend.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	cfg := oneRoute(Rule{Backends: []Backend{{Name: "b", Weight: 1, Endpoints: []string{net.JoinHostPort("localhost", port)}}}})
	cases := []struct {
		name  string
		trust bool
		want  int
	}{
		{"refused by default: a name must not reach the proxy's own ports", false, http.StatusServiceUnavailable},
		{"allowed when the names are trusted (standalone mode)", true, http.StatusOK},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := newServer(t, Options{TrustBackendNames: tc.trust})
			mustApply(t, s, cfg)
			if status, body := getBody(t, gatewayURL(t, s, "web")+"/"); status != tc.want {
				t.Errorf("status %d %q, want %d", status, body, tc.want)
			}
		})
	}
	// An IP address is dialed as it is: the translator decides which ones
	// a backend may have.
	s := newServer(t, Options{})
	mustApply(t, s, oneRoute(Rule{Backends: []Backend{backendOf("b", 1, backend)}}))
	if status, _ := getBody(t, gatewayURL(t, s, "web")+"/"); status != http.StatusOK {
		t.Errorf("an IP endpoint on loopback: status %d, want 200", status)
	}
}

func TestBackendTLSThatCannotBeUsedFailsApply(t *testing.T) {
	cases := []struct {
		name string
		b    Backend
		want string
	}{
		{"no server name", Backend{TLS: &BackendTLS{SystemRoots: true}}, "serverName is required"},
		{"roots of both kinds", Backend{TLS: &BackendTLS{ServerName: "a", SystemRoots: true, CACertificatesPEM: "x"}}, "exclude each other"},
		{"no certificate in the PEM", Backend{TLS: &BackendTLS{ServerName: "a", CACertificatesPEM: "not PEM"}}, "holds no certificate"},
		{"a name of neither kind", Backend{TLS: &BackendTLS{ServerName: "a", SystemRoots: true, SubjectAltNames: []SubjectAltName{{}}}}, "set hostname or uri"},
		{"plain HTTP with TLS", Backend{Scheme: "http", TLS: &BackendTLS{ServerName: "a", SystemRoots: true}}, "TLS needs scheme https"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := newServer(t, Options{})
			tc.b.Name, tc.b.Weight = "b", 1
			err := s.Apply(oneRoute(Rule{Backends: []Backend{tc.b}}))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Apply: %v, want an error with %q", err, tc.want)
			}
		})
	}
}

func TestTLSTransportsAreSharedBySnapshotsApplyingAtOnce(t *testing.T) {
	ca := newTestCA(t)
	tr := newBackendTransports(nil, false)
	b := &BackendTLS{ServerName: "abc.example.com", CACertificatesPEM: ca.pem}
	var wg sync.WaitGroup
	got := make([]*http.Transport, 8)
	for i := range got {
		wg.Add(1)
		go func() {
			defer wg.Done()
			got[i], _, _ = tr.get(b, nil)
		}()
	}
	wg.Wait()
	for i := range got {
		if got[i] == nil || got[i] != got[0] {
			t.Fatalf("transport %d is %p, want the one shared %p", i, got[i], got[0])
		}
	}
}

// issueClient makes a client certificate for commonName, as the PEM pair a
// kubernetes.io/tls Secret holds.
func (ca *testCA) issueClient(t *testing.T, commonName string) Certificate {
	t.Helper()
	key, tmpl := servingTemplate(t, commonName)
	tmpl.SerialNumber = big.NewInt(3)
	tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return Certificate{
		CertificatePEM: string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})),
		PrivateKeyPEM:  string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})),
	}
}

// startMutualTLSBackend is an HTTPS backend that requires a client
// certificate signed by clientCA and answers with its common name (as
// JSON {"sni": "client=NAME"}, which getBody shows as "sni=client=NAME").
func startMutualTLSBackend(t *testing.T, cert tls.Certificate, clientCA *testCA) *tlsBackend {
	t.Helper()
	b := &tlsBackend{}
	b.Server = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]string{"sni": "client=" + r.TLS.PeerCertificates[0].Subject.CommonName})
	}))
	b.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			b.conns.Add(1)
		}
	}
	b.Config.ErrorLog = log.New(io.Discard, "", 0)
	pool := x509.NewCertPool()
	pool.AddCert(clientCA.cert)
	b.TLS = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12, ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: pool}
	b.StartTLS()
	t.Cleanup(b.Close)
	return b
}

func TestTheGatewayPresentsItsClientCertificateToTLSBackends(t *testing.T) {
	serverCA, clientCA, otherCA := newTestCA(t), newTestCA(t), newTestCA(t)
	b := startMutualTLSBackend(t, serverCA.issue(t, []string{"abc.example.com"}), clientCA)
	// The proxy's own transport trusts serverCA, so that a backend of
	// scheme https without a policy can be reached in the test.
	roots := x509.NewCertPool()
	roots.AddCert(serverCA.cert)
	base := defaultTransport(true)
	base.TLSClientConfig = &tls.Config{RootCAs: roots, ServerName: "abc.example.com", MinVersion: tls.VersionTLS12}
	s := newServer(t, Options{Transport: base})
	config := func(cert *Certificate) *Config {
		cfg := &Config{Listeners: []Listener{httpListener("web", VirtualHost{Routes: []Route{{Namespace: "ns", Name: "r", Rules: []Rule{
			{
				Matches:  []Match{{Path: PathMatch{Type: PathMatchPathPrefix, Value: "/policy"}}},
				Backends: []Backend{{Name: "b", Weight: 1, Endpoints: []string{b.endpoint()}, TLS: &BackendTLS{ServerName: "abc.example.com", CACertificatesPEM: serverCA.pem}}},
			},
			{
				Matches:  []Match{{Path: PathMatch{Type: PathMatchPathPrefix, Value: "/https"}}},
				Backends: []Backend{{Name: "b", Weight: 1, Endpoints: []string{b.endpoint()}, Scheme: "https"}},
			},
		}}}})}}
		cfg.BackendClientCertificate = cert
		return cfg
	}
	for _, tc := range []struct {
		name string
		cert *Certificate
		want string // the answer of both rules
	}{
		{"without a client certificate the backend refuses the handshake", nil, "upstream TLS handshake failed\n"},
		{"a certificate the backend trusts is presented", ptrTo(clientCA.issueClient(t, "gateway-a")), "sni=client=gateway-a"},
		{"a new certificate replaces the old one", ptrTo(clientCA.issueClient(t, "gateway-b")), "sni=client=gateway-b"},
		{"a certificate the backend does not trust is refused", ptrTo(otherCA.issueClient(t, "stranger")), "upstream TLS handshake failed\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			mustApply(t, s, config(tc.cert))
			for _, path := range []string{"/policy", "/https"} {
				wantStatus := http.StatusOK
				if !strings.HasPrefix(tc.want, "sni=") {
					wantStatus = http.StatusServiceUnavailable
				}
				if status, body := getBody(t, gatewayURL(t, s, "web")+path); status != wantStatus || body != tc.want {
					t.Errorf("GET %s: %d %q, want %d %q", path, status, body, wantStatus, tc.want)
				}
			}
		})
	}
}

func TestABackendClientCertificateThatDoesNotParseFailsApply(t *testing.T) {
	ca := newTestCA(t)
	good := ca.issueClient(t, "gateway")
	other := ca.issueClient(t, "other")
	s := newServer(t, Options{})
	for name, cert := range map[string]Certificate{
		"a key of another certificate": {CertificatePEM: good.CertificatePEM, PrivateKeyPEM: other.PrivateKeyPEM},
		"no key":                       {CertificatePEM: good.CertificatePEM},
	} {
		cfg := oneRoute(Rule{Backends: []Backend{{Name: "b", Weight: 1, Endpoints: []string{"127.0.0.1:1"}}}})
		cfg.BackendClientCertificate = &cert
		if err := s.Apply(cfg); err == nil || !strings.Contains(err.Error(), "backend client certificate") {
			t.Errorf("%s: Apply error %v, want one about the backend client certificate", name, err)
		}
	}
}

func ptrTo[T any](v T) *T { return &v }
