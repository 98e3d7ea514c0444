package configstream

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/apimachinery/pkg/types"

	"github.com/toolgate/toolgate/controller/pki"
)

var (
	gwA = types.NamespacedName{Namespace: "team-a", Name: "gw-a"}
	gwB = types.NamespacedName{Namespace: "team-b", Name: "gw-b"}
)

func newCA(t *testing.T) *pki.CA {
	t.Helper()
	ca, err := pki.NewCA(time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

// clientCert issues gw's client certificate from ca.
func clientCert(t *testing.T, ca *pki.CA, gw types.NamespacedName) tls.Certificate {
	t.Helper()
	certPEM, keyPEM, err := ca.IssueClient(gw, time.Now(), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	return cert
}

// writeTLSDir writes into dir (a new one when empty) what a proxy's
// mounted Secret holds: gw's client certificate from issuer, and trust as
// ca.crt. Each file is replaced atomically, as the kubelet does.
func writeTLSDir(t *testing.T, dir string, issuer, trust *pki.CA, gw types.NamespacedName) string {
	t.Helper()
	if dir == "" {
		dir = t.TempDir()
	}
	certPEM, keyPEM, err := issuer.IssueClient(gw, time.Now(), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	for name, data := range map[string][]byte{ClientCertFile: certPEM, ClientKeyFile: keyPEM, CAFile: trust.CertPEM()} {
		tmp := filepath.Join(dir, "."+name+".tmp")
		if err := os.WriteFile(tmp, data, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, filepath.Join(dir, name)); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// testServer is a config stream server on a loopback port.
type testServer struct {
	*Server
	hub    *Hub
	addr   string
	url    string
	cancel context.CancelFunc
	done   chan error
}

type serverConfig struct {
	hub         *Hub
	ca          *pki.CA // verifies clients; issues the serving certificate unless certCA is set
	certCA      *pki.CA
	dnsNames    []string
	pollTimeout time.Duration
	addr        string // "" for any free port
}

func startServer(t *testing.T, cfg serverConfig) *testServer {
	t.Helper()
	if cfg.hub == nil {
		cfg.hub = NewHub()
	}
	if cfg.certCA == nil {
		cfg.certCA = cfg.ca
	}
	if cfg.addr == "" {
		cfg.addr = "127.0.0.1:0"
	}
	cert, err := cfg.certCA.IssueServer(cfg.dnsNames, []net.IP{net.IPv4(127, 0, 0, 1)}, time.Now(), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := NewServer(ServerOptions{
		Hub:         cfg.hub,
		CA:          cfg.ca,
		Certificate: func() (*tls.Certificate, error) { return &cert, nil },
		PollTimeout: cfg.pollTimeout,
		Logger:      slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", cfg.addr)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ts := &testServer{Server: srv, hub: cfg.hub, addr: l.Addr().String(), url: "https://" + l.Addr().String(), cancel: cancel, done: make(chan error, 1)}
	go func() { ts.done <- srv.Serve(ctx, l) }()
	t.Cleanup(ts.stop)
	return ts
}

// stop shuts the server down and waits until Serve has returned.
func (ts *testServer) stop() {
	ts.cancel()
	if err := <-ts.done; err != nil {
		panic("Serve: " + err.Error())
	}
	ts.done <- nil // a second stop returns at once
}

// rawClient speaks the protocol directly, as the tests want to see every
// status. cert may be nil for a client without a certificate.
func rawClient(t *testing.T, trust *pki.CA, cert *tls.Certificate) *http.Client {
	t.Helper()
	cfg := &tls.Config{RootCAs: trust.Pool(), MinVersion: tls.VersionTLS13}
	if cert != nil {
		cfg.Certificates = []tls.Certificate{*cert}
	}
	tr := &http.Transport{TLSClientConfig: cfg, ForceAttemptHTTP2: true}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr}
}

func configURL(ts *testServer, gw types.NamespacedName, version string) string {
	return ts.url + "/v1/gateways/" + gw.Namespace + "/" + gw.Name + "/config?version=" + version
}

// response is what the tests look at in an answer.
type response struct {
	status  int
	version string
	header  http.Header
	body    string
}

func get(t *testing.T, c *http.Client, url string) (response, error) {
	t.Helper()
	resp, err := c.Get(url)
	if err != nil {
		return response{}, err
	}
	defer resp.Body.Close()
	var body bytes.Buffer
	if _, err := body.ReadFrom(resp.Body); err != nil {
		return response{}, err
	}
	if resp.ProtoMajor != 2 {
		return response{}, errors.New("the server did not negotiate HTTP/2: " + resp.Proto)
	}
	return response{status: resp.StatusCode, version: resp.Header.Get(VersionHeader), header: resp.Header, body: body.String()}, nil
}

// eventually waits until cond holds. The deadline only keeps a broken
// test from hanging; nothing is measured.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("gave up waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// update is one call of Apply.
type update struct {
	version string
	payload string
}

// applier records Apply's calls and rejects the payloads it is told to.
type applier struct {
	calls  chan update
	reject string
}

func newApplier(reject string) *applier {
	return &applier{calls: make(chan update, 100), reject: reject}
}

func (a *applier) apply(version string, payload []byte) error {
	a.calls <- update{version, string(payload)}
	if a.reject != "" && string(payload) == a.reject {
		return errors.New("invalid configuration")
	}
	return nil
}

// next waits for the next call of Apply.
func (a *applier) next(t *testing.T) update {
	t.Helper()
	select {
	case u := <-a.calls:
		return u
	case <-time.After(20 * time.Second):
		t.Fatal("gave up waiting for Apply")
		return update{}
	}
}

// none checks that Apply has not been called since the last next.
func (a *applier) none(t *testing.T) {
	t.Helper()
	select {
	case u := <-a.calls:
		t.Fatalf("unexpected Apply(%s, %q)", u.version, u.payload)
	default:
	}
}

// runClient runs c until the test ends.
func runClient(t *testing.T, c *Client) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
}

// logBuffer collects log lines from several goroutines.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) count(substr string) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return strings.Count(b.buf.String(), substr)
}

// value returns the value of col's one series (gauge or counter).
func value(t *testing.T, col prometheus.Collector) float64 {
	t.Helper()
	values := gather(t, col)
	if len(values) != 1 {
		t.Fatalf("%d series, want 1", len(values))
	}
	return values[0]
}

// series counts col's series.
func series(t *testing.T, col prometheus.Collector) int {
	t.Helper()
	return len(gather(t, col))
}

// gather reads col's series through a registry of its own, so that the
// tests need no package beyond client_golang.
func gather(t *testing.T, col prometheus.Collector) []float64 {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	if err := reg.Register(col); err != nil {
		t.Fatal(err)
	}
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var values []float64
	for _, f := range families {
		for _, m := range f.GetMetric() {
			if g := m.GetGauge(); g != nil {
				values = append(values, g.GetValue())
			} else {
				values = append(values, m.GetCounter().GetValue())
			}
		}
	}
	return values
}
