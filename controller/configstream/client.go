package configstream

import (
	"cmp"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/apimachinery/pkg/types"
)

// Files of ClientOptions.TLSDir, as a kubernetes.io/tls Secret with the CA
// added mounts them.
const (
	ClientCertFile = "tls.crt"
	ClientKeyFile  = "tls.key"
	CAFile         = "ca.crt"
)

// Client metrics.
const (
	MetricVersionInfo  = "toolgate_config_version_info"
	MetricConnected    = "toolgate_config_stream_connected"
	MetricUpdates      = "toolgate_config_updates_total"
	MetricStreamErrors = "toolgate_config_stream_errors_total"
	// MetricCertificateExpiry is the NotAfter time, in Unix seconds, of a
	// certificate of the stream, by certificate: the proxy's "client"
	// certificate and the "ca" it trusts (the earliest to expire of
	// ca.crt's), as ClientOptions.TLSDir holds them when scraped (what the
	// next connection presents and trusts); the controller's "ca" and
	// "serving" certificate (ServerOptions.Registerer).
	MetricCertificateExpiry = "toolgate_config_stream_certificate_expiration_timestamp_seconds"
)

// Defaults of ClientOptions.
const (
	DefaultMinBackoff = 200 * time.Millisecond
	DefaultMaxBackoff = 30 * time.Second
	// DefaultResponseHeaderTimeout outlasts the server's DefaultPollTimeout
	// by enough for a busy controller, and no more: a controller that
	// stalls must not hold the proxy forever.
	DefaultResponseHeaderTimeout = DefaultPollTimeout + 30*time.Second
)

// ClientOptions configure a Client.
type ClientOptions struct {
	// URL is the controller's, e.g.
	// https://toolgate-controller.toolgate-system.svc:9443.
	URL string
	// Gateway is the Gateway whose configuration the client polls.
	Gateway types.NamespacedName
	// TLSDir holds ClientCertFile and ClientKeyFile (the client
	// certificate) and CAFile. They are read again for every new
	// connection, since the kubelet updates a mounted Secret in place.
	TLSDir string
	// ServerName, when set, is the name the server certificate is verified
	// against, when it differs from URL's host.
	ServerName string
	// Apply is called with each new version, one call at a time. An error
	// keeps the previous configuration: it is logged, and the client waits
	// for the next version rather than retrying this one. Version and Ready
	// wait while Apply runs, so Apply must not call them.
	Apply func(version string, payload []byte) error
	// Logger receives the client's logs; slog.Default() when nil.
	Logger *slog.Logger
	// Registerer, when set, receives the client's metrics.
	Registerer prometheus.Registerer
	// MinBackoff and MaxBackoff bound the delay between failed requests
	// (exponential, full jitter); DefaultMinBackoff and DefaultMaxBackoff
	// when zero.
	MinBackoff, MaxBackoff time.Duration
	// ResponseHeaderTimeout is how long a request waits for the server's
	// answer; it must exceed the server's poll timeout.
	// DefaultResponseHeaderTimeout when zero.
	ResponseHeaderTimeout time.Duration
}

// Client polls the controller for its Gateway's configuration and applies
// each new version. It is the proxy's side of the stream.
type Client struct {
	opts      ClientOptions
	endpoint  *url.URL // the Gateway's config URL, without the version
	http      *http.Client
	transport *http.Transport
	metrics   *clientMetrics

	mu      sync.Mutex
	applied string // the version applied, "" before the first

	// Owned by Run's goroutine.
	seen  string      // the last version received, applied or rejected
	state streamState // for logging changes only
}

type streamState int

const (
	stateStarting streamState = iota
	stateConnected
	stateLost
)

