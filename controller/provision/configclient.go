package provision

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"maps"
	"slices"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/toolgate/toolgate/controller/pki"
)

// CACertKey is the key of the client certificate Secret's data that holds
// the CA certificate, beside corev1.TLSCertKey and corev1.TLSPrivateKeyKey.
const CACertKey = "ca.crt"

// ConfigClientSecretName names the Secret holding the client certificate
// with which gw's proxies authenticate to the controller's configuration
// stream.
func ConfigClientSecretName(gw *gwv1.Gateway) string {
	return boundedName(Names(gw).Name+"-config", gw.Namespace+"/"+gw.Name+"/config")
}

// ConfigClientSecret is the Secret of gw's proxies' client certificate: a
// kubernetes.io/tls Secret with the certificate and key in tls.crt and
// tls.key, and in ca.crt the certificate of the CA that issued it, owned by
// gw.
func ConfigClientSecret(gw *gwv1.Gateway, caCertPEM, certPEM, keyPEM []byte) *corev1.Secret {
	meta := objectMeta(gw, Names(gw))
	meta.Name = ConfigClientSecretName(gw)
	return &corev1.Secret{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Secret"},
		ObjectMeta: meta,
		Type:       corev1.SecretTypeTLS,
		Data: map[string][]byte{
			corev1.TLSCertKey:       certPEM,
			corev1.TLSPrivateKeyKey: keyPEM,
			CACertKey:               caCertPEM,
		},
	}
}

// ensureConfigClientSecret gives gw's proxies a current client certificate:
// it issues one, and writes the Secret ConfigClientSecretName, only when the
// Secret is missing or its certificate will not do (see clientCertCurrent).
// A current Secret is not written at all, so that reconciling many Gateways
// costs no writes and the proxies' mounted files stay as they are.
//
// The Secret is read through the Provisioner's client, a cache in practice:
// right after a write the cache may not have it yet. Creating a Secret that
// already exists is then not an error (its creation triggers another
// reconcile, which checks it), and updating an outdated copy fails with a
// conflict, which the caller retries.
func (p *Provisioner) ensureConfigClientSecret(ctx context.Context, gw *gwv1.Gateway, now time.Time) error {
	gateway := types.NamespacedName{Namespace: gw.Namespace, Name: gw.Name}
	key := types.NamespacedName{Namespace: gw.Namespace, Name: ConfigClientSecretName(gw)}
	var existing corev1.Secret
	err := p.client.Get(ctx, key, &existing)
	found := err == nil
	switch {
	case apierrors.IsNotFound(err):
	case err != nil:
		return fmt.Errorf("read Secret %s: %w", key, err)
	case existing.Type != corev1.SecretTypeTLS:
		// The type of a Secret cannot be changed by an update.
		return fmt.Errorf("the Secret %s has type %s, not %s: delete it and toolgate creates a new one", key, existing.Type, corev1.SecretTypeTLS)
	case p.clientCertCurrent(&existing, gateway, now):
		return nil
	}

	certPEM, keyPEM, err := p.ca.IssueClient(gateway, now, pki.ClientCertLifetime)
	if err != nil {
		return fmt.Errorf("issue the client certificate of Gateway %s: %w", gateway, err)
	}
	desired := ConfigClientSecret(gw, p.ca.CertPEM(), certPEM, keyPEM)
	if !found {
		if err := p.client.Create(ctx, desired); err != nil && !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("create Secret %s: %w", key, err)
		}
		return nil
	}

	// Re-issue in place: replace the data, and set toolgate's labels,
	// annotation and controlling owner while leaving what others added.
	updated := existing.DeepCopy()
	updated.Data = desired.Data
	updated.StringData = nil
	if updated.Labels == nil {
		updated.Labels = map[string]string{}
	}
	maps.Copy(updated.Labels, desired.Labels)
	if updated.Annotations == nil {
		updated.Annotations = map[string]string{}
	}
	maps.Copy(updated.Annotations, desired.Annotations)
	updated.OwnerReferences = append(slices.DeleteFunc(slices.Clone(updated.OwnerReferences), func(r metav1.OwnerReference) bool {
		return ptr.Deref(r.Controller, false) || r.UID == gw.UID
	}), desired.OwnerReferences...)
	if err := p.client.Update(ctx, updated); err != nil {
		return fmt.Errorf("re-issue the client certificate in Secret %s: %w", key, err)
	}
	return nil
}

// clientCertCurrent reports whether the client certificate in s will do
// for the Gateway gateway at now: its ca.crt is the current CA's (a new CA
// means every certificate must be re-issued), its key matches its
// certificate, and the certificate, issued by the CA for gateway, is valid
// for longer than pki.ClientCertRenewBefore. Renewing that far ahead leaves
// the kubelet ample time to update the proxies' mounted files.
func (p *Provisioner) clientCertCurrent(s *corev1.Secret, gateway types.NamespacedName, now time.Time) bool {
	// A version of the Secret found current stays so until its renewal
	// time: checking it again (a signature, a key pair) on every
	// reconcile of every Gateway would cost most of a reconcile.
	p.mu.Lock()
	c, ok := p.certs[gateway]
	p.mu.Unlock()
	if ok && s.ResourceVersion != "" && c.uid == s.UID && c.resourceVersion == s.ResourceVersion && now.Before(c.renewAt) {
		return true
	}
	certPEM, keyPEM := s.Data[corev1.TLSCertKey], s.Data[corev1.TLSPrivateKeyKey]
	if !bytes.Equal(s.Data[CACertKey], p.ca.CertPEM()) {
		return false
	}
	renewAt, current := p.ca.ClientCertRenewAt(certPEM, gateway, now, pki.ClientCertRenewBefore)
	if !current {
		return false
	}
	if _, err := tls.X509KeyPair(certPEM, keyPEM); err != nil {
		return false
	}
	p.mu.Lock()
	p.certs[gateway] = checkedCert{uid: s.UID, resourceVersion: s.ResourceVersion, renewAt: renewAt}
	p.mu.Unlock()
	return true
}

// checkedCert is a version of a Gateway's client certificate Secret found
// current, and until when it stays so.
type checkedCert struct {
	uid             types.UID
	resourceVersion string
	renewAt         time.Time
}
