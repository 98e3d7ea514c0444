package configstream

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"log/slog"
	"math"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/apimachinery/pkg/types"

	"github.com/toolgate/toolgate/controller/pki"
)

// testClient returns a client of gw with short backoffs, not yet running.
func testClient(t *testing.T, url, tlsDir string, gw types.NamespacedName, a *applier, configure ...func(*ClientOptions)) *Client {
	t.Helper()
	opts := ClientOptions{
		URL:        url,
		Gateway:    gw,
		TLSDir:     tlsDir,
		Apply:      a.apply,
		Logger:     slog.New(slog.DiscardHandler),
		Registerer: prometheus.NewPedanticRegistry(),
		MinBackoff: time.Millisecond,
		MaxBackoff: 10 * time.Millisecond,
	}
	for _, f := range configure {
		f(&opts)
	}
	c, err := NewClient(opts)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestNewClientChecksItsOptions(t *testing.T) {
	apply := func(string, []byte) error { return nil }
	valid := ClientOptions{URL: "https://controller:9443", Gateway: gwA, TLSDir: "/tls", Apply: apply}
	tests := []struct {
		name   string
		change func(*ClientOptions)
	}{
		{"plain HTTP", func(o *ClientOptions) { o.URL = "http://controller:9443" }},
		{"no host", func(o *ClientOptions) { o.URL = "https:///x" }},
		{"a Gateway without namespace", func(o *ClientOptions) { o.Gateway.Namespace = "" }},
		{"no TLS directory", func(o *ClientOptions) { o.TLSDir = "" }},
		{"no Apply", func(o *ClientOptions) { o.Apply = nil }},
		{"a negative backoff", func(o *ClientOptions) { o.MinBackoff = -1 }},
	}
	if _, err := NewClient(valid); err != nil {
		t.Fatalf("NewClient(valid options): %v", err)
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			opts := valid
			tt.change(&opts)
			if _, err := NewClient(opts); err == nil {
				t.Error("NewClient succeeded")
			}
		})
	}
}

func TestAProxyGetsItsGatewaysPayloadAndEachNewVersion(t *testing.T) {
	ca := newCA(t)
	ts := startServer(t, serverConfig{ca: ca, pollTimeout: time.Hour})
	vA := ts.hub.Publish(gwA, []byte(`{"gateway":"a"}`))
	ts.hub.Publish(gwB, []byte(`{"gateway":"b"}`))
	a := newApplier("")
	c := testClient(t, ts.url, writeTLSDir(t, "", ca, ca, gwA), gwA, a)
	if c.Ready() || c.Version() != "" {
		t.Fatalf("before Run: Ready = %v, Version = %q", c.Ready(), c.Version())
	}
	runClient(t, c)

	if got := a.next(t); got != (update{vA, `{"gateway":"a"}`}) {
		t.Errorf("first Apply = %v, want Gateway A's payload at %s", got, vA)
	}
	eventually(t, "the client to wait for a new version", func() bool { return ts.waiting.Load() == 1 })
	if !c.Ready() || c.Version() != vA {
		t.Errorf("Ready = %v, Version = %q; want true, %q", c.Ready(), c.Version(), vA)
	}

	// Nothing new for Gateway A: no Apply.
	ts.hub.Publish(gwA, []byte(`{"gateway":"a"}`))
	ts.hub.Publish(gwB, []byte(`{"gateway":"b2"}`))
	vA2 := ts.hub.Publish(gwA, []byte(`{"gateway":"a2"}`))
	if got := a.next(t); got != (update{vA2, `{"gateway":"a2"}`}) {
		t.Errorf("second Apply = %v, want %s", got, vA2)
	}
	eventually(t, "the client to wait again", func() bool { return ts.waiting.Load() == 1 })
	a.none(t)
	if c.Version() != vA2 {
		t.Errorf("Version = %q, want %q", c.Version(), vA2)
	}

	if got := value(t, c.metrics.updates.WithLabelValues("applied")); got != 2 {
		t.Errorf("%s{result=applied} = %v, want 2", MetricUpdates, got)
	}
	if got := value(t, c.metrics.connected); got != 1 {
		t.Errorf("%s = %v, want 1", MetricConnected, got)
	}
	if n := series(t, c.metrics.versionInfo); n != 1 {
		t.Errorf("%s has %d series, want only the applied version's", MetricVersionInfo, n)
	}
	if got := value(t, c.metrics.versionInfo.WithLabelValues(vA2)); got != 1 {
		t.Errorf("%s{version=%s} = %v, want 1", MetricVersionInfo, vA2, got)
	}
}

