package conformance

import (
	"context"
	"net/http"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/toolgate/toolgate/apis/v1alpha1"
	"github.com/toolgate/toolgate/conformance/env"
	"github.com/toolgate/toolgate/controller/translate"
)

// expectCondition checks that conditions hold one of type typ with the given
// status and reason, computed for generation.
func expectCondition(g Gomega, conditions []metav1.Condition, typ string, status metav1.ConditionStatus, reason string, generation int64) *metav1.Condition {
	c := meta.FindStatusCondition(conditions, typ)
	g.Expect(c).NotTo(BeNil(), "no %s condition in %+v", typ, conditions)
	g.Expect(c.Status).To(Equal(status), "%s: %+v", typ, c)
	g.Expect(c.Reason).To(Equal(reason), "%s: %+v", typ, c)
	g.Expect(c.ObservedGeneration).To(Equal(generation), "%s is for generation %d, want %d: %+v", typ, c.ObservedGeneration, generation, c)
	g.Expect(c.Message).NotTo(BeEmpty(), "%s needs a message: %+v", typ, c)
	g.Expect(c.LastTransitionTime.IsZero()).To(BeFalse(), "%s needs lastTransitionTime: %+v", typ, c)
	return c
}

// routeParentStatus is the status toolgate wrote for the route's parent, the
// suite's Gateway.
func routeParentStatus(g Gomega, ctx context.Context, key types.NamespacedName) (*gwv1.HTTPRoute, *gwv1.RouteParentStatus) {
	var route gwv1.HTTPRoute
	g.Expect(world.Client.Get(ctx, key, &route)).To(Succeed())
	for i, p := range route.Status.Parents {
		if p.ControllerName == env.ControllerName && string(p.ParentRef.Name) == world.Gateway.Name {
			return &route, &route.Status.Parents[i]
		}
	}
	g.Expect(route.Status.Parents).To(ContainElement(HaveField("ControllerName", env.ControllerName)),
		"toolgate wrote no status for parent Gateway %s", world.Gateway)
	return &route, nil
}

// attachedRoutes counts the HTTPRoutes whose parentRefs name the suite's
// Gateway.
func attachedRoutes(ctx context.Context) (int32, error) {
	var routes gwv1.HTTPRouteList
	if err := world.Client.List(ctx, &routes); err != nil {
		return 0, err
	}
	var n int32
	for _, r := range routes.Items {
		for _, ref := range r.Spec.ParentRefs {
			ns := r.Namespace
			if ref.Namespace != nil {
				ns = string(*ref.Namespace)
			}
			if ns == world.Gateway.Namespace && string(ref.Name) == world.Gateway.Name {
				n++
				break
			}
		}
	}
	return n, nil
}

