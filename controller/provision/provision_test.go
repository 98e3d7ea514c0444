package provision_test

import (
	"encoding/base64"
	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/toolgate/toolgate/controller/provision"
)

// newGateway creates a namespace of its own and a Gateway in it with an
// HTTP port shared by two listeners and an HTTPS port.
func newGateway(name string) *gwv1.Gateway {
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "provision-"}}
	Expect(k8sClient.Create(ctx, ns)).To(Succeed())
	gw := &gwv1.Gateway{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns.Name, Name: name},
		Spec: gwv1.GatewaySpec{
			GatewayClassName: "toolgate",
			Listeners: []gwv1.Listener{
				{Name: "http", Protocol: gwv1.HTTPProtocolType, Port: 80},
				{Name: "http-api", Protocol: gwv1.HTTPProtocolType, Port: 80, Hostname: ptr.To[gwv1.Hostname]("api.example.com")},
				{
					Name: "https", Protocol: gwv1.HTTPSProtocolType, Port: 443,
					TLS: &gwv1.ListenerTLSConfig{
						Mode:            ptr.To(gwv1.TLSModeTerminate),
						CertificateRefs: []gwv1.SecretObjectReference{{Name: "web-cert"}},
					},
				},
			},
		},
	}
	Expect(k8sClient.Create(ctx, gw)).To(Succeed())
	return gw
}

// ownedBy is the owner reference the garbage collector follows from a
// data-plane object to its Gateway.
func ownedBy(gw *gwv1.Gateway) metav1.OwnerReference {
	return metav1.OwnerReference{
		APIVersion: "gateway.networking.k8s.io/v1", Kind: "Gateway", Name: gw.Name, UID: gw.UID,
		Controller: ptr.To(true), BlockOwnerDeletion: ptr.To(true),
	}
}

func dataPlaneKey(gw *gwv1.Gateway) types.NamespacedName {
	return types.NamespacedName{Namespace: gw.Namespace, Name: provision.Names(gw).Name}
}

func getDeployment(gw *gwv1.Gateway) *appsv1.Deployment {
	var d appsv1.Deployment
	Expect(k8sClient.Get(ctx, dataPlaneKey(gw), &d)).To(Succeed())
	return &d
}

func getService(gw *gwv1.Gateway) *corev1.Service {
	var s corev1.Service
	Expect(k8sClient.Get(ctx, dataPlaneKey(gw), &s)).To(Succeed())
	return &s
}

func bindingKey(gw *gwv1.Gateway) types.NamespacedName {
	return types.NamespacedName{Name: provision.Names(gw).ClusterRoleBinding}
}

func ensure(gw *gwv1.Gateway, p provision.Params) provision.State {
	GinkgoHelper()
	st, err := provisioner.Ensure(ctx, gw, p)
	Expect(err).NotTo(HaveOccurred())
	return st
}

func ipAddress(v string) gwv1.GatewayStatusAddress {
	return gwv1.GatewayStatusAddress{Type: ptr.To(gwv1.IPAddressType), Value: v}
}

func hostnameAddress(v string) gwv1.GatewayStatusAddress {
	return gwv1.GatewayStatusAddress{Type: ptr.To(gwv1.HostnameAddressType), Value: v}
}

// existingGateways is what a controller passes to Cleanup: every Gateway
// that is still there.
func existingGateways() []types.NamespacedName {
	GinkgoHelper()
	var list gwv1.GatewayList
	Expect(k8sClient.List(ctx, &list)).To(Succeed())
	var live []types.NamespacedName
	for _, gw := range list.Items {
		live = append(live, types.NamespacedName{Namespace: gw.Namespace, Name: gw.Name})
	}
	return live
}

