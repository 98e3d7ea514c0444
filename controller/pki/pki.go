// Package pki is the certificate authority of the config stream: the
// controller keeps one CA in a Secret, serves the stream with a certificate
// it issues, and gives each Gateway's proxies a client certificate naming
// their Gateway, so that a proxy reads its own Gateway's configuration and
// no other.
package pki

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/url"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/validation"
)

// Keys of the CA Secret's data.
const (
	CACertKey = "ca.crt"
	CAKeyKey  = "ca.key"
)

// Lifetimes of the certificates the controller issues.
const (
	// CALifetime is how long a new CA is valid. Renewing a CA means
	// re-issuing every certificate, so it is long; deleting the Secret
	// does it by hand.
	CALifetime = 10 * 365 * 24 * time.Hour
	// ClientCertLifetime is how long a proxy's client certificate is valid.
	ClientCertLifetime = 90 * 24 * time.Hour
	// ClientCertRenewBefore is how long before its expiry a client
	// certificate is re-issued: long enough for the kubelet to deliver the
	// new one to every proxy, and for a controller that was down a while.
	ClientCertRenewBefore = 30 * 24 * time.Hour
)

// CACommonName is the subject of every CA that NewCA creates.
const CACommonName = "toolgate config stream CA"

// clockSkew backdates every certificate, so that one issued a moment ago
// is already valid on a host whose clock is a little behind.
const clockSkew = 5 * time.Minute

// trustDomain and the path below it make up the identity of a Gateway's
// proxies, in SPIFFE form so that the usual tools can read it.
const trustDomain = "toolgate.dev"

// CA is a certificate authority: its certificate and private key.
type CA struct {
	cert    *x509.Certificate
	key     crypto.Signer
	certPEM []byte
	keyPEM  []byte
}

// NewCA creates a self-signed CA, valid for CALifetime from now.
func NewCA(now time.Time) (*CA, error) {
	key, err := newKey()
	if err != nil {
		return nil, err
	}
	serial, err := newSerial()
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: CACommonName},
		NotBefore:             now.Add(-clockSkew),
		NotAfter:              now.Add(CALifetime),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		// The CA signs leaves only: no intermediate can chain to it.
		MaxPathLen:     0,
		MaxPathLenZero: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, fmt.Errorf("create CA certificate: %w", err)
	}
	keyPEM, err := encodeKey(key)
	if err != nil {
		return nil, err
	}
	return ParseCA(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), keyPEM)
}

// ParseCA reads a CA from its PEM certificate and PEM private key (PKCS #8
// or SEC 1). The certificate must be a CA certificate and the key its key.
func ParseCA(certPEM, keyPEM []byte) (*CA, error) {
	cert, err := parseCertPEM(certPEM)
	if err != nil {
		return nil, fmt.Errorf("CA certificate: %w", err)
	}
	if !cert.IsCA || cert.KeyUsage&x509.KeyUsageCertSign == 0 {
		return nil, fmt.Errorf("CA certificate %q is not a CA certificate", cert.Subject.CommonName)
	}
	key, err := parseKeyPEM(keyPEM)
	if err != nil {
		return nil, fmt.Errorf("CA key: %w", err)
	}
	pub, ok := key.Public().(interface{ Equal(crypto.PublicKey) bool })
	if !ok || !pub.Equal(cert.PublicKey) {
		return nil, errors.New("the CA key does not belong to the CA certificate")
	}
	return &CA{cert: cert, key: key, certPEM: certPEM, keyPEM: keyPEM}, nil
}

// CertPEM returns the CA certificate in PEM, for the proxies' ca.crt.
func (ca *CA) CertPEM() []byte { return ca.certPEM }

// KeyPEM returns the CA private key in PEM, for the CA Secret only.
func (ca *CA) KeyPEM() []byte { return ca.keyPEM }

// Certificate returns the parsed CA certificate.
func (ca *CA) Certificate() *x509.Certificate { return ca.cert }

// Pool returns a new pool holding only the CA certificate.
func (ca *CA) Pool() *x509.CertPool {
	pool := x509.NewCertPool()
	pool.AddCert(ca.cert)
	return pool
}

