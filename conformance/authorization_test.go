package conformance

import (
	"context"
	"net/http"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/toolgate/toolgate/apis/v1alpha1"
	"github.com/toolgate/toolgate/conformance/env"
	"github.com/toolgate/toolgate/controller/translate"
)

// invalidParams is the JSON-RPC code of an unknown tool, which a tool the
// caller may not call is answered with.
const invalidParams = -32602

// expectAuthorized checks, on every proxy, that user may call each tool of
// allowed and that each tool of hidden is unknown to him.
func expectAuthorized(ctx context.Context, t *tenant, user string, allowed, hidden []string) {
	GinkgoHelper()
	for _, p := range world.Proxies {
		c := newRawClient(p.URL, t.Path, tokenFor(user))
		Expect(c.initialize(ctx)).To(Succeed())
		for _, tool := range allowed {
			resp, err := c.callTool(ctx, 1, tool)
			Expect(err).NotTo(HaveOccurred())
			Expect(resp.Status).To(Equal(http.StatusOK), "%s: %s calls %s: %s", p.Name, user, tool, resp)
			Expect(resp.Message).NotTo(BeNil(), "%s: %s calls %s: %s", p.Name, user, tool, resp)
			Expect(resp.Message.Error).To(BeNil(), "%s: %s calls %s: %s", p.Name, user, tool, resp)
		}
		for _, tool := range hidden {
			resp, err := c.callTool(ctx, 2, tool)
			Expect(err).NotTo(HaveOccurred())
			Expect(resp.Status).To(Equal(http.StatusOK), "%s: %s calls %s: %s", p.Name, user, tool, resp)
			Expect(resp.Message).NotTo(BeNil(), "%s: %s calls %s: %s", p.Name, user, tool, resp)
			Expect(resp.Message.Error).NotTo(BeNil(), "%s: %s may not call %s: %s", p.Name, user, tool, resp)
			Expect(resp.Message.Error.Code).To(Equal(invalidParams), "%s: %s calls %s: %s", p.Name, user, tool, resp)
		}
	}
}

var _ = Describe("Authorization through the API", func() {
	It("keeps an MCPServer's last valid policy serving while an edit breaks its authorization, says so in status, and applies the fix", func(ctx SpecContext) {
		t := newTenant(ctx, "authzedit")
		m := t.mcpServer(mcpServerName, nil)
		m.Spec.Authorization = &v1alpha1.Authorization{Rules: []v1alpha1.AuthorizationRule{
			{Name: "alice-expensive", Tools: []string{env.ExpensiveTool}, When: "user == 'alice'"},
		}}
		create(ctx, m)
		create(ctx, t.route(mcpServerName, backendMCPServer))
		t.waitServed(ctx)
		expectAuthorized(ctx, t, "alice", []string{env.ExpensiveTool}, []string{env.OtherTool})
		expectAuthorized(ctx, t, "bob", nil, []string{env.ExpensiveTool, env.OtherTool})

		By("an edit whose condition is not CEL")
		edit := func(tool, when string) int64 {
			GinkgoHelper()
			var current v1alpha1.MCPServer
			Expect(world.Client.Get(ctx, t.key(mcpServerName), &current)).To(Succeed())
			current.Spec.Authorization.Rules[0].Tools = []string{tool}
			current.Spec.Authorization.Rules[0].When = when
			Expect(world.Client.Update(ctx, &current)).To(Succeed())
			return current.Generation
		}
		first := m.Generation
		Expect(first).NotTo(BeZero())
		broken := edit(env.OtherTool, "user contains 'alice'")
		Eventually(func(g Gomega) {
			var current v1alpha1.MCPServer
			g.Expect(world.Client.Get(ctx, t.key(mcpServerName), &current)).To(Succeed())
			c := expectCondition(g, current.Status.Conditions, v1alpha1.ConditionAuthorizationValid, metav1.ConditionFalse, translate.ReasonInvalid, broken)
			g.Expect(c.Message).To(ContainSubstring("authorization.rules[alice-expensive].when"))
			g.Expect(c.Message).To(ContainSubstring("the policy of generation %d keeps serving", first))
			expectCondition(g, current.Status.Conditions, v1alpha1.ConditionAccepted, metav1.ConditionFalse, translate.ReasonInvalid, broken)
		}).WithContext(ctx).Should(Succeed())

		// A later change that every proxy must serve: its snapshot was made
		// after the broken edit was seen.
		later := newTenant(ctx, "authzlater")
		later.deploy(ctx, nil)
		expectAuthorized(ctx, t, "alice", []string{env.ExpensiveTool}, []string{env.OtherTool})
		expectAuthorized(ctx, t, "bob", nil, []string{env.ExpensiveTool, env.OtherTool})

		By("fixing it")
		fixed := edit(env.OtherTool, "user == 'alice'")
		Eventually(func(g Gomega) {
			var current v1alpha1.MCPServer
			g.Expect(world.Client.Get(ctx, t.key(mcpServerName), &current)).To(Succeed())
			expectCondition(g, current.Status.Conditions, v1alpha1.ConditionAuthorizationValid, metav1.ConditionTrue, translate.ReasonValid, fixed)
		}).WithContext(ctx).Should(Succeed())
		Eventually(func() error {
			return InterceptGomegaFailure(func() {
				expectAuthorized(ctx, t, "alice", []string{env.OtherTool}, []string{env.ExpensiveTool})
			})
		}).WithContext(ctx).Should(Succeed())
	})
})
