package conformance

import (
	"encoding/json"
	"net/http"
	"strconv"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/toolgate/toolgate/apis/v1alpha1"
	"github.com/toolgate/toolgate/conformance/env"
)

// The rejection the user asked for, spelled out here rather than imported
// so that the suite checks the contract, not the code's constants.
const (
	rateLimitedCode    = -32029
	rateLimitedMessage = "Rate limit exceeded"
)

// A refill period no spec outlives: buckets only empty during a spec.
const longRefill = time.Hour

// retryAfterData is error.data of a rate-limit rejection.
type retryAfterData struct {
	RetryAfterSeconds *int64 `json:"retryAfterSeconds"`
}

// expectRateLimited checks a rejection over the limit: HTTP 429 with a
// Retry-After in whole seconds, and a JSON body with the JSON-RPC error
// -32029 for request id, whose data.retryAfterSeconds agrees with the header.
func expectRateLimited(status int, header http.Header, body []byte, id json.RawMessage) {
	GinkgoHelper()
	Expect(status).To(Equal(http.StatusTooManyRequests), "body %s", body)
	Expect(header.Get("Content-Type")).To(HavePrefix("application/json"))
	retryAfter, err := strconv.ParseInt(header.Get("Retry-After"), 10, 64)
	Expect(err).NotTo(HaveOccurred(), "Retry-After %q must be whole seconds", header.Get("Retry-After"))
	Expect(retryAfter).To(BeNumerically(">=", 1))

	var msg rpcMessage
	Expect(json.Unmarshal(body, &msg)).To(Succeed(), "the 429 body must be one JSON-RPC response: %s", body)
	Expect(msg.JSONRPC).To(Equal("2.0"))
	Expect(msg.ID).To(MatchJSON(id), "the error answers the refused request's id")
	Expect(msg.Result).To(BeNil())
	Expect(msg.Error).NotTo(BeNil(), "body %s", body)
	Expect(msg.Error.Code).To(Equal(rateLimitedCode))
	Expect(msg.Error.Message).To(Equal(rateLimitedMessage))
	var data retryAfterData
	Expect(json.Unmarshal(msg.Error.Data, &data)).To(Succeed(), "error.data %s", msg.Error.Data)
	Expect(data.RetryAfterSeconds).NotTo(BeNil(), "error.data %s has no retryAfterSeconds", msg.Error.Data)
	Expect(*data.RetryAfterSeconds).To(Equal(retryAfter), "error.data.retryAfterSeconds and Retry-After must agree")
}

var _ = Describe("A perUser limit applied through an HTTPRoute ExtensionRef", func() {
	var t *tenant

	BeforeEach(func(ctx SpecContext) {
		t = newTenant(ctx, "peruser")
		t.deploy(ctx, &v1alpha1.RateLimiting{
			PerUser: bucket(3, longRefill),
			Tools:   []v1alpha1.ToolRateLimit{{Name: env.ExpensiveTool, PerUser: bucket(1, longRefill)}},
		})
	})

	It("lets a raw JSON-RPC client make maxTokens calls, then refuses the next with -32029, retryAfterSeconds and the request's id", func(ctx SpecContext) {
		alice := t.rawSession(ctx, "alice")
		expectCalls(ctx, alice, env.OtherTool, 3, http.StatusOK)

		resp, err := alice.callTool(ctx, "the-call-after-the-limit", env.OtherTool)
		Expect(err).NotTo(HaveOccurred())
		expectRateLimited(resp.Status, resp.Header, resp.Body, json.RawMessage(`"the-call-after-the-limit"`))

		By("answering a numeric id with that id")
		resp, err = alice.callTool(ctx, 42, env.OtherTool)
		Expect(err).NotTo(HaveOccurred())
		expectRateLimited(resp.Status, resp.Header, resp.Body, json.RawMessage(`42`))

		Expect(world.Backend.Calls(t.Namespace, env.OtherTool)).To(BeEquivalentTo(3), "refused calls must not reach the MCP server")
	})

	It("fails the go-sdk client's call over the limit with a rate-limit error and keeps its session usable", func(ctx SpecContext) {
		cs, err := connectSDK(ctx, world.Proxies[0].URL, t.Path, tokenFor("bob"), nil)
		Expect(err).NotTo(HaveOccurred())
		DeferCleanup(cs.Close)
		session := cs.ID()

		Expect(callSDK(ctx, cs, env.ExpensiveTool)).To(Equal(env.ExpensiveTool + " done"))
		_, err = callSDK(ctx, cs, env.ExpensiveTool)
		// go-sdk v1.8 treats 429 as transient: it does not decode the body,
		// and reports the HTTP status text.
		Expect(err).To(MatchError(ContainSubstring(http.StatusText(http.StatusTooManyRequests))), "expensive_tool allows one call per user")

		By("calling another tool in the same session")
		Expect(callSDK(ctx, cs, env.OtherTool)).To(Equal(env.OtherTool + " done"))
		Expect(callSDK(ctx, cs, env.OtherTool)).To(Equal(env.OtherTool + " done"))

		By("going over the server's perUser limit of 3")
		_, err = callSDK(ctx, cs, env.OtherTool)
		Expect(err).To(MatchError(ContainSubstring(http.StatusText(http.StatusTooManyRequests))))

		By("still using the session")
		tools, err := cs.ListTools(ctx, nil)
		Expect(err).NotTo(HaveOccurred())
		Expect(tools.Tools).To(HaveLen(2))
		Expect(cs.ID()).To(Equal(session), "the session must survive the rejections")
		Expect(world.Backend.Calls(t.Namespace, env.ExpensiveTool)).To(BeEquivalentTo(1))
		Expect(world.Backend.Calls(t.Namespace, env.OtherTool)).To(BeEquivalentTo(2))
	})

	It("answers a Streamable HTTP call over the limit with HTTP 429 and a Retry-After header", func(ctx SpecContext) {
		rec := &recorder{}
		cs, err := connectSDK(ctx, world.Proxies[1].URL, t.Path, tokenFor("carol"), rec)
		Expect(err).NotTo(HaveOccurred())
		DeferCleanup(cs.Close)

		for range 3 {
			Expect(callSDK(ctx, cs, env.OtherTool)).To(Equal(env.OtherTool + " done"))
		}
		Expect(rec.exchanges()).To(BeEmpty())
		_, err = callSDK(ctx, cs, env.OtherTool)
		Expect(err).To(HaveOccurred())

		refused := rec.exchanges()
		Expect(refused).To(HaveLen(1), "only the call over the limit is refused")
		var request struct {
			ID     json.RawMessage `json:"id"`
			Method string          `json:"method"`
		}
		Expect(json.Unmarshal(refused[0].RequestBody, &request)).To(Succeed())
		Expect(request.Method).To(Equal("tools/call"))
		expectRateLimited(refused[0].Status, refused[0].Header, refused[0].Body, request.ID)
	})
})