// NewClient checks opts and returns a Client. It reads no files: the TLS
// material is read when a connection is made.
func NewClient(opts ClientOptions) (*Client, error) {
	base, err := url.Parse(opts.URL)
	switch {
	case err != nil:
		return nil, fmt.Errorf("config stream URL %q: %w", opts.URL, err)
	case base.Scheme != "https" || base.Host == "":
		return nil, fmt.Errorf("config stream URL %q: want https://HOST[:PORT]", opts.URL)
	case opts.Gateway.Namespace == "" || opts.Gateway.Name == "":
		return nil, fmt.Errorf("config stream client: Gateway %q needs a namespace and a name", opts.Gateway)
	case opts.TLSDir == "":
		return nil, errors.New("config stream client: no TLS directory")
	case opts.Apply == nil:
		return nil, errors.New("config stream client: no Apply function")
	case opts.MinBackoff < 0 || opts.MaxBackoff < 0 || opts.ResponseHeaderTimeout < 0:
		return nil, errors.New("config stream client: negative backoff or timeout")
	}
	opts.MinBackoff = cmp.Or(opts.MinBackoff, DefaultMinBackoff)
	opts.MaxBackoff = max(cmp.Or(opts.MaxBackoff, DefaultMaxBackoff), opts.MinBackoff)
	opts.ResponseHeaderTimeout = cmp.Or(opts.ResponseHeaderTimeout, DefaultResponseHeaderTimeout)
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	opts.Logger = opts.Logger.With("gateway", opts.Gateway.String(), "controller", opts.URL)

	m, err := newClientMetrics(opts.Registerer, opts.Gateway, opts.TLSDir)
	if err != nil {
		return nil, err
	}
	c := &Client{
		opts:     opts,
		endpoint: base.JoinPath("v1", "gateways", opts.Gateway.Namespace, opts.Gateway.Name, "config"),
		metrics:  m,
	}
	dialer := &net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}
	c.transport = &http.Transport{
		// The controller is reached directly, in the cluster: a proxy
		// from the environment would only be in the way of mutual TLS.
		Proxy: nil,
		// A dialer of our own makes the TLS configuration per connection,
		// from files read then: tls.Config has no hook for fresh roots.
		DialTLSContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			return c.dialTLS(ctx, dialer, network, addr)
		},
		ForceAttemptHTTP2:     true,
		ResponseHeaderTimeout: opts.ResponseHeaderTimeout,
		IdleConnTimeout:       90 * time.Second,
		MaxIdleConnsPerHost:   1,
		HTTP2: &http.HTTP2Config{
			// Notice a dead connection (a controller node gone without a
			// FIN) while a response body is in flight.
			SendPingTimeout: 30 * time.Second,
			PingTimeout:     15 * time.Second,
		},
	}
	c.http = &http.Client{
		Transport: c.transport,
		// The protocol has no redirects; following one would leave the
		// endpoint the certificate was made for.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	return c, nil
}

// Version returns the last applied version, "" before the first. While a
// version is being applied it waits for Apply to return, so that a version
// in effect is never reported as the previous one.
func (c *Client) Version() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.applied
}

// Ready reports whether a version has been applied. It stays true while
// the controller is away: the proxy serves its last good configuration.
func (c *Client) Ready() bool { return c.Version() != "" }

// Run polls the controller until ctx is done, then returns nil; call it
// once. Errors are logged and retried with backoff, never fatal: the proxy
// keeps serving the last configuration applied.
func (c *Client) Run(ctx context.Context) error {
	defer c.transport.CloseIdleConnections()
	failures := 0
	for ctx.Err() == nil {
		retryAfter, err := c.poll(ctx)
		if ctx.Err() != nil {
			break
		}
		if err == nil {
			failures = 0
			c.setState(stateConnected, nil)
			continue
		}
		failures++
		c.metrics.errors.Inc()
		// The next attempt makes a new connection, which reads TLSDir
		// again: a 403 or a failed handshake may be fixed by a renewed
		// certificate or CA, which an open connection would never see.
		c.transport.CloseIdleConnections()
		c.setState(stateLost, err)
		delay := max(c.backoff(failures), retryAfter)
		c.opts.Logger.Debug("config stream request failed", "error", err, "retryIn", delay)
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
		case <-t.C:
		}
	}
	c.metrics.connected.Set(0)
	return nil
}

// backoff returns the delay after the given number of consecutive
// failures: uniform in [0, min(MaxBackoff, MinBackoff·2^(failures-1))), so
// that proxies cut off together do not come back together.
func (c *Client) backoff(failures int) time.Duration {
	ceiling := min(c.opts.MinBackoff, c.opts.MaxBackoff)
	for i := 1; i < failures && ceiling < c.opts.MaxBackoff; i++ {
		// Doubling stops at the maximum, which it can never overflow.
		if ceiling > c.opts.MaxBackoff/2 {
			ceiling = c.opts.MaxBackoff
		} else {
			ceiling *= 2
		}
	}
	return rand.N(ceiling) //nolint:gosec // jitter, not a secret
}

