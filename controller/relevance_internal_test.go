package controller

import (
	"context"
	"slices"
	"testing"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"

	"github.com/toolgate/toolgate/controller/provision"
	"github.com/toolgate/toolgate/controller/translate"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
)

func name(ns, n string) types.NamespacedName { return types.NamespacedName{Namespace: ns, Name: n} }

// The cache keeps whole what the last translation looked up and what
// toolgate manages, and the metadata of the rest; kubectl's copy and the
// managedFields of every object go.
func TestTransformKeepsTheBodiesOfRelevantObjectsOnly(t *testing.T) {
	r := NewRelevance()
	r.set("status", translate.Dependencies{
		Secrets:    map[types.NamespacedName]bool{name("a", "cert"): true},
		ConfigMaps: map[types.NamespacedName]bool{name("a", "ca"): true},
		Services:   map[types.NamespacedName]bool{name("a", "mcp"): true},
	})
	// Another translation reads the addresses of every Service, and so
	// no EndpointSlice more.
	r.set("config-stream", translate.Dependencies{AllServices: true})
	meta := func(ns, name string, labels map[string]string) metav1.ObjectMeta {
		return metav1.ObjectMeta{
			Namespace: ns, Name: name, Labels: labels, ResourceVersion: "7",
			Annotations:   map[string]string{lastApplied: "{...}", "team": "a"},
			ManagedFields: []metav1.ManagedFieldsEntry{{Manager: "kubectl"}},
		}
	}
	slice := func(service string) *discoveryv1.EndpointSlice {
		return &discoveryv1.EndpointSlice{
			ObjectMeta: meta("a", service+"-1", map[string]string{discoveryv1.LabelServiceName: service}),
			Endpoints:  []discoveryv1.Endpoint{{Addresses: []string{"10.0.0.1"}}},
		}
	}
	for _, tc := range []struct {
		name     string
		obj      client.Object
		wantBody bool
	}{
		{"a Secret looked up", &corev1.Secret{ObjectMeta: meta("a", "cert", nil), Data: map[string][]byte{"k": []byte("v")}}, true},
		{"a Secret of another namespace", &corev1.Secret{ObjectMeta: meta("b", "cert", nil), Data: map[string][]byte{"k": []byte("v")}}, false},
		{"a Secret toolgate manages", &corev1.Secret{ObjectMeta: meta("b", "client", map[string]string{provision.LabelManagedBy: provision.ManagedBy}), Data: map[string][]byte{"k": []byte("v")}}, true},
		{"a ConfigMap looked up", &corev1.ConfigMap{ObjectMeta: meta("a", "ca", nil), Data: map[string]string{"ca.crt": "x"}}, true},
		{"another ConfigMap", &corev1.ConfigMap{ObjectMeta: meta("a", "other", nil), Data: map[string]string{"ca.crt": "x"}}, false},
		{"a slice of a Service looked up", slice("mcp"), true},
		{"a slice of another Service, even when every Service's addresses count", slice("db"), false},
		{"a Service is always whole", &corev1.Service{ObjectMeta: meta("a", "db", nil), Spec: corev1.ServiceSpec{ClusterIP: "10.96.0.9"}}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, err := r.transform(tc.obj)
			if err != nil {
				t.Fatal(err)
			}
			obj := out.(client.Object)
			if obj.GetManagedFields() != nil {
				t.Error("managedFields kept")
			}
			if _, ok := obj.GetAnnotations()[lastApplied]; ok {
				t.Error("kubectl's last-applied copy kept")
			}
			if got := !isMetadataOnly(obj); got != tc.wantBody {
				t.Errorf("body kept = %v, want %v", got, tc.wantBody)
			}
			empty := false
			switch o := obj.(type) {
			case *corev1.Secret:
				empty = len(o.Data) == 0
			case *corev1.ConfigMap:
				empty = len(o.Data) == 0
			case *discoveryv1.EndpointSlice:
				empty = len(o.Endpoints) == 0
			}
			if empty == tc.wantBody {
				t.Errorf("body empty = %v, want %v", empty, !tc.wantBody)
			}
			if tc.wantBody && obj.GetAnnotations()["team"] != "a" {
				t.Error("the annotations of an object kept whole were dropped")
			}
		})
	}
}