// IssueServer issues a serving certificate for dnsNames and ips, valid for
// validFor from now (at most until the CA expires).
func (ca *CA) IssueServer(dnsNames []string, ips []net.IP, now time.Time, validFor time.Duration) (tls.Certificate, error) {
	if len(dnsNames) == 0 && len(ips) == 0 {
		return tls.Certificate{}, errors.New("issue server certificate: no DNS name or IP address to issue it for")
	}
	cn := ""
	if len(dnsNames) > 0 {
		cn = dnsNames[0]
	}
	key, err := newKey()
	if err != nil {
		return tls.Certificate{}, err
	}
	tmpl := &x509.Certificate{
		Subject:     pkix.Name{CommonName: cn},
		DNSNames:    dnsNames,
		IPAddresses: ips,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	leaf, der, err := ca.issue(tmpl, key, now, validFor)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("issue server certificate for %v %v: %w", dnsNames, ips, err)
	}
	// The chain stops before the CA: the client holds it already.
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, nil
}

// IssueClient issues the client certificate of gw's proxies, valid for
// validFor from now (at most until the CA expires). Its identity is one
// URI SAN, GatewayURI(gw).
func (ca *CA) IssueClient(gw types.NamespacedName, now time.Time, validFor time.Duration) (certPEM, keyPEM []byte, err error) {
	if err := validateGateway(gw); err != nil {
		return nil, nil, fmt.Errorf("issue client certificate: %w", err)
	}
	key, err := newKey()
	if err != nil {
		return nil, nil, err
	}
	tmpl := &x509.Certificate{
		// The CommonName is for people reading the certificate; the URI
		// SAN is what the server checks.
		Subject:     pkix.Name{CommonName: gw.String()},
		URIs:        []*url.URL{GatewayURI(gw)},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	_, der, err := ca.issue(tmpl, key, now, validFor)
	if err != nil {
		return nil, nil, fmt.Errorf("issue client certificate for Gateway %s: %w", gw, err)
	}
	keyPEM, err = encodeKey(key)
	if err != nil {
		return nil, nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), keyPEM, nil
}

// issue signs a leaf certificate from tmpl for key.
func (ca *CA) issue(tmpl *x509.Certificate, key crypto.Signer, now time.Time, validFor time.Duration) (*x509.Certificate, []byte, error) {
	if validFor <= 0 {
		return nil, nil, fmt.Errorf("validity %v is not positive", validFor)
	}
	serial, err := newSerial()
	if err != nil {
		return nil, nil, err
	}
	tmpl.SerialNumber = serial
	tmpl.NotBefore = now.Add(-clockSkew)
	tmpl.NotAfter = now.Add(validFor)
	// A leaf outliving its CA would only look valid: the chain fails when
	// the CA expires, and ClientCertCurrent would not see it coming.
	if tmpl.NotAfter.After(ca.cert.NotAfter) {
		tmpl.NotAfter = ca.cert.NotAfter
	}
	tmpl.KeyUsage = x509.KeyUsageDigitalSignature
	tmpl.BasicConstraintsValid = true
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, key.Public(), ca.key)
	if err != nil {
		return nil, nil, err
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, nil, err
	}
	return leaf, der, nil
}

// GatewayURI is the identity of gw's proxies:
// spiffe://toolgate.dev/ns/NAMESPACE/gateway/NAME.
func GatewayURI(gw types.NamespacedName) *url.URL {
	return &url.URL{Scheme: "spiffe", Host: trustDomain, Path: "/ns/" + gw.Namespace + "/gateway/" + gw.Name}
}

// GatewayOf reads the Gateway that a verified client certificate names in
// its URI SANs. URIs outside toolgate's trust domain are ignored; it is an
// error if the certificate names no Gateway, several, or one malformed.
func GatewayOf(cert *x509.Certificate) (types.NamespacedName, error) {
	var found []types.NamespacedName
	for _, u := range cert.URIs {
		if u.Scheme != "spiffe" || u.Host != trustDomain {
			continue
		}
		gw, err := parseGatewayURI(u)
		if err != nil {
			return types.NamespacedName{}, err
		}
		found = append(found, gw)
	}
	switch len(found) {
	case 0:
		return types.NamespacedName{}, fmt.Errorf("certificate %q names no Gateway (no %s://%s/ URI)", cert.Subject.CommonName, "spiffe", trustDomain)
	case 1:
		return found[0], nil
	default:
		return types.NamespacedName{}, fmt.Errorf("certificate %q names %d Gateways, want one", cert.Subject.CommonName, len(found))
	}
}