var _ = Describe("Ensure", func() {
	redis := provision.Params{
		RedisURL: "redis://redis.toolgate-system:6379",
		RedisPasswordSecret: &corev1.SecretKeySelector{
			LocalObjectReference: corev1.LocalObjectReference{Name: "redis-auth"}, Key: "password",
		},
	}

	It("creates the ServiceAccount, Deployment, Service and ClusterRoleBinding, owned by the Gateway", func() {
		gw := newGateway("web")
		ensure(gw, redis)
		names := provision.Names(gw)

		By("the ServiceAccount")
		var sa corev1.ServiceAccount
		Expect(k8sClient.Get(ctx, dataPlaneKey(gw), &sa)).To(Succeed())
		Expect(sa.OwnerReferences).To(ConsistOf(ownedBy(gw)))
		Expect(sa.Labels).To(Equal(names.Labels))

		By("the Deployment")
		d := getDeployment(gw)
		Expect(d.OwnerReferences).To(ConsistOf(ownedBy(gw)))
		Expect(d.Spec.Replicas).To(HaveValue(BeEquivalentTo(1)))
		Expect(d.Spec.Selector.MatchLabels).To(Equal(names.Labels))
		Expect(d.Spec.Template.Labels).To(Equal(names.Labels))
		pod := d.Spec.Template.Spec
		Expect(pod.ServiceAccountName).To(Equal(names.Name))
		Expect(pod.Containers).To(HaveLen(1))
		c := pod.Containers[0]
		Expect(c.Image).To(Equal(provision.DefaultImage))
		Expect(c.Args).To(Equal([]string{"proxy", "--gateway", gw.Namespace + "/web", "--redis-url", "redis://redis.toolgate-system:6379"}))
		Expect(c.Env).To(ConsistOf(corev1.EnvVar{
			Name:      "TOOLGATE_REDIS_PASSWORD",
			ValueFrom: &corev1.EnvVarSource{SecretKeyRef: redis.RedisPasswordSecret},
		}, corev1.EnvVar{
			Name: provision.SessionKeyEnv,
			ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{
				LocalObjectReference: corev1.LocalObjectReference{Name: provision.SessionKeySecretName(gw)}, Key: provision.SessionKeySecretKey,
			}},
		}))
		Expect(c.Ports).To(ConsistOf(
			corev1.ContainerPort{Name: "admin", ContainerPort: 9901, Protocol: corev1.ProtocolTCP},
			corev1.ContainerPort{Name: "http-80", ContainerPort: 80, Protocol: corev1.ProtocolTCP},
			corev1.ContainerPort{Name: "https-443", ContainerPort: 443, Protocol: corev1.ProtocolTCP},
		))
		Expect(c.ReadinessProbe.HTTPGet.Path).To(Equal("/readyz"))
		Expect(c.LivenessProbe.HTTPGet.Path).To(Equal("/healthz"))
		Expect(c.SecurityContext.ReadOnlyRootFilesystem).To(HaveValue(BeTrue()))
		Expect(c.SecurityContext.Capabilities.Drop).To(ConsistOf(corev1.Capability("ALL")))
		Expect(pod.SecurityContext.RunAsNonRoot).To(HaveValue(BeTrue()))

		By("the Service")
		svc := getService(gw)
		Expect(svc.OwnerReferences).To(ConsistOf(ownedBy(gw)))
		Expect(svc.Spec.Type).To(Equal(corev1.ServiceTypeLoadBalancer))
		Expect(svc.Spec.Selector).To(Equal(names.Labels))
		Expect(svc.Spec.Ports).To(HaveLen(2))
		for i, want := range []struct {
			name string
			port int32
		}{{"http-80", 80}, {"https-443", 443}} {
			Expect(svc.Spec.Ports[i].Name).To(Equal(want.name))
			Expect(svc.Spec.Ports[i].Port).To(Equal(want.port))
			Expect(svc.Spec.Ports[i].Protocol).To(Equal(corev1.ProtocolTCP))
			Expect(svc.Spec.Ports[i].TargetPort).To(Equal(intstr.FromInt32(want.port)))
		}

		By("the ClusterRoleBinding, which no namespaced Gateway can own")
		var crb rbacv1.ClusterRoleBinding
		Expect(k8sClient.Get(ctx, bindingKey(gw), &crb)).To(Succeed())
		Expect(crb.OwnerReferences).To(BeEmpty())
		Expect(crb.Labels).To(Equal(names.Labels))
		Expect(crb.Annotations).To(HaveKeyWithValue(provision.AnnotationGateway, gw.Namespace+"/web"))
		Expect(crb.RoleRef).To(Equal(rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "toolgate-proxy"}))
		Expect(crb.Subjects).To(ConsistOf(rbacv1.Subject{Kind: "ServiceAccount", Name: names.Name, Namespace: gw.Namespace}))

		By("the ClusterRole it binds")
		var role rbacv1.ClusterRole
		Expect(k8sClient.Get(ctx, client.ObjectKey{Name: "toolgate-proxy"}, &role)).To(Succeed())
		Expect(role.Rules).To(Equal(provision.ClusterRole().Rules))

		By("every object written by the toolgate-controller field manager")
		for _, o := range []client.Object{&sa, d, svc, &crb} {
			managers := []string{}
			for _, m := range o.GetManagedFields() {
				managers = append(managers, m.Manager+"/"+string(m.Operation))
			}
			Expect(managers).To(ContainElement("toolgate-controller/Apply"), "%T", o)
		}
	})

	It("writes nothing when nothing changed", func() {
		gw := newGateway("steady")
		ensure(gw, redis)
		var before [4]string
		objects := func() [4]client.Object {
			var sa corev1.ServiceAccount
			Expect(k8sClient.Get(ctx, dataPlaneKey(gw), &sa)).To(Succeed())
			var crb rbacv1.ClusterRoleBinding
			Expect(k8sClient.Get(ctx, bindingKey(gw), &crb)).To(Succeed())
			return [4]client.Object{&sa, getDeployment(gw), getService(gw), &crb}
		}
		for i, o := range objects() {
			before[i] = o.GetResourceVersion()
		}
		ensure(gw, redis)
		for i, o := range objects() {
			Expect(o.GetResourceVersion()).To(Equal(before[i]), "%T %s was written again", o, o.GetName())
		}
	})

	It("creates the session-key Secret once, owned by the Gateway, and hands it to the proxies", func() {
		gw := newGateway("sessions")
		ensure(gw, redis)
		key := types.NamespacedName{Namespace: gw.Namespace, Name: provision.SessionKeySecretName(gw)}
		var secret corev1.Secret
		Expect(k8sClient.Get(ctx, key, &secret)).To(Succeed())
		Expect(secret.OwnerReferences).To(ConsistOf(ownedBy(gw)))
		first := string(secret.Data[provision.SessionKeySecretKey])
		raw, err := base64.StdEncoding.DecodeString(first)
		Expect(err).NotTo(HaveOccurred())
		Expect(raw).To(HaveLen(32))

		ensure(gw, redis)
		Expect(k8sClient.Get(ctx, key, &secret)).To(Succeed())
		Expect(string(secret.Data[provision.SessionKeySecretKey])).To(Equal(first), "the key must never change: open sessions would break")

		env := getDeployment(gw).Spec.Template.Spec.Containers[0].Env
		Expect(env).To(ContainElement(corev1.EnvVar{
			Name: provision.SessionKeyEnv,
			ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{
				LocalObjectReference: corev1.LocalObjectReference{Name: key.Name}, Key: provision.SessionKeySecretKey,
			}},
		}))
	})

	It("repairs the fields it owns in an edited Deployment and leaves the rest alone", func() {
		gw := newGateway("edited")
		ensure(gw, redis)

		d := getDeployment(gw)
		d.Spec.Replicas = ptr.To[int32](5)
		d.Spec.Template.Spec.Containers[0].Image = "example.com/someone-else:v0"
		d.Spec.Template.Spec.Containers[0].Args = nil
		d.Annotations["example.com/owner"] = "team-a"
		Expect(k8sClient.Update(ctx, d, client.FieldOwner("kubectl-edit"))).To(Succeed())
		edited := getDeployment(gw)
		Expect(edited.Spec.Template.Spec.Containers[0].Args).To(BeEmpty())

		ensure(gw, redis)
		d = getDeployment(gw)
		Expect(d.Spec.Replicas).To(HaveValue(BeEquivalentTo(1)))
		Expect(d.Spec.Template.Spec.Containers[0].Image).To(Equal(provision.DefaultImage))
		Expect(d.Spec.Template.Spec.Containers[0].Args).To(Equal(
			[]string{"proxy", "--gateway", gw.Namespace + "/edited", "--redis-url", "redis://redis.toolgate-system:6379"}))
		Expect(d.Annotations).To(HaveKeyWithValue("example.com/owner", "team-a"))
	})

	It("recreates a deleted Service and a deleted ClusterRoleBinding", func() {
		gw := newGateway("deleted")
		ensure(gw, provision.Params{})
		old := getService(gw)
		Expect(k8sClient.Delete(ctx, old)).To(Succeed())
		Expect(k8sClient.Delete(ctx, &rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: bindingKey(gw).Name}})).To(Succeed())
		Expect(apierrors.IsNotFound(k8sClient.Get(ctx, dataPlaneKey(gw), &corev1.Service{}))).To(BeTrue())

		ensure(gw, provision.Params{})
		svc := getService(gw)
		Expect(svc.UID).NotTo(Equal(old.UID))
		Expect(svc.OwnerReferences).To(ConsistOf(ownedBy(gw)))
		Expect(svc.Spec.Ports).To(HaveLen(2))
		Expect(k8sClient.Get(ctx, bindingKey(gw), &rbacv1.ClusterRoleBinding{})).To(Succeed())
	})

	It("follows changes of the listeners and of the Service type", func() {
		gw := newGateway("changing")
		ensure(gw, provision.Params{})
		Expect(getService(gw).Spec.Ports[0].NodePort).NotTo(BeZero(), "a LoadBalancer Service has node ports")

		gw.Spec.Listeners = gw.Spec.Listeners[:1]
		gw.Spec.Listeners[0].Port = 8080
		Expect(k8sClient.Update(ctx, gw)).To(Succeed())
		st := ensure(gw, provision.Params{ServiceType: corev1.ServiceTypeClusterIP})

		svc := getService(gw)
		Expect(svc.Spec.Type).To(Equal(corev1.ServiceTypeClusterIP))
		Expect(svc.Spec.Ports).To(HaveLen(1))
		Expect(svc.Spec.Ports[0].Name).To(Equal("http-8080"))
		Expect(svc.Spec.Ports[0].NodePort).To(BeZero())
		Expect(getDeployment(gw).Spec.Template.Spec.Containers[0].Ports).To(ConsistOf(
			corev1.ContainerPort{Name: "admin", ContainerPort: 9901, Protocol: corev1.ProtocolTCP},
			corev1.ContainerPort{Name: "http-8080", ContainerPort: 8080, Protocol: corev1.ProtocolTCP},
		))
		Expect(st.Addresses).To(ConsistOf(ipAddress(svc.Spec.ClusterIP)))
		Expect(st.Message).NotTo(ContainSubstring("load balancer"))
	})

	It("is Ready once the Deployment has an available replica", func() {
		gw := newGateway("ready")
		st := ensure(gw, provision.Params{})
		Expect(st.Ready).To(BeFalse())
		Expect(st.Message).To(ContainSubstring("no available replica"))

		// No Deployment controller runs here: write the status it would.
		d := getDeployment(gw)
		d.Status = appsv1.DeploymentStatus{
			ObservedGeneration: d.Generation,
			Replicas:           1, UpdatedReplicas: 1, ReadyReplicas: 1, AvailableReplicas: 1,
		}
		Expect(k8sClient.Status().Update(ctx, d)).To(Succeed())

		st = ensure(gw, provision.Params{})
		Expect(st.Ready).To(BeTrue())
		Expect(st.Message).NotTo(ContainSubstring("replica"))
	})

	It("takes the Gateway's addresses from the load balancer, and from the cluster IP while it is pending", func() {
		gw := newGateway("addresses")
		st := ensure(gw, provision.Params{})
		svc := getService(gw)
		Expect(svc.Spec.ClusterIP).NotTo(BeEmpty())
		Expect(st.Addresses).To(ConsistOf(ipAddress(svc.Spec.ClusterIP)))
		Expect(st.Message).To(ContainSubstring("has no address yet"))

		// No cloud provider runs here: write the status it would.
		svc.Status.LoadBalancer.Ingress = []corev1.LoadBalancerIngress{{IP: "203.0.113.10"}, {Hostname: "web.lb.example.com"}}
		Expect(k8sClient.Status().Update(ctx, svc)).To(Succeed())

		st = ensure(gw, provision.Params{})
		Expect(st.Addresses).To(Equal([]gwv1.GatewayStatusAddress{ipAddress("203.0.113.10"), hostnameAddress("web.lb.example.com")}))
		Expect(st.Message).NotTo(ContainSubstring("load balancer"))
	})
})