func TestTheClientVerifiesTheServer(t *testing.T) {
	ca := newCA(t)
	otherCA := newCA(t)
	tests := []struct {
		name       string
		certCA     *pki.CA
		dnsNames   []string
		serverName string
		wantErr    func(error) bool
	}{
		{
			name:    "a server certificate from another CA is refused",
			certCA:  otherCA,
			wantErr: func(err error) bool { var u x509.UnknownAuthorityError; return errors.As(err, &u) },
		},
		{
			name:     "a server certificate for another name is refused",
			dnsNames: []string{"toolgate-controller.toolgate-system.svc"},
			// Verifying the URL's host, 127.0.0.1, which the certificate
			// also names, would succeed: ask for another name.
			serverName: "evil.example.com",
			wantErr:    func(err error) bool { var h x509.HostnameError; return errors.As(err, &h) },
		},
		{
			name:       "ServerName verifies a certificate named otherwise than the URL",
			dnsNames:   []string{"toolgate-controller.toolgate-system.svc"},
			serverName: "toolgate-controller.toolgate-system.svc",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ts := startServer(t, serverConfig{ca: ca, certCA: tt.certCA, dnsNames: tt.dnsNames, pollTimeout: time.Hour})
			ts.hub.Publish(gwA, []byte(`{}`))
			a := newApplier("")
			c := testClient(t, ts.url, writeTLSDir(t, "", ca, ca, gwA), gwA, a, func(o *ClientOptions) { o.ServerName = tt.serverName })

			_, err := c.poll(context.Background())
			if tt.wantErr == nil {
				if err != nil || !c.Ready() {
					t.Fatalf("poll: %v, Ready = %v; want the payload applied", err, c.Ready())
				}
				return
			}
			if err == nil || !tt.wantErr(err) {
				t.Fatalf("poll: %v, want a verification error", err)
			}
			a.none(t)
			if c.Ready() {
				t.Error("Ready after a refused server")
			}
		})
	}
}

// The controller goes away and comes back (a new Hub, as after a restart):
// the proxy keeps its configuration meanwhile, reconnects, is not sent
// what it has, and gets what changed.
func TestTheClientOutlivesTheController(t *testing.T) {
	ca := newCA(t)
	ts := startServer(t, serverConfig{ca: ca, pollTimeout: 20 * time.Millisecond})
	v1 := ts.hub.Publish(gwA, []byte(`{"n":1}`))
	a := newApplier("")
	logs := &logBuffer{}
	c := testClient(t, ts.url, writeTLSDir(t, "", ca, ca, gwA), gwA, a, func(o *ClientOptions) {
		o.Logger = slog.New(slog.NewTextHandler(logs, nil))
	})
	runClient(t, c)
	if got := a.next(t); got.version != v1 {
		t.Fatalf("Apply(%s), want %s", got.version, v1)
	}

	ts.stop()
	// Several failed attempts, to see that they are logged once.
	eventually(t, "failed attempts", func() bool { return value(t, c.metrics.errors) >= 3 })
	if !c.Ready() || c.Version() != v1 {
		t.Errorf("with the controller away: Ready = %v, Version = %q; want true, %q", c.Ready(), c.Version(), v1)
	}
	if got := value(t, c.metrics.connected); got != 0 {
		t.Errorf("%s = %v with the controller away, want 0", MetricConnected, got)
	}

	hub := NewHub()
	hub.Publish(gwA, []byte(`{"n":1}`))
	restarted := startServer(t, serverConfig{ca: ca, hub: hub, pollTimeout: 20 * time.Millisecond, addr: ts.addr})
	eventually(t, "the client to reconnect", func() bool { return value(t, c.metrics.connected) == 1 })
	a.none(t)

	v2 := restarted.hub.Publish(gwA, []byte(`{"n":2}`))
	if got := a.next(t); got != (update{v2, `{"n":2}`}) {
		t.Errorf("Apply = %v, want %s", got, v2)
	}
	if c.Version() != v2 {
		t.Errorf("Version = %q, want %q", c.Version(), v2)
	}
	if n := logs.count("config stream lost"); n != 1 {
		t.Errorf("%d lines say the stream was lost, want 1:\n%s", n, logs.buf.String())
	}
	if n := logs.count("config stream connected"); n != 2 {
		t.Errorf("%d lines say the stream connected, want 2", n)
	}
}

