package controller_test

import (
	"fmt"
	"sync/atomic"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/toolgate/toolgate/apis/v1alpha1"
	"github.com/toolgate/toolgate/controller/pki"
	"github.com/toolgate/toolgate/controller/provision"
	"github.com/toolgate/toolgate/controller/translate"
)

const (
	wait = 30 * time.Second
	poll = 100 * time.Millisecond
)

var counter atomic.Int32

func unique(prefix string) string { return fmt.Sprintf("%s-%d", prefix, counter.Add(1)) }

func newNamespace() string {
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: unique("ns")}}
	Expect(k8sClient.Create(ctx, ns)).To(Succeed())
	return ns.Name
}

func newGatewayClass(controllerName gwv1.GatewayController) string {
	c := &gwv1.GatewayClass{ObjectMeta: metav1.ObjectMeta{Name: unique("class")}, Spec: gwv1.GatewayClassSpec{ControllerName: controllerName}}
	Expect(k8sClient.Create(ctx, c)).To(Succeed())
	return c.Name
}

func newGateway(ns, class string, port int32) *gwv1.Gateway {
	gw := &gwv1.Gateway{
		ObjectMeta: metav1.ObjectMeta{Name: unique("gw"), Namespace: ns},
		Spec: gwv1.GatewaySpec{
			GatewayClassName: gwv1.ObjectName(class),
			Listeners:        []gwv1.Listener{{Name: "http", Protocol: gwv1.HTTPProtocolType, Port: gwv1.PortNumber(port)}},
		},
	}
	Expect(k8sClient.Create(ctx, gw)).To(Succeed())
	return gw
}

func extensionRef(name string) gwv1.HTTPRouteFilter {
	return gwv1.HTTPRouteFilter{
		Type:         gwv1.HTTPRouteFilterExtensionRef,
		ExtensionRef: &gwv1.LocalObjectReference{Group: "toolgate.dev", Kind: "MCPServer", Name: gwv1.ObjectName(name)},
	}
}

func newRoute(ns, gateway, mcpServer, service string, port int32) *gwv1.HTTPRoute {
	r := &gwv1.HTTPRoute{
		ObjectMeta: metav1.ObjectMeta{Name: unique("route"), Namespace: ns},
		Spec: gwv1.HTTPRouteSpec{
			CommonRouteSpec: gwv1.CommonRouteSpec{ParentRefs: []gwv1.ParentReference{{Name: gwv1.ObjectName(gateway)}}},
			Rules: []gwv1.HTTPRouteRule{{
				Filters: []gwv1.HTTPRouteFilter{extensionRef(mcpServer)},
				BackendRefs: []gwv1.HTTPBackendRef{{BackendRef: gwv1.BackendRef{BackendObjectReference: gwv1.BackendObjectReference{
					Name: gwv1.ObjectName(service), Port: ptr(gwv1.PortNumber(port)),
				}}}},
			}},
		},
	}
	Expect(k8sClient.Create(ctx, r)).To(Succeed())
	return r
}

// newBackendRoute creates a route of gateway, with no filter, to Service
// service (port 80) in namespace backendNS.
func newBackendRoute(ns, gateway, backendNS, service string) *gwv1.HTTPRoute {
	r := &gwv1.HTTPRoute{
		ObjectMeta: metav1.ObjectMeta{Name: unique("route"), Namespace: ns},
		Spec: gwv1.HTTPRouteSpec{
			CommonRouteSpec: gwv1.CommonRouteSpec{ParentRefs: []gwv1.ParentReference{{Name: gwv1.ObjectName(gateway)}}},
			Rules: []gwv1.HTTPRouteRule{{BackendRefs: []gwv1.HTTPBackendRef{{BackendRef: gwv1.BackendRef{BackendObjectReference: gwv1.BackendObjectReference{
				Name: gwv1.ObjectName(service), Namespace: ptr(gwv1.Namespace(backendNS)), Port: ptr(gwv1.PortNumber(80)),
			}}}}}},
		},
	}
	Expect(k8sClient.Create(ctx, r)).To(Succeed())
	return r
}

func newMCPServer(ns, name string, perUser int64) *v1alpha1.MCPServer {
	m := &v1alpha1.MCPServer{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec: v1alpha1.MCPServerSpec{
			ServiceRef: v1alpha1.ServiceReference{Name: "mcp", Port: 80},
			Auth:       &v1alpha1.Auth{OIDC: &v1alpha1.OIDC{Issuer: "https://issuer.example.com", Audience: "toolgate"}},
			RateLimiting: &v1alpha1.RateLimiting{
				PerUser: &v1alpha1.Bucket{MaxTokens: perUser, RefillPeriod: metav1.Duration{Duration: time.Minute}},
			},
		},
	}
	Expect(k8sClient.Create(ctx, m)).To(Succeed())
	return m
}

func ptr[T any](v T) *T { return &v }

// conditionOf reads one condition through the API.
func conditionOf(conds []metav1.Condition, typ string) *metav1.Condition {
	return meta.FindStatusCondition(conds, typ)
}

func routeParentConditions(key types.NamespacedName) func() []metav1.Condition {
	return func() []metav1.Condition {
		var r gwv1.HTTPRoute
		if err := k8sClient.Get(ctx, key, &r); err != nil || len(r.Status.Parents) == 0 {
			return nil
		}
		return r.Status.Parents[0].Conditions
	}
}

func haveCondition(typ string, status metav1.ConditionStatus, reason string) OmegaMatcherFunc {
	return func(conds []metav1.Condition) bool {
		c := conditionOf(conds, typ)
		return c != nil && c.Status == status && c.Reason == reason
	}
}