var _ = Describe("EnsureClusterRole", func() {
	It("repairs an edited ClusterRole", func() {
		Expect(provisioner.EnsureClusterRole(ctx)).To(Succeed())
		var role rbacv1.ClusterRole
		Expect(k8sClient.Get(ctx, client.ObjectKey{Name: "toolgate-proxy"}, &role)).To(Succeed())
		role.Rules = append(role.Rules[1:], rbacv1.PolicyRule{APIGroups: []string{""}, Resources: []string{"pods"}, Verbs: []string{"delete"}})
		Expect(k8sClient.Update(ctx, &role, client.FieldOwner("kubectl-edit"))).To(Succeed())

		Expect(provisioner.EnsureClusterRole(ctx)).To(Succeed())
		Expect(k8sClient.Get(ctx, client.ObjectKey{Name: "toolgate-proxy"}, &role)).To(Succeed())
		Expect(role.Rules).To(Equal(provision.ClusterRole().Rules))
	})
})

var _ = Describe("Cleanup", func() {
	It("removes the ClusterRoleBinding of a deleted Gateway and keeps the others", func() {
		gone, kept := newGateway("gone"), newGateway("kept")
		ensure(gone, provision.Params{})
		ensure(kept, provision.Params{})

		// No garbage collector runs here: the namespaced objects of the
		// deleted Gateway stay, and their owner references (checked when
		// they are created) are what would remove them in a cluster.
		Expect(k8sClient.Delete(ctx, gone)).To(Succeed())
		Expect(getDeployment(gone).OwnerReferences).To(ConsistOf(ownedBy(gone)))

		Expect(provisioner.Cleanup(ctx, existingGateways())).To(Succeed())
		err := k8sClient.Get(ctx, bindingKey(gone), &rbacv1.ClusterRoleBinding{})
		Expect(apierrors.IsNotFound(err)).To(BeTrue(), "the binding of the deleted Gateway is still there: %v", err)
		Expect(k8sClient.Get(ctx, bindingKey(kept), &rbacv1.ClusterRoleBinding{})).To(Succeed())

		By("running again with nothing to do")
		Expect(provisioner.Cleanup(ctx, existingGateways())).To(Succeed())
		Expect(k8sClient.Get(ctx, bindingKey(kept), &rbacv1.ClusterRoleBinding{})).To(Succeed())
	})

	It("leaves ClusterRoleBindings that toolgate did not make", func() {
		other := &rbacv1.ClusterRoleBinding{
			ObjectMeta: metav1.ObjectMeta{Name: "someone-elses-binding", Labels: map[string]string{"app.kubernetes.io/managed-by": "someone-else"}},
			RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "view"},
			Subjects:   []rbacv1.Subject{{Kind: "ServiceAccount", Name: "default", Namespace: "default"}},
		}
		Expect(k8sClient.Create(ctx, other)).To(Succeed())
		Expect(provisioner.Cleanup(ctx, existingGateways())).To(Succeed())
		Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(other), &rbacv1.ClusterRoleBinding{})).To(Succeed())
	})
})