func TestARejectedVersionKeepsThePreviousOneUntilTheNext(t *testing.T) {
	ca := newCA(t)
	ts := startServer(t, serverConfig{ca: ca, pollTimeout: time.Hour})
	v1 := ts.hub.Publish(gwA, []byte(`{"n":1}`))
	a := newApplier(`{"bad":true}`)
	c := testClient(t, ts.url, writeTLSDir(t, "", ca, ca, gwA), gwA, a)
	runClient(t, c)
	if got := a.next(t); got.version != v1 {
		t.Fatalf("Apply(%s), want %s", got.version, v1)
	}

	bad := ts.hub.Publish(gwA, []byte(`{"bad":true}`))
	if got := a.next(t); got.version != bad {
		t.Fatalf("Apply(%s), want %s", got.version, bad)
	}
	// The client now waits for a version after the rejected one, rather
	// than being sent it again.
	eventually(t, "the client to wait", func() bool { return ts.waiting.Load() == 1 })
	a.none(t)
	if c.Version() != v1 {
		t.Errorf("Version = %q after a rejection, want the previous %q", c.Version(), v1)
	}
	if got := value(t, c.metrics.updates.WithLabelValues("rejected")); got != 1 {
		t.Errorf("%s{result=rejected} = %v, want 1", MetricUpdates, got)
	}
	if got := value(t, c.metrics.errors); got != 0 {
		t.Errorf("%s = %v: a rejected payload is not a stream error", MetricStreamErrors, got)
	}

	v3 := ts.hub.Publish(gwA, []byte(`{"n":3}`))
	if got := a.next(t); got.version != v3 {
		t.Fatalf("Apply(%s), want %s", got.version, v3)
	}
	if c.Version() != v3 {
		t.Errorf("Version = %q, want %q", c.Version(), v3)
	}
}

// The kubelet updates a mounted Secret in place: a proxy whose certificate
// or CA was wrong recovers once the files are right, without a restart.
func TestTheClientRereadsItsTLSDirectory(t *testing.T) {
	ca := newCA(t)
	otherCA := newCA(t)
	tests := []struct {
		name          string
		issuer, trust *pki.CA
		gw            types.NamespacedName
	}{
		{"a certificate from another CA", otherCA, ca, gwA},
		{"a CA that does not sign the server", ca, otherCA, gwA},
		{"a certificate for another Gateway", ca, ca, gwB},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ts := startServer(t, serverConfig{ca: ca, pollTimeout: time.Hour})
			v := ts.hub.Publish(gwA, []byte(`{}`))
			ts.hub.Publish(gwB, []byte(`{}`))
			dir := writeTLSDir(t, "", tt.issuer, tt.trust, tt.gw)
			a := newApplier("")
			c := testClient(t, ts.url, dir, gwA, a)
			runClient(t, c)

			eventually(t, "failed attempts", func() bool { return value(t, c.metrics.errors) >= 2 })
			a.none(t)
			writeTLSDir(t, dir, ca, ca, gwA)
			if got := a.next(t); got.version != v {
				t.Errorf("Apply(%s), want %s", got.version, v)
			}
		})
	}
}

