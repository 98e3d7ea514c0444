package pki

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"
)

var caSecret = types.NamespacedName{Namespace: "toolgate-system", Name: "toolgate-config-stream-ca"}

func secretWith(data map[string][]byte) *corev1.Secret {
	return &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: caSecret.Namespace, Name: caSecret.Name},
		Data:       data,
	}
}

func TestLoadOrCreateCACreatesTheSecretOnce(t *testing.T) {
	ctx := context.Background()
	c := fake.NewClientBuilder().Build()

	created, err := LoadOrCreateCA(ctx, c, caSecret)
	if err != nil {
		t.Fatalf("first LoadOrCreateCA: %v", err)
	}
	var secret corev1.Secret
	if err := c.Get(ctx, caSecret, &secret); err != nil {
		t.Fatalf("the CA Secret was not created: %v", err)
	}
	if !bytes.Equal(secret.Data[CACertKey], created.CertPEM()) || !bytes.Equal(secret.Data[CAKeyKey], created.KeyPEM()) {
		t.Error("the Secret does not hold the CA returned")
	}

	loaded, err := LoadOrCreateCA(ctx, c, caSecret)
	if err != nil {
		t.Fatalf("second LoadOrCreateCA: %v", err)
	}
	if !bytes.Equal(loaded.CertPEM(), created.CertPEM()) {
		t.Error("the second call returned a new CA instead of the stored one")
	}
}

func TestLoadOrCreateCAReusesAnExistingCA(t *testing.T) {
	existing := mustCAAt(t, time.Now())
	c := fake.NewClientBuilder().WithObjects(secretWith(map[string][]byte{
		CACertKey: existing.CertPEM(),
		CAKeyKey:  existing.KeyPEM(),
	})).Build()

	ca, err := LoadOrCreateCA(context.Background(), c, caSecret)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(ca.CertPEM(), existing.CertPEM()) {
		t.Error("LoadOrCreateCA did not return the stored CA")
	}
}

// Two replicas start together: both miss the Secret, the other one creates
// it first, and this one must adopt the winner's CA rather than fail or
// overwrite it.
func TestLoadOrCreateCAAdoptsTheCAOfAReplicaThatWonTheRace(t *testing.T) {
	ctx := context.Background()
	winner := mustCAAt(t, time.Now())
	var raced bool
	c := interceptor.NewClient(fake.NewClientBuilder().Build(), interceptor.Funcs{
		Create: func(ctx context.Context, c client.WithWatch, obj client.Object, opts ...client.CreateOption) error {
			if !raced {
				raced = true
				if err := c.Create(ctx, secretWith(map[string][]byte{
					CACertKey: winner.CertPEM(),
					CAKeyKey:  winner.KeyPEM(),
				})); err != nil {
					return err
				}
			}
			return c.Create(ctx, obj, opts...)
		},
	})

	ca, err := LoadOrCreateCA(ctx, c, caSecret)
	if err != nil {
		t.Fatal(err)
	}
	if !raced {
		t.Fatal("LoadOrCreateCA did not try to create the Secret")
	}
	if !bytes.Equal(ca.CertPEM(), winner.CertPEM()) {
		t.Error("LoadOrCreateCA did not adopt the winner's CA")
	}
	var secret corev1.Secret
	if err := c.Get(ctx, caSecret, &secret); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(secret.Data[CACertKey], winner.CertPEM()) {
		t.Error("the winner's Secret was overwritten")
	}
}

func TestLoadOrCreateCARefusesAnInvalidSecret(t *testing.T) {
	valid := mustCAAt(t, time.Now())
	other := mustCAAt(t, time.Now())
	expired := mustCAAt(t, time.Now().Add(-CALifetime-time.Hour))
	tests := []struct {
		name   string
		data   map[string][]byte
		reason string
	}{
		{"an empty Secret", nil, "needs both ca.crt and ca.key"},
		{"a Secret without a key", map[string][]byte{CACertKey: valid.CertPEM()}, "needs both ca.crt and ca.key"},
		{"a Secret with garbage", map[string][]byte{CACertKey: []byte("x"), CAKeyKey: []byte("y")}, "no PEM CERTIFICATE"},
		{"a Secret with mismatched halves", map[string][]byte{CACertKey: valid.CertPEM(), CAKeyKey: other.KeyPEM()}, "does not belong"},
		{"a Secret with an expired CA", map[string][]byte{CACertKey: expired.CertPEM(), CAKeyKey: expired.KeyPEM()}, "expired"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			stored := secretWith(tt.data)
			c := fake.NewClientBuilder().WithObjects(stored).Build()
			_, err := LoadOrCreateCA(context.Background(), c, caSecret)
			if err == nil {
				t.Fatal("LoadOrCreateCA succeeded")
			}
			for _, want := range []string{tt.reason, "delete it", caSecret.String()} {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q does not contain %q", err, want)
				}
			}
			var after corev1.Secret
			if err := c.Get(context.Background(), caSecret, &after); err != nil {
				t.Fatal(err)
			}
			if len(after.Data) != len(tt.data) {
				t.Error("LoadOrCreateCA changed the invalid Secret")
			}
		})
	}
}

func TestLoadOrCreateCAReportsReadErrors(t *testing.T) {
	boom := apierrors.NewForbidden(schema.GroupResource{Resource: "secrets"}, caSecret.Name, errors.New("no RBAC"))
	c := interceptor.NewClient(fake.NewClientBuilder().Build(), interceptor.Funcs{
		Get: func(context.Context, client.WithWatch, client.ObjectKey, client.Object, ...client.GetOption) error {
			return boom
		},
	})
	_, err := LoadOrCreateCA(context.Background(), c, caSecret)
	if !errors.Is(err, boom) || !strings.Contains(err.Error(), caSecret.String()) {
		t.Errorf("LoadOrCreateCA = %v, want the Forbidden error with the Secret's name", err)
	}
}

func mustCAAt(t *testing.T, at time.Time) *CA {
	t.Helper()
	ca, err := NewCA(at)
	if err != nil {
		t.Fatal(err)
	}
	return ca
}
