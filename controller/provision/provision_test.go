package provision_test

import (
	"crypto/tls"
	"encoding/base64"
	"maps"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/toolgate/toolgate/controller/pki"
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

func configSecretKey(gw *gwv1.Gateway) types.NamespacedName {
	return types.NamespacedName{Namespace: gw.Namespace, Name: provision.ConfigClientSecretName(gw)}
}

func getConfigSecret(gw *gwv1.Gateway) *corev1.Secret {
	var s corev1.Secret
	Expect(k8sClient.Get(ctx, configSecretKey(gw), &s)).To(Succeed())
	return &s
}

func gatewayKey(gw *gwv1.Gateway) types.NamespacedName {
	return types.NamespacedName{Namespace: gw.Namespace, Name: gw.Name}
}

// proxyArgs are the arguments of gw's proxy, provisioned with controllerURL,
// followed by more.
func proxyArgs(gw *gwv1.Gateway, more ...string) []string {
	return append([]string{"proxy", "--gateway", gw.Namespace + "/" + gw.Name,
		"--controller", controllerURL, "--controller-tls-dir", provision.ConfigTLSDir, "--drain-delay", "5s", "--drain-timeout", "30s"}, more...)
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
		ControllerURL: controllerURL,
		RedisURL:      "redis://redis.toolgate-system:6379",
		RedisPasswordSecret: &corev1.SecretKeySelector{
			LocalObjectReference: corev1.LocalObjectReference{Name: "redis-auth"}, Key: "password",
		},
	}

	It("creates the ServiceAccount, Deployment and Service, owned by the Gateway, with no access to the Kubernetes API", func() {
		gw := newGateway("web")
		ensure(gw, redis)
		names := provision.Names(gw)

		By("the ServiceAccount")
		var sa corev1.ServiceAccount
		Expect(k8sClient.Get(ctx, dataPlaneKey(gw), &sa)).To(Succeed())
		Expect(sa.OwnerReferences).To(ConsistOf(ownedBy(gw)))
		metaLabels := maps.Clone(names.Labels)
		metaLabels[gwv1.GatewayNameLabelKey] = gw.Name
		Expect(sa.Labels).To(Equal(metaLabels))
		Expect(sa.AutomountServiceAccountToken).To(HaveValue(BeFalse()))

		By("the Deployment")
		d := getDeployment(gw)
		Expect(d.OwnerReferences).To(ConsistOf(ownedBy(gw)))
		Expect(d.Spec.Replicas).To(HaveValue(BeEquivalentTo(1)))
		Expect(d.Spec.Selector.MatchLabels).To(Equal(names.Labels))
		Expect(d.Spec.Template.Labels).To(Equal(metaLabels))
		pod := d.Spec.Template.Spec
		Expect(pod.ServiceAccountName).To(Equal(names.Name))
		Expect(pod.AutomountServiceAccountToken).To(HaveValue(BeFalse()))
		Expect(pod.Containers).To(HaveLen(1))
		c := pod.Containers[0]
		Expect(c.Image).To(Equal(provision.DefaultImage))
		Expect(c.Args).To(Equal(proxyArgs(gw, "--redis-url", "redis://redis.toolgate-system:6379")))
		Expect(c.VolumeMounts).To(ContainElement(corev1.VolumeMount{Name: "config", MountPath: "/etc/toolgate/config", ReadOnly: true}))
		Expect(pod.Volumes).To(ContainElement(corev1.Volume{Name: "config", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{
			SecretName: provision.ConfigClientSecretName(gw), DefaultMode: ptr.To[int32](0o440),
		}}}))
		Expect(pod.SecurityContext.FSGroup).To(HaveValue(BeEquivalentTo(65532)))
		Expect(d.Spec.Template.Annotations).To(HaveKey(provision.AnnotationCAHash))
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

		By("every applied object written by the toolgate-controller field manager")
		for _, o := range []client.Object{&sa, d, svc} {
			managers := []string{}
			for _, m := range o.GetManagedFields() {
				managers = append(managers, m.Manager+"/"+string(m.Operation))
			}
			Expect(managers).To(ContainElement("toolgate-controller/Apply"), "%T", o)
		}
	})

	It("creates the client certificate Secret with a certificate the CA issued for the Gateway", func() {
		gw := newGateway("certified")
		ensure(gw, redis)
		secret := getConfigSecret(gw)
		Expect(secret.Name).To(Equal("toolgate-certified-config"))
		Expect(secret.OwnerReferences).To(ConsistOf(ownedBy(gw)))
		Expect(secret.Labels).To(HaveKeyWithValue(gwv1.GatewayNameLabelKey, "certified"))
		for k, v := range provision.Names(gw).Labels {
			Expect(secret.Labels).To(HaveKeyWithValue(k, v))
		}
		Expect(secret.Annotations).To(HaveKeyWithValue(provision.AnnotationGateway, gw.Namespace+"/certified"))
		Expect(secret.Type).To(Equal(corev1.SecretTypeTLS))
		Expect(secret.Data).To(HaveLen(3))
		Expect(secret.Data["ca.crt"]).To(Equal(ca.CertPEM()))
		Expect(ca.ClientCertCurrent(secret.Data["tls.crt"], gatewayKey(gw), time.Now(), pki.ClientCertRenewBefore)).To(BeTrue(),
			"tls.crt is not a current certificate of the CA for the Gateway")
		Expect(ca.ClientCertCurrent(secret.Data["tls.crt"], types.NamespacedName{Namespace: gw.Namespace, Name: "other"}, time.Now(), 0)).To(BeFalse(),
			"the certificate would do for another Gateway")
		_, err := tls.X509KeyPair(secret.Data["tls.crt"], secret.Data["tls.key"])
		Expect(err).NotTo(HaveOccurred(), "tls.key does not match tls.crt")
	})

	It("writes nothing when nothing changed", func() {
		gw := newGateway("steady")
		ensure(gw, redis)
		var before [5]string
		objects := func() [5]client.Object {
			var sa corev1.ServiceAccount
			Expect(k8sClient.Get(ctx, dataPlaneKey(gw), &sa)).To(Succeed())
			var session corev1.Secret
			Expect(k8sClient.Get(ctx, types.NamespacedName{Namespace: gw.Namespace, Name: provision.SessionKeySecretName(gw)}, &session)).To(Succeed())
			return [5]client.Object{&sa, getDeployment(gw), getService(gw), getConfigSecret(gw), &session}
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
		Expect(d.Spec.Template.Spec.Containers[0].Args).To(Equal(proxyArgs(gw, "--redis-url", "redis://redis.toolgate-system:6379")))
		Expect(d.Annotations).To(HaveKeyWithValue("example.com/owner", "team-a"))
	})

	It("recreates a deleted Service and a deleted client certificate Secret", func() {
		gw := newGateway("deleted")
		ensure(gw, defaultParams)
		old := getService(gw)
		oldSecret := getConfigSecret(gw)
		Expect(k8sClient.Delete(ctx, old)).To(Succeed())
		Expect(k8sClient.Delete(ctx, oldSecret)).To(Succeed())
		Expect(apierrors.IsNotFound(k8sClient.Get(ctx, dataPlaneKey(gw), &corev1.Service{}))).To(BeTrue())

		ensure(gw, defaultParams)
		svc := getService(gw)
		Expect(svc.UID).NotTo(Equal(old.UID))
		Expect(svc.OwnerReferences).To(ConsistOf(ownedBy(gw)))
		Expect(svc.Spec.Ports).To(HaveLen(2))
		secret := getConfigSecret(gw)
		Expect(secret.UID).NotTo(Equal(oldSecret.UID))
		Expect(secret.OwnerReferences).To(ConsistOf(ownedBy(gw)))
		Expect(ca.ClientCertCurrent(secret.Data["tls.crt"], gatewayKey(gw), time.Now(), pki.ClientCertRenewBefore)).To(BeTrue())
	})

	It("follows changes of the listeners and of the Service type", func() {
		gw := newGateway("changing")
		ensure(gw, defaultParams)
		Expect(getService(gw).Spec.Ports[0].NodePort).NotTo(BeZero(), "a LoadBalancer Service has node ports")

		gw.Spec.Listeners = gw.Spec.Listeners[:1]
		gw.Spec.Listeners[0].Port = 8080
		Expect(k8sClient.Update(ctx, gw)).To(Succeed())
		st := ensure(gw, provision.Params{ControllerURL: controllerURL, ServiceType: corev1.ServiceTypeClusterIP})

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
		st := ensure(gw, defaultParams)
		Expect(st.Ready).To(BeFalse())
		Expect(st.Message).To(ContainSubstring("no available replica"))

		// No Deployment controller runs here: write the status it would.
		d := getDeployment(gw)
		d.Status = appsv1.DeploymentStatus{
			ObservedGeneration: d.Generation,
			Replicas:           1, UpdatedReplicas: 1, ReadyReplicas: 1, AvailableReplicas: 1,
		}
		Expect(k8sClient.Status().Update(ctx, d)).To(Succeed())

		st = ensure(gw, defaultParams)
		Expect(st.Ready).To(BeTrue())
		Expect(st.Message).NotTo(ContainSubstring("replica"))
	})

	It("takes the Gateway's addresses from the load balancer, and from the cluster IP while it is pending", func() {
		gw := newGateway("addresses")
		st := ensure(gw, defaultParams)
		svc := getService(gw)
		Expect(svc.Spec.ClusterIP).NotTo(BeEmpty())
		Expect(st.Addresses).To(ConsistOf(ipAddress(svc.Spec.ClusterIP)))
		Expect(st.Message).To(ContainSubstring("has no address yet"))

		// No cloud provider runs here: write the status it would.
		svc.Status.LoadBalancer.Ingress = []corev1.LoadBalancerIngress{{IP: "203.0.113.10"}, {Hostname: "web.lb.example.com"}}
		Expect(k8sClient.Status().Update(ctx, svc)).To(Succeed())

		st = ensure(gw, defaultParams)
		Expect(st.Addresses).To(Equal([]gwv1.GatewayStatusAddress{ipAddress("203.0.113.10"), hostnameAddress("web.lb.example.com")}))
		Expect(st.Message).NotTo(ContainSubstring("load balancer"))
	})
})

var _ = Describe("Cleanup", func() {
	It("deletes nothing: the objects of a deleted Gateway are left to the garbage collector", func() {
		gone, kept := newGateway("gone"), newGateway("kept")
		ensure(gone, defaultParams)
		ensure(kept, defaultParams)

		// No garbage collector runs here: the objects of the deleted
		// Gateway stay, and their owner references are what would remove
		// them in a cluster.
		Expect(k8sClient.Delete(ctx, gone)).To(Succeed())
		Expect(provisioner.Cleanup(ctx, existingGateways())).To(Succeed())
		Expect(getDeployment(gone).OwnerReferences).To(ConsistOf(ownedBy(gone)))
		Expect(getConfigSecret(gone).OwnerReferences).To(ConsistOf(ownedBy(gone)))
		Expect(getDeployment(kept).OwnerReferences).To(ConsistOf(ownedBy(kept)))
	})
})
