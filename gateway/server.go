package gateway

import (
	"context"
	"crypto/rand"
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

	"github.com/toolgate/toolgate/filter"
)

// Options configure a Server. Everything here is long-lived and shared by
// every snapshot: a reload never rebuilds it.
type Options struct {
	// SessionKey authenticates the MCP session ids the gateway hands out
	// (see affinity.go). Every replica of a Gateway must use the same key,
	// of at least 32 random bytes, so that a session keeps its endpoint
	// whichever replica serves it and across restarts. Empty means a random
	// key for this process only.
	SessionKey []byte
	// Extensions builds the filter of each resolved ExtensionRef (one whose
	// MCPServer policy is set) when Apply compiles a snapshot: once per
	// distinct reference and policy in the snapshot, so rules naming the
	// same MCPServer share one filter. An error fails Apply. Nil serves
	// configs without resolved ExtensionRefs only; Apply refuses the others.
	Extensions ExtensionBuilder
	// Transport reaches the backends; nil uses a transport that never cuts
	// a slow response or an event stream (timeouts come from the routes).
	// Backends with TLS (Backend.TLS) get transports of their own, cloned
	// from Transport when it is an *http.Transport, else default ones.
	Transport http.RoundTripper
	// TrustBackendNames resolves the host names of backends (ExternalName
	// Services, FQDN EndpointSlices) as the system does, search domains
	// included, and lets them reach any address. By default a name is
	// resolved as an absolute name and an address no backend may have
	// (loopback, link-local, unspecified) is refused when it is dialed:
	// whoever can write a Service must not reach the proxy's own ports or
	// the node's metadata service. Standalone mode sets it (its files are
	// the operator's own); the default transport is what it applies to.
	TrustBackendNames bool
	// Metrics are served on /metrics of the admin listener; nil creates
	// metrics on a new registry.
	Metrics *Metrics
	// Logger receives errors and events; nil means slog.Default().
	Logger *slog.Logger
	// AccessLog receives one structured record per request at Info level;
	// nil means Logger. Use a logger with slog.DiscardHandler to disable.
	AccessLog *slog.Logger
	// AdminAddress, if set, is where New serves /healthz, /readyz, /metrics
	// and /config, for example "127.0.0.1:9901".
	AdminAddress string
	// AllowRemoteConfig answers /config to clients on any address. By
	// default /config (the routing table, backends and endpoints, even
	// redacted) is answered to loopback clients only, so that an admin
	// listener bound to every interface for probes and Prometheus does not
	// show it to the network; /healthz, /readyz and /metrics answer anyone.
	AllowRemoteConfig bool
	// Budgets reads a user's buckets on an MCP server without taking
	// anything (filter.Shared.Budgets), for GET /limits; nil answers 404
	// there.
	Budgets func(ctx context.Context, p *filter.Policy, user string) (filter.Budgets, error)
	// TrustedHops is the number of proxies in front of the gateway whose
	// X-Forwarded-For entries are believed, like Envoy's
	// xff_num_trusted_hops. Zero (the default) trusts none: the backend's
	// X-Forwarded-For and X-Real-IP are the peer's address, whatever the
	// client sent. With N > 0 the incoming X-Forwarded-For is kept and the
	// peer appended, and X-Real-IP is the Nth entry from its right.
	TrustedHops int
	// DrainTimeout bounds how long a listener removed by Apply keeps
	// serving its in-flight requests; zero means 30 seconds.
	DrainTimeout time.Duration
	// ReadHeaderTimeout bounds reading a request's headers; zero means 10
	// seconds. No other server timeout is set, so streams live on.
	ReadHeaderTimeout time.Duration
	// IdleTimeout closes idle keep-alive connections; zero means 2 minutes.
	IdleTimeout time.Duration
	// WriteTimeout bounds how long writing a response may make no
	// progress, for responses that are not event streams: a client that
	// stops reading is disconnected. Event streams are left to their own
	// rules (a route's timeouts, the client). Zero means
	// DefaultWriteTimeout; negative, none.
	WriteTimeout time.Duration
	// ConnContext, when set, derives the context of each client connection
	// (http.Server.ConnContext); the MCP filter keeps a connection's share
	// of the request body budget there (filter.Shared.WithConnection).
	ConnContext func(ctx context.Context, c net.Conn) context.Context
}

