package v1alpha1_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"github.com/toolgate/toolgate/apis/v1alpha1"
	"github.com/toolgate/toolgate/internal/testkube"
)

const namespace = "default"

var objectCount int

// newMCPServer builds an MCPServer from the YAML of its spec, as a user
// would write it, so that tests can send values the Go types cannot hold.
func newMCPServer(specYAML string) *unstructured.Unstructured {
	var spec map[string]any
	Expect(yaml.Unmarshal([]byte(specYAML), &spec)).To(Succeed())
	objectCount++
	u := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": v1alpha1.GroupVersion.String(),
		"kind":       "MCPServer",
		"metadata":   map[string]any{"name": fmt.Sprintf("mcp-%d", objectCount), "namespace": namespace},
		"spec":       spec,
	}}
	return u
}

// tools renders n tools[] entries with a global bucket each.
func tools(n int) string {
	var b strings.Builder
	b.WriteString("    tools:\n")
	for i := range n {
		fmt.Fprintf(&b, "    - name: tool_%d\n      global: {maxTokens: 1, refillPeriod: 1m}\n", i)
	}
	return b.String()
}

const (
	service = "serviceRef: {name: github-mcp, port: 8080}\n"
	auth    = "auth:\n  oidc: {issuer: 'https://issuer.example.com', audience: toolgate}\n"
)

