package controller_test

import (
	"path/filepath"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	appsv1 "k8s.io/api/apps/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/toolgate/toolgate/internal/testkube"
)

var _ = Describe("config/default", func() {
	It("installs the CRD, the controller's RBAC and the controller with kubectl apply -k", func() {
		out, err := kube.Kubectl("apply", "-k", filepath.Join(testkube.RepoRoot(), "config", "default"))
		Expect(err).NotTo(HaveOccurred(), out)
		Expect(out).To(ContainSubstring("customresourcedefinition.apiextensions.k8s.io/mcpservers.toolgate.dev"))

		var dep appsv1.Deployment
		Expect(k8sClient.Get(ctx, client.ObjectKey{Namespace: "toolgate-system", Name: "toolgate-controller"}, &dep)).To(Succeed())
		Expect(dep.Spec.Template.Spec.ServiceAccountName).To(Equal("toolgate-controller"))
		Expect(dep.Spec.Template.Spec.Containers[0].Args).To(ContainElement("controller"))
		var role rbacv1.ClusterRole
		Expect(k8sClient.Get(ctx, client.ObjectKey{Name: "toolgate-controller"}, &role)).To(Succeed())
		Expect(role.Rules).NotTo(BeEmpty())
		var binding rbacv1.ClusterRoleBinding
		Expect(k8sClient.Get(ctx, client.ObjectKey{Name: "toolgate-controller"}, &binding)).To(Succeed())
		Expect(binding.Subjects).To(ContainElement(rbacv1.Subject{Kind: "ServiceAccount", Name: "toolgate-controller", Namespace: "toolgate-system"}))
	})
})