// OmegaMatcherFunc adapts a predicate to Gomega's Satisfy.
type OmegaMatcherFunc func([]metav1.Condition) bool

var _ = Describe("GatewayClass status", func() {
	It("accepts classes with toolgate's controllerName and leaves the others alone", func() {
		ours := newGatewayClass(translate.ControllerName)
		theirs := newGatewayClass("example.com/other")
		Eventually(func() []metav1.Condition {
			var c gwv1.GatewayClass
			Expect(k8sClient.Get(ctx, client.ObjectKey{Name: ours}, &c)).To(Succeed())
			return c.Status.Conditions
		}, wait, poll).Should(Satisfy(haveCondition("Accepted", metav1.ConditionTrue, "Accepted")))
		Consistently(func() string {
			var c gwv1.GatewayClass
			Expect(k8sClient.Get(ctx, client.ObjectKey{Name: theirs}, &c)).To(Succeed())
			cond := conditionOf(c.Status.Conditions, "Accepted")
			if cond == nil {
				return ""
			}
			return cond.Reason
		}, 2*time.Second, poll).ShouldNot(Equal("Accepted"))
	})

	It("refuses a parametersRef to a missing ConfigMap with InvalidParameters", func() {
		c := &gwv1.GatewayClass{
			ObjectMeta: metav1.ObjectMeta{Name: unique("class")},
			Spec: gwv1.GatewayClassSpec{
				ControllerName: translate.ControllerName,
				ParametersRef:  &gwv1.ParametersReference{Group: "", Kind: "ConfigMap", Name: "nowhere", Namespace: ptr(gwv1.Namespace("default"))},
			},
		}
		Expect(k8sClient.Create(ctx, c)).To(Succeed())
		Eventually(func() []metav1.Condition {
			Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(c), c)).To(Succeed())
			return c.Status.Conditions
		}, wait, poll).Should(Satisfy(haveCondition("Accepted", metav1.ConditionFalse, "InvalidParameters")))
		Expect(conditionOf(c.Status.Conditions, "Accepted").Message).To(ContainSubstring("ConfigMap default/nowhere not found"))
	})
})

