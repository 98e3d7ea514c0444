package conformance

import (
	"net/http"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/toolgate/toolgate/apis/v1alpha1"
	"github.com/toolgate/toolgate/conformance/env"
)

var _ = Describe("Two proxy replicas of one Gateway", func() {
	It("share buckets through Redis: across both, exactly maxTokens calls pass", func(ctx SpecContext) {
		const maxTokens = 6
		Expect(world.Proxies).To(HaveLen(2))
		expectSharedStore(ctx)
		t := newTenant(ctx, "replicas")
		t.deploy(ctx, &v1alpha1.RateLimiting{PerUser: bucket(maxTokens, longRefill)})

		// One session, opened through the first replica; the second accepts
		// it because the replicas share the session key.
		alice := t.rawSession(ctx, "alice")
		var statuses []int
		served := map[string][]int{}
		for i := range 2 * maxTokens {
			p := world.Proxies[i%2]
			resp, err := alice.callToolVia(ctx, p.URL, i+1, env.OtherTool)
			Expect(err).NotTo(HaveOccurred())
			Expect(resp.Status).To(BeElementOf(http.StatusOK, http.StatusTooManyRequests), "call %d through %s: %s", i+1, p.Name, resp)
			statuses = append(statuses, resp.Status)
			served[p.Name] = append(served[p.Name], resp.Status)
		}

		want := make([]int, 0, 2*maxTokens)
		for i := range 2 * maxTokens {
			if i < maxTokens {
				want = append(want, http.StatusOK)
			} else {
				want = append(want, http.StatusTooManyRequests)
			}
		}
		Expect(statuses).To(Equal(want), "calls alternate between the replicas (per replica: %v)", served)
		Expect(world.Backend.Calls(t.Namespace, env.OtherTool)).To(BeEquivalentTo(maxTokens))
	})
})
