package pki

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"net/url"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/types"
)

var (
	now = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	gwA = types.NamespacedName{Namespace: "team-a", Name: "gw-a"}
	gwB = types.NamespacedName{Namespace: "team-b", Name: "gw.b"}
	day = 24 * time.Hour
)

func mustCA(t *testing.T) *CA {
	t.Helper()
	ca, err := NewCA(now)
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

func TestNewCAIsASelfSignedCAThatParsesBack(t *testing.T) {
	ca := mustCA(t)
	cert := ca.Certificate()
	if cert.Subject.CommonName != CACommonName {
		t.Errorf("CommonName = %q, want %q", cert.Subject.CommonName, CACommonName)
	}
	if !cert.IsCA {
		t.Error("IsCA = false")
	}
	if got, want := cert.NotAfter, now.Add(CALifetime); !got.Equal(want) {
		t.Errorf("NotAfter = %v, want %v", got, want)
	}
	if pub, ok := cert.PublicKey.(*ecdsa.PublicKey); !ok || pub.Curve != elliptic.P256() {
		t.Errorf("public key = %T, want ECDSA P-256", cert.PublicKey)
	}
	if _, err := cert.Verify(x509.VerifyOptions{Roots: ca.Pool(), CurrentTime: now}); err != nil {
		t.Errorf("the CA does not verify against its own pool: %v", err)
	}

	parsed, err := ParseCA(ca.CertPEM(), ca.KeyPEM())
	if err != nil {
		t.Fatalf("ParseCA(NewCA's PEM): %v", err)
	}
	if !parsed.Certificate().Equal(cert) {
		t.Error("ParseCA returned another certificate")
	}
}

func TestParseCARejects(t *testing.T) {
	ca := mustCA(t)
	other := mustCA(t)
	leafPEM, leafKeyPEM, err := ca.IssueClient(gwA, now, day)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name          string
		cert, key     []byte
		wantErrSubstr string
	}{
		{"garbage certificate", []byte("not PEM"), ca.KeyPEM(), "no PEM CERTIFICATE"},
		{"garbage key", ca.CertPEM(), []byte("not PEM"), "no PEM PRIVATE KEY"},
		{"the key of another CA", ca.CertPEM(), other.KeyPEM(), "does not belong"},
		{"a leaf certificate", leafPEM, leafKeyPEM, "not a CA certificate"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseCA(tt.cert, tt.key)
			if err == nil || !strings.Contains(err.Error(), tt.wantErrSubstr) {
				t.Errorf("ParseCA: error %v, want one containing %q", err, tt.wantErrSubstr)
			}
		})
	}
}

func TestParseCAReadsSEC1Keys(t *testing.T) {
	ca := mustCA(t)
	der, err := x509.MarshalECPrivateKey(ca.key.(*ecdsa.PrivateKey))
	if err != nil {
		t.Fatal(err)
	}
	sec1 := pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der})
	if _, err := ParseCA(ca.CertPEM(), sec1); err != nil {
		t.Errorf("ParseCA with a SEC 1 key: %v", err)
	}
}

func TestIssueServerVerifiesForItsNamesOnly(t *testing.T) {
	ca := mustCA(t)
	cert, err := ca.IssueServer([]string{"toolgate-controller.toolgate-system.svc"}, []net.IP{net.IPv4(127, 0, 0, 1)}, now, day)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := cert.PrivateKey.(*ecdsa.PrivateKey); !ok {
		t.Errorf("private key = %T, want *ecdsa.PrivateKey", cert.PrivateKey)
	}
	tests := []struct {
		name   string
		opts   x509.VerifyOptions
		verify bool
	}{
		{"its DNS name", x509.VerifyOptions{DNSName: "toolgate-controller.toolgate-system.svc"}, true},
		{"its IP address", x509.VerifyOptions{DNSName: "127.0.0.1"}, true},
		{"another name", x509.VerifyOptions{DNSName: "evil.example.com"}, false},
		{"as a client certificate", x509.VerifyOptions{KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}, false},
		{"after it expired", x509.VerifyOptions{CurrentTime: now.Add(2 * day)}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			opts := tt.opts
			opts.Roots = ca.Pool()
			if opts.CurrentTime.IsZero() {
				opts.CurrentTime = now
			}
			_, err := cert.Leaf.Verify(opts)
			if (err == nil) != tt.verify {
				t.Errorf("Verify: %v, want verified = %v", err, tt.verify)
			}
		})
	}
}

func TestIssueServerWithoutNamesFails(t *testing.T) {
	if _, err := mustCA(t).IssueServer(nil, nil, now, day); err == nil {
		t.Error("IssueServer(nil, nil) succeeded")
	}
}