// setState logs when the stream connects or is lost, once per change
// rather than once per request or retry.
func (c *Client) setState(s streamState, err error) {
	if s == stateConnected {
		c.metrics.connected.Set(1)
	} else {
		c.metrics.connected.Set(0)
	}
	if s == c.state {
		return
	}
	switch {
	case s == stateConnected:
		c.opts.Logger.Info("config stream connected", "version", c.Version())
	case c.state == stateStarting:
		c.opts.Logger.Warn("config stream unavailable, retrying", "error", err)
	default:
		c.opts.Logger.Warn("config stream lost, keeping the current configuration and retrying", "version", c.Version(), "error", err)
	}
	c.state = s
}

// poll makes one request and applies what it brings. An error is a failure
// of the stream, with how long the server asked to wait; a payload that
// Apply rejects is not.
func (c *Client) poll(ctx context.Context) (retryAfter time.Duration, err error) {
	u := *c.endpoint
	u.RawQuery = url.Values{"version": {c.seen}}.Encode()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return 0, fmt.Errorf("build request: %w", err)
	}
	req.Header.Set("Accept", "application/json")
	resp, err := c.http.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()

	switch resp.StatusCode {
	case http.StatusOK:
		version := resp.Header.Get(VersionHeader)
		if version == "" {
			return 0, fmt.Errorf("GET %s: response without %s", u.Path, VersionHeader)
		}
		payload, err := io.ReadAll(resp.Body)
		if err != nil {
			return 0, fmt.Errorf("GET %s: read version %s: %w", u.Path, version, err)
		}
		c.apply(version, payload)
		return 0, nil
	case http.StatusNotModified:
		return 0, nil
	default:
		// A short read of the body says why (403, 404, 503 carry a reason).
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		reason := strings.TrimSpace(strings.SplitN(string(body), "\n", 2)[0])
		return parseRetryAfter(resp.Header.Get("Retry-After")), fmt.Errorf("GET %s: %s: %s", u.Path, resp.Status, reason)
	}
}

func (c *Client) apply(version string, payload []byte) {
	// The lock is held across Apply, so that whoever sees the new
	// configuration in effect and then asks Version gets its version: a
	// reader waits while a version is being applied, never reads the
	// previous one after the new one took effect.
	c.mu.Lock()
	old := c.applied
	if version == c.seen || version == old {
		c.mu.Unlock()
		// Nothing new: what was rejected stays rejected, what is applied
		// need not be built again (a controller went back to it).
		c.seen = version
		return
	}
	c.seen = version
	if err := c.opts.Apply(version, payload); err != nil {
		c.mu.Unlock()
		c.metrics.updates.WithLabelValues("rejected").Inc()
		c.opts.Logger.Error("configuration rejected, keeping the current one", "version", version, "current", old, "error", err)
		return
	}
	c.applied = version
	c.mu.Unlock()
	c.metrics.updates.WithLabelValues("applied").Inc()
	if old != "" {
		c.metrics.versionInfo.DeleteLabelValues(old)
	}
	c.metrics.versionInfo.WithLabelValues(version).Set(1)
	c.opts.Logger.Info("configuration applied", "version", version, "previous", old)
}

// dialTLS opens a TLS connection with the client certificate and CA read
// from TLSDir now.
func (c *Client) dialTLS(ctx context.Context, dialer *net.Dialer, network, addr string) (net.Conn, error) {
	cfg, err := c.tlsConfig(addr)
	if err != nil {
		return nil, err
	}
	raw, err := dialer.DialContext(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	conn := tls.Client(raw, cfg)
	if err := conn.HandshakeContext(ctx); err != nil {
		raw.Close()
		return nil, fmt.Errorf("TLS handshake with %s: %w", addr, err)
	}
	return conn, nil
}

func (c *Client) tlsConfig(addr string) (*tls.Config, error) {
	dir := c.opts.TLSDir
	cert, err := tls.LoadX509KeyPair(filepath.Join(dir, ClientCertFile), filepath.Join(dir, ClientKeyFile))
	if err != nil {
		return nil, fmt.Errorf("load client certificate from %s: %w", dir, err)
	}
	caPEM, err := os.ReadFile(filepath.Join(dir, CAFile))
	if err != nil {
		return nil, fmt.Errorf("load CA: %w", err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(caPEM) {
		return nil, fmt.Errorf("load CA: no certificate in %s", filepath.Join(dir, CAFile))
	}
	serverName := c.opts.ServerName
	if serverName == "" {
		host, _, err := net.SplitHostPort(addr)
		if err != nil {
			return nil, fmt.Errorf("server address %q: %w", addr, err)
		}
		serverName = host
	}
	return &tls.Config{
		MinVersion: tls.VersionTLS13,
		RootCAs:    roots,
		ServerName: serverName,
		// Always send the certificate, whatever CAs the server names, so
		// that a CA mismatch fails on the server with a clear reason.
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &cert, nil },
		NextProtos:           []string{"h2", "http/1.1"},
	}, nil
}

func parseRetryAfter(v string) time.Duration {
	secs, err := strconv.Atoi(v)
	if err != nil || secs < 0 {
		return 0
	}
	return time.Duration(secs) * time.Second
}

// earliestExpiry returns the certificate of pemData that expires first, nil
// when none parses.
func earliestExpiry(pemData []byte) *x509.Certificate {
	var first *x509.Certificate
	for len(pemData) > 0 {
		var block *pem.Block
		block, pemData = pem.Decode(pemData)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			continue
		}
		cert, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			continue
		}
		if first == nil || cert.NotAfter.Before(first.NotAfter) {
			first = cert
		}
	}
	return first
}

