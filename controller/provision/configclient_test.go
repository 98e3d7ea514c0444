package provision

import (
	"context"
	"crypto/tls"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"

	"github.com/toolgate/toolgate/controller/pki"
)

func newTestCA(t *testing.T, now time.Time) *pki.CA {
	t.Helper()
	ca, err := pki.NewCA(now)
	if err != nil {
		t.Fatalf("NewCA: %v", err)
	}
	return ca
}

// issuedSecret is the client certificate Secret of testGateway holding a
// certificate that ca issued for gw at issuedAt.
func issuedSecret(t *testing.T, ca *pki.CA, gw types.NamespacedName, issuedAt time.Time) *corev1.Secret {
	t.Helper()
	certPEM, keyPEM, err := ca.IssueClient(gw, issuedAt, pki.ClientCertLifetime)
	if err != nil {
		t.Fatalf("IssueClient: %v", err)
	}
	return ConfigClientSecret(testGateway(), ca.CertPEM(), certPEM, keyPEM)
}

func TestEnsureConfigClientSecret(t *testing.T) {
	start := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	day := 24 * time.Hour
	ca, otherCA := newTestCA(t, start), newTestCA(t, start)
	web := types.NamespacedName{Namespace: "team-a", Name: "web"}
	tests := []struct {
		name      string
		existing  func(t *testing.T) *corev1.Secret // nil: there is none
		now       time.Time
		wantWrite string // "create", "update" or "" for none
		wantErr   string // a substring of the error; empty means success
	}{
		{name: "a missing Secret is created", now: start, wantWrite: "create"},
		{
			name:     "a current Secret is not written",
			existing: func(t *testing.T) *corev1.Secret { return issuedSecret(t, ca, web, start) },
			now:      start.Add(time.Hour),
		},
		{
			name:     "a Secret valid for longer than the renewal window is not written",
			existing: func(t *testing.T) *corev1.Secret { return issuedSecret(t, ca, web, start) },
			now:      start.Add(pki.ClientCertLifetime - pki.ClientCertRenewBefore - day),
		},
		{
			name:      "a Secret expiring within the renewal window is re-issued",
			existing:  func(t *testing.T) *corev1.Secret { return issuedSecret(t, ca, web, start) },
			now:       start.Add(pki.ClientCertLifetime - pki.ClientCertRenewBefore + day),
			wantWrite: "update",
		},
		{
			name:      "an expired Secret is re-issued",
			existing:  func(t *testing.T) *corev1.Secret { return issuedSecret(t, ca, web, start) },
			now:       start.Add(pki.ClientCertLifetime + day),
			wantWrite: "update",
		},
		{
			name:      "a Secret from another CA is re-issued",
			existing:  func(t *testing.T) *corev1.Secret { return issuedSecret(t, otherCA, web, start) },
			now:       start,
			wantWrite: "update",
		},
		{
			name: "a Secret whose ca.crt is another CA's is re-issued",
			existing: func(t *testing.T) *corev1.Secret {
				s := issuedSecret(t, ca, web, start)
				s.Data[CACertKey] = otherCA.CertPEM()
				return s
			},
			now:       start,
			wantWrite: "update",
		},
		{
			name: "a Secret for another Gateway is re-issued",
			existing: func(t *testing.T) *corev1.Secret {
				return issuedSecret(t, ca, types.NamespacedName{Namespace: "team-a", Name: "other"}, start)
			},
			now:       start,
			wantWrite: "update",
		},
		{
			name: "a Secret whose key is not its certificate's is re-issued",
			existing: func(t *testing.T) *corev1.Secret {
				s := issuedSecret(t, ca, web, start)
				s.Data[corev1.TLSPrivateKeyKey] = issuedSecret(t, ca, web, start).Data[corev1.TLSPrivateKeyKey]
				return s
			},
			now:       start,
			wantWrite: "update",
		},
		{
			name: "a Secret without a key is re-issued",
			existing: func(t *testing.T) *corev1.Secret {
				s := issuedSecret(t, ca, web, start)
				delete(s.Data, corev1.TLSPrivateKeyKey)
				return s
			},
			now:       start,
			wantWrite: "update",
		},
		{
			name: "a Secret of another type is an error that says to delete it",
			existing: func(t *testing.T) *corev1.Secret {
				s := issuedSecret(t, otherCA, web, start)
				s.Type = corev1.SecretTypeOpaque
				return s
			},
			now:     start,
			wantErr: "has type Opaque, not kubernetes.io/tls: delete it",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			builder := fake.NewClientBuilder().WithScheme(clientgoscheme.Scheme)
			if tt.existing != nil {
				s := tt.existing(t)
				s.Annotations["example.com/kept"] = "yes"
				builder = builder.WithObjects(s)
			}
			var writes []string
			c := builder.WithInterceptorFuncs(interceptor.Funcs{
				Create: func(ctx context.Context, c client.WithWatch, obj client.Object, opts ...client.CreateOption) error {
					writes = append(writes, "create")
					return c.Create(ctx, obj, opts...)
				},
				Update: func(ctx context.Context, c client.WithWatch, obj client.Object, opts ...client.UpdateOption) error {
					writes = append(writes, "update")
					return c.Update(ctx, obj, opts...)
				},
				Patch: func(ctx context.Context, c client.WithWatch, obj client.Object, patch client.Patch, opts ...client.PatchOption) error {
					writes = append(writes, "patch")
					return c.Patch(ctx, obj, patch, opts...)
				},
			}).Build()
			p := New(c, clientgoscheme.Scheme, Options{CA: ca, Now: func() time.Time { return tt.now }})

			err := p.ensureConfigClientSecret(context.Background(), testGateway(), tt.now)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error = %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("ensureConfigClientSecret: %v", err)
			}
			var want []string
			if tt.wantWrite != "" {
				want = []string{tt.wantWrite}
			}
			if diff := cmp.Diff(want, writes); diff != "" {
				t.Errorf("writes (-want +got):\n%s", diff)
			}

			var got corev1.Secret
			if err := c.Get(context.Background(), types.NamespacedName{Namespace: "team-a", Name: "toolgate-web-config"}, &got); err != nil {
				t.Fatalf("read the Secret: %v", err)
			}
			if got.Type != corev1.SecretTypeTLS {
				t.Errorf("type = %s, want kubernetes.io/tls", got.Type)
			}
			if string(got.Data[CACertKey]) != string(ca.CertPEM()) {
				t.Error("ca.crt is not the CA's certificate")
			}
			if !ca.ClientCertCurrent(got.Data[corev1.TLSCertKey], web, tt.now, pki.ClientCertRenewBefore) {
				t.Error("tls.crt is not a current certificate of the CA for team-a/web")
			}
			if _, err := tls.X509KeyPair(got.Data[corev1.TLSCertKey], got.Data[corev1.TLSPrivateKeyKey]); err != nil {
				t.Errorf("tls.key does not match tls.crt: %v", err)
			}
			if diff := cmp.Diff(wantOwner(), got.OwnerReferences); diff != "" {
				t.Errorf("owner references (-want +got):\n%s", diff)
			}
			for k, v := range Names(testGateway()).Labels {
				if got.Labels[k] != v {
					t.Errorf("label %s = %q, want %q", k, got.Labels[k], v)
				}
			}
			if got.Annotations[AnnotationGateway] != "team-a/web" {
				t.Errorf("annotation %s = %q, want team-a/web", AnnotationGateway, got.Annotations[AnnotationGateway])
			}
			if tt.existing != nil && got.Annotations["example.com/kept"] != "yes" {
				t.Error("an annotation someone else set on the Secret was dropped")
			}
		})
	}
}

func TestEnsureRefusesWithoutWhatTheProxiesNeed(t *testing.T) {
	ca := newTestCA(t, time.Now())
	tests := []struct {
		name    string
		opts    Options
		params  Params
		wantErr string
	}{
		{name: "no CA is a programming error", opts: Options{}, params: testParams, wantErr: "no CA to issue the proxies' client certificates"},
		{name: "no controller URL", opts: Options{CA: ca}, params: Params{}, wantErr: "no controller URL for the proxies"},
		{name: "a controller URL without TLS", opts: Options{CA: ca}, params: Params{ControllerURL: "http://toolgate-controller:9443"}, wantErr: "is not an https://HOST[:PORT] URL"},
		{name: "a controller URL without a host", opts: Options{CA: ca}, params: Params{ControllerURL: "https:///config"}, wantErr: "is not an https://HOST[:PORT] URL"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// The client is nil: Ensure must refuse before it writes.
			_, err := New(nil, clientgoscheme.Scheme, tt.opts).Ensure(context.Background(), testGateway(), tt.params)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("Ensure error = %v, want one containing %q", err, tt.wantErr)
			}
		})
	}
}
