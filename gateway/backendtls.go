package gateway

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"slices"
	"strings"
	"sync"
	"syscall"
)

// backendTransports keeps one transport per distinct BackendTLS, shared by
// every snapshot that uses it, so that a reload keeps the pooled
// connections to TLS backends. Transports are cloned from base, the one
// that reaches plain-HTTP backends, or are default transports when base is
// nil (Options.Transport is not an *http.Transport). It is safe for
// concurrent use; a nil *backendTransports builds a transport per call.
type backendTransports struct {
	base       *http.Transport
	trustNames bool // Options.TrustBackendNames, for default transports

	mu    sync.Mutex
	byKey map[string]*http.Transport
}

func newBackendTransports(base *http.Transport, trustNames bool) *backendTransports {
	return &backendTransports{base: base, trustNames: trustNames, byKey: map[string]*http.Transport{}}
}

// backendClientCert is the certificate the gateway presents to backends
// over TLS (Config.BackendClientCertificate), parsed, and a digest of its
// PEM that tells it from another in transport keys.
type backendClientCert struct {
	cert   tls.Certificate
	digest string
}

// parseClientCertificate parses c; nil for nil.
func parseClientCertificate(c *Certificate) (*backendClientCert, error) {
	if c == nil {
		return nil, nil
	}
	pair, err := tls.X509KeyPair([]byte(c.CertificatePEM), []byte(c.PrivateKeyPEM))
	if err != nil {
		return nil, fmt.Errorf("backend client certificate: %w", err)
	}
	sum := sha256.Sum256([]byte(c.CertificatePEM + "\x00" + c.PrivateKeyPEM))
	return &backendClientCert{cert: pair, digest: hex.EncodeToString(sum[:])}, nil
}

// present makes cfg present c to servers that ask for a client
// certificate: always, whatever CAs the server says it accepts (it decides
// whether c will do); a nil c presents none.
func (c *backendClientCert) present(cfg *tls.Config) {
	if c == nil {
		return
	}
	cert := c.cert
	cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &cert, nil }
}

func (c *backendClientCert) key() string {
	if c == nil {
		return ""
	}
	return c.digest
}

// get returns the transport for b, presenting client (nil: no client
// certificate), and the key that names it for retain. b must have a CA:
// see [BackendTLS.hasRoots].
func (t *backendTransports) get(b *BackendTLS, client *backendClientCert) (*http.Transport, string, error) {
	data, err := json.Marshal(b)
	if err != nil {
		return nil, "", err
	}
	sum := sha256.Sum256(append(data, client.key()...))
	key := hex.EncodeToString(sum[:])
	return t.keyed(key, func() (*http.Transport, error) {
		cfg, err := clientTLSConfig(b)
		if err != nil {
			return nil, err
		}
		client.present(cfg)
		tr := t.newTransport()
		tr.TLSClientConfig = cfg
		return tr, nil
	})
}

// https returns the transport that reaches backends of scheme https
// without a BackendTLS (verified against the system's roots, as the
// proxy's own transport does) presenting client, and its key.
func (t *backendTransports) https(client *backendClientCert) (*http.Transport, string, error) {
	return t.keyed("https:"+client.key(), func() (*http.Transport, error) {
		tr := t.newTransport()
		cfg := &tls.Config{MinVersion: tls.VersionTLS12}
		if tr.TLSClientConfig != nil {
			cfg = tr.TLSClientConfig.Clone()
		}
		client.present(cfg)
		tr.TLSClientConfig = cfg
		return tr, nil
	})
}

// keyed returns the transport kept under key, made with build on first use.
func (t *backendTransports) keyed(key string, build func() (*http.Transport, error)) (*http.Transport, string, error) {
	if t != nil {
		t.mu.Lock()
		defer t.mu.Unlock()
		if tr, ok := t.byKey[key]; ok {
			return tr, key, nil
		}
	}
	tr, err := build()
	if err != nil {
		return nil, "", err
	}
	if t != nil {
		t.byKey[key] = tr
	}
	return tr, key, nil
}

// newTransport is a transport of its own for some backends: a clone of the
// base one, or a default one.
func (t *backendTransports) newTransport() *http.Transport {
	switch {
	case t == nil:
		return defaultTransport(false)
	case t.base != nil:
		return t.base.Clone()
	}
	return defaultTransport(t.trustNames)
}