var _ = Describe("Gateway status and its data plane", func() {
	It("provisions the proxies, is Programmed once one is available, and repairs them", func() {
		ns := newNamespace()
		gw := newGateway(ns, newGatewayClass(translate.ControllerName), 8080)
		key := types.NamespacedName{Namespace: ns, Name: provision.Names(gw).Name}

		By("creating the Deployment, Service and ServiceAccount, owned by the Gateway")
		var dep appsv1.Deployment
		Eventually(func() error { return k8sClient.Get(ctx, key, &dep) }, wait, poll).Should(Succeed())
		Expect(dep.OwnerReferences).To(HaveLen(1))
		Expect(dep.OwnerReferences[0].UID).To(Equal(gw.UID))
		Expect(dep.Spec.Template.Spec.Containers[0].Args).To(ContainElements("proxy", "--gateway", ns+"/"+gw.Name))
		var svc corev1.Service
		Eventually(func() error { return k8sClient.Get(ctx, key, &svc) }, wait, poll).Should(Succeed())
		Expect(svc.Spec.Type).To(Equal(corev1.ServiceTypeLoadBalancer))
		Expect(svc.OwnerReferences[0].UID).To(Equal(gw.UID))
		var sa corev1.ServiceAccount
		Expect(k8sClient.Get(ctx, key, &sa)).To(Succeed())

		By("reporting Accepted but not yet Programmed")
		gatewayConditions := func() []metav1.Condition {
			Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(gw), gw)).To(Succeed())
			return gw.Status.Conditions
		}
		Eventually(gatewayConditions, wait, poll).Should(Satisfy(haveCondition("Accepted", metav1.ConditionTrue, "Accepted")))
		Eventually(gatewayConditions, wait, poll).Should(Satisfy(haveCondition("Programmed", metav1.ConditionFalse, "Pending")))
		Expect(gw.Status.Listeners).To(HaveLen(1))
		Expect(gw.Status.Listeners[0].SupportedKinds).To(ConsistOf(gwv1.RouteGroupKind{Group: ptr(gwv1.Group(gwv1.GroupName)), Kind: "HTTPRoute"}))
		Expect(conditionOf(gw.Status.Conditions, "Accepted").ObservedGeneration).To(Equal(gw.Generation))

		By("becoming Programmed when a replica is available (envtest runs no kubelet: the test writes the Deployment status)")
		Expect(changeStatus(&dep, func() {
			dep.Status.Replicas, dep.Status.ReadyReplicas, dep.Status.AvailableReplicas = 1, 1, 1
		})).To(Succeed())
		Eventually(gatewayConditions, wait, poll).Should(Satisfy(haveCondition("Programmed", metav1.ConditionTrue, "Programmed")))
		Expect(gw.Status.Addresses).NotTo(BeEmpty())
		Expect(gw.Status.Addresses[0].Value).To(Equal(svc.Spec.ClusterIP))

		By("recreating a deleted Service and repairing an edited Deployment")
		Expect(k8sClient.Delete(ctx, &svc)).To(Succeed())
		Eventually(func() types.UID {
			var again corev1.Service
			if k8sClient.Get(ctx, key, &again) != nil {
				return ""
			}
			return again.UID
		}, wait, poll).ShouldNot(SatisfyAny(BeEmpty(), Equal(svc.UID)))
		Expect(change(&dep, func() { dep.Spec.Template.Spec.Containers[0].Image = "example.com/not-toolgate:1" })).To(Succeed())
		Eventually(func() string {
			Expect(k8sClient.Get(ctx, key, &dep)).To(Succeed())
			return dep.Spec.Template.Spec.Containers[0].Image
		}, wait, poll).Should(Equal(provision.DefaultImage))

		By("giving the proxies their client certificate in a Secret owned by the Gateway (the data plane goes with its owner through the garbage collector, which envtest does not run)")
		var secret corev1.Secret
		Expect(k8sClient.Get(ctx, types.NamespacedName{Namespace: ns, Name: provision.ConfigClientSecretName(gw)}, &secret)).To(Succeed())
		Expect(secret.Type).To(Equal(corev1.SecretTypeTLS))
		Expect(secret.OwnerReferences).To(HaveLen(1))
		Expect(secret.OwnerReferences[0].UID).To(Equal(gw.UID))
	})

	It("reports conflicting listeners and unsupported protocols on the listeners", func() {
		ns := newNamespace()
		gw := &gwv1.Gateway{
			ObjectMeta: metav1.ObjectMeta{Name: unique("gw"), Namespace: ns},
			Spec: gwv1.GatewaySpec{
				GatewayClassName: gwv1.ObjectName(newGatewayClass(translate.ControllerName)),
				Listeners: []gwv1.Listener{
					{Name: "http", Protocol: gwv1.HTTPProtocolType, Port: 80},
					{Name: "https", Protocol: gwv1.HTTPSProtocolType, Port: 80, TLS: &gwv1.ListenerTLSConfig{
						CertificateRefs: []gwv1.SecretObjectReference{{Name: "cert"}},
					}},
					{Name: "ok", Protocol: gwv1.HTTPProtocolType, Port: 8080},
					{Name: "udp", Protocol: gwv1.UDPProtocolType, Port: 53},
				},
			},
		}
		Expect(k8sClient.Create(ctx, gw)).To(Succeed())
		listener := func(name string) func() []metav1.Condition {
			return func() []metav1.Condition {
				Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(gw), gw)).To(Succeed())
				for _, l := range gw.Status.Listeners {
					if string(l.Name) == name {
						return l.Conditions
					}
				}
				return nil
			}
		}
		Eventually(listener("http"), wait, poll).Should(Satisfy(haveCondition("Conflicted", metav1.ConditionTrue, "ProtocolConflict")))
		Eventually(listener("https"), wait, poll).Should(Satisfy(haveCondition("Conflicted", metav1.ConditionTrue, "ProtocolConflict")))
		Eventually(listener("https"), wait, poll).Should(Satisfy(haveCondition("ResolvedRefs", metav1.ConditionFalse, "InvalidCertificateRef")))
		Eventually(listener("ok"), wait, poll).Should(Satisfy(haveCondition("Conflicted", metav1.ConditionFalse, "NoConflicts")))
		Eventually(listener("udp"), wait, poll).Should(Satisfy(haveCondition("Accepted", metav1.ConditionFalse, "UnsupportedProtocol")))
		Expect(conditionOf(gw.Status.Conditions, "Accepted").Reason).To(Equal("ListenersNotValid"))
	})

	It("assigns the static addresses of its class's pool as the Service's external IPs, oldest Gateway first, and refuses the others with AddressNotUsable", func() {
		ns := newNamespace()
		Expect(k8sClient.Create(ctx, &corev1.ConfigMap{
			ObjectMeta: metav1.ObjectMeta{Name: "params", Namespace: ns},
			Data:       map[string]string{provision.KeyStaticAddressPool: "10.200.1.0/24", provision.KeyServiceType: "ClusterIP"},
		})).To(Succeed())
		class := &gwv1.GatewayClass{
			ObjectMeta: metav1.ObjectMeta{Name: unique("class")},
			Spec: gwv1.GatewayClassSpec{
				ControllerName: translate.ControllerName,
				ParametersRef:  &gwv1.ParametersReference{Group: "", Kind: "ConfigMap", Name: "params", Namespace: ptr(gwv1.Namespace(ns))},
			},
		}
		Expect(k8sClient.Create(ctx, class)).To(Succeed())
		ip := func(value string) gwv1.GatewaySpecAddress {
			return gwv1.GatewaySpecAddress{Type: ptr(gwv1.IPAddressType), Value: value}
		}
		withAddresses := func(addresses ...gwv1.GatewaySpecAddress) *gwv1.Gateway {
			gw := &gwv1.Gateway{
				ObjectMeta: metav1.ObjectMeta{Name: unique("gw"), Namespace: ns},
				Spec: gwv1.GatewaySpec{
					GatewayClassName: gwv1.ObjectName(class.Name),
					Addresses:        addresses,
					Listeners:        []gwv1.Listener{{Name: "http", Protocol: gwv1.HTTPProtocolType, Port: 8080}},
				},
			}
			Expect(k8sClient.Create(ctx, gw)).To(Succeed())
			return gw
		}
		conditions := func(gw *gwv1.Gateway) func() []metav1.Condition {
			return func() []metav1.Condition {
				Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(gw), gw)).To(Succeed())
				return gw.Status.Conditions
			}
		}
		service := func(gw *gwv1.Gateway) *corev1.Service {
			var svc corev1.Service
			Eventually(func() error {
				return k8sClient.Get(ctx, types.NamespacedName{Namespace: ns, Name: provision.Names(gw).Name}, &svc)
			}, wait, poll).Should(Succeed())
			return &svc
		}
		externalIPs := func(gw *gwv1.Gateway) func() []string {
			return func() []string { return service(gw).Spec.ExternalIPs }
		}
		ready := func(gw *gwv1.Gateway) {
			var dep appsv1.Deployment
			key := types.NamespacedName{Namespace: ns, Name: provision.Names(gw).Name}
			Eventually(func() error { return k8sClient.Get(ctx, key, &dep) }, wait, poll).Should(Succeed())
			Expect(changeStatus(&dep, func() {
				dep.Status.Replicas, dep.Status.ReadyReplicas, dep.Status.AvailableReplicas = 1, 1, 1
			})).To(Succeed())
		}

		By("assigning the address of the pool and refusing the one outside it")
		first := withAddresses(ip("10.200.2.1"), ip("10.200.1.7"))
		ready(first)
		Eventually(conditions(first), wait, poll).Should(Satisfy(haveCondition("Programmed", metav1.ConditionFalse, "AddressNotUsable")))
		Expect(conditionOf(first.Status.Conditions, "Accepted").Status).To(Equal(metav1.ConditionTrue))
		Expect(conditionOf(first.Status.Conditions, "Programmed").Message).To(ContainSubstring("spec.addresses[0] 10.200.2.1 is not usable: it is outside the static address pool"))
		Eventually(externalIPs(first), wait, poll).Should(Equal([]string{"10.200.1.7"}))
		Expect(first.Status.Addresses).To(Equal([]gwv1.GatewayStatusAddress{{Type: ptr(gwv1.IPAddressType), Value: "10.200.1.7"}}))

		By("becoming Programmed, with exactly that address, once the other is removed")
		Expect(change(first, func() { first.Spec.Addresses = []gwv1.GatewaySpecAddress{ip("10.200.1.7")} })).To(Succeed())
		Eventually(conditions(first), wait, poll).Should(Satisfy(haveCondition("Programmed", metav1.ConditionTrue, "Programmed")))
		Expect(first.Status.Addresses).To(Equal([]gwv1.GatewayStatusAddress{{Type: ptr(gwv1.IPAddressType), Value: "10.200.1.7"}}))

		By("refusing the same address to a newer Gateway")
		// Creation times have whole seconds: a Gateway made in the same
		// second as the first is not newer (ties go by name), so the
		// second one is made in a later second.
		time.Sleep(time.Until(first.CreationTimestamp.Add(time.Second)))
		second := withAddresses(ip("10.200.1.7"))
		Expect(second.CreationTimestamp.After(first.CreationTimestamp.Time)).To(BeTrue(), "the second Gateway is newer")
		ready(second)
		Eventually(conditions(second), wait, poll).Should(Satisfy(haveCondition("Programmed", metav1.ConditionFalse, "AddressNotUsable")))
		Expect(conditionOf(second.Status.Conditions, "Programmed").Message).To(ContainSubstring("Gateway " + ns + "/" + first.Name + " claimed it first"))
		Expect(second.Status.Addresses).To(BeEmpty())
		Expect(externalIPs(second)()).To(BeEmpty())
		Expect(externalIPs(first)()).To(Equal([]string{"10.200.1.7"}))

		By("handing it over when the first Gateway lets it go, which then shows its Service's own address")
		Expect(change(first, func() { first.Spec.Addresses = nil })).To(Succeed())
		Eventually(externalIPs(first), wait, poll).Should(BeEmpty())
		Eventually(func() []gwv1.GatewayStatusAddress {
			conditions(first)()
			return first.Status.Addresses
		}, wait, poll).Should(Equal([]gwv1.GatewayStatusAddress{{Type: ptr(gwv1.IPAddressType), Value: service(first).Spec.ClusterIP}}))
		Eventually(conditions(second), wait, poll).Should(Satisfy(haveCondition("Programmed", metav1.ConditionTrue, "Programmed")))
		Expect(second.Status.Addresses).To(Equal([]gwv1.GatewayStatusAddress{{Type: ptr(gwv1.IPAddressType), Value: "10.200.1.7"}}))
		Expect(externalIPs(second)()).To(Equal([]string{"10.200.1.7"}))
	})
})