// DefaultWriteTimeout is Options.WriteTimeout's default.
const DefaultWriteTimeout = 30 * time.Second

// ErrServerClosed is returned by Apply after Shutdown.
var ErrServerClosed = errors.New("gateway: server closed")

// Server serves the listeners of the current snapshot. Create it with New,
// load a configuration with Apply, stop it with Shutdown.
type Server struct {
	opts     Options
	log      *slog.Logger
	access   *slog.Logger
	metrics  *Metrics
	sessions *sessionSealer
	proxy    *proxy
	// transports reach the backends with TLS; each Apply keeps those its
	// snapshot uses.
	transports *backendTransports
	// mirrors sends the copies of RequestMirror filters.
	mirrors *mirrorSender

	snap  atomic.Pointer[snapshot]
	ready atomic.Bool
	// stopping is set by Drain and Shutdown (drain.go).
	stopping atomic.Bool

	mu       sync.Mutex // serializes Apply and Shutdown; guards below
	sockets  map[portKey]*socket
	closed   bool
	draining sync.WaitGroup

	admin *socket

	// bindTCP opens the gateway's listeners; nil means net.Listen. Tests
	// set it to make a listen fail at a chosen moment.
	bindTCP func(addr string) (net.Listener, error)
}

// socket is one bound port and its http.Server.
type socket struct {
	key      portKey
	protocol Protocol
	ln       net.Listener
	srv      *http.Server
}

// New creates a Server with no listeners. If opts.AdminAddress is set the
// admin listener is opened now.
func New(opts Options) (*Server, error) {
	if opts.TrustedHops < 0 {
		return nil, fmt.Errorf("gateway options: TrustedHops is %d, want 0 or more", opts.TrustedHops)
	}
	s := &Server{opts: opts, sockets: map[portKey]*socket{}}
	s.log = opts.Logger
	if s.log == nil {
		s.log = slog.Default()
	}
	s.access = opts.AccessLog
	if s.access == nil {
		s.access = s.log
	}
	key := opts.SessionKey
	if len(key) == 0 {
		key = make([]byte, 32)
		_, _ = rand.Read(key)
		s.log.Warn("no session key configured: MCP session affinity holds only within this gateway process")
	}
	s.sessions = newSessionSealer(key)
	s.metrics = opts.Metrics
	if s.metrics == nil {
		m, err := NewMetrics(nil)
		if err != nil {
			return nil, err
		}
		s.metrics = m
	}
	transport := opts.Transport
	if transport == nil {
		transport = defaultTransport(opts.TrustBackendNames)
	}
	base, _ := transport.(*http.Transport)
	s.transports = newBackendTransports(base, opts.TrustBackendNames)
	s.proxy = newProxy(transport, s.sessions, s.log, opts.TrustedHops)
	s.mirrors = newMirrorSender(transport, s.log, s.metrics, opts.TrustedHops)
	if s.opts.DrainTimeout <= 0 {
		s.opts.DrainTimeout = 30 * time.Second
	}
	if s.opts.ReadHeaderTimeout <= 0 {
		s.opts.ReadHeaderTimeout = 10 * time.Second
	}
	if s.opts.IdleTimeout <= 0 {
		s.opts.IdleTimeout = 2 * time.Minute
	}
	if s.opts.WriteTimeout == 0 {
		s.opts.WriteTimeout = DefaultWriteTimeout
	}
	if opts.AdminAddress != "" {
		// Binding is immediate: there is nothing to cancel.
		ln, err := (&net.ListenConfig{}).Listen(context.Background(), "tcp", opts.AdminAddress)
		if err != nil {
			return nil, fmt.Errorf("admin listener %s: %w", opts.AdminAddress, err)
		}
		s.admin = &socket{ln: ln, srv: s.newHTTPServer(s.AdminHandler())}
		go s.serve(s.admin)
	}
	return s, nil
}

