package pki

import (
	"context"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// LoadOrCreateCA reads the CA from the Secret nn (keys CACertKey and
// CAKeyKey), creating the Secret with a new CA when it does not exist.
// Controller replicas starting together may race to create it: the loser
// gets AlreadyExists and reads the winner's Secret, so all of them end up
// with one CA. A Secret that exists but holds no valid CA is an error that
// says to delete it; LoadOrCreateCA never overwrites it, since that would
// cut off every proxy holding a certificate from the old CA.
func LoadOrCreateCA(ctx context.Context, c client.Client, nn types.NamespacedName) (*CA, error) {
	var secret corev1.Secret
	err := c.Get(ctx, nn, &secret)
	if err == nil {
		return caFromSecret(&secret, time.Now())
	}
	if !apierrors.IsNotFound(err) {
		return nil, fmt.Errorf("read CA Secret %s: %w", nn, err)
	}

	ca, err := NewCA(time.Now())
	if err != nil {
		return nil, err
	}
	secret = corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{
			Namespace: nn.Namespace,
			Name:      nn.Name,
			Labels: map[string]string{
				"app.kubernetes.io/name":       "toolgate-config-stream-ca",
				"app.kubernetes.io/managed-by": "toolgate",
			},
		},
		Type: corev1.SecretTypeOpaque,
		Data: map[string][]byte{CACertKey: ca.CertPEM(), CAKeyKey: ca.KeyPEM()},
	}
	err = c.Create(ctx, &secret)
	if err == nil {
		return ca, nil
	}
	if !apierrors.IsAlreadyExists(err) {
		return nil, fmt.Errorf("create CA Secret %s: %w", nn, err)
	}
	// Another replica created it between our Get and Create: use its CA.
	// The read goes to the API server when c is a direct client; with a
	// cached client it may need the informer to catch up, and the caller's
	// retry covers that.
	if err := c.Get(ctx, nn, &secret); err != nil {
		return nil, fmt.Errorf("read CA Secret %s created by another replica: %w", nn, err)
	}
	return caFromSecret(&secret, time.Now())
}

func caFromSecret(secret *corev1.Secret, now time.Time) (*CA, error) {
	nn := types.NamespacedName{Namespace: secret.Namespace, Name: secret.Name}
	invalid := func(reason string) error {
		return fmt.Errorf("the Secret %s holds no valid config stream CA (%s): delete it and toolgate creates a new CA and re-issues the proxies' certificates", nn, reason)
	}
	certPEM, keyPEM := secret.Data[CACertKey], secret.Data[CAKeyKey]
	if len(certPEM) == 0 || len(keyPEM) == 0 {
		return nil, invalid(fmt.Sprintf("it needs both %s and %s", CACertKey, CAKeyKey))
	}
	ca, err := ParseCA(certPEM, keyPEM)
	if err != nil {
		return nil, invalid(err.Error())
	}
	if now.After(ca.cert.NotAfter) {
		return nil, invalid(fmt.Sprintf("the CA expired at %s", ca.cert.NotAfter.Format(time.RFC3339)))
	}
	return ca, nil
}