type clientMetrics struct {
	versionInfo *prometheus.GaugeVec
	connected   prometheus.Gauge
	updates     *prometheus.CounterVec
	errors      prometheus.Counter
	expiry      *certificateExpiry
}

// certificateExpiry collects MetricCertificateExpiry from the files of a
// TLS directory, read at every scrape: the kubelet replaces them in place,
// and a connection that outlives a certificate keeps it, so the files, not
// the last connection, say when the proxy would next fail to connect. A
// file that does not parse has no series.
type certificateExpiry struct {
	dir  string
	desc *prometheus.Desc
}

func (e *certificateExpiry) Describe(ch chan<- *prometheus.Desc) { ch <- e.desc }

func (e *certificateExpiry) Collect(ch chan<- prometheus.Metric) {
	for _, f := range []struct{ kind, file string }{{"client", ClientCertFile}, {"ca", CAFile}} {
		data, err := os.ReadFile(filepath.Join(e.dir, f.file))
		if err != nil {
			continue
		}
		if cert := earliestExpiry(data); cert != nil {
			ch <- prometheus.MustNewConstMetric(e.desc, prometheus.GaugeValue, float64(cert.NotAfter.Unix()), f.kind)
		}
	}
}

// newClientMetrics makes the client's metrics. Every series names gw in
// its gateway label, so that the versions of one Gateway's proxies can be
// compared wherever the proxies are scraped from.
func newClientMetrics(reg prometheus.Registerer, gw types.NamespacedName, tlsDir string) (*clientMetrics, error) {
	gatewayLabel := prometheus.Labels{"gateway": gw.String()}
	m := &clientMetrics{
		versionInfo: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name:        MetricVersionInfo,
			Help:        "1 for the version of the configuration applied, absent before the first.",
			ConstLabels: gatewayLabel,
		}, []string{"version"}),
		connected: prometheus.NewGauge(prometheus.GaugeOpts{
			Name:        MetricConnected,
			Help:        "1 while the last request to the controller's config stream succeeded.",
			ConstLabels: gatewayLabel,
		}),
		updates: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name:        MetricUpdates,
			Help:        "Configuration versions received, by result (applied, rejected).",
			ConstLabels: gatewayLabel,
		}, []string{"result"}),
		errors: prometheus.NewCounter(prometheus.CounterOpts{
			Name:        MetricStreamErrors,
			Help:        "Failed requests to the controller's config stream.",
			ConstLabels: gatewayLabel,
		}),
		expiry: &certificateExpiry{dir: tlsDir, desc: prometheus.NewDesc(MetricCertificateExpiry,
			"NotAfter of the config stream's certificates in Unix seconds, by certificate: this proxy's client certificate and the CA it trusts (the first to expire of its ca.crt), as its files hold them now.",
			[]string{"certificate"}, gatewayLabel)},
	}
	// Both results exist from the start, so that a rate over them works
	// before the first rejection.
	m.updates.WithLabelValues("applied")
	m.updates.WithLabelValues("rejected")
	if reg != nil {
		for _, col := range []prometheus.Collector{m.versionInfo, m.connected, m.updates, m.errors, m.expiry} {
			if err := reg.Register(col); err != nil {
				return nil, fmt.Errorf("register config stream metrics: %w", err)
			}
		}
	}
	return m, nil
}
