package controller_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"
	gwv1beta1 "sigs.k8s.io/gateway-api/apis/v1beta1"

	"github.com/toolgate/toolgate/controller/configstream"
	"github.com/toolgate/toolgate/controller/pki"
	"github.com/toolgate/toolgate/controller/provision"
	"github.com/toolgate/toolgate/controller/translate"
)

// recordVersions records every version of the objects of list's kind
// (in opts' namespace) the API server stores from now on, until the spec
// ends.
func recordVersions(list client.ObjectList, opts ...client.ListOption) func() []client.Object {
	wc, err := client.NewWithWatch(kube.Config, client.Options{Scheme: scheme})
	Expect(err).NotTo(HaveOccurred())
	w, err := wc.Watch(ctx, list, opts...)
	Expect(err).NotTo(HaveOccurred())
	DeferCleanup(w.Stop)
	var (
		mu   sync.Mutex
		seen []client.Object
	)
	go func() {
		for e := range w.ResultChan() {
			if obj, ok := e.Object.(client.Object); ok && (e.Type == watch.Added || e.Type == watch.Modified) {
				mu.Lock()
				seen = append(seen, obj)
				mu.Unlock()
			}
		}
	}()
	return func() []client.Object {
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(seen)
	}
}

// recordSnapshots runs a config-stream client of Gateway gw, as its
// proxies would, until the spec ends, and records every snapshot it
// receives.
func recordSnapshots(gw types.NamespacedName) func() [][]byte {
	certPEM, keyPEM, err := streamCA.IssueClient(gw, time.Now(), time.Hour)
	Expect(err).NotTo(HaveOccurred())
	dir := GinkgoT().TempDir()
	for file, data := range map[string][]byte{configstream.ClientCertFile: certPEM, configstream.ClientKeyFile: keyPEM, configstream.CAFile: streamCA.CertPEM()} {
		Expect(os.WriteFile(filepath.Join(dir, file), data, 0o600)).To(Succeed())
	}
	var (
		mu   sync.Mutex
		seen [][]byte
	)
	c, err := configstream.NewClient(configstream.ClientOptions{
		URL: streamURL, Gateway: gw, TLSDir: dir, Logger: discard,
		Apply: func(_ string, payload []byte) error {
			mu.Lock()
			defer mu.Unlock()
			seen = append(seen, payload)
			return nil
		},
	})
	Expect(err).NotTo(HaveOccurred())
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = c.Run(runCtx)
	}()
	DeferCleanup(func() { cancel(); <-done })
	return func() [][]byte {
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(seen)
	}
}

// backendEndpoints finds, in a snapshot, the backend named name and
// returns its endpoints.
func backendEndpoints(payload []byte, name string) (endpoints []string, found bool) {
	var doc any
	Expect(json.Unmarshal(payload, &doc)).To(Succeed())
	var walk func(any)
	walk = func(v any) {
		switch v := v.(type) {
		case map[string]any:
			if v["name"] == name {
				found = true
				if eps, ok := v["endpoints"].([]any); ok {
					for _, e := range eps {
						endpoints = append(endpoints, fmt.Sprint(e))
					}
				}
				return
			}
			for _, x := range v {
				walk(x)
			}
		case []any:
			for _, x := range v {
				walk(x)
			}
		}
	}
	walk(doc)
	return endpoints, found
}

// unreferenced creates, in a new namespace, a Secret, a ConfigMap and an
// EndpointSlice that nothing refers to, and returns the namespace.
func unreferenced() string {
	ns := newNamespace()
	for _, obj := range []client.Object{
		&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "unused", Namespace: ns}, Data: map[string][]byte{"k": []byte("v")}},
		&corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "unused", Namespace: ns}, Data: map[string]string{"k": "v"}},
		&discoveryv1.EndpointSlice{
			ObjectMeta:  metav1.ObjectMeta{Name: "unused-1", Namespace: ns, Labels: map[string]string{discoveryv1.LabelServiceName: "unused"}},
			AddressType: discoveryv1.AddressTypeIPv4,
			Endpoints:   []discoveryv1.Endpoint{{Addresses: []string{"10.9.0.1"}}},
		},
	} {
		Expect(k8sClient.Create(ctx, obj)).To(Succeed())
	}
	return ns
}

// scopesOf lists the cached scopes of namespace ns.
func scopesOf(ns string) []string {
	var out []string
	for _, s := range relevance.CachedScopes() {
		if len(s) > len(ns) && s[:len(ns)+1] == ns+"/" {
			out = append(out, s)
		}
	}
	return out
}