// A translation that comes to depend on a Secret the cache holds the
// metadata of reads it from the API server once, then while its
// resourceVersion stays, from memory; and it is forgotten when nothing
// depends on it any more.
func TestBodiesAreReadOncePerVersionAndForgotten(t *testing.T) {
	scheme := runtime.NewScheme()
	if err := corev1.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	whole := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "a", Name: "token"}, Data: map[string][]byte{"token": []byte("s3cret")}}
	gets := 0
	api := fake.NewClientBuilder().WithScheme(scheme).WithObjects(whole).WithInterceptorFuncs(interceptor.Funcs{
		Get: func(ctx context.Context, c client.WithWatch, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
			gets++
			return c.Get(ctx, key, obj, opts...)
		},
	}).Build()
	var stored corev1.Secret
	if err := api.Get(t.Context(), client.ObjectKeyFromObject(whole), &stored); err != nil {
		t.Fatal(err)
	}
	gets = 0
	r := NewRelevance()
	r.bodies = &bodies{reader: api, byKey: map[string]client.Object{}}
	cached := func() *translate.Resources {
		metaOnly := stored.DeepCopy()
		metaOnly.Data = nil
		metaOnly.Annotations = map[string]string{metadataOnly: ""}
		return &translate.Resources{Secrets: []*corev1.Secret{metaOnly}}
	}
	wants := translate.Dependencies{Secrets: map[types.NamespacedName]bool{name("a", "token"): true}}

	res := cached()
	if replaced, err := r.bodies.complete(t.Context(), res, translate.Dependencies{}); err != nil || replaced {
		t.Fatalf("complete with no dependencies: replaced %v, %v", replaced, err)
	}
	for range 3 {
		res = cached()
		replaced, err := r.bodies.complete(t.Context(), res, wants)
		if err != nil || !replaced {
			t.Fatalf("complete: replaced %v, %v", replaced, err)
		}
		if string(res.Secrets[0].Data["token"]) != "s3cret" || isMetadataOnly(res.Secrets[0]) {
			t.Fatalf("completed Secret = %+v, want its body", res.Secrets[0])
		}
		r.set("status", wants)
		r.bodies.retain(r)
	}
	if gets != 1 {
		t.Errorf("the API server was read %d times for one version, want once", gets)
	}
	r.set("status", translate.Dependencies{})
	r.bodies.retain(r)
	if len(r.bodies.byKey) != 0 {
		t.Errorf("bodies held after nothing depends on them: %v", r.bodies.byKey)
	}
}

// After a start nothing was known to be relevant: the many objects a
// first translation wants are read a namespace at a time, not one by one.
func TestBodiesOfOneNamespaceAreReadWithOneList(t *testing.T) {
	scheme := runtime.NewScheme()
	if err := corev1.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	var objs []client.Object
	wants := translate.Dependencies{Secrets: map[types.NamespacedName]bool{}}
	for _, n := range []string{"one", "two", "three"} {
		objs = append(objs, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "a", Name: n}, Data: map[string][]byte{"k": []byte(n)}})
		wants.Secrets[name("a", n)] = true
	}
	gets, lists := 0, 0
	api := fake.NewClientBuilder().WithScheme(scheme).WithObjects(objs...).WithInterceptorFuncs(interceptor.Funcs{
		Get: func(ctx context.Context, c client.WithWatch, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
			gets++
			return c.Get(ctx, key, obj, opts...)
		},
		List: func(ctx context.Context, c client.WithWatch, list client.ObjectList, opts ...client.ListOption) error {
			lists++
			return c.List(ctx, list, opts...)
		},
	}).Build()
	res := &translate.Resources{}
	for _, n := range []string{"one", "two", "three", "unwanted"} {
		res.Secrets = append(res.Secrets, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{
			Namespace: "a", Name: n, Annotations: map[string]string{metadataOnly: ""},
		}})
	}
	b := &bodies{reader: api, byKey: map[string]client.Object{}}
	if replaced, err := b.complete(t.Context(), res, wants); err != nil || !replaced {
		t.Fatalf("complete: replaced %v, %v", replaced, err)
	}
	for _, s := range res.Secrets[:3] {
		if isMetadataOnly(s) || string(s.Data["k"]) != s.Name {
			t.Errorf("Secret %s = %+v, want its body", s.Name, s)
		}
	}
	if !isMetadataOnly(res.Secrets[3]) {
		t.Error("a Secret nothing wants was completed")
	}
	if gets != 0 || lists != 1 {
		t.Errorf("%d gets and %d lists, want one list", gets, lists)
	}
}

// The scoped caches a translation needs are the namespaces of what it
// looked up, kind by kind.
func TestScopesOfATranslation(t *testing.T) {
	for _, tc := range []struct {
		name string
		deps translate.Dependencies
		want []string
	}{
		{"nothing looked up needs no cache", translate.Dependencies{}, nil},
		{"a Secret needs its namespace's Secrets", translate.Dependencies{
			Secrets: map[types.NamespacedName]bool{name("certs", "tls"): true},
		}, []string{"certs/Secret"}},
		{"a ConfigMap needs its namespace's ConfigMaps", translate.Dependencies{
			ConfigMaps: map[types.NamespacedName]bool{name("certs", "ca"): true},
		}, []string{"certs/ConfigMap"}},
		{"a Service needs its namespace's EndpointSlices", translate.Dependencies{
			Services: map[types.NamespacedName]bool{name("b", "mcp"): true, name("b", "db"): true, name("c", "mcp"): true},
		}, []string{"b/EndpointSlice", "c/EndpointSlice"}},
		{"every Service's addresses need no EndpointSlices", translate.Dependencies{AllServices: true}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var got []string
			for sc := range scopesOf(tc.deps) {
				got = append(got, sc.String())
			}
			slices.Sort(got)
			if !slices.Equal(got, tc.want) {
				t.Errorf("scopes %v, want %v", got, tc.want)
			}
		})
	}
}