var _ = Describe("MCPServer admission", func() {
	DescribeTable("accepts",
		func(specYAML string) {
			Expect(k8sClient.Create(ctx, newMCPServer(specYAML))).To(Succeed())
		},
		Entry("a server with no auth and no rate limiting", service),
		Entry("a global limit without auth", service+"rateLimiting:\n  global: {maxTokens: 1000, refillPeriod: 1m}\n"),
		Entry("a per-tool global limit without auth", service+"rateLimiting:\n  tools:\n  - name: expensive_tool\n    global: {maxTokens: 5, refillPeriod: 1m}\n"),
		Entry("a server-level perUser limit with OIDC auth", service+auth+"rateLimiting:\n  perUser: {maxTokens: 100, refillPeriod: 1m}\n"),
		Entry("a per-tool perUser limit with OIDC auth", service+auth+"rateLimiting:\n  tools:\n  - name: expensive_tool\n    perUser: {maxTokens: 10, refillPeriod: 1m}\n"),
		Entry("global, perUser and per-tool limits together", service+auth+"rateLimiting:\n  global: {maxTokens: 1000, refillPeriod: 1m}\n  perUser: {maxTokens: 100, refillPeriod: 1m}\n  tools:\n  - name: expensive_tool\n    global: {maxTokens: 50, refillPeriod: 1m}\n    perUser: {maxTokens: 10, refillPeriod: 1m}\n  - name: other_tool\n    perUser: {maxTokens: 20, refillPeriod: 30s}\n"),
		Entry("maxTokens of 1", service+"rateLimiting:\n  global: {maxTokens: 1, refillPeriod: 1s}\n"),
		Entry("the longest refillPeriod, 24h", service+"rateLimiting:\n  global: {maxTokens: 1, refillPeriod: 24h}\n"),
		Entry("a compound refillPeriod, 1h30m", service+"rateLimiting:\n  global: {maxTokens: 1, refillPeriod: 1h30m}\n"),
		Entry("a fractional refillPeriod, 1.5s", service+"rateLimiting:\n  global: {maxTokens: 1, refillPeriod: 1.5s}\n"),
		Entry("a sub-second refillPeriod, 500ms", service+"rateLimiting:\n  global: {maxTokens: 1, refillPeriod: 500ms}\n"),
		Entry("the largest number of tools", service+"rateLimiting:\n"+tools(v1alpha1.MaxTools)),
		Entry("the SSE transport and an explicit JWKS URL", service+"transport: sse\npath: /sse\nauth:\n  oidc: {issuer: 'https://issuer.example.com', audience: toolgate, jwksURL: 'https://issuer.example.com/keys', userClaim: email}\n"),
	)

	DescribeTable("rejects, saying what to change",
		func(specYAML string, field, message string) {
			err := k8sClient.Create(ctx, newMCPServer(specYAML))
			Expect(err).To(HaveOccurred())
			Expect(apierrors.IsInvalid(err)).To(BeTrue(), "expected an Invalid error, got %v", err)
			Expect(err.Error()).To(ContainSubstring(field))
			Expect(err.Error()).To(ContainSubstring(message))
		},
		Entry("a server-level perUser limit without auth",
			service+"rateLimiting:\n  perUser: {maxTokens: 100, refillPeriod: 1m}\n",
			"spec.rateLimiting.perUser", "rateLimiting.perUser needs spec.auth.oidc"),
		Entry("a per-tool perUser limit without auth",
			service+"rateLimiting:\n  global: {maxTokens: 100, refillPeriod: 1m}\n  tools:\n  - name: other_tool\n    global: {maxTokens: 5, refillPeriod: 1m}\n  - name: expensive_tool\n    perUser: {maxTokens: 10, refillPeriod: 1m}\n",
			"spec.rateLimiting.tools", "rateLimiting.tools[].perUser needs spec.auth.oidc"),
		Entry("auth without oidc",
			service+"auth: {}\nrateLimiting:\n  perUser: {maxTokens: 100, refillPeriod: 1m}\n",
			"spec.auth.oidc", "Required value"),
		Entry("rateLimiting with no bucket at all",
			service+"rateLimiting: {}\n",
			"spec.rateLimiting", "rateLimiting configures no bucket"),
		Entry("rateLimiting with an empty tools list and nothing else",
			service+"rateLimiting:\n  tools: []\n",
			"spec.rateLimiting", "rateLimiting configures no bucket"),
		Entry("a tools[] entry with no bucket",
			service+"rateLimiting:\n  global: {maxTokens: 100, refillPeriod: 1m}\n  tools:\n  - name: expensive_tool\n",
			"spec.rateLimiting.tools[0]", "each tools[] entry must set global or perUser"),
		Entry("two tools[] entries with the same name",
			service+"rateLimiting:\n  tools:\n  - name: expensive_tool\n    global: {maxTokens: 5, refillPeriod: 1m}\n  - name: expensive_tool\n    global: {maxTokens: 9, refillPeriod: 1m}\n",
			"spec.rateLimiting.tools[1]", "Duplicate value"),
		Entry("a tools[] entry with an empty name",
			service+"rateLimiting:\n  tools:\n  - name: ''\n    global: {maxTokens: 5, refillPeriod: 1m}\n",
			"spec.rateLimiting.tools[0].name", "at least 1 chars long"),
		Entry("more tools than the maximum",
			service+"rateLimiting:\n"+tools(v1alpha1.MaxTools+1),
			"spec.rateLimiting.tools", fmt.Sprintf("must have at most %d items", v1alpha1.MaxTools)),
		Entry("maxTokens of 0",
			service+"rateLimiting:\n  global: {maxTokens: 0, refillPeriod: 1m}\n",
			"spec.rateLimiting.global.maxTokens", "should be greater than or equal to 1"),
		Entry("a negative maxTokens on a tool",
			service+auth+"rateLimiting:\n  tools:\n  - name: expensive_tool\n    perUser: {maxTokens: -3, refillPeriod: 1m}\n",
			"spec.rateLimiting.tools[0].perUser.maxTokens", "should be greater than or equal to 1"),
		Entry("a refillPeriod of 0s",
			service+"rateLimiting:\n  global: {maxTokens: 10, refillPeriod: 0s}\n",
			"spec.rateLimiting.global.refillPeriod", "refillPeriod must be greater than 0s and at most 24h"),
		Entry("a negative refillPeriod",
			service+auth+"rateLimiting:\n  perUser: {maxTokens: 10, refillPeriod: -1m}\n",
			"spec.rateLimiting.perUser.refillPeriod", "refillPeriod must be a positive duration"),
		Entry("a refillPeriod that is not a duration",
			service+"rateLimiting:\n  global: {maxTokens: 10, refillPeriod: soon}\n",
			"spec.rateLimiting.global.refillPeriod", "refillPeriod must be a positive duration"),
		Entry("a bare number as refillPeriod",
			service+"rateLimiting:\n  global: {maxTokens: 10, refillPeriod: '60'}\n",
			"spec.rateLimiting.global.refillPeriod", "refillPeriod must be a positive duration"),
		Entry("a refillPeriod longer than 24h",
			service+"rateLimiting:\n  global: {maxTokens: 10, refillPeriod: 25h}\n",
			"spec.rateLimiting.global.refillPeriod", "refillPeriod must be greater than 0s and at most 24h"),
		Entry("a bucket without refillPeriod",
			service+"rateLimiting:\n  global: {maxTokens: 10}\n",
			"spec.rateLimiting.global.refillPeriod", "Required value"),
		Entry("a bucket without maxTokens",
			service+"rateLimiting:\n  global: {refillPeriod: 1m}\n",
			"spec.rateLimiting.global.maxTokens", "Required value"),
		Entry("an unknown transport",
			service+"transport: websocket\n",
			"spec.transport", "Unsupported value"),
		Entry("a path without a leading slash",
			service+"path: mcp\n",
			"spec.path", "path must start with /"),
		Entry("an issuer that is not a URL",
			service+"auth:\n  oidc: {issuer: issuer.example.com, audience: toolgate}\n",
			"spec.auth.oidc.issuer", "issuer must be an absolute https://"),
		Entry("OIDC without an audience",
			service+"auth:\n  oidc: {issuer: 'https://issuer.example.com'}\n",
			"spec.auth.oidc.audience", "Required value"),
		Entry("a server without serviceRef",
			"path: /mcp\n",
			"spec.serviceRef", "Required value"),
	)

	It("defaults path, transport and userClaim", func() {
		u := newMCPServer(service + auth)
		Expect(k8sClient.Create(ctx, u)).To(Succeed())
		var got v1alpha1.MCPServer
		Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(u), &got)).To(Succeed())
		Expect(got.Spec.Path).To(Equal("/mcp"))
		Expect(got.Spec.Transport).To(Equal(v1alpha1.TransportStreamableHTTP))
		Expect(got.Spec.Auth.OIDC.UserClaim).To(Equal("sub"))
	})

	It("rejects an update that adds perUser to a server without auth", func() {
		u := newMCPServer(service + "rateLimiting:\n  global: {maxTokens: 10, refillPeriod: 1m}\n")
		Expect(k8sClient.Create(ctx, u)).To(Succeed())
		Expect(unstructured.SetNestedMap(u.Object, map[string]any{"maxTokens": int64(1), "refillPeriod": "1m"}, "spec", "rateLimiting", "perUser")).To(Succeed())
		err := k8sClient.Update(ctx, u)
		Expect(apierrors.IsInvalid(err)).To(BeTrue(), "expected an Invalid error, got %v", err)
		Expect(err.Error()).To(ContainSubstring("rateLimiting.perUser needs spec.auth.oidc"))
	})

	It("round-trips the typed Go object", func() {
		in := &v1alpha1.MCPServer{
			ObjectMeta: metav1.ObjectMeta{Name: "typed", Namespace: namespace},
			Spec: v1alpha1.MCPServerSpec{
				ServiceRef: v1alpha1.ServiceReference{Name: "github-mcp", Port: 8080},
				Auth:       &v1alpha1.Auth{OIDC: &v1alpha1.OIDC{Issuer: "https://issuer.example.com", Audience: "toolgate"}},
				RateLimiting: &v1alpha1.RateLimiting{
					PerUser: &v1alpha1.Bucket{MaxTokens: 100, RefillPeriod: metav1.Duration{Duration: time.Minute}},
					Tools: []v1alpha1.ToolRateLimit{{
						Name:    "expensive_tool",
						PerUser: &v1alpha1.Bucket{MaxTokens: 10, RefillPeriod: metav1.Duration{Duration: time.Minute}},
					}},
				},
			},
		}
		Expect(k8sClient.Create(ctx, in)).To(Succeed())
		var got v1alpha1.MCPServer
		Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(in), &got)).To(Succeed())
		Expect(got.Spec.RateLimiting).To(Equal(in.Spec.RateLimiting))
	})
})