func TestLeavesNeverOutliveTheCA(t *testing.T) {
	ca := mustCA(t)
	certPEM, _, err := ca.IssueClient(gwA, now, 2*CALifetime)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := parseCertPEM(certPEM)
	if err != nil {
		t.Fatal(err)
	}
	if !cert.NotAfter.Equal(ca.Certificate().NotAfter) {
		t.Errorf("NotAfter = %v, want the CA's %v", cert.NotAfter, ca.Certificate().NotAfter)
	}
}

func TestClientCertificateNamesItsGateway(t *testing.T) {
	ca := mustCA(t)
	for _, gw := range []types.NamespacedName{gwA, gwB} {
		certPEM, keyPEM, err := ca.IssueClient(gw, now, ClientCertLifetime)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := parseKeyPEM(keyPEM); err != nil {
			t.Errorf("key of %s: %v", gw, err)
		}
		cert, err := parseCertPEM(certPEM)
		if err != nil {
			t.Fatal(err)
		}
		if len(cert.URIs) != 1 || cert.URIs[0].String() != GatewayURI(gw).String() {
			t.Errorf("URIs = %v, want [%v]", cert.URIs, GatewayURI(gw))
		}
		got, err := GatewayOf(cert)
		if err != nil || got != gw {
			t.Errorf("GatewayOf = %v, %v; want %v", got, err, gw)
		}
	}
}

func TestIssueClientRefusesInvalidGatewayNames(t *testing.T) {
	ca := mustCA(t)
	for _, gw := range []types.NamespacedName{
		{Namespace: "", Name: "gw"},
		{Namespace: "ns", Name: ""},
		{Namespace: "a/b", Name: "gw"},
		{Namespace: "ns", Name: "gw/../x"},
	} {
		if _, _, err := ca.IssueClient(gw, now, day); err == nil {
			t.Errorf("IssueClient(%q) succeeded", gw)
		}
	}
}

func TestGatewayURI(t *testing.T) {
	if got, want := GatewayURI(gwA).String(), "spiffe://toolgate.dev/ns/team-a/gateway/gw-a"; got != want {
		t.Errorf("GatewayURI = %q, want %q", got, want)
	}
}

func TestGatewayOf(t *testing.T) {
	parse := func(s string) *url.URL {
		u, err := url.Parse(s)
		if err != nil {
			t.Fatal(err)
		}
		return u
	}
	tests := []struct {
		name    string
		uris    []string
		want    types.NamespacedName
		wantErr string
	}{
		{"one Gateway", []string{"spiffe://toolgate.dev/ns/team-a/gateway/gw-a"}, gwA, ""},
		{"one Gateway among foreign URIs", []string{"https://example.com/x", "spiffe://cluster.local/ns/team-a/sa/default", "spiffe://toolgate.dev/ns/team-a/gateway/gw-a"}, gwA, ""},
		{"no URI", nil, types.NamespacedName{}, "names no Gateway"},
		{"only foreign URIs", []string{"spiffe://cluster.local/ns/team-a/gateway/gw-a"}, types.NamespacedName{}, "names no Gateway"},
		{"two Gateways", []string{"spiffe://toolgate.dev/ns/team-a/gateway/gw-a", "spiffe://toolgate.dev/ns/team-b/gateway/gw.b"}, types.NamespacedName{}, "names 2 Gateways"},
		{"the same Gateway twice", []string{"spiffe://toolgate.dev/ns/team-a/gateway/gw-a", "spiffe://toolgate.dev/ns/team-a/gateway/gw-a"}, types.NamespacedName{}, "names 2 Gateways"},
		{"a path too long", []string{"spiffe://toolgate.dev/ns/team-a/gateway/gw-a/x"}, types.NamespacedName{}, "not of the form"},
		{"a path too short", []string{"spiffe://toolgate.dev/ns/team-a"}, types.NamespacedName{}, "not of the form"},
		{"another kind", []string{"spiffe://toolgate.dev/ns/team-a/route/gw-a"}, types.NamespacedName{}, "not of the form"},
		{"a query", []string{"spiffe://toolgate.dev/ns/team-a/gateway/gw-a?x=1"}, types.NamespacedName{}, "not of the form"},
		{"an invalid namespace", []string{"spiffe://toolgate.dev/ns/Team_A/gateway/gw-a"}, types.NamespacedName{}, "Gateway namespace"},
		{"an empty name", []string{"spiffe://toolgate.dev/ns/team-a/gateway/"}, types.NamespacedName{}, "Gateway name"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cert := &x509.Certificate{Subject: pkix.Name{CommonName: "test"}}
			for _, s := range tt.uris {
				cert.URIs = append(cert.URIs, parse(s))
			}
			got, err := GatewayOf(cert)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Errorf("GatewayOf = %v, %v; want an error containing %q", got, err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Errorf("GatewayOf = %v, %v; want %v", got, err, tt.want)
			}
		})
	}
}

