package conformance

import (
	"context"
	"net/http"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/toolgate/toolgate/apis/v1alpha1"
	"github.com/toolgate/toolgate/conformance/env"
)

// failOpenMetric counts tool calls decided by a proxy's own buckets because
// the shared bucket store was unavailable.
const failOpenMetric = "toolgate_ratelimit_fail_open_total"

// storeAvailableMetric is 1 on a proxy that decides with the shared Redis.
const storeAvailableMetric = "toolgate_ratelimit_store_available"

// expectSharedStore waits until every proxy decides with Redis again: after
// an outage each finds it on its own, at its next probe.
func expectSharedStore(ctx context.Context) {
	GinkgoHelper()
	for _, p := range world.Proxies {
		Eventually(func() (float64, error) { return p.Metric(ctx, storeAvailableMetric, nil) }).
			WithContext(ctx).WithTimeout(time.Minute).WithPolling(50*time.Millisecond).
			Should(BeNumerically("==", 1), "%s must decide with Redis", p.Name)
	}
}

// failOpenCount sums the fail-open counter of an MCPServer over the proxies.
func failOpenCount(ctx context.Context, t *tenant) (float64, error) {
	var sum float64
	for _, p := range world.Proxies {
		v, err := p.Metric(ctx, failOpenMetric, map[string]string{"namespace": t.Namespace, "server": mcpServerName})
		if err != nil {
			return 0, err
		}
		sum += v
	}
	return sum, nil
}

// The outage stops the Redis every spec uses: no other spec may run
// meanwhile.
var _ = Describe("A Redis outage", Serial, Label("redis-outage"), func() {
	It("leaves each proxy limiting on its own, counted as fail-open on /metrics, and the shared limits apply again once Redis is back", func(ctx SpecContext) {
		if !world.Redis.Owned() {
			Fail(env.ErrRedisNotOwned.Error())
		}
		t := newTenant(ctx, "redis")
		t.deploy(ctx, &v1alpha1.RateLimiting{PerUser: bucket(2, longRefill)})
		alice := t.rawSession(ctx, "alice")

		By("limiting while Redis answers")
		expectCalls(ctx, alice, env.OtherTool, 2, http.StatusOK)
		expectCalls(ctx, alice, env.OtherTool, 1, http.StatusTooManyRequests)
		before, err := failOpenCount(ctx, t)
		Expect(err).NotTo(HaveOccurred())

		By("stopping Redis")
		Expect(world.Redis.Stop()).To(Succeed())
		DeferCleanup(world.Redis.Start) // a no-op once it runs again

		// Until a proxy judges Redis unavailable its calls get 503 and take
		// nothing; then its own buckets, full, allow 2 calls and refuse the
		// next: the limit holds per proxy, never unlimited.
		id := 100
		for _, p := range world.Proxies {
			deadline := time.Now().Add(time.Minute)
			var first *rpcResponse
			for {
				id++
				resp, err := alice.callToolVia(ctx, p.URL, id, env.OtherTool)
				Expect(err).NotTo(HaveOccurred())
				if resp.Status != http.StatusServiceUnavailable {
					first = resp
					break
				}
				Expect(time.Now().Before(deadline)).To(BeTrue(), "%s still answered 503 a minute after Redis stopped: %s", p.Name, resp)
				time.Sleep(50 * time.Millisecond)
			}
			Expect(first.Status).To(Equal(http.StatusOK), "the first call %s decided on its own must pass: %s", p.Name, first)
			for i, want := range []int{http.StatusOK, http.StatusTooManyRequests} {
				id++
				resp, err := alice.callToolVia(ctx, p.URL, id, env.OtherTool)
				Expect(err).NotTo(HaveOccurred())
				Expect(resp.Status).To(Equal(want), "call %d through %s with Redis down: %s", i+2, p.Name, resp)
			}
		}
		Eventually(failOpenCount).WithContext(ctx).WithArguments(t).
			Should(BeNumerically("==", before+float64(3*len(world.Proxies))), "each call decided locally counts once in %s", failOpenMetric)

		By("starting Redis again")
		Expect(world.Redis.Start()).To(Succeed())
		expectSharedStore(ctx)
		// Redis comes back empty, so buckets start full: calls pass until
		// the bucket is empty, then the limit refuses them again.
		Eventually(func(g Gomega) int {
			resp, err := alice.callTool(ctx, "after-the-outage", env.OtherTool)
			g.Expect(err).NotTo(HaveOccurred())
			return resp.Status
		}).WithContext(ctx).WithTimeout(time.Minute).WithPolling(200*time.Millisecond).
			Should(Equal(http.StatusTooManyRequests), "the limit must apply again once Redis answers")
		resp, err := alice.callTool(ctx, "limited-again", env.OtherTool)
		Expect(err).NotTo(HaveOccurred())
		Expect(resp.Status).To(Equal(http.StatusTooManyRequests), "%s", resp)
	})
})