var _ = Describe("kubectl apply", func() {
	var ns string

	BeforeEach(func() {
		objectCount++
		ns = fmt.Sprintf("kubectl-%d", objectCount)
		Expect(k8sClient.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}})).To(Succeed())
	})

	sample := func(name string) string {
		return filepath.Join(testkube.RepoRoot(), "config", "samples", name)
	}

	It("rejects an MCPServer with perUser and no auth, and accepts the same file with auth added", func() {
		out, err := kube.Kubectl("apply", "-n", ns, "-f", sample("mcpserver-peruser-no-auth.yaml"))
		Expect(err).To(HaveOccurred(), "kubectl apply succeeded:\n%s", out)
		Expect(out).To(ContainSubstring(`The MCPServer "peruser-no-auth" is invalid`))
		Expect(out).To(ContainSubstring("spec.rateLimiting.perUser"))
		Expect(out).To(ContainSubstring("rateLimiting.perUser needs spec.auth.oidc"))

		raw, err := os.ReadFile(sample("mcpserver-peruser-no-auth.yaml"))
		Expect(err).NotTo(HaveOccurred())
		var obj map[string]any
		Expect(yaml.Unmarshal(raw, &obj)).To(Succeed())
		Expect(unstructured.SetNestedMap(obj, map[string]any{
			"oidc": map[string]any{"issuer": "https://issuer.example.com", "audience": "toolgate"},
		}, "spec", "auth")).To(Succeed())
		withAuth, err := yaml.Marshal(obj)
		Expect(err).NotTo(HaveOccurred())
		file := filepath.Join(GinkgoT().TempDir(), "mcpserver-peruser-with-auth.yaml")
		Expect(os.WriteFile(file, withAuth, 0o600)).To(Succeed())

		out, err = kube.Kubectl("apply", "-n", ns, "-f", file)
		Expect(err).NotTo(HaveOccurred(), "kubectl apply failed:\n%s", out)
		Expect(out).To(ContainSubstring("mcpserver.toolgate.dev/peruser-no-auth created"))
	})

	It("accepts the sample with global, perUser and per-tool limits", func() {
		out, err := kube.Kubectl("apply", "-n", ns, "-f", sample("mcpserver.yaml"))
		Expect(err).NotTo(HaveOccurred(), "kubectl apply failed:\n%s", out)
		Expect(out).To(ContainSubstring("mcpserver.toolgate.dev/github created"))

		out, err = kube.Kubectl("get", "-n", ns, "mcps", "github")
		Expect(err).NotTo(HaveOccurred(), out)
		Expect(out).To(ContainSubstring("RATELIMITING"))
	})
})
