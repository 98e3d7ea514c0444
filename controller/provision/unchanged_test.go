package provision_test

import (
	"context"
	"sync"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/apiutil"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/toolgate/toolgate/controller/pki"
	"github.com/toolgate/toolgate/controller/provision"
)

// writeCountingClient is a client that counts the writes sent through it,
// per verb and kind: "apply Deployment", "create Secret", "update Secret".
type writeCountingClient struct {
	client.Client

	mu     sync.Mutex
	writes map[string]int
}

func (c *writeCountingClient) count(verb, kind string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.writes[verb+" "+kind]++
}

// kindOf names the kind of a typed object, which may not say it itself.
func (c *writeCountingClient) kindOf(obj client.Object) string {
	gvk, err := apiutil.GVKForObject(obj, scheme)
	if err != nil {
		return "unknown"
	}
	return gvk.Kind
}

func (c *writeCountingClient) Apply(ctx context.Context, obj runtime.ApplyConfiguration, opts ...client.ApplyOption) error {
	kind := "unknown"
	if k, ok := obj.(interface{ GetKind() string }); ok {
		kind = k.GetKind()
	}
	c.count("apply", kind)
	return c.Client.Apply(ctx, obj, opts...)
}

func (c *writeCountingClient) Create(ctx context.Context, obj client.Object, opts ...client.CreateOption) error {
	c.count("create", c.kindOf(obj))
	return c.Client.Create(ctx, obj, opts...)
}

func (c *writeCountingClient) Update(ctx context.Context, obj client.Object, opts ...client.UpdateOption) error {
	c.count("update", c.kindOf(obj))
	return c.Client.Update(ctx, obj, opts...)
}

func (c *writeCountingClient) Patch(ctx context.Context, obj client.Object, patch client.Patch, opts ...client.PatchOption) error {
	c.count("patch", c.kindOf(obj))
	return c.Client.Patch(ctx, obj, patch, opts...)
}

func (c *writeCountingClient) Delete(ctx context.Context, obj client.Object, opts ...client.DeleteOption) error {
	c.count("delete", c.kindOf(obj))
	return c.Client.Delete(ctx, obj, opts...)
}

// take returns the writes counted since the last call and starts again.
func (c *writeCountingClient) take() map[string]int {
	c.mu.Lock()
	defer c.mu.Unlock()
	counted := c.writes
	c.writes = map[string]int{}
	return counted
}

