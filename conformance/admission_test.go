package conformance

import (
	"os"
	"path/filepath"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"sigs.k8s.io/yaml"

	"github.com/toolgate/toolgate/apis/v1alpha1"
	"github.com/toolgate/toolgate/conformance/env"
	"github.com/toolgate/toolgate/internal/testkube"
)

var _ = Describe("MCPServer admission", func() {
	It("rejects `kubectl apply` of an MCPServer with perUser and no auth", func(ctx SpecContext) {
		t := newTenant(ctx, "admission")
		sample := filepath.Join(testkube.RepoRoot(), "config", "samples", "mcpserver-peruser-no-auth.yaml")

		out, err := world.Kubectl("apply", "--namespace", t.Namespace, "-f", sample)
		Expect(err).To(HaveOccurred(), "kubectl apply must fail; it printed:\n%s", out)
		Expect(out).To(ContainSubstring(`MCPServer "peruser-no-auth" is invalid`))
		Expect(out).To(ContainSubstring("spec.rateLimiting.perUser"))
		Expect(out).To(ContainSubstring("needs spec.auth.oidc"))

		var stored v1alpha1.MCPServer
		err = world.Client.Get(ctx, t.key("peruser-no-auth"), &stored)
		Expect(apierrors.IsNotFound(err)).To(BeTrue(), "nothing is stored: %v", err)

		By("accepting the same MCPServer once it has spec.auth.oidc")
		raw, err := os.ReadFile(sample)
		Expect(err).NotTo(HaveOccurred())
		var fixed v1alpha1.MCPServer
		Expect(yaml.Unmarshal(raw, &fixed)).To(Succeed())
		fixed.Spec.Auth = &v1alpha1.Auth{OIDC: &v1alpha1.OIDC{Issuer: world.Issuer.URL, Audience: env.Audience, AllowInsecureHTTP: true}}
		raw, err = yaml.Marshal(&fixed)
		Expect(err).NotTo(HaveOccurred())
		fixedPath := filepath.Join(GinkgoT().TempDir(), "mcpserver-peruser-with-auth.yaml")
		Expect(os.WriteFile(fixedPath, raw, 0o600)).To(Succeed())

		out, err = world.Kubectl("apply", "--namespace", t.Namespace, "-f", fixedPath)
		Expect(err).NotTo(HaveOccurred(), "kubectl apply printed:\n%s", out)
		Expect(world.Client.Get(ctx, t.key("peruser-no-auth"), &stored)).To(Succeed())
		DeferCleanup(func(ctx SpecContext) { _ = world.Client.Delete(ctx, &stored) })
	})
})