// Apply validates and compiles cfg and makes it the current snapshot in one
// atomic swap: requests in flight finish on the snapshot they started with.
// Compiling parses the listeners' certificates and builds the filters of
// resolved ExtensionRefs with Options.Extensions; a pair that does not parse
// or a filter that cannot be built fails Apply like any invalid config.
// Sockets are opened for new address/port pairs and closed (after draining,
// up to Options.DrainTimeout) for pairs no longer used; the others are kept
// with their connections. On error nothing changes, unless a port this Apply
// had to release could not be bound again: the error then says which.
func (s *Server) Apply(cfg *Config) error {
	snap, err := compile(cfg, s.proxy, s.sessions, s.opts.Extensions, s.transports, s.mirrors)
	if err != nil {
		return fmt.Errorf("apply gateway config: %w", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return ErrServerClosed
	}
	// Every listen happens before the swap, so that a failed one can be
	// undone. Pairs without a socket come first: they need nothing closed,
	// so the usual failure (a port taken by another process) leaves the
	// running sockets untouched.
	opened := map[portKey]*socket{}
	for key, pt := range snap.ports {
		if s.sockets[key] != nil {
			continue
		}
		sk, err := s.listen(key, pt.protocol, net.JoinHostPort(key.address, strconv.Itoa(key.port)))
		if err != nil {
			return s.rollBack(opened, nil, err)
		}
		opened[key] = sk
	}
	// A pair whose protocol changes (HTTP <-> HTTPS) needs its port for the
	// new socket, and a port cannot be bound twice: its listener is closed
	// and the port bound again. Only the listener is closed; the old
	// http.Server keeps its connections, so if a later listen fails,
	// rollBack binds the old address again and serves it with that same
	// server, and nothing in flight notices. On success it is drained below
	// like any socket no longer used.
	replaced := map[portKey]*socket{}
	for key, old := range s.sockets {
		pt := snap.ports[key]
		if pt == nil || pt.protocol == old.protocol {
			continue
		}
		_ = old.ln.Close()
		replaced[key] = old
		sk, err := s.listen(key, pt.protocol, net.JoinHostPort(key.address, strconv.Itoa(key.port)))
		if err != nil {
			return s.rollBack(opened, replaced, err)
		}
		opened[key] = sk
	}
	// Once nothing can fail, before the swap: requests on new routes are
	// counted from their first.
	s.metrics.retainRoutes(s, cfg)
	s.snap.Store(snap)
	s.transports.retain(snap.transports)
	for _, old := range replaced {
		s.retire(old)
	}
	for key, sk := range s.sockets {
		if snap.ports[key] == nil {
			s.retire(sk)
			delete(s.sockets, key)
		}
	}
	for key, sk := range opened {
		s.sockets[key] = sk
		go s.serve(sk)
	}
	s.ready.Store(true)
	return nil
}

// rollBack undoes the listens of an Apply that failed with cause: it closes
// the sockets the Apply opened and binds the address of each replaced socket
// again, served by its old http.Server with its old protocol. A replaced
// port that cannot be bound again (another process took it meanwhile) is
// logged, dropped from s.sockets so that the next Apply opens it, and named
// in the returned error.
func (s *Server) rollBack(opened, replaced map[portKey]*socket, cause error) error {
	for _, sk := range opened {
		_ = sk.ln.Close()
	}
	var lost []error
	for key, old := range replaced {
		addr := old.ln.Addr().String()
		ln, err := s.bind(addr)
		if err != nil {
			err = fmt.Errorf("%s listener on %s of the previous configuration could not be bound again and is not served until the next successful apply: %w", old.protocol, addr, err)
			s.log.Error("gateway listener lost while undoing a failed apply", "address", addr, "protocol", old.protocol, "error", err)
			delete(s.sockets, key)
			s.retire(old)
			lost = append(lost, err)
			continue
		}
		restored := &socket{key: key, protocol: old.protocol, ln: ln, srv: old.srv}
		s.sockets[key] = restored
		go s.serve(restored)
	}
	if len(lost) > 0 {
		return fmt.Errorf("apply gateway config: %w; undoing it failed: %w", cause, errors.Join(lost...))
	}
	return fmt.Errorf("apply gateway config: %w", cause)
}

// listen binds addr (key's address and port, or the port actually bound
// when restoring a socket of port 0) and prepares its http.Server; serve
// starts it.
func (s *Server) listen(key portKey, protocol Protocol, addr string) (*socket, error) {
	ln, err := s.bind(addr)
	if err != nil {
		return nil, err
	}
	sk := &socket{key: key, protocol: protocol, ln: ln}
	sk.srv = s.newHTTPServer(&entryHandler{server: s, key: key, detached: newDetachedStreams()})
	if protocol == ProtocolHTTPS {
		sk.srv.TLSConfig = &tls.Config{
			MinVersion:         tls.VersionTLS12,
			GetCertificate:     s.certificateFor(key),
			GetConfigForClient: s.clientValidationFor(key),
		}
	} else {
		// Cleartext listeners speak HTTP/1.1, and HTTP/2 to clients that
		// know the listener does (prior knowledge, as gRPC clients do).
		sk.srv.Protocols = new(http.Protocols)
		sk.srv.Protocols.SetHTTP1(true)
		sk.srv.Protocols.SetUnencryptedHTTP2(true)
	}
	return sk, nil
}

// bind opens a TCP listener on addr, through s.bindTCP when a test set it.
func (s *Server) bind(addr string) (net.Listener, error) {
	bindTCP := s.bindTCP
	if bindTCP == nil {
		bindTCP = func(addr string) (net.Listener, error) {
			return (&net.ListenConfig{}).Listen(context.Background(), "tcp", addr)
		}
	}
	ln, err := bindTCP(addr)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", addr, err)
	}
	return ln, nil
}