var _ = Describe("Ensure writes only what changed", func() {
	var (
		counting *writeCountingClient
		counted  *provision.Provisioner
		now      time.Time
	)
	BeforeEach(func() {
		now = time.Now()
		counting = &writeCountingClient{Client: k8sClient, writes: map[string]int{}}
		counted = provision.New(counting, scheme, provision.Options{CA: ca, Now: func() time.Time { return now }})
	})
	ensureCounted := func(gw *gwv1.Gateway, p provision.Params) provision.State {
		GinkgoHelper()
		st, err := counted.Ensure(ctx, gw, p)
		Expect(err).NotTo(HaveOccurred())
		return st
	}
	// everything is what the first Ensure of a Gateway writes.
	everything := map[string]int{
		"apply ServiceAccount": 1, "create Secret": 2, "apply Deployment": 1, "apply Service": 1,
	}

	It("writes everything the first time and nothing the second", func() {
		gw := newGateway("counted")
		first := ensureCounted(gw, defaultParams)
		Expect(counting.take()).To(Equal(everything))

		second := ensureCounted(gw, defaultParams)
		Expect(counting.take()).To(BeEmpty())
		Expect(second).To(Equal(first))
	})

	It("applies again, and only, a Deployment someone edited, and repairs it", func() {
		gw := newGateway("edited-behind")
		ensureCounted(gw, defaultParams)
		counting.take()

		d := getDeployment(gw)
		d.Spec.Replicas = ptr.To[int32](4)
		Expect(k8sClient.Update(ctx, d, client.FieldOwner("kubectl-edit"))).To(Succeed())

		ensureCounted(gw, defaultParams)
		Expect(counting.take()).To(Equal(map[string]int{"apply Deployment": 1}))
		Expect(getDeployment(gw).Spec.Replicas).To(HaveValue(BeEquivalentTo(1)))

		ensureCounted(gw, defaultParams)
		Expect(counting.take()).To(BeEmpty())
	})

	It("applies the Deployment when the parameters change it", func() {
		gw := newGateway("rescaled")
		ensureCounted(gw, defaultParams)
		counting.take()

		ensureCounted(gw, provision.Params{ControllerURL: controllerURL, Replicas: 3})
		Expect(counting.take()).To(Equal(map[string]int{"apply Deployment": 1}))
		Expect(getDeployment(gw).Spec.Replicas).To(HaveValue(BeEquivalentTo(3)))
	})

	It("applies again what it forgot on Cleanup, and writes no Secret", func() {
		gw := newGateway("forgotten")
		ensureCounted(gw, defaultParams)
		counting.take()

		Expect(counted.Cleanup(ctx, nil)).To(Succeed())
		Expect(counting.take()).To(BeEmpty(), "Cleanup deletes nothing")
		ensureCounted(gw, defaultParams)
		Expect(counting.take()).To(Equal(map[string]int{"apply ServiceAccount": 1, "apply Deployment": 1, "apply Service": 1}))
	})

	It("re-issues, and only, a client certificate that expires within the renewal window", func() {
		gw := newGateway("renewed")
		ensureCounted(gw, defaultParams)
		counting.take()
		before := getConfigSecret(gw)

		By("leaving it while it is valid for longer than the renewal window")
		now = now.Add(pki.ClientCertLifetime - pki.ClientCertRenewBefore - time.Hour)
		ensureCounted(gw, defaultParams)
		Expect(counting.take()).To(BeEmpty())

		By("re-issuing it once it is within the window, without rolling the proxies")
		now = now.Add(2 * time.Hour)
		ensureCounted(gw, defaultParams)
		Expect(counting.take()).To(Equal(map[string]int{"update Secret": 1}))
		after := getConfigSecret(gw)
		Expect(after.UID).To(Equal(before.UID))
		Expect(after.Data["tls.crt"]).NotTo(Equal(before.Data["tls.crt"]))
		Expect(ca.ClientCertCurrent(after.Data["tls.crt"], gatewayKey(gw), now, pki.ClientCertRenewBefore)).To(BeTrue())

		ensureCounted(gw, defaultParams)
		Expect(counting.take()).To(BeEmpty())
	})

	It("re-issues a client certificate for another Gateway", func() {
		gw := newGateway("mixed-up")
		ensureCounted(gw, defaultParams)
		counting.take()

		secret := getConfigSecret(gw)
		other := types.NamespacedName{Namespace: gw.Namespace, Name: "someone-else"}
		certPEM, keyPEM, err := ca.IssueClient(other, now, pki.ClientCertLifetime)
		Expect(err).NotTo(HaveOccurred())
		secret.Data["tls.crt"], secret.Data["tls.key"] = certPEM, keyPEM
		Expect(k8sClient.Update(ctx, secret)).To(Succeed())

		ensureCounted(gw, defaultParams)
		Expect(counting.take()).To(Equal(map[string]int{"update Secret": 1}))
		Expect(ca.ClientCertCurrent(getConfigSecret(gw).Data["tls.crt"], gatewayKey(gw), now, pki.ClientCertRenewBefore)).To(BeTrue())
	})

	It("re-issues the client certificate of another CA and rolls the proxies", func() {
		gw := newGateway("new-ca")
		ensureCounted(gw, defaultParams)
		counting.take()
		hashBefore := getDeployment(gw).Spec.Template.Annotations[provision.AnnotationCAHash]

		// A controller that starts with a new CA, such as after its CA
		// Secret was deleted.
		newCA, err := pki.NewCA(now)
		Expect(err).NotTo(HaveOccurred())
		restarted := provision.New(counting, scheme, provision.Options{CA: newCA, Now: func() time.Time { return now }})
		_, err = restarted.Ensure(ctx, gw, defaultParams)
		Expect(err).NotTo(HaveOccurred())
		// A new Provisioner knows none of its applies: it applies each
		// object once.
		Expect(counting.take()).To(Equal(map[string]int{
			"apply ServiceAccount": 1, "update Secret": 1, "apply Deployment": 1, "apply Service": 1,
		}))
		secret := getConfigSecret(gw)
		Expect(secret.Data["ca.crt"]).To(Equal(newCA.CertPEM()))
		Expect(newCA.ClientCertCurrent(secret.Data["tls.crt"], gatewayKey(gw), now, pki.ClientCertRenewBefore)).To(BeTrue())
		Expect(getDeployment(gw).Spec.Template.Annotations[provision.AnnotationCAHash]).NotTo(Equal(hashBefore))

		_, err = restarted.Ensure(ctx, gw, defaultParams)
		Expect(err).NotTo(HaveOccurred())
		Expect(counting.take()).To(BeEmpty())
	})
})