func TestTheClientRetriesAnUnknownGateway(t *testing.T) {
	ca := newCA(t)
	ts := startServer(t, serverConfig{ca: ca, pollTimeout: time.Hour})
	a := newApplier("")
	logs := &logBuffer{}
	c := testClient(t, ts.url, writeTLSDir(t, "", ca, ca, gwA), gwA, a, func(o *ClientOptions) {
		o.Logger = slog.New(slog.NewTextHandler(logs, nil))
	})
	// Retry-After would make the client wait whole seconds: answer the
	// first request only, then publish.
	retry, err := c.poll(context.Background())
	if err == nil || !strings.Contains(err.Error(), "503") || retry <= 0 {
		t.Fatalf("poll = %v, %v; want a 503 with a Retry-After", retry, err)
	}
	v := ts.hub.Publish(gwA, []byte(`{}`))
	if _, err := c.poll(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := a.next(t); got.version != v {
		t.Errorf("Apply(%s), want %s", got.version, v)
	}
}

func TestBackoffStaysWithinItsBounds(t *testing.T) {
	tests := []struct {
		name     string
		min, max time.Duration
	}{
		{"the defaults", DefaultMinBackoff, DefaultMaxBackoff},
		{"a maximum that is no power of two of the minimum", 100 * time.Millisecond, time.Second},
		{"a huge maximum", time.Second, math.MaxInt64},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := &Client{opts: ClientOptions{MinBackoff: tt.min, MaxBackoff: tt.max}}
			ceiling := tt.min
			for failures := 1; failures < 200; failures++ {
				for range 20 {
					if d := c.backoff(failures); d < 0 || d > ceiling {
						t.Fatalf("backoff(%d) = %v, want within [0, %v]", failures, d, ceiling)
					}
				}
				if ceiling <= tt.max/2 {
					ceiling *= 2
				} else {
					ceiling = tt.max
				}
			}
		})
	}
}

// A controller that accepts the request and never answers must not hold
// the proxy: the request fails after ResponseHeaderTimeout and is retried.
func TestAStalledControllerDoesNotHangTheClient(t *testing.T) {
	ca := newCA(t)
	cert, err := ca.IssueServer(nil, []net.IP{net.IPv4(127, 0, 0, 1)}, time.Now(), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	stream, err := NewServer(ServerOptions{Hub: NewHub(), CA: ca, Certificate: func() (*tls.Certificate, error) { return &cert, nil }})
	if err != nil {
		t.Fatal(err)
	}
	release := make(chan struct{})
	stalled := &http.Server{
		TLSConfig: stream.TLSConfig(),
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			select {
			case <-release:
			case <-r.Context().Done():
			}
		}),
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go stalled.ServeTLS(l, "", "") //nolint:errcheck // stopped below
	t.Cleanup(func() {
		close(release)
		_ = stalled.Close()
	})

	a := newApplier("")
	c := testClient(t, "https://"+l.Addr().String(), writeTLSDir(t, "", ca, ca, gwA), gwA, a, func(o *ClientOptions) {
		o.ResponseHeaderTimeout = 20 * time.Millisecond
	})
	if _, err := c.poll(context.Background()); err == nil || !strings.Contains(err.Error(), "timeout") {
		t.Errorf("poll of a stalled controller: %v, want a timeout", err)
	}
	a.none(t)
}

func TestTheClientExportsTheExpiryOfItsCertificates(t *testing.T) {
	ca := newCA(t)
	ts := startServer(t, serverConfig{ca: ca, pollTimeout: time.Hour})
	ts.hub.Publish(gwA, []byte(`{"gateway":"a"}`))
	a := newApplier("")
	dir := writeTLSDir(t, "", ca, ca, gwA)
	c := testClient(t, ts.url, dir, gwA, a)
	runClient(t, c)
	a.next(t)

	for kind, file := range map[string]string{"client": ClientCertFile, "ca": CAFile} {
		pemData, err := os.ReadFile(filepath.Join(dir, file))
		if err != nil {
			t.Fatal(err)
		}
		want := float64(earliestExpiry(pemData).NotAfter.Unix())
		if got := expiryOf(t, c.metrics.expiry, kind); got != want {
			t.Errorf("%s{certificate=%s} = %v, want %v (the NotAfter of %s)", MetricCertificateExpiry, kind, got, want, file)
		}
	}
	if got, want := expiryOf(t, c.metrics.expiry, "ca"), float64(ca.Certificate().NotAfter.Unix()); got != want {
		t.Errorf("%s{certificate=ca} = %v, want the CA's NotAfter %v", MetricCertificateExpiry, got, want)
	}
	if n := series(t, c.metrics.expiry); n != 2 {
		t.Errorf("%s has %d series, want client and ca", MetricCertificateExpiry, n)
	}
}

// expiryOf returns the value of col's series whose certificate label is
// kind, -1 when there is none.
func expiryOf(t *testing.T, col prometheus.Collector, kind string) float64 {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	if err := reg.Register(col); err != nil {
		t.Fatal(err)
	}
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range families {
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "certificate" && l.GetValue() == kind {
					return m.GetGauge().GetValue()
				}
			}
		}
	}
	return -1
}