var _ = Describe("Status through the API", func() {
	It("reports a route whose ExtensionRef names a missing MCPServer as ResolvedRefs=False and answers its calls with 500; creating the MCPServer heals both", func(ctx SpecContext) {
		t := newTenant(ctx, "missing")
		const late = "late"
		create(ctx, t.route(late, backendService))

		By("reporting the unresolved reference on the route, which stays Accepted")
		Eventually(func(g Gomega) {
			route, parent := routeParentStatus(g, ctx, t.key(routeName))
			expectCondition(g, parent.Conditions, string(gwv1.RouteConditionAccepted), metav1.ConditionTrue, string(gwv1.RouteReasonAccepted), route.Generation)
			c := expectCondition(g, parent.Conditions, string(gwv1.RouteConditionResolvedRefs), metav1.ConditionFalse, string(gwv1.RouteReasonBackendNotFound), route.Generation)
			g.Expect(c.Message).To(ContainSubstring(late), "the message names the missing MCPServer")
		}).WithContext(ctx).Should(Succeed())

		By("answering the route's requests with 500 on every proxy, never skipping the filter")
		token := tokenFor("alice")
		for _, p := range world.Proxies {
			c := newRawClient(p.URL, t.Path, token)
			Eventually(func(g Gomega) int {
				resp, err := c.callTool(ctx, 1, env.OtherTool)
				g.Expect(err).NotTo(HaveOccurred())
				return resp.Status
			}).WithContext(ctx).Should(Equal(http.StatusInternalServerError), "%s must refuse %s", p.Name, t.Path)
			Expect(c.initialize(ctx)).To(MatchError(ContainSubstring("HTTP 500")), "%s: even session set-up goes through the filter", p.Name)
		}
		Expect(world.Backend.Calls(t.Namespace, env.OtherTool)).To(BeZero())

		By("creating the MCPServer")
		create(ctx, t.mcpServer(late, &v1alpha1.RateLimiting{PerUser: bucket(1, longRefill)}))
		Eventually(func(g Gomega) {
			route, parent := routeParentStatus(g, ctx, t.key(routeName))
			expectCondition(g, parent.Conditions, string(gwv1.RouteConditionAccepted), metav1.ConditionTrue, string(gwv1.RouteReasonAccepted), route.Generation)
			expectCondition(g, parent.Conditions, string(gwv1.RouteConditionResolvedRefs), metav1.ConditionTrue, string(gwv1.RouteReasonResolvedRefs), route.Generation)
		}).WithContext(ctx).Should(Succeed())
		t.waitServed(ctx)

		By("serving calls with the MCPServer's policy")
		alice := t.rawSession(ctx, "alice")
		expectCalls(ctx, alice, env.OtherTool, 1, http.StatusOK)
		expectCalls(ctx, alice, env.OtherTool, 1, http.StatusTooManyRequests)
	})

	It("reports Accepted and RateLimitingConfigValid on every MCPServer, for its current generation", func(ctx SpecContext) {
		t := newTenant(ctx, "mcpstatus")
		limited := t.mcpServer(mcpServerName, &v1alpha1.RateLimiting{
			PerUser: bucket(5, longRefill),
			Tools:   []v1alpha1.ToolRateLimit{{Name: env.ExpensiveTool, PerUser: bucket(1, longRefill)}},
		})
		unlimited := t.mcpServer("unlimited", nil)
		create(ctx, limited)
		create(ctx, unlimited)

		expectStatus := func(name string, reason string) {
			GinkgoHelper()
			Eventually(func(g Gomega) {
				var m v1alpha1.MCPServer
				g.Expect(world.Client.Get(ctx, t.key(name), &m)).To(Succeed())
				g.Expect(m.Status.ObservedGeneration).To(Equal(m.Generation))
				expectCondition(g, m.Status.Conditions, v1alpha1.ConditionAccepted, metav1.ConditionTrue, translate.ReasonAccepted, m.Generation)
				expectCondition(g, m.Status.Conditions, v1alpha1.ConditionRateLimitingConfigValid, metav1.ConditionTrue, reason, m.Generation)
			}).WithContext(ctx).Should(Succeed(), "status of MCPServer %s", name)
		}
		expectStatus(mcpServerName, translate.ReasonValid)
		expectStatus("unlimited", translate.ReasonNotConfigured)

		By("following a change of the limits to the next generation")
		var m v1alpha1.MCPServer
		Expect(world.Client.Get(ctx, t.key(mcpServerName), &m)).To(Succeed())
		before := m.DeepCopy()
		m.Spec.RateLimiting.PerUser = bucket(7, longRefill)
		Expect(world.Client.Patch(ctx, &m, client.MergeFrom(before))).To(Succeed())
		Expect(m.Generation).To(BeNumerically(">", before.Generation))
		expectStatus(mcpServerName, translate.ReasonValid)

		By("following the removal of every limit")
		Expect(world.Client.Get(ctx, t.key(mcpServerName), &m)).To(Succeed())
		before = m.DeepCopy()
		m.Spec.RateLimiting = nil
		Expect(world.Client.Patch(ctx, &m, client.MergeFrom(before))).To(Succeed())
		expectStatus(mcpServerName, translate.ReasonNotConfigured)
	})

	It("reports the route Accepted with every reference resolved, for its current generation", func(ctx SpecContext) {
		t := newTenant(ctx, "routestatus")
		t.deploy(ctx, &v1alpha1.RateLimiting{PerUser: bucket(5, longRefill)})
		Eventually(func(g Gomega) {
			route, parent := routeParentStatus(g, ctx, t.key(routeName))
			g.Expect(parent.ParentRef.Name).To(BeEquivalentTo(world.Gateway.Name))
			g.Expect(parent.ParentRef.SectionName).To(HaveValue(Equal(env.ListenerName)))
			expectCondition(g, parent.Conditions, string(gwv1.RouteConditionAccepted), metav1.ConditionTrue, string(gwv1.RouteReasonAccepted), route.Generation)
			expectCondition(g, parent.Conditions, string(gwv1.RouteConditionResolvedRefs), metav1.ConditionTrue, string(gwv1.RouteReasonResolvedRefs), route.Generation)
		}).WithContext(ctx).Should(Succeed())
	})

	It("reports the GatewayClass and the Gateway Accepted and Programmed, and each listener's conditions", func(ctx SpecContext) {
		t := newTenant(ctx, "gwstatus")
		t.deploy(ctx, &v1alpha1.RateLimiting{PerUser: bucket(5, longRefill)})

		Eventually(func(g Gomega) {
			var class gwv1.GatewayClass
			g.Expect(world.Client.Get(ctx, types.NamespacedName{Name: world.GatewayClass}, &class)).To(Succeed())
			expectCondition(g, class.Status.Conditions, string(gwv1.GatewayClassConditionStatusAccepted), metav1.ConditionTrue, string(gwv1.GatewayClassReasonAccepted), class.Generation)
		}).WithContext(ctx).Should(Succeed())

		Eventually(func(g Gomega) {
			var gw gwv1.Gateway
			g.Expect(world.Client.Get(ctx, world.Gateway, &gw)).To(Succeed())
			expectCondition(g, gw.Status.Conditions, string(gwv1.GatewayConditionAccepted), metav1.ConditionTrue, string(gwv1.GatewayReasonAccepted), gw.Generation)
			expectCondition(g, gw.Status.Conditions, string(gwv1.GatewayConditionProgrammed), metav1.ConditionTrue, string(gwv1.GatewayReasonProgrammed), gw.Generation)

			g.Expect(gw.Status.Listeners).To(HaveLen(1))
			l := gw.Status.Listeners[0]
			g.Expect(l.Name).To(Equal(env.ListenerName))
			expectCondition(g, l.Conditions, string(gwv1.ListenerConditionAccepted), metav1.ConditionTrue, string(gwv1.ListenerReasonAccepted), gw.Generation)
			expectCondition(g, l.Conditions, string(gwv1.ListenerConditionProgrammed), metav1.ConditionTrue, string(gwv1.ListenerReasonProgrammed), gw.Generation)
			expectCondition(g, l.Conditions, string(gwv1.ListenerConditionResolvedRefs), metav1.ConditionTrue, string(gwv1.ListenerReasonResolvedRefs), gw.Generation)
			expectCondition(g, l.Conditions, string(gwv1.ListenerConditionConflicted), metav1.ConditionFalse, string(gwv1.ListenerReasonNoConflicts), gw.Generation)
			g.Expect(l.SupportedKinds).To(ConsistOf(gwv1.RouteGroupKind{Group: ptrTo(gwv1.Group(gwv1.GroupName)), Kind: "HTTPRoute"}))
			want, err := attachedRoutes(ctx)
			g.Expect(err).NotTo(HaveOccurred())
			g.Expect(want).To(BeNumerically(">=", 1))
			g.Expect(l.AttachedRoutes).To(Equal(want), "every HTTPRoute naming the Gateway attaches to its only listener")
		}).WithContext(ctx).Should(Succeed())
	})
})

func ptrTo[T any](v T) *T { return &v }
