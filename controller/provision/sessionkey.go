package provision

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"
)

// SessionKeySecretName names the Secret holding a Gateway's session key.
func SessionKeySecretName(gw *gwv1.Gateway) string {
	return boundedName(Names(gw).Name+"-session", gw.Namespace+"/"+gw.Name+"/session")
}

// ensureSessionKey creates, once, the Secret with the random key that every
// proxy replica of gw uses to authenticate MCP session ids, so that a
// session keeps its endpoint whichever replica serves it and across
// restarts. An existing key is never replaced: that would break every open
// session.
func (p *Provisioner) ensureSessionKey(ctx context.Context, gw *gwv1.Gateway) error {
	name := SessionKeySecretName(gw)
	var existing corev1.Secret
	err := p.client.Get(ctx, types.NamespacedName{Namespace: gw.Namespace, Name: name}, &existing)
	if err == nil {
		if len(existing.Data[SessionKeySecretKey]) > 0 {
			return nil
		}
		return fmt.Errorf("the Secret %s/%s has no %s: delete it and toolgate creates a new one", gw.Namespace, name, SessionKeySecretKey)
	}
	if !apierrors.IsNotFound(err) {
		return fmt.Errorf("read Secret %s/%s: %w", gw.Namespace, name, err)
	}
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		return err
	}
	secret := &corev1.Secret{
		ObjectMeta: objectMeta(gw, Names(gw)),
		Type:       corev1.SecretTypeOpaque,
		Data:       map[string][]byte{SessionKeySecretKey: []byte(base64.StdEncoding.EncodeToString(key))},
	}
	secret.Name = name
	if err := p.client.Create(ctx, secret); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("create Secret %s/%s: %w", gw.Namespace, name, err)
	}
	return nil
}