var _ = Describe("ListenerSet status", func() {
	It("attaches the sets a Gateway admits, exposes their ports on its data plane, and refuses the others with NotAllowed", func() {
		ns := newNamespace()
		gw := &gwv1.Gateway{
			ObjectMeta: metav1.ObjectMeta{Name: unique("gw"), Namespace: ns},
			Spec: gwv1.GatewaySpec{
				GatewayClassName: gwv1.ObjectName(newGatewayClass(translate.ControllerName)),
				Listeners:        []gwv1.Listener{{Name: "http", Protocol: gwv1.HTTPProtocolType, Port: 8080}},
				AllowedListeners: &gwv1.AllowedListeners{Namespaces: &gwv1.ListenerNamespaces{From: ptr(gwv1.NamespacesFromSame)}},
			},
		}
		Expect(k8sClient.Create(ctx, gw)).To(Succeed())
		newSet := func(ns string, port int32) *gwv1.ListenerSet {
			set := &gwv1.ListenerSet{
				ObjectMeta: metav1.ObjectMeta{Name: unique("set"), Namespace: ns},
				Spec: gwv1.ListenerSetSpec{
					ParentRef: gwv1.ParentGatewayReference{Name: gwv1.ObjectName(gw.Name), Namespace: ptr(gwv1.Namespace(gw.Namespace))},
					Listeners: []gwv1.ListenerEntry{{Name: "extra", Protocol: gwv1.HTTPProtocolType, Port: gwv1.PortNumber(port)}},
				},
			}
			Expect(k8sClient.Create(ctx, set)).To(Succeed())
			return set
		}
		admitted := newSet(ns, 9090)
		refused := newSet(newNamespace(), 9191)
		setConditions := func(set *gwv1.ListenerSet) func() []metav1.Condition {
			return func() []metav1.Condition {
				Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(set), set)).To(Succeed())
				return set.Status.Conditions
			}
		}

		By("accepting the set of the Gateway's namespace, with its listener's status, and counting it on the Gateway")
		Eventually(setConditions(admitted), wait, poll).Should(Satisfy(haveCondition("Accepted", metav1.ConditionTrue, "Accepted")))
		Expect(admitted.Status.Listeners).To(HaveLen(1))
		Expect(admitted.Status.Listeners[0].Conditions).To(Satisfy(haveCondition("Accepted", metav1.ConditionTrue, "Accepted")))
		Expect(conditionOf(admitted.Status.Conditions, "Accepted").ObservedGeneration).To(Equal(admitted.Generation))
		Eventually(func() *int32 {
			Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(gw), gw)).To(Succeed())
			return gw.Status.AttachedListenerSets
		}, wait, poll).Should(HaveValue(Equal(int32(1))))

		By("refusing the set of another namespace")
		Eventually(setConditions(refused), wait, poll).Should(Satisfy(haveCondition("Accepted", metav1.ConditionFalse, "NotAllowed")))
		Expect(refused.Status.Conditions).To(Satisfy(haveCondition("Programmed", metav1.ConditionFalse, "NotAllowed")))

		By("exposing the admitted set's port, and not the refused one's, on the data plane's Service")
		servicePorts := func() []int32 {
			var svc corev1.Service
			if err := k8sClient.Get(ctx, types.NamespacedName{Namespace: ns, Name: provision.Names(gw).Name}, &svc); err != nil {
				return nil
			}
			var ports []int32
			for _, p := range svc.Spec.Ports {
				ports = append(ports, p.Port)
			}
			return ports
		}
		Eventually(servicePorts, wait, poll).Should(ConsistOf(int32(8080), int32(9090)))
	})
})