var _ = Describe("Secrets, ConfigMaps and EndpointSlices cached by namespace", func() {
	It("are not cached cluster-wide: the manager's cache holds only the Secrets toolgate made", func() {
		newGateway(newNamespace(), newGatewayClass(translate.ControllerName), 8080)
		var secrets corev1.SecretList
		Eventually(func() int {
			Expect(managerCache.List(ctx, &secrets)).To(Succeed())
			return len(secrets.Items)
		}, wait, poll).ShouldNot(BeZero(), "the data planes' Secrets")
		for _, s := range secrets.Items {
			Expect(s.Labels).To(HaveKeyWithValue(provision.LabelManagedBy, provision.ManagedBy), "Secret %s/%s", s.Namespace, s.Name)
		}
		var notCached *cache.ErrResourceNotCached
		Expect(errors.As(managerCache.List(ctx, &corev1.ConfigMapList{}), &notCached)).To(BeTrue(), "ConfigMaps cached cluster-wide")
		Expect(errors.As(managerCache.List(ctx, &discoveryv1.EndpointSliceList{}), &notCached)).To(BeTrue(), "EndpointSlices cached cluster-wide")
	})

	It("caches a namespace's Secrets once a listener refers to one, before the first status, and lets them go after", func() {
		quiet := unreferenced()
		ns, certs := newNamespace(), newNamespace()
		ca, err := pki.NewCA(time.Now())
		Expect(err).NotTo(HaveOccurred())
		certPEM, keyPEM, err := ca.IssueClient(types.NamespacedName{Namespace: certs, Name: "x"}, time.Now(), time.Hour)
		Expect(err).NotTo(HaveOccurred())
		Expect(k8sClient.Create(ctx, &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Name: "cert", Namespace: certs},
			Type:       corev1.SecretTypeTLS,
			Data:       map[string][]byte{corev1.TLSCertKey: certPEM, corev1.TLSPrivateKeyKey: keyPEM},
		})).To(Succeed())
		Expect(k8sClient.Create(ctx, &gwv1beta1.ReferenceGrant{
			ObjectMeta: metav1.ObjectMeta{Name: "gateways", Namespace: certs},
			Spec: gwv1beta1.ReferenceGrantSpec{
				From: []gwv1beta1.ReferenceGrantFrom{{Group: gwv1.GroupName, Kind: "Gateway", Namespace: gwv1.Namespace(ns)}},
				To:   []gwv1beta1.ReferenceGrantTo{{Group: "", Kind: "Secret"}},
			},
		})).To(Succeed())
		Expect(scopesOf(certs)).To(BeEmpty(), "cached before anything refers to it")
		seen := recordVersions(&gwv1.GatewayList{}, client.InNamespace(ns))

		By("referring to the Secret from an HTTPS listener: resolved in the first status written")
		gw := &gwv1.Gateway{
			ObjectMeta: metav1.ObjectMeta{Name: unique("gw"), Namespace: ns},
			Spec: gwv1.GatewaySpec{
				GatewayClassName: gwv1.ObjectName(newGatewayClass(translate.ControllerName)),
				Listeners: []gwv1.Listener{{Name: "https", Protocol: gwv1.HTTPSProtocolType, Port: 8443, TLS: &gwv1.ListenerTLSConfig{
					CertificateRefs: []gwv1.SecretObjectReference{{Name: "cert", Namespace: ptr(gwv1.Namespace(certs))}},
				}}},
			},
		}
		Expect(k8sClient.Create(ctx, gw)).To(Succeed())
		resolved := func(obj client.Object) bool {
			g := obj.(*gwv1.Gateway)
			return len(g.Status.Listeners) == 1 &&
				haveCondition("ResolvedRefs", metav1.ConditionTrue, "ResolvedRefs")(g.Status.Listeners[0].Conditions)
		}
		Eventually(seen, wait, poll).Should(ContainElement(Satisfy(resolved)))
		for _, obj := range seen() {
			if len(obj.(*gwv1.Gateway).Status.Listeners) > 0 {
				Expect(obj).To(Satisfy(resolved), "a listener status written at resourceVersion %s", obj.GetResourceVersion())
			}
		}
		Expect(scopesOf(certs)).To(Equal([]string{certs + "/Secret"}))
		Expect(scopesOf(quiet)).To(BeEmpty(), "a namespace nothing refers to is cached")

		By("deleting the Gateway: nothing refers to the namespace any more")
		Expect(k8sClient.Delete(ctx, gw)).To(Succeed())
		Eventually(func() []string { return scopesOf(certs) }, wait, poll).Should(BeEmpty())
	})

	It("caches a namespace's ConfigMaps once a GatewayClass's parameters are there, accepts the class in its first status, and lets them go after", func() {
		params := newNamespace()
		Expect(k8sClient.Create(ctx, &corev1.ConfigMap{
			ObjectMeta: metav1.ObjectMeta{Name: "params", Namespace: params},
			Data:       map[string]string{provision.KeyReplicas: "1"},
		})).To(Succeed())
		Expect(scopesOf(params)).To(BeEmpty(), "cached before anything refers to it")
		seen := recordVersions(&gwv1.GatewayClassList{})

		c := &gwv1.GatewayClass{
			ObjectMeta: metav1.ObjectMeta{Name: unique("class")},
			Spec: gwv1.GatewayClassSpec{
				ControllerName: translate.ControllerName,
				ParametersRef:  &gwv1.ParametersReference{Group: "", Kind: "ConfigMap", Name: "params", Namespace: ptr(gwv1.Namespace(params))},
			},
		}
		Expect(k8sClient.Create(ctx, c)).To(Succeed())
		mine := func() []metav1.Condition {
			var out []metav1.Condition
			for _, obj := range seen() {
				if obj.GetName() == c.Name {
					if cond := conditionOf(obj.(*gwv1.GatewayClass).Status.Conditions, "Accepted"); cond != nil {
						out = append(out, *cond)
					}
				}
			}
			return out
		}
		Eventually(mine, wait, poll).Should(ContainElement(HaveField("Status", metav1.ConditionTrue)))
		Expect(mine()).NotTo(ContainElement(HaveField("Status", metav1.ConditionFalse)), "the class was refused for a moment")
		Expect(scopesOf(params)).To(Equal([]string{params + "/ConfigMap"}))

		By("deleting the class: nothing refers to the namespace any more")
		Expect(k8sClient.Delete(ctx, c)).To(Succeed())
		Eventually(func() []string { return scopesOf(params) }, wait, poll).Should(BeEmpty())
	})

	It("caches a namespace's EndpointSlices once a route's backend is one of its Services, serves its endpoints from the first snapshot, and lets them go after", func() {
		quiet := unreferenced()
		ns, backends := newNamespace(), newNamespace()
		gw := newGateway(ns, newGatewayClass(translate.ControllerName), 8080)
		Expect(k8sClient.Create(ctx, &corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Name: "mcp", Namespace: backends},
			Spec:       corev1.ServiceSpec{Ports: []corev1.ServicePort{{Name: "http", Port: 80}}},
		})).To(Succeed())
		slice := &discoveryv1.EndpointSlice{
			ObjectMeta:  metav1.ObjectMeta{Name: "mcp-1", Namespace: backends, Labels: map[string]string{discoveryv1.LabelServiceName: "mcp"}},
			AddressType: discoveryv1.AddressTypeIPv4,
			Endpoints:   []discoveryv1.Endpoint{{Addresses: []string{"10.9.0.2"}}},
			Ports:       []discoveryv1.EndpointPort{{Name: ptr("http"), Port: ptr(int32(8080))}},
		}
		Expect(k8sClient.Create(ctx, slice)).To(Succeed())
		Expect(k8sClient.Create(ctx, &gwv1beta1.ReferenceGrant{
			ObjectMeta: metav1.ObjectMeta{Name: "routes", Namespace: backends},
			Spec: gwv1beta1.ReferenceGrantSpec{
				From: []gwv1beta1.ReferenceGrantFrom{{Group: gwv1.GroupName, Kind: "HTTPRoute", Namespace: gwv1.Namespace(ns)}},
				To:   []gwv1beta1.ReferenceGrantTo{{Group: "", Kind: "Service"}},
			},
		})).To(Succeed())
		Expect(scopesOf(backends)).To(BeEmpty(), "cached before anything refers to it")
		snapshots := recordSnapshots(client.ObjectKeyFromObject(gw))
		backend := backends + "/mcp:80"
		endpoints := func(want ...string) func() [][]byte {
			return func() [][]byte {
				return slices.DeleteFunc(snapshots(), func(p []byte) bool {
					eps, found := backendEndpoints(p, backend)
					return !found || !slices.Equal(eps, want)
				})
			}
		}

		By("routing to the Service: the first snapshot that serves it has its endpoints")
		r := newBackendRoute(ns, gw.Name, backends, "mcp")
		Eventually(routeParentConditions(client.ObjectKeyFromObject(r)), wait, poll).Should(Satisfy(haveCondition("ResolvedRefs", metav1.ConditionTrue, "ResolvedRefs")))
		Expect(scopesOf(backends)).To(Equal([]string{backends + "/EndpointSlice"}))
		Expect(scopesOf(quiet)).To(BeEmpty(), "a namespace nothing refers to is cached")
		Eventually(endpoints("10.9.0.2:8080"), wait, poll).ShouldNot(BeEmpty())
		for _, p := range snapshots() {
			if eps, found := backendEndpoints(p, backend); found {
				Expect(eps).To(Equal([]string{"10.9.0.2:8080"}), "a snapshot served the backend with other endpoints")
			}
		}

		By("moving the endpoint: the snapshot follows")
		Expect(change(slice, func() { slice.Endpoints[0].Addresses = []string{"10.9.0.3"} })).To(Succeed())
		Eventually(endpoints("10.9.0.3:8080"), wait, poll).ShouldNot(BeEmpty())

		By("deleting the route: nothing refers to the namespace any more")
		Expect(k8sClient.Delete(ctx, r)).To(Succeed())
		Eventually(func() []string { return scopesOf(backends) }, wait, poll).Should(BeEmpty())
	})
})