func (s *Server) newHTTPServer(h http.Handler) *http.Server {
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: s.opts.ReadHeaderTimeout,
		IdleTimeout:       s.opts.IdleTimeout,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			if s.opts.ConnContext != nil {
				ctx = s.opts.ConnContext(ctx, c)
			}
			return context.WithValue(ctx, connStateKey{}, &connState{})
		},
	}
}

func (s *Server) serve(sk *socket) {
	var err error
	if sk.protocol == ProtocolHTTPS {
		err = sk.srv.ServeTLS(sk.ln, "", "")
	} else {
		err = sk.srv.Serve(sk.ln)
	}
	// net.ErrClosed: Apply closed the listener on purpose, for a protocol
	// change, and drains or reuses the server itself.
	if err != nil && !errors.Is(err, http.ErrServerClosed) && !errors.Is(err, net.ErrClosed) {
		s.log.Error("gateway listener stopped", "address", sk.ln.Addr().String(), "error", err)
	}
}

// retire drains a socket in the background: no new connections, in-flight
// requests get up to DrainTimeout.
func (s *Server) retire(sk *socket) {
	s.draining.Add(1)
	go func() {
		defer s.draining.Done()
		ctx, cancel := context.WithTimeout(context.Background(), s.opts.DrainTimeout)
		defer cancel()
		if err := sk.srv.Shutdown(ctx); err != nil {
			_ = sk.srv.Close()
		}
		if d := detachedOf(sk.srv); d != nil {
			d.end(ctx)
		}
	}()
}

// certificateFor selects the certificate of the listener whose hostname
// best matches the client's SNI, from the current snapshot, so certificates
// change with a swap without reopening the socket.
func (s *Server) certificateFor(key portKey) func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	return func(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
		pt := s.snap.Load().ports[key]
		if pt == nil {
			return nil, fmt.Errorf("no listener on %s", key)
		}
		l, ok := pt.listeners.first(requestHostname(hello.ServerName))
		if !ok || len(l.certificates) == 0 {
			return nil, fmt.Errorf("no certificate for server name %q", hello.ServerName)
		}
		for i := range l.certificates {
			if hello.SupportsCertificate(&l.certificates[i]) == nil {
				return &l.certificates[i], nil
			}
		}
		return &l.certificates[0], nil
	}
}