var _ = Describe("Secrets and ConfigMaps nothing referred to", func() {
	It("are read whole once a Gateway refers to them, and their edits apply", func() {
		ns := newNamespace()
		ca, err := pki.NewCA(time.Now())
		Expect(err).NotTo(HaveOccurred())
		certPEM, keyPEM, err := ca.IssueClient(types.NamespacedName{Namespace: ns, Name: "x"}, time.Now(), time.Hour)
		Expect(err).NotTo(HaveOccurred())

		By("creating the certificate's Secret before anything refers to it: the cache keeps its metadata only")
		secret := &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Name: "cert", Namespace: ns},
			Type:       corev1.SecretTypeTLS,
			Data:       map[string][]byte{corev1.TLSCertKey: certPEM, corev1.TLSPrivateKeyKey: keyPEM},
		}
		Expect(k8sClient.Create(ctx, secret)).To(Succeed())
		class := newGatewayClass(translate.ControllerName)
		time.Sleep(time.Second) // the Secret's event has come and gone

		By("referring to it from an HTTPS listener: its certificate resolves")
		gw := &gwv1.Gateway{
			ObjectMeta: metav1.ObjectMeta{Name: unique("gw"), Namespace: ns},
			Spec: gwv1.GatewaySpec{
				GatewayClassName: gwv1.ObjectName(class),
				Listeners: []gwv1.Listener{{Name: "https", Protocol: gwv1.HTTPSProtocolType, Port: 8443, TLS: &gwv1.ListenerTLSConfig{
					CertificateRefs: []gwv1.SecretObjectReference{{Name: "cert"}},
				}}},
			},
		}
		Expect(k8sClient.Create(ctx, gw)).To(Succeed())
		listener := func() []metav1.Condition {
			Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(gw), gw)).To(Succeed())
			if len(gw.Status.Listeners) == 0 {
				return nil
			}
			return gw.Status.Listeners[0].Conditions
		}
		Eventually(listener, wait, poll).Should(Satisfy(haveCondition("ResolvedRefs", metav1.ConditionTrue, "ResolvedRefs")))

		By("breaking the Secret: the listener says so")
		Expect(change(secret, func() { secret.Data[corev1.TLSPrivateKeyKey] = []byte("not a key") })).To(Succeed())
		Eventually(listener, wait, poll).Should(Satisfy(haveCondition("ResolvedRefs", metav1.ConditionFalse, "InvalidCertificateRef")))

		By("mending it: resolved again")
		Expect(change(secret, func() { secret.Data[corev1.TLSPrivateKeyKey] = keyPEM })).To(Succeed())
		Eventually(listener, wait, poll).Should(Satisfy(haveCondition("ResolvedRefs", metav1.ConditionTrue, "ResolvedRefs")))
	})
})

