package gateway

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/toolgate/toolgate/filter"

	"github.com/toolgate/toolgate/internal/testproc"
)

// waitLong bounds every wait in these tests. It is generous on purpose:
// tests never assert how fast something happens, only that it does.
const waitLong = 30 * time.Second

var quiet = slog.New(slog.DiscardHandler)

// newServer starts a gateway with quiet logs and shuts it down after the
// test.
func newServer(t *testing.T, opts Options) *Server {
	t.Helper()
	if opts.Logger == nil {
		opts.Logger = quiet
	}
	s, err := New(opts)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), waitLong)
		defer cancel()
		_ = s.Shutdown(ctx)
	})
	return s
}

func mustApply(t *testing.T, s *Server, cfg *Config) {
	t.Helper()
	if err := s.Apply(cfg); err != nil {
		t.Fatalf("Apply: %v", err)
	}
}

// httpListener is a loopback HTTP listener on a free port.
func httpListener(name string, vhosts ...VirtualHost) Listener {
	return Listener{Name: name, Address: "127.0.0.1", Port: 0, Protocol: ProtocolHTTP, VirtualHosts: vhosts}
}

// oneRoute is a config with one listener "web" and one route.
func oneRoute(rules ...Rule) *Config {
	return &Config{Listeners: []Listener{httpListener("web", VirtualHost{Routes: []Route{{Namespace: "ns", Name: "r", Rules: rules}}})}}
}

// gatewayURL is the base URL of the named listener.
func gatewayURL(t *testing.T, s *Server, listener string) string {
	t.Helper()
	a := s.Addr(listener)
	if a == nil {
		t.Fatalf("listener %q is not bound", listener)
	}
	return "http://" + a.String()
}

// backendOf is a Backend for an httptest server.
func backendOf(name string, weight int32, servers ...*httptest.Server) Backend {
	b := Backend{Name: name, Weight: weight}
	for _, s := range servers {
		b.Endpoints = append(b.Endpoints, strings.TrimPrefix(s.URL, "http://"))
	}
	return b
}

// echoed is what an echo backend reports about the request it received.
type echoed struct {
	Backend  string      `json:"backend"`
	Method   string      `json:"method"`
	Host     string      `json:"host"`
	Path     string      `json:"path"`
	RawPath  string      `json:"rawPath"`
	RawQuery string      `json:"rawQuery"`
	Header   http.Header `json:"header"`
	Body     string      `json:"body"`
}

// echoBackend answers every request with a JSON description of it.
func echoBackend(t *testing.T, name string) *httptest.Server {
	t.Helper()
	return newHTTPTestServer(t, echoHandler(name))
}

// newHTTPTestServer serves h on loopback until the test ends.
func newHTTPTestServer(t *testing.T, h http.Handler) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv
}

// countingBackend counts the requests reaching next.
type countingBackend struct {
	next http.Handler
	n    *atomic.Int64
}

func (c *countingBackend) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	c.n.Add(1)
	c.next.ServeHTTP(w, r)
}

func echoHandler(name string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("X-Backend", name)
		_ = json.NewEncoder(w).Encode(echoed{
			Backend: name, Method: r.Method, Host: r.Host, Path: r.URL.Path, RawPath: r.URL.RawPath,
			RawQuery: r.URL.RawQuery, Header: r.Header, Body: string(body),
		})
	})
}

// client is an HTTP client that does not follow redirects.
var client = &http.Client{
	Timeout: waitLong,
	CheckRedirect: func(*http.Request, []*http.Request) error {
		return http.ErrUseLastResponse
	},
}

// do sends a request and returns the response with its body read.
func do(t *testing.T, req *http.Request) (*http.Response, []byte) {
	t.Helper()
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("read body of %s %s: %v", req.Method, req.URL, err)
	}
	return resp, body
}

func get(t *testing.T, url string, header ...string) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(header); i += 2 {
		if strings.EqualFold(header[i], "Host") {
			req.Host = header[i+1]
			continue
		}
		req.Header.Add(header[i], header[i+1])
	}
	return do(t, req)
}

func decodeEcho(t *testing.T, body []byte) echoed {
	t.Helper()
	var e echoed
	if err := json.Unmarshal(body, &e); err != nil {
		t.Fatalf("backend answer %q: %v", body, err)
	}
	return e
}

// closedPort returns a loopback address nobody listens on, reserved for the
// test so that nothing else starts listening on it.
func closedPort(t *testing.T) string {
	t.Helper()
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(testproc.FreePort(t)))
}

// extensionFunc is a test implementation of ExtensionFilter.
type extensionFunc func(next http.Handler) http.Handler

func (f extensionFunc) Wrap(next http.Handler) http.Handler { return f(next) }

// wrapCounter counts Wrap calls, to check chains are built per snapshot.
type wrapCounter struct {
	mu    sync.Mutex
	wraps int
	tag   string
}

func (c *wrapCounter) Wrap(next http.Handler) http.Handler {
	c.mu.Lock()
	c.wraps++
	c.mu.Unlock()
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		r = r.Clone(r.Context())
		r.Header.Set("X-Extension", c.tag)
		next.ServeHTTP(w, r)
	})
}

// servingTemplate is a new key and the template of a serving certificate
// for names, valid for a day.
func servingTemplate(t *testing.T, commonName string, names ...string) (*ecdsa.PrivateKey, *x509.Certificate) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return key, &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: commonName},
		DNSNames:     names,
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
}

// testCertificates returns a self-signed certificate for the names, as PEM.
func testCertificates(t *testing.T, names ...string) []Certificate {
	t.Helper()
	key, tmpl := servingTemplate(t, names[0], names...)
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return []Certificate{{
		CertificatePEM: string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})),
		PrivateKeyPEM:  string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})),
	}}
}

// certPool trusts the leaf certificates of certs.
func certPool(t *testing.T, certs ...Certificate) *x509.CertPool {
	t.Helper()
	pool := x509.NewCertPool()
	for _, c := range certs {
		if !pool.AppendCertsFromPEM([]byte(c.CertificatePEM)) {
			t.Fatalf("no certificate in %q", c.CertificatePEM)
		}
	}
	return pool
}

// fakeExtensions is a test ExtensionBuilder: it returns the fake filter
// registered under the reference's name.
type fakeExtensions map[string]ExtensionFilter

func (f fakeExtensions) build(ref *ExtensionRef) (ExtensionFilter, error) {
	ext, ok := f[ref.Name]
	if !ok {
		return nil, fmt.Errorf("no fake filter is named %q", ref.Name)
	}
	return ext, nil
}

// resolvedRef is an ExtensionRef filter to the MCPServer name, resolved: it
// carries a minimal policy, which is all the gateway needs to build it.
func resolvedRef(name string) Filter {
	return Filter{Type: FilterExtensionRef, ExtensionRef: &ExtensionRef{
		Group: "toolgate.dev", Kind: "MCPServer", Name: name,
		MCPServer: &filter.Policy{Server: "ns/" + name},
	}}
}