// clientValidationFor returns the TLS configuration of a handshake on key's
// socket whose listener (chosen by server name, as its certificate is)
// verifies client certificates; nil, the socket's own, for the others.
func (s *Server) clientValidationFor(key portKey) func(*tls.ClientHelloInfo) (*tls.Config, error) {
	return func(hello *tls.ClientHelloInfo) (*tls.Config, error) {
		pt := s.snap.Load().ports[key]
		if pt == nil {
			return nil, nil
		}
		l, ok := pt.listeners.first(requestHostname(hello.ServerName))
		if !ok || l.clientCAs == nil {
			return nil, nil
		}
		return &tls.Config{
			MinVersion:     tls.VersionTLS12,
			GetCertificate: s.certificateFor(key),
			ClientCAs:      l.clientCAs,
			ClientAuth:     l.clientAuth,
			NextProtos:     []string{"h2", "http/1.1"},
		}, nil
	}
}

// Shutdown stops accepting connections and waits, up to ctx's deadline, for
// in-flight requests to finish; GET event streams are ended cleanly at an
// event boundary rather than waited for (drain.go). Past the deadline the
// remaining connections are closed and ctx's error is returned. /readyz
// fails from the start of Drain or Shutdown; the admin listener is stopped
// last, once the others are.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	s.stopping.Store(true)
	s.ready.Store(false)
	servers := make([]*http.Server, 0, len(s.sockets))
	for _, sk := range s.sockets {
		servers = append(servers, sk.srv)
	}
	s.sockets = map[portKey]*socket{}
	s.mu.Unlock()

	errs := make(chan error, len(servers))
	for _, srv := range servers {
		go func() {
			err := srv.Shutdown(ctx)
			if err != nil {
				_ = srv.Close()
			}
			errs <- err
		}()
	}
	// After the listeners are closed, so that no stream opens here again.
	if n := s.proxy.streams.endAll(); n > 0 {
		s.log.Info("shutting down: ending event streams, which their clients reopen on another replica", "streams", n)
	}
	var first error
	for range servers {
		if err := <-errs; err != nil && first == nil {
			first = err
		}
	}
	// The detached streams were told to end with the others; those left
	// at ctx's deadline are cut.
	for _, srv := range servers {
		if d := detachedOf(srv); d != nil && d.end(ctx) && first == nil {
			first = ctx.Err()
		}
	}
	drained := make(chan struct{})
	go func() { s.draining.Wait(); close(drained) }()
	select {
	case <-drained:
	case <-ctx.Done():
		if first == nil {
			first = ctx.Err()
		}
	}
	if s.admin != nil {
		if err := s.admin.srv.Shutdown(ctx); err != nil {
			_ = s.admin.srv.Close()
			if first == nil {
				first = err
			}
		}
	}
	return first
}

// Addr returns the bound address of the named listener in the current
// snapshot (useful with port 0), or nil.
func (s *Server) Addr(listenerName string) net.Addr {
	snap := s.snap.Load()
	if snap == nil {
		return nil
	}
	for _, l := range snap.config.Listeners {
		if l.Name != listenerName {
			continue
		}
		s.mu.Lock()
		defer s.mu.Unlock()
		if sk := s.sockets[portKey{address: l.Address, port: l.Port}]; sk != nil {
			return sk.ln.Addr()
		}
		return nil
	}
	return nil
}

// AdminAddr returns the admin listener's address, or nil.
func (s *Server) AdminAddr() net.Addr {
	if s.admin == nil {
		return nil
	}
	return s.admin.ln.Addr()
}

// Ready reports whether a configuration has been applied and the server is
// neither draining nor shutting down.
func (s *Server) Ready() bool { return s.ready.Load() && !s.stopping.Load() }