func TestClientCertCurrent(t *testing.T) {
	ca := mustCA(t)
	other := mustCA(t)
	issue := func(ca *CA, gw types.NamespacedName, validFor time.Duration) []byte {
		certPEM, _, err := ca.IssueClient(gw, now, validFor)
		if err != nil {
			t.Fatal(err)
		}
		return certPEM
	}
	fresh := issue(ca, gwA, ClientCertLifetime)
	server, err := ca.IssueServer([]string{"controller"}, nil, now, ClientCertLifetime)
	if err != nil {
		t.Fatal(err)
	}
	serverPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: server.Certificate[0]})

	tests := []struct {
		name string
		cert []byte
		gw   types.NamespacedName
		at   time.Time
		want bool
	}{
		{"a fresh certificate", fresh, gwA, now, true},
		{"a certificate just outside its renewal window", fresh, gwA, now.Add(ClientCertLifetime - ClientCertRenewBefore - time.Hour), true},
		{"a certificate inside its renewal window", fresh, gwA, now.Add(ClientCertLifetime - ClientCertRenewBefore + time.Hour), false},
		{"an expired certificate", fresh, gwA, now.Add(ClientCertLifetime + time.Hour), false},
		{"a certificate for another Gateway", fresh, gwB, now, false},
		{"a certificate from another CA", issue(other, gwA, ClientCertLifetime), gwA, now, false},
		{"a serving certificate", serverPEM, gwA, now, false},
		{"garbage", []byte("garbage"), gwA, now, false},
		{"nothing", nil, gwA, now, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := ca.ClientCertCurrent(tt.cert, tt.gw, tt.at, ClientCertRenewBefore); got != tt.want {
				t.Errorf("ClientCertCurrent = %v, want %v", got, tt.want)
			}
		})
	}
}

// ClientCertRenewAt says until when a certificate stays current: the
// renewal window before its end, or before the CA's end when that comes
// first; ClientCertCurrent agrees on either side of it.
func TestClientCertRenewAt(t *testing.T) {
	ca := mustCA(t)
	for _, tt := range []struct {
		name     string
		validFor time.Duration
	}{
		{"a certificate that ends before the CA", ClientCertLifetime},
		{"a certificate cut at the CA's end", 200 * 365 * 24 * time.Hour},
	} {
		t.Run(tt.name, func(t *testing.T) {
			certPEM, _, err := ca.IssueClient(gwA, now, tt.validFor)
			if err != nil {
				t.Fatal(err)
			}
			cert, err := parseCertPEM(certPEM)
			if err != nil {
				t.Fatal(err)
			}
			end := cert.NotAfter
			if ca.cert.NotAfter.Before(end) {
				end = ca.cert.NotAfter
			}
			at, ok := ca.ClientCertRenewAt(certPEM, gwA, now, ClientCertRenewBefore)
			if !ok || !at.Equal(end.Add(-ClientCertRenewBefore)) {
				t.Fatalf("ClientCertRenewAt = %v, %v; want %v, true", at, ok, end.Add(-ClientCertRenewBefore))
			}
			if !ca.ClientCertCurrent(certPEM, gwA, at.Add(-time.Second), ClientCertRenewBefore) {
				t.Error("not current a second before its renewal time")
			}
			if ca.ClientCertCurrent(certPEM, gwA, at, ClientCertRenewBefore) {
				t.Error("still current at its renewal time")
			}
			if _, ok := ca.ClientCertRenewAt(certPEM, gwB, now, ClientCertRenewBefore); ok {
				t.Error("current for another Gateway")
			}
		})
	}
}

// A certificate whose URI SAN names a Gateway but which the CA did not
// issue is not current, however well-formed.
func TestClientCertCurrentChecksTheSignature(t *testing.T) {
	ca := mustCA(t)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      ca.Certificate().Subject, // impersonates the CA's name
		URIs:         []*url.URL{GatewayURI(gwA)},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(ClientCertLifetime),
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	forged := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	if ca.ClientCertCurrent(forged, gwA, now, ClientCertRenewBefore) {
		t.Error("a self-signed certificate is current")
	}
}
