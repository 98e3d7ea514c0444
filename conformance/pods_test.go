package conformance

import (
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/toolgate/toolgate/apis/v1alpha1"
	"github.com/toolgate/toolgate/controller/provision"
)

// Specs of proxies that run as pods of a real cluster (--pods, make e2e).
var _ = Describe("Proxy pods", Label(labelPods), func() {
	BeforeEach(func() { requirePods() })

	It("apply a route edit without restarting", func(ctx SpecContext) {
		t := newTenant(ctx, "pods-edit")
		t.deploy(ctx, &v1alpha1.RateLimiting{PerUser: bucket(100, longRefill)})
		before := proxyPods(ctx)

		alias := "/" + t.Namespace + "-alias/mcp"
		start := time.Now()
		t.addPath(ctx, alias)
		for _, p := range world.Proxies {
			Eventually(func(g Gomega) {
				g.Expect(newRawClient(p.URL, alias, tokenFor("edit")).initialize(ctx)).To(Succeed())
			}).WithContext(ctx).Should(Succeed(), "%s serves %s", p.Name, alias)
		}
		AddReportEntry("route edit to served by every proxy pod", time.Since(start).Round(time.Millisecond).String())
		Expect(proxyPods(ctx)).To(Equal(before), "the same pods, none restarted")
	})

	It("replace a deleted proxy pod, which serves again", func(ctx SpecContext) {
		t := newTenant(ctx, "pods-replace")
		t.deploy(ctx, &v1alpha1.RateLimiting{PerUser: bucket(100, longRefill)})
		before := proxyPods(ctx)
		var victim types.UID
		var pods corev1.PodList
		Expect(world.Client.List(ctx, &pods, client.InNamespace(world.Gateway.Namespace), proxySelector(ctx))).To(Succeed())
		Expect(pods.Items).NotTo(BeEmpty())
		victim = pods.Items[0].UID
		start := time.Now()
		Expect(world.Client.Delete(ctx, &pods.Items[0])).To(Succeed())
		Eventually(func(g Gomega) {
			now := proxyPods(ctx)
			g.Expect(now).NotTo(HaveKey(victim))
			g.Expect(now).To(HaveLen(len(before)))
		}).WithContext(ctx).WithTimeout(2 * time.Minute).Should(Succeed())
		Expect(world.RefreshProxyPods(ctx)).To(Succeed())
		t.waitServed(ctx)
		AddReportEntry("proxy pod deleted to its replacement serving", time.Since(start).Round(time.Millisecond).String())
	})
})

// proxySelector selects the pods of the suite Gateway's proxies.
func proxySelector(ctx SpecContext) client.MatchingLabels {
	GinkgoHelper()
	var gw gwv1.Gateway
	Expect(world.Client.Get(ctx, world.Gateway, &gw)).To(Succeed())
	return client.MatchingLabels(provision.Names(&gw).Labels)
}

// proxyPods maps the UIDs of the suite Gateway's ready proxy pods to their
// containers' restart counts.
func proxyPods(ctx SpecContext) map[types.UID]int32 {
	GinkgoHelper()
	var pods corev1.PodList
	Expect(world.Client.List(ctx, &pods, client.InNamespace(world.Gateway.Namespace), proxySelector(ctx))).To(Succeed())
	out := map[types.UID]int32{}
	for _, p := range pods.Items {
		if p.DeletionTimestamp != nil || p.Status.PodIP == "" {
			continue
		}
		var restarts int32
		for _, c := range p.Status.ContainerStatuses {
			restarts += c.RestartCount
		}
		out[p.UID] = restarts
	}
	return out
}
