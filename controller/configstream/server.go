package configstream

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/apimachinery/pkg/types"

	"github.com/toolgate/toolgate/controller/pki"
)

// VersionHeader carries the version of the payload a response is about.
const VersionHeader = "Toolgate-Config-Version"

// DefaultPollTimeout is how long one request waits for a new version.
// Clients must wait longer than this for response headers.
const DefaultPollTimeout = 60 * time.Second

// MetricWaiting is the gauge of requests waiting for a new version.
const MetricWaiting = "toolgate_config_stream_waiting"

// Retry-After values, in seconds. Before the first translation a Gateway
// appears within moments; an unknown Gateway after it is most likely being
// deleted, with its proxies, so asking often would serve no one.
const (
	retryAfterNotSynced = 1
	retryAfterUnknown   = 10
)

// shutdownGrace bounds Serve's graceful shutdown: waiting requests are
// answered at once, so only a slow client can take this long.
const shutdownGrace = 5 * time.Second

// ServerOptions configure a Server.
type ServerOptions struct {
	// Hub holds the payloads served.
	Hub *Hub
	// CA verifies client certificates.
	CA *pki.CA
	// Certificate returns the serving certificate. It is called on every
	// handshake so that the certificate can be rotated.
	Certificate func() (*tls.Certificate, error)
	// PollTimeout is the longest one request waits for a new version;
	// DefaultPollTimeout when zero.
	PollTimeout time.Duration
	// Logger receives the server's logs; slog.Default() when nil.
	Logger *slog.Logger
	// Registerer, when set, receives the MetricWaiting gauge and the
	// MetricCertificateExpiry gauges of the CA and the serving certificate.
	Registerer prometheus.Registerer
}

// Server serves the Hub's payloads to the proxies.
type Server struct {
	opts    ServerOptions
	waiting atomic.Int64
	// stopping is closed when Serve's context is done, to answer waiting
	// requests at once rather than hold up the shutdown for a poll timeout.
	stopping     chan struct{}
	stoppingOnce sync.Once
}

// NewServer checks opts and returns a Server.
func NewServer(opts ServerOptions) (*Server, error) {
	switch {
	case opts.Hub == nil:
		return nil, errors.New("config stream server: no Hub")
	case opts.CA == nil:
		return nil, errors.New("config stream server: no CA")
	case opts.Certificate == nil:
		return nil, errors.New("config stream server: no serving certificate")
	case opts.PollTimeout < 0:
		return nil, fmt.Errorf("config stream server: negative poll timeout %v", opts.PollTimeout)
	}
	if opts.PollTimeout == 0 {
		opts.PollTimeout = DefaultPollTimeout
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	s := &Server{opts: opts, stopping: make(chan struct{})}
	if opts.Registerer != nil {
		expiryHelp := "NotAfter of the config stream's certificates in Unix seconds, by certificate: the CA that issues and verifies the proxies' client certificates, and the stream's serving certificate (issued again when a third of its lifetime is left)."
		ca := opts.CA.Certificate()
		for _, c := range []prometheus.Collector{
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{
				Name: MetricWaiting,
				Help: "Config stream requests waiting for a new version of their Gateway's configuration.",
			}, func() float64 { return float64(s.waiting.Load()) }),
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{
				Name: MetricCertificateExpiry, Help: expiryHelp, ConstLabels: prometheus.Labels{"certificate": "ca"},
			}, func() float64 { return float64(ca.NotAfter.Unix()) }),
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{
				Name: MetricCertificateExpiry, Help: expiryHelp, ConstLabels: prometheus.Labels{"certificate": "serving"},
			}, func() float64 {
				cert, err := opts.Certificate()
				if err != nil || cert == nil || cert.Leaf == nil {
					return 0
				}
				return float64(cert.Leaf.NotAfter.Unix())
			}),
		} {
			if err := opts.Registerer.Register(c); err != nil {
				return nil, fmt.Errorf("register config stream metrics: %w", err)
			}
		}
	}
	return s, nil
}

// TLSConfig returns the server's TLS configuration: TLS 1.3 at least,
// client certificates required and verified against the CA, HTTP/2 or
// HTTP/1.1.
func (s *Server) TLSConfig() *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS13,
		ClientAuth: tls.RequireAndVerifyClientCert,
		ClientCAs:  s.opts.CA.Pool(),
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			return s.opts.Certificate()
		},
		NextProtos: []string{"h2", "http/1.1"},
	}
}

