package provision_test

import (
	"context"
	"sync"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/toolgate/toolgate/controller/provision"
)

// applyCountingClient is a client that counts the server-side applies sent
// through it, per kind.
type applyCountingClient struct {
	client.Client

	mu      sync.Mutex
	applies map[string]int
}

func (c *applyCountingClient) Apply(ctx context.Context, obj runtime.ApplyConfiguration, opts ...client.ApplyOption) error {
	kind := "unknown"
	if k, ok := obj.(interface{ GetKind() string }); ok {
		kind = k.GetKind()
	}
	c.mu.Lock()
	c.applies[kind]++
	c.mu.Unlock()
	return c.Client.Apply(ctx, obj, opts...)
}

// take returns the applies counted since the last call and starts again.
func (c *applyCountingClient) take() map[string]int {
	c.mu.Lock()
	defer c.mu.Unlock()
	counted := c.applies
	c.applies = map[string]int{}
	return counted
}

var _ = Describe("Ensure, when nothing changed", func() {
	var (
		counting *applyCountingClient
		counted  *provision.Provisioner
	)
	BeforeEach(func() {
		counting = &applyCountingClient{Client: k8sClient, applies: map[string]int{}}
		counted = provision.New(counting, scheme)
	})
	ensureCounted := func(gw *gwv1.Gateway, p provision.Params) provision.State {
		GinkgoHelper()
		st, err := counted.Ensure(ctx, gw, p)
		Expect(err).NotTo(HaveOccurred())
		return st
	}

	It("applies everything the first time and nothing the second", func() {
		gw := newGateway("counted")
		first := ensureCounted(gw, provision.Params{})
		Expect(counting.take()).To(Equal(map[string]int{
			"ClusterRole": 1, "ServiceAccount": 1, "ClusterRoleBinding": 1, "Deployment": 1, "Service": 1,
		}))

		second := ensureCounted(gw, provision.Params{})
		Expect(counting.take()).To(BeEmpty())
		Expect(second).To(Equal(first))
	})

	It("applies again, and only, a Deployment someone edited, and repairs it", func() {
		gw := newGateway("edited-behind")
		ensureCounted(gw, provision.Params{})
		counting.take()

		d := getDeployment(gw)
		d.Spec.Replicas = ptr.To[int32](4)
		Expect(k8sClient.Update(ctx, d, client.FieldOwner("kubectl-edit"))).To(Succeed())

		ensureCounted(gw, provision.Params{})
		Expect(counting.take()).To(Equal(map[string]int{"Deployment": 1}))
		Expect(getDeployment(gw).Spec.Replicas).To(HaveValue(BeEquivalentTo(1)))

		ensureCounted(gw, provision.Params{})
		Expect(counting.take()).To(BeEmpty())
	})

	It("applies the Deployment when the parameters change it", func() {
		gw := newGateway("rescaled")
		ensureCounted(gw, provision.Params{})
		counting.take()

		ensureCounted(gw, provision.Params{Replicas: 3})
		Expect(counting.take()).To(Equal(map[string]int{"Deployment": 1}))
		Expect(getDeployment(gw).Spec.Replicas).To(HaveValue(BeEquivalentTo(3)))
	})

	It("applies again a ClusterRoleBinding that was deleted", func() {
		gw := newGateway("unbound")
		ensureCounted(gw, provision.Params{})
		counting.take()

		Expect(k8sClient.Delete(ctx, &rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: bindingKey(gw).Name}})).To(Succeed())
		ensureCounted(gw, provision.Params{})
		Expect(counting.take()).To(Equal(map[string]int{"ClusterRoleBinding": 1}))
		Expect(k8sClient.Get(ctx, bindingKey(gw), &rbacv1.ClusterRoleBinding{})).To(Succeed())
	})
})
