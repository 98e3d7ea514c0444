package gateway

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"net/http"
	"testing"
	"time"
)

// clientCertificate is a self-signed client certificate: its own CA.
func clientCertificate(t *testing.T, name string) (tls.Certificate, string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
}

// An HTTPS listener with client validation admits clients whose
// certificate chains to its CA; others fail the handshake, unless the
// listener falls back to letting them in.
func TestHTTPSListenersVerifyClientCertificates(t *testing.T) {
	trusted, trustedPEM := clientCertificate(t, "trusted")
	stranger, _ := clientCertificate(t, "stranger")
	for _, tc := range []struct {
		name     string
		fallback bool
		want     map[string]bool // by client: whether it gets an answer
	}{
		{"AllowValidOnly", false, map[string]bool{"trusted": true, "stranger": false, "none": false}},
		{"AllowInsecureFallback", true, map[string]bool{"trusted": true, "stranger": true, "none": true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			certs := testCertificates(t, "mcp.example.com")
			s := newServer(t, Options{})
			l := Listener{Name: "tls", Address: "127.0.0.1", Protocol: ProtocolHTTPS, Certificates: certs,
				ClientValidation: &ClientValidation{CACertificatesPEM: trustedPEM, AllowInsecureFallback: tc.fallback},
				VirtualHosts:     []VirtualHost{{Routes: []Route{{Namespace: "ns", Name: "r", Rules: []Rule{{Backends: []Backend{backendOf("b", 1, echoBackend(t, "b"))}}}}}}}}
			mustApply(t, s, &Config{Listeners: []Listener{l}})
			url := "https://mcp.example.com:" + portOf(t, s, "tls") + "/"
			for client, cert := range map[string]*tls.Certificate{"trusted": &trusted, "stranger": &stranger, "none": nil} {
				cfg := &tls.Config{RootCAs: certPool(t, certs...), ServerName: "mcp.example.com", MinVersion: tls.VersionTLS12}
				if cert != nil {
					cfg.Certificates = []tls.Certificate{*cert}
				}
				tr := &http.Transport{TLSClientConfig: cfg, DialContext: dialTo(s.Addr("tls").String())}
				res, err := (&http.Client{Transport: tr, Timeout: 10 * time.Second}).Get(url)
				if err == nil {
					_ = res.Body.Close()
				}
				tr.CloseIdleConnections()
				if got := err == nil && res.StatusCode == http.StatusOK; got != tc.want[client] {
					t.Errorf("client %s: answered %v (%v), want %v", client, got, err, tc.want[client])
				}
			}
		})
	}
}

// portOf is the port the named listener bound.
func portOf(t *testing.T, s *Server, listener string) string {
	t.Helper()
	a := s.Addr(listener)
	if a == nil {
		t.Fatalf("listener %q is not bound", listener)
	}
	_, port, _ := net.SplitHostPort(a.String())
	return port
}

// dialTo dials addr whatever the host asked for.
func dialTo(addr string) func(ctx context.Context, network, _ string) (net.Conn, error) {
	return func(ctx context.Context, network, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, network, addr)
	}
}