var _ = Describe("Rate-limit buckets", func() {
	It("keep users independent: alice over her limit does not limit bob", func(ctx SpecContext) {
		t := newTenant(ctx, "users")
		t.deploy(ctx, &v1alpha1.RateLimiting{PerUser: bucket(2, longRefill)})
		alice, bob := t.rawSession(ctx, "alice"), t.rawSession(ctx, "bob")

		expectCalls(ctx, alice, env.OtherTool, 2, http.StatusOK)
		expectCalls(ctx, alice, env.OtherTool, 1, http.StatusTooManyRequests)
		expectCalls(ctx, bob, env.OtherTool, 2, http.StatusOK)
		expectCalls(ctx, bob, env.OtherTool, 1, http.StatusTooManyRequests)
		expectCalls(ctx, alice, env.OtherTool, 1, http.StatusTooManyRequests)
	})

	It("keep tools independent: expensive_tool over its limit does not limit other_tool", func(ctx SpecContext) {
		t := newTenant(ctx, "tools")
		t.deploy(ctx, &v1alpha1.RateLimiting{
			Tools: []v1alpha1.ToolRateLimit{{Name: env.ExpensiveTool, PerUser: bucket(2, longRefill)}},
		})
		alice := t.rawSession(ctx, "alice")

		expectCalls(ctx, alice, env.ExpensiveTool, 2, http.StatusOK)
		expectCalls(ctx, alice, env.ExpensiveTool, 1, http.StatusTooManyRequests)
		expectCalls(ctx, alice, env.OtherTool, 5, http.StatusOK)
		expectCalls(ctx, alice, env.ExpensiveTool, 1, http.StatusTooManyRequests)
	})

	It("make a call pass both the server's perUser bucket and the tool's, taking nothing from either when one refuses", func(ctx SpecContext) {
		t := newTenant(ctx, "both")
		t.deploy(ctx, &v1alpha1.RateLimiting{
			PerUser: bucket(4, longRefill),
			Tools:   []v1alpha1.ToolRateLimit{{Name: env.ExpensiveTool, PerUser: bucket(2, longRefill)}},
		})

		By("alice empties the tool bucket first")
		alice := t.rawSession(ctx, "alice")
		expectCalls(ctx, alice, env.ExpensiveTool, 2, http.StatusOK)
		expectCalls(ctx, alice, env.ExpensiveTool, 1, http.StatusTooManyRequests)
		// The refused call took no token from the server bucket: two are left.
		expectCalls(ctx, alice, env.OtherTool, 2, http.StatusOK)
		expectCalls(ctx, alice, env.OtherTool, 1, http.StatusTooManyRequests)

		By("bob empties the server bucket first")
		bob := t.rawSession(ctx, "bob")
		expectCalls(ctx, bob, env.OtherTool, 4, http.StatusOK)
		// His expensive_tool bucket is full, yet the server bucket refuses.
		expectCalls(ctx, bob, env.ExpensiveTool, 1, http.StatusTooManyRequests)

		Expect(world.Backend.Calls(t.Namespace, env.ExpensiveTool)).To(BeEquivalentTo(2))
		Expect(world.Backend.Calls(t.Namespace, env.OtherTool)).To(BeEquivalentTo(6))
	})
})