var _ = Describe("HTTPRoute status", func() {
	It("keeps a route with an ExtensionRef to a missing MCPServer Accepted with ResolvedRefs False, and heals when it appears", func() {
		ns := newNamespace()
		gw := newGateway(ns, newGatewayClass(translate.ControllerName), 8080)
		route := newRoute(ns, gw.Name, "github", "mcp", 80)
		key := client.ObjectKeyFromObject(route)

		Eventually(routeParentConditions(key), wait, poll).Should(Satisfy(haveCondition("ResolvedRefs", metav1.ConditionFalse, "BackendNotFound")))
		conds := routeParentConditions(key)()
		Expect(conditionOf(conds, "Accepted").Status).To(Equal(metav1.ConditionTrue))
		Expect(conditionOf(conds, "ResolvedRefs").Message).To(ContainSubstring(`ExtensionRef to MCPServer "github"`))
		Expect(conditionOf(conds, "ResolvedRefs").ObservedGeneration).To(Equal(route.Generation))

		By("recording a Warning Event on the route")
		Eventually(func() []string {
			var list eventsv1.EventList
			Expect(k8sClient.List(ctx, &list, client.InNamespace(ns))).To(Succeed())
			var reasons []string
			for _, e := range list.Items {
				if e.Regarding.Kind == "HTTPRoute" && e.Regarding.Name == route.Name && e.Type == corev1.EventTypeWarning {
					reasons = append(reasons, e.Reason)
				}
			}
			return reasons
		}, wait, poll).Should(ContainElement("BackendNotFound"))

		newMCPServer(ns, "github", 5)
		Expect(k8sClient.Create(ctx, &corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Name: "mcp", Namespace: ns},
			Spec:       corev1.ServiceSpec{Ports: []corev1.ServicePort{{Port: 80}}},
		})).To(Succeed())
		Eventually(routeParentConditions(key), wait, poll).Should(Satisfy(haveCondition("ResolvedRefs", metav1.ConditionTrue, "ResolvedRefs")))

		By("counting the route on its listener")
		Eventually(func() int32 {
			Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(gw), gw)).To(Succeed())
			if len(gw.Status.Listeners) == 0 {
				return -1
			}
			return gw.Status.Listeners[0].AttachedRoutes
		}, wait, poll).Should(Equal(int32(1)))
	})

	It("says a route that reaches an MCPServer's Service without its filter bypasses its policy, with a Warning Event", func() {
		ns := newNamespace()
		gw := newGateway(ns, newGatewayClass(translate.ControllerName), 8080)
		newMCPServer(ns, "github", 5)
		Expect(k8sClient.Create(ctx, &corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Name: "mcp", Namespace: ns},
			Spec:       corev1.ServiceSpec{Ports: []corev1.ServicePort{{Port: 80}}},
		})).To(Succeed())
		guarded := newRoute(ns, gw.Name, "github", "mcp", 80)
		bypass := &gwv1.HTTPRoute{
			ObjectMeta: metav1.ObjectMeta{Name: unique("bypass"), Namespace: ns},
			Spec: gwv1.HTTPRouteSpec{
				CommonRouteSpec: gwv1.CommonRouteSpec{ParentRefs: []gwv1.ParentReference{{Name: gwv1.ObjectName(gw.Name)}}},
				Rules: []gwv1.HTTPRouteRule{{BackendRefs: []gwv1.HTTPBackendRef{{BackendRef: gwv1.BackendRef{BackendObjectReference: gwv1.BackendObjectReference{
					Name: "mcp", Port: ptr(gwv1.PortNumber(80)),
				}}}}}},
			},
		}
		Expect(k8sClient.Create(ctx, bypass)).To(Succeed())

		Eventually(routeParentConditions(client.ObjectKeyFromObject(bypass)), wait, poll).Should(
			Satisfy(haveCondition(translate.ConditionMCPPolicyEnforced, metav1.ConditionFalse, translate.ReasonBypassesMCPServerPolicy)))
		message := conditionOf(routeParentConditions(client.ObjectKeyFromObject(bypass))(), translate.ConditionMCPPolicyEnforced).Message
		Expect(message).To(ContainSubstring("MCPServer " + ns + "/github"))
		Expect(message).To(ContainSubstring("without its ExtensionRef filter"))
		Eventually(routeParentConditions(client.ObjectKeyFromObject(guarded)), wait, poll).Should(
			Satisfy(haveCondition(translate.ConditionMCPPolicyEnforced, metav1.ConditionTrue, translate.ReasonPolicyEnforced)))

		Eventually(func() []string {
			var list eventsv1.EventList
			Expect(k8sClient.List(ctx, &list, client.InNamespace(ns))).To(Succeed())
			var notes []string
			for _, e := range list.Items {
				if e.Regarding.Kind == "HTTPRoute" && e.Regarding.Name == bypass.Name && e.Type == corev1.EventTypeWarning && e.Reason == translate.ReasonBypassesMCPServerPolicy {
					notes = append(notes, e.Note)
				}
			}
			return notes
		}, wait, poll).Should(ContainElement(ContainSubstring("MCPServer " + ns + "/github")))
	})

	It("sets ResolvedRefs False with InvalidKind for an ExtensionRef of an unknown kind", func() {
		ns := newNamespace()
		gw := newGateway(ns, newGatewayClass(translate.ControllerName), 8080)
		r := &gwv1.HTTPRoute{
			ObjectMeta: metav1.ObjectMeta{Name: unique("route"), Namespace: ns},
			Spec: gwv1.HTTPRouteSpec{
				CommonRouteSpec: gwv1.CommonRouteSpec{ParentRefs: []gwv1.ParentReference{{Name: gwv1.ObjectName(gw.Name)}}},
				Rules: []gwv1.HTTPRouteRule{{Filters: []gwv1.HTTPRouteFilter{{
					Type:         gwv1.HTTPRouteFilterExtensionRef,
					ExtensionRef: &gwv1.LocalObjectReference{Group: "example.com", Kind: "RateLimit", Name: "strict"},
				}}}},
			},
		}
		Expect(k8sClient.Create(ctx, r)).To(Succeed())
		key := client.ObjectKeyFromObject(r)
		Eventually(routeParentConditions(key), wait, poll).Should(Satisfy(haveCondition("ResolvedRefs", metav1.ConditionFalse, "InvalidKind")))
		conds := routeParentConditions(key)()
		Expect(conditionOf(conds, "Accepted").Status).To(Equal(metav1.ConditionTrue))
		Expect(conditionOf(conds, "ResolvedRefs").Message).To(ContainSubstring(`example.com/RateLimit "strict"`))
	})

	It("needs a ReferenceGrant for a backend in another namespace", func() {
		ns := newNamespace()
		gw := newGateway(ns, newGatewayClass(translate.ControllerName), 8080)
		other := newNamespace()
		Expect(k8sClient.Create(ctx, &corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Name: "shared", Namespace: other},
			Spec:       corev1.ServiceSpec{Ports: []corev1.ServicePort{{Port: 80}}},
		})).To(Succeed())
		r := newBackendRoute(ns, gw.Name, other, "shared")
		key := client.ObjectKeyFromObject(r)
		Eventually(routeParentConditions(key), wait, poll).Should(Satisfy(haveCondition("ResolvedRefs", metav1.ConditionFalse, "RefNotPermitted")))

		Expect(k8sClient.Create(ctx, &gwv1.ReferenceGrant{
			ObjectMeta: metav1.ObjectMeta{Name: "routes", Namespace: other},
			Spec: gwv1.ReferenceGrantSpec{
				From: []gwv1.ReferenceGrantFrom{{Group: gwv1.GroupName, Kind: "HTTPRoute", Namespace: gwv1.Namespace(ns)}},
				To:   []gwv1.ReferenceGrantTo{{Group: "", Kind: "Service"}},
			},
		})).To(Succeed())
		Eventually(routeParentConditions(key), wait, poll).Should(Satisfy(haveCondition("ResolvedRefs", metav1.ConditionTrue, "ResolvedRefs")))
	})

	It("refuses a route from another namespace when the listener allows only its own", func() {
		ns := newNamespace()
		gw := newGateway(ns, newGatewayClass(translate.ControllerName), 8080)
		other := newNamespace()
		r := &gwv1.HTTPRoute{
			ObjectMeta: metav1.ObjectMeta{Name: unique("route"), Namespace: other},
			Spec: gwv1.HTTPRouteSpec{CommonRouteSpec: gwv1.CommonRouteSpec{ParentRefs: []gwv1.ParentReference{{
				Name: gwv1.ObjectName(gw.Name), Namespace: ptr(gwv1.Namespace(ns)),
			}}}},
		}
		Expect(k8sClient.Create(ctx, r)).To(Succeed())
		Eventually(routeParentConditions(client.ObjectKeyFromObject(r)), wait, poll).
			Should(Satisfy(haveCondition("Accepted", metav1.ConditionFalse, "NotAllowedByListeners")))
	})
})