func parseGatewayURI(u *url.URL) (types.NamespacedName, error) {
	parts := strings.Split(u.Path, "/")
	if u.User != nil || u.RawQuery != "" || u.Fragment != "" || u.Opaque != "" ||
		len(parts) != 5 || parts[0] != "" || parts[1] != "ns" || parts[3] != "gateway" {
		return types.NamespacedName{}, fmt.Errorf("URI %q is not of the form spiffe://%s/ns/NAMESPACE/gateway/NAME", u, trustDomain)
	}
	gw := types.NamespacedName{Namespace: parts[2], Name: parts[4]}
	if err := validateGateway(gw); err != nil {
		return types.NamespacedName{}, fmt.Errorf("URI %q: %w", u, err)
	}
	return gw, nil
}

// validateGateway checks gw's namespace and name as Kubernetes does, so
// that an identity can never hold a path separator or other surprise.
func validateGateway(gw types.NamespacedName) error {
	if errs := validation.IsDNS1123Label(gw.Namespace); len(errs) > 0 {
		return fmt.Errorf("Gateway namespace %q: %s", gw.Namespace, strings.Join(errs, "; "))
	}
	if errs := validation.IsDNS1123Subdomain(gw.Name); len(errs) > 0 {
		return fmt.Errorf("Gateway name %q: %s", gw.Name, strings.Join(errs, "; "))
	}
	return nil
}

// ClientCertCurrent reports whether certPEM is a client certificate that
// this CA issued for gw, valid now and still past now+renewBefore. The
// provisioner issues a new one otherwise: after the CA changed, when the
// certificate nears its expiry, or when it names another Gateway.
func (ca *CA) ClientCertCurrent(certPEM []byte, gw types.NamespacedName, now time.Time, renewBefore time.Duration) bool {
	_, ok := ca.ClientCertRenewAt(certPEM, gw, now, renewBefore)
	return ok
}

// ClientCertRenewAt returns, for a certificate that is current at now
// (ClientCertCurrent), the time until which it stays current: renewBefore
// before it or this CA expires, whichever comes first. ok is false when
// it is not current at now.
func (ca *CA) ClientCertRenewAt(certPEM []byte, gw types.NamespacedName, now time.Time, renewBefore time.Duration) (at time.Time, ok bool) {
	cert, err := parseCertPEM(certPEM)
	if err != nil {
		return time.Time{}, false
	}
	if _, err := cert.Verify(x509.VerifyOptions{
		Roots:       ca.Pool(),
		CurrentTime: now,
		KeyUsages:   []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}); err != nil {
		return time.Time{}, false
	}
	if !cert.NotAfter.After(now.Add(renewBefore)) {
		return time.Time{}, false
	}
	if named, err := GatewayOf(cert); err != nil || named != gw {
		return time.Time{}, false
	}
	end := cert.NotAfter
	if ca.cert.NotAfter.Before(end) {
		end = ca.cert.NotAfter
	}
	return end.Add(-renewBefore), true
}

func newKey() (*ecdsa.PrivateKey, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate ECDSA P-256 key: %w", err)
	}
	return key, nil
}

// newSerial returns a random 128-bit serial number, as RFC 5280 allows
// (at most 20 octets, positive).
func newSerial() (*big.Int, error) {
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
	if err != nil {
		return nil, fmt.Errorf("generate serial number: %w", err)
	}
	return serial.Add(serial, big.NewInt(1)), nil
}

func encodeKey(key crypto.Signer) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("encode private key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// parseCertPEM reads the first certificate of data.
func parseCertPEM(data []byte) (*x509.Certificate, error) {
	for {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			return nil, errors.New("no PEM CERTIFICATE block")
		}
		if block.Type == "CERTIFICATE" {
			cert, err := x509.ParseCertificate(block.Bytes)
			if err != nil {
				return nil, fmt.Errorf("parse certificate: %w", err)
			}
			return cert, nil
		}
	}
}

// parseKeyPEM reads the first private key of data, PKCS #8 or SEC 1.
func parseKeyPEM(data []byte) (crypto.Signer, error) {
	for {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			return nil, errors.New("no PEM PRIVATE KEY or EC PRIVATE KEY block")
		}
		switch block.Type {
		case "PRIVATE KEY":
			key, err := x509.ParsePKCS8PrivateKey(block.Bytes)
			if err != nil {
				return nil, fmt.Errorf("parse PKCS #8 private key: %w", err)
			}
			signer, ok := key.(crypto.Signer)
			if !ok {
				return nil, fmt.Errorf("private key of type %T cannot sign", key)
			}
			return signer, nil
		case "EC PRIVATE KEY":
			key, err := x509.ParseECPrivateKey(block.Bytes)
			if err != nil {
				return nil, fmt.Errorf("parse EC private key: %w", err)
			}
			return key, nil
		}
	}
}