// Handler returns the protocol's HTTP handler. It expects requests that
// came through TLSConfig: it serves none without a verified client
// certificate.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/gateways/{namespace}/{name}/config", s.serveConfig)
	return mux
}

// Serve serves HTTPS on l until ctx is done, then shuts down gracefully:
// waiting requests are answered Not Modified so that their proxies
// reconnect, to another replica if there is one. It returns nil after a
// shutdown, else the error that stopped it.
func (s *Server) Serve(ctx context.Context, l net.Listener) error {
	srv := &http.Server{
		Handler:           s.Handler(),
		TLSConfig:         s.TLSConfig(),
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * s.opts.PollTimeout,
		// Failed handshakes (a proxy with a stale certificate, a stranger)
		// are worth seeing, but not as errors of the controller.
		ErrorLog: slog.NewLogLogger(s.opts.Logger.Handler(), slog.LevelInfo),
	}
	done := make(chan error, 1)
	go func() { done <- srv.ServeTLS(l, "", "") }()

	select {
	case err := <-done:
		s.stop()
		return fmt.Errorf("serve config stream on %s: %w", l.Addr(), err)
	case <-ctx.Done():
	}
	s.stop()
	shutdownCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), shutdownGrace)
	defer cancel()
	if err := srv.Shutdown(shutdownCtx); err != nil {
		// Still busy after the grace period: cut the rest off.
		_ = srv.Close()
	}
	if err := <-done; !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serve config stream on %s: %w", l.Addr(), err)
	}
	return nil
}

func (s *Server) stop() { s.stoppingOnce.Do(func() { close(s.stopping) }) }

func (s *Server) serveConfig(w http.ResponseWriter, r *http.Request) {
	gw := types.NamespacedName{Namespace: r.PathValue("namespace"), Name: r.PathValue("name")}
	if r.TLS == nil || len(r.TLS.VerifiedChains) == 0 || len(r.TLS.VerifiedChains[0]) == 0 {
		http.Error(w, "a client certificate issued by the config stream CA is required", http.StatusForbidden)
		return
	}
	named, err := pki.GatewayOf(r.TLS.VerifiedChains[0][0])
	if err != nil {
		s.opts.Logger.Warn("config stream client refused", "gateway", gw.String(), "remote", r.RemoteAddr, "error", err)
		http.Error(w, "client certificate refused: "+err.Error(), http.StatusForbidden)
		return
	}
	if named != gw {
		s.opts.Logger.Warn("config stream client asked for another Gateway", "gateway", gw.String(), "certificate", named.String(), "remote", r.RemoteAddr)
		http.Error(w, fmt.Sprintf("the client certificate is for Gateway %s, not %s", named, gw), http.StatusForbidden)
		return
	}

	have := r.URL.Query().Get("version")
	var timeout <-chan time.Time // started on the first wait only
	for {
		snap, synced := s.opts.Hub.current(gw)
		if snap == nil {
			status, retry := http.StatusServiceUnavailable, retryAfterNotSynced
			if synced {
				status, retry = http.StatusNotFound, retryAfterUnknown
			}
			w.Header().Set("Retry-After", strconv.Itoa(retry))
			http.Error(w, fmt.Sprintf("no configuration for Gateway %s", gw), status)
			return
		}
		if snap.version != have {
			h := w.Header()
			h.Set("Content-Type", "application/json")
			h.Set("Cache-Control", "no-store")
			h.Set(VersionHeader, snap.version)
			h.Set("Content-Length", strconv.Itoa(len(snap.payload)))
			w.WriteHeader(http.StatusOK)
			w.Write(snap.payload) //nolint:errcheck // the client went away; it polls again
			return
		}
		if timeout == nil {
			t := time.NewTimer(s.opts.PollTimeout)
			defer t.Stop()
			timeout = t.C
			s.waiting.Add(1)
			defer s.waiting.Add(-1)
		}
		select {
		case <-snap.changed:
			// Look again: a new version, or the Gateway is gone.
		case <-timeout:
			s.notModified(w, snap.version)
			return
		case <-s.stopping:
			s.notModified(w, snap.version)
			return
		case <-r.Context().Done():
			return
		}
	}
}

func (s *Server) notModified(w http.ResponseWriter, version string) {
	w.Header().Set(VersionHeader, version)
	w.WriteHeader(http.StatusNotModified)
}