var _ = Describe("MCPServer status", func() {
	It("sets RateLimitingConfigValid False when a Gateway of several replicas without Redis applies the limits", func() {
		ns := newNamespace()
		Expect(k8sClient.Create(ctx, &corev1.ConfigMap{
			ObjectMeta: metav1.ObjectMeta{Name: "proxies", Namespace: ns},
			Data:       map[string]string{"replicas": "3"},
		})).To(Succeed())
		class := &gwv1.GatewayClass{
			ObjectMeta: metav1.ObjectMeta{Name: unique("class")},
			Spec: gwv1.GatewayClassSpec{
				ControllerName: translate.ControllerName,
				ParametersRef:  &gwv1.ParametersReference{Group: "", Kind: "ConfigMap", Name: "proxies", Namespace: ptr(gwv1.Namespace(ns))},
			},
		}
		Expect(k8sClient.Create(ctx, class)).To(Succeed())
		gw := newGateway(ns, class.Name, 8080)
		m := newMCPServer(ns, "replicated", 5)
		newRoute(ns, gw.Name, m.Name, "mcp", 80)
		Eventually(func() []metav1.Condition {
			Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(m), m)).To(Succeed())
			return m.Status.Conditions
		}, wait, poll).Should(Satisfy(haveCondition(v1alpha1.ConditionRateLimitingConfigValid, metav1.ConditionFalse, "NoSharedStore")))
		Expect(conditionOf(m.Status.Conditions, v1alpha1.ConditionRateLimitingConfigValid).Message).To(ContainSubstring("runs 3 proxy replicas"))

		By("becoming valid once the class shares buckets through Redis")
		cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "proxies"}}
		Expect(change(cm, func() { cm.Data["redisURL"] = "redis://redis.toolgate-system:6379" })).To(Succeed())
		Eventually(func() []metav1.Condition {
			Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(m), m)).To(Succeed())
			return m.Status.Conditions
		}, wait, poll).Should(Satisfy(haveCondition(v1alpha1.ConditionRateLimitingConfigValid, metav1.ConditionTrue, "Valid")))
	})

	It("sets RateLimitingConfigValid on create and on every change, with the object's generation", func() {
		ns := newNamespace()
		m := newMCPServer(ns, "limited", 10)
		key := client.ObjectKeyFromObject(m)
		valid := func() *metav1.Condition {
			Expect(k8sClient.Get(ctx, key, m)).To(Succeed())
			return conditionOf(m.Status.Conditions, v1alpha1.ConditionRateLimitingConfigValid)
		}
		Eventually(valid, wait, poll).ShouldNot(BeNil())
		Expect(valid().Status).To(Equal(metav1.ConditionTrue))
		Expect(valid().ObservedGeneration).To(Equal(int64(1)))
		Expect(m.Status.ObservedGeneration).To(Equal(int64(1)))
		Expect(valid().Message).To(ContainSubstring("perUser 10/1m0s"))

		Expect(change(m, func() { m.Spec.RateLimiting.PerUser.MaxTokens = 20 })).To(Succeed())
		Eventually(func() string { return valid().Message }, wait, poll).Should(ContainSubstring("perUser 20/1m0s"))
		Expect(valid().ObservedGeneration).To(Equal(int64(2)))

		Expect(change(m, func() { m.Spec.RateLimiting = nil })).To(Succeed())
		Eventually(func() string { return valid().Reason }, wait, poll).Should(Equal("NotConfigured"))
		Expect(valid().Status).To(Equal(metav1.ConditionTrue))
	})
})