// h2cTransportKey names the h2c transport among the TLS ones.
const h2cTransportKey = "h2c"

// h2c returns the transport that reaches backends with HTTP/2 over
// cleartext TCP (prior knowledge), cloned as TLS transports are.
func (t *backendTransports) h2c() *http.Transport {
	if t != nil {
		t.mu.Lock()
		defer t.mu.Unlock()
		if tr, ok := t.byKey[h2cTransportKey]; ok {
			return tr
		}
	}
	tr := t.newTransport()
	tr.Protocols = new(http.Protocols)
	tr.Protocols.SetUnencryptedHTTP2(true)
	if t != nil {
		t.byKey[h2cTransportKey] = tr
	}
	return tr
}

// retain drops the transports whose keys are not in keep, closing their
// idle connections; requests in flight on them finish normally.
func (t *backendTransports) retain(keep map[string]bool) {
	if t == nil {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	for key, tr := range t.byKey {
		if !keep[key] {
			tr.CloseIdleConnections()
			delete(t.byKey, key)
		}
	}
}

// hasRoots reports whether b names certificates to verify a backend with;
// without them, the policy has no valid CA certificate.
func (b *BackendTLS) hasRoots() bool {
	return b.CACertificatesPEM != "" || b.SystemRoots
}

// check validates b, which has roots.
func (b *BackendTLS) check() error {
	if b.ServerName == "" {
		return errors.New("TLS: serverName is required")
	}
	if b.CACertificatesPEM != "" && b.SystemRoots {
		return errors.New("TLS: caCertificatesPEM and systemRoots exclude each other")
	}
	for i, san := range b.SubjectAltNames {
		if (san.Hostname == "") == (san.URI == "") {
			return fmt.Errorf("TLS: subjectAltNames[%d]: set hostname or uri, not both", i)
		}
	}
	return nil
}

// clientTLSConfig is the TLS configuration that connects to a backend as b
// says.
func clientTLSConfig(b *BackendTLS) (*tls.Config, error) {
	if err := b.check(); err != nil {
		return nil, err
	}
	var roots *x509.CertPool // nil: the system's
	if b.CACertificatesPEM != "" {
		roots = x509.NewCertPool()
		if !roots.AppendCertsFromPEM([]byte(b.CACertificatesPEM)) {
			return nil, errors.New("TLS: caCertificatesPEM holds no certificate")
		}
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: b.ServerName, RootCAs: roots}
	if len(b.SubjectAltNames) > 0 {
		// The standard verification would check ServerName, which the
		// policy's names replace: VerifyConnection checks the chain
		// against the same roots, then the names.
		sans := slices.Clone(b.SubjectAltNames)
		cfg.InsecureSkipVerify = true //nolint:gosec // VerifyConnection verifies the chain and the names below
		cfg.VerifyConnection = func(cs tls.ConnectionState) error {
			return verifySubjectAltNames(cs.PeerCertificates, roots, sans)
		}
	}
	return cfg, nil
}

// verifySubjectAltNames verifies a backend's chain (leaf first) against
// roots (nil: the system's) and that the leaf holds one of sans. Its errors
// are *tls.CertificateVerificationError, as the standard verification's.
func verifySubjectAltNames(chain []*x509.Certificate, roots *x509.CertPool, sans []SubjectAltName) error {
	if len(chain) == 0 {
		return &tls.CertificateVerificationError{Err: errors.New("the backend sent no certificate")}
	}
	intermediates := x509.NewCertPool()
	for _, c := range chain[1:] {
		intermediates.AddCert(c)
	}
	leaf := chain[0]
	if _, err := leaf.Verify(x509.VerifyOptions{
		Roots: roots, Intermediates: intermediates, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}); err != nil {
		return &tls.CertificateVerificationError{UnverifiedCertificates: chain, Err: err}
	}
	var wanted []string
	for _, san := range sans {
		switch {
		case san.Hostname != "":
			if leaf.VerifyHostname(san.Hostname) == nil {
				return nil
			}
			wanted = append(wanted, "DNS:"+san.Hostname)
		case san.URI != "":
			if slices.ContainsFunc(leaf.URIs, func(u *url.URL) bool { return u.String() == san.URI }) {
				return nil
			}
			wanted = append(wanted, "URI:"+san.URI)
		}
	}
	return &tls.CertificateVerificationError{UnverifiedCertificates: chain,
		Err: fmt.Errorf("the certificate holds none of the subject alternative names %s", strings.Join(wanted, ", "))}
}

// isTLSError reports whether err is a failed TLS handshake with a backend:
// a certificate it did not trust, an alert it sent (such as one refusing
// the gateway's client certificate), or an answer that is not TLS at all.
func isTLSError(err error) bool {
	var verify *tls.CertificateVerificationError
	var alert tls.AlertError
	var record tls.RecordHeaderError
	var unknown x509.UnknownAuthorityError
	var hostname x509.HostnameError
	var invalid x509.CertificateInvalidError
	var op *net.OpError
	return errors.As(err, &verify) || errors.As(err, &alert) || errors.As(err, &record) ||
		errors.As(err, &unknown) || errors.As(err, &hostname) || errors.As(err, &invalid) ||
		// An alert the backend sent: with TLS 1.3 one refusing the
		// gateway's client certificate (or its lack of one) arrives after
		// the client's side of the handshake, with the first read.
		(errors.As(err, &op) && op.Op == "remote error")
}

// backendDialer connects to backends. An IP address is dialed as it is:
// the translator decided which ones a backend may have. A host name (an
// ExternalName Service, an FQDN EndpointSlice) is resolved when the
// connection is made and, unless trustNames, as an absolute name (the
// resolver's search domains never complete it into a Service of the
// proxy's cluster), and the addresses no backend may have -- loopback,
// link-local (cloud metadata services), unspecified -- are refused: a name
// whoever writes a Service can choose must not reach the proxy's admin
// port or the node's metadata.
type backendDialer struct {
	dialer     *net.Dialer
	guarded    *net.Dialer
	trustNames bool
}

func newBackendDialer(trustNames bool) *backendDialer {
	base := func() *net.Dialer { return &net.Dialer{Timeout: connectTimeout, KeepAlive: keepAlive} }
	d := &backendDialer{dialer: base(), guarded: base(), trustNames: trustNames}
	d.guarded.Control = func(_, address string, _ syscall.RawConn) error {
		ap, err := netip.ParseAddrPort(address)
		if err != nil {
			return fmt.Errorf("backend address %q: %w", address, err)
		}
		if !isBackendIP(ap.Addr()) {
			return fmt.Errorf("%s is a loopback, link-local or unspecified address, which a backend named by a host name may not have", ap.Addr())
		}
		return nil
	}
	return d
}

// DialContext is http.Transport's DialContext.
func (d *backendDialer) DialContext(ctx context.Context, network, address string) (net.Conn, error) {
	host, port, err := net.SplitHostPort(address)
	if err != nil || d.trustNames {
		return d.dialer.DialContext(ctx, network, address)
	}
	if _, err := netip.ParseAddr(host); err == nil {
		return d.dialer.DialContext(ctx, network, address)
	}
	if !strings.HasSuffix(host, ".") {
		host += "."
	}
	return d.guarded.DialContext(ctx, network, net.JoinHostPort(host, port))
}

// isBackendIP reports whether a name's address may be a backend's: not
// loopback, link-local or unspecified.
func isBackendIP(ip netip.Addr) bool {
	ip = ip.Unmap()
	return !ip.IsUnspecified() && !ip.IsLoopback() && !ip.IsLinkLocalUnicast() && !ip.IsLinkLocalMulticast()
}

// backendRoundTripper sends each request through the transport of the
// backend it was sent to: the backend's TLS transport, or next; a GET for
// an event stream that may be detached goes through stream, when set
// (streamdial.go).
type backendRoundTripper struct {
	next   http.RoundTripper
	stream *streamRoundTripper
}

func (rt *backendRoundTripper) RoundTrip(r *http.Request) (*http.Response, error) {
	x := exchangeOf(r)
	if rt.stream != nil && wantsStream(r, x) {
		return rt.stream.RoundTrip(r)
	}
	next := rt.next
	if x != nil && x.backend != nil && x.backend.transport != nil {
		next = x.backend.transport
	}
	if x != nil && x.rule != nil && x.rule.retry != nil {
		return x.rule.retry.roundTrip(next, r)
	}
	return next.RoundTrip(r)
}
