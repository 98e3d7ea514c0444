package v1alpha1_test

import (
	"fmt"
	"os"
	"path/filepath"
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
	"github.com/toolgate/toolgate/internal/admissioncases"
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

const (
	service = "serviceRef: {name: github-mcp, port: 8080}\n"
	auth    = "auth:\n  oidc: {issuer: 'https://issuer.example.com', audience: toolgate}\n"
)

func entries(cases []admissioncases.Case) []TableEntry {
	out := make([]TableEntry, 0, len(cases))
	for _, c := range cases {
		out = append(out, Entry(c.Name, c))
	}
	return out
}

var _ = Describe("MCPServer admission", func() {
	DescribeTable("accepts",
		func(c admissioncases.Case) {
			Expect(k8sClient.Create(ctx, newMCPServer(c.Spec))).To(Succeed())
		},
		entries(admissioncases.Accepted),
	)

	DescribeTable("rejects, saying what to change",
		func(c admissioncases.Case) {
			err := k8sClient.Create(ctx, newMCPServer(c.Spec))
			Expect(err).To(HaveOccurred())
			Expect(apierrors.IsInvalid(err)).To(BeTrue(), "expected an Invalid error, got %v", err)
			Expect(err.Error()).To(ContainSubstring(c.Field))
			Expect(err.Error()).To(ContainSubstring(c.Message))
		},
		entries(admissioncases.Rejected),
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