var _ = Describe("BackendTLSPolicy status", func() {
	It("reports the policy under each Gateway whose routes use its Service, follows its CA ConfigMap, and keeps other controllers' ancestors", func() {
		ns := newNamespace()
		gw := newGateway(ns, newGatewayClass(translate.ControllerName), 80)
		svc := &corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Name: "secure", Namespace: ns},
			Spec:       corev1.ServiceSpec{Ports: []corev1.ServicePort{{Name: "https", Port: 443}}},
		}
		Expect(k8sClient.Create(ctx, svc)).To(Succeed())
		route := &gwv1.HTTPRoute{
			ObjectMeta: metav1.ObjectMeta{Name: unique("route"), Namespace: ns},
			Spec: gwv1.HTTPRouteSpec{
				CommonRouteSpec: gwv1.CommonRouteSpec{ParentRefs: []gwv1.ParentReference{{Name: gwv1.ObjectName(gw.Name)}}},
				Rules: []gwv1.HTTPRouteRule{{BackendRefs: []gwv1.HTTPBackendRef{{BackendRef: gwv1.BackendRef{
					BackendObjectReference: gwv1.BackendObjectReference{Name: "secure", Port: ptr(gwv1.PortNumber(443))},
				}}}}},
			},
		}
		Expect(k8sClient.Create(ctx, route)).To(Succeed())
		ca, err := pki.NewCA(time.Now())
		Expect(err).NotTo(HaveOccurred())
		cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "backend-ca", Namespace: ns}, Data: map[string]string{"ca.crt": string(ca.CertPEM())}}
		Expect(k8sClient.Create(ctx, cm)).To(Succeed())
		policy := &gwv1.BackendTLSPolicy{
			ObjectMeta: metav1.ObjectMeta{Name: "secure", Namespace: ns},
			Spec: gwv1.BackendTLSPolicySpec{
				TargetRefs: []gwv1.LocalPolicyTargetReferenceWithSectionName{{
					LocalPolicyTargetReference: gwv1.LocalPolicyTargetReference{Group: "", Kind: "Service", Name: "secure"},
				}},
				Validation: gwv1.BackendTLSPolicyValidation{
					CACertificateRefs: []gwv1.LocalObjectReference{{Group: "", Kind: "ConfigMap", Name: "backend-ca"}},
					Hostname:          "secure.example.com",
				},
			},
		}
		Expect(k8sClient.Create(ctx, policy)).To(Succeed())

		ours := func() []metav1.Condition {
			Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(policy), policy)).To(Succeed())
			for _, a := range policy.Status.Ancestors {
				if a.ControllerName == translate.ControllerName && string(a.AncestorRef.Name) == gw.Name {
					return a.Conditions
				}
			}
			return nil
		}
		Eventually(ours, wait, poll).Should(And(
			Satisfy(haveCondition("Accepted", metav1.ConditionTrue, "Accepted")),
			Satisfy(haveCondition("ResolvedRefs", metav1.ConditionTrue, "ResolvedRefs"))))

		By("an empty ca.crt: no valid CA certificate")
		Expect(change(cm, func() { cm.Data["ca.crt"] = "" })).To(Succeed())
		Eventually(ours, wait, poll).Should(And(
			Satisfy(haveCondition("Accepted", metav1.ConditionFalse, "NoValidCACertificate")),
			Satisfy(haveCondition("ResolvedRefs", metav1.ConditionFalse, "InvalidCACertificateRef"))))

		By("another controller's ancestor is left alone")
		theirs := gwv1.PolicyAncestorStatus{
			AncestorRef:    gwv1.ParentReference{Name: "elsewhere"},
			ControllerName: "example.com/other",
			Conditions: []metav1.Condition{{
				Type: "Accepted", Status: metav1.ConditionTrue, Reason: "Accepted", ObservedGeneration: policy.Generation,
				LastTransitionTime: metav1.Now(),
			}},
		}
		Expect(changeStatus(policy, func() { policy.Status.Ancestors = append(policy.Status.Ancestors, theirs) })).To(Succeed())
		Expect(change(cm, func() { cm.Data["ca.crt"] = string(ca.CertPEM()) })).To(Succeed())
		Eventually(ours, wait, poll).Should(Satisfy(haveCondition("Accepted", metav1.ConditionTrue, "Accepted")))
		Expect(policy.Status.Ancestors).To(ContainElement(HaveField("ControllerName", gwv1.GatewayController("example.com/other"))))

		By("no route uses the Service any more: our ancestor goes")
		Expect(k8sClient.Delete(ctx, route)).To(Succeed())
		Eventually(ours, wait, poll).Should(BeNil())
		Expect(policy.Status.Ancestors).To(HaveLen(1))
	})
})
