package provision_test

import (
	"bufio"
	"os"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/toolgate/toolgate/controller/pki"
	"github.com/toolgate/toolgate/controller/provision"
)

// rulesFromMarkers reads the +kubebuilder:rbac markers of a Go file, the
// way controller-gen does for config/rbac, into policy rules.
func rulesFromMarkers(path string) []rbacv1.PolicyRule {
	GinkgoHelper()
	f, err := os.Open(path)
	Expect(err).NotTo(HaveOccurred())
	defer func() { _ = f.Close() }()
	var rules []rbacv1.PolicyRule
	scan := bufio.NewScanner(f)
	for scan.Scan() {
		marker, ok := strings.CutPrefix(strings.TrimSpace(scan.Text()), "// +kubebuilder:rbac:")
		if !ok {
			continue
		}
		var rule rbacv1.PolicyRule
		for _, field := range strings.Split(marker, ",") {
			key, value, ok := strings.Cut(field, "=")
			Expect(ok).To(BeTrue(), "marker field %q", field)
			values := strings.Split(strings.Trim(value, `"`), ";")
			switch key {
			case "groups":
				rule.APIGroups = values
			case "resources":
				rule.Resources = values
			case "resourceNames":
				rule.ResourceNames = values
			case "verbs":
				rule.Verbs = values
			default:
				Fail("unexpected marker field " + key)
			}
		}
		rules = append(rules, rule)
	}
	Expect(scan.Err()).NotTo(HaveOccurred())
	Expect(rules).NotTo(BeEmpty())
	return rules
}

var _ = Describe("The RBAC markers", func() {
	It("grant nothing on RBAC objects: the proxies are bound to no role", func() {
		for _, rule := range rulesFromMarkers("rbac.go") {
			Expect(rule.APIGroups).NotTo(ContainElement(rbacv1.GroupName), "rule %v", rule)
			Expect(rule.Verbs).NotTo(ContainElements("bind", "escalate"), "rule %v", rule)
		}
	})

	It("let a controller holding nothing else provision, repair and re-issue", func() {
		const user = "toolgate-least-privilege"
		cfg := rest.CopyConfig(kube.Config)
		cfg.Impersonate = rest.ImpersonationConfig{UserName: user}
		limited, err := client.New(cfg, client.Options{Scheme: scheme})
		Expect(err).NotTo(HaveOccurred())
		now := time.Now()
		p := provision.New(limited, scheme, provision.Options{CA: ca, Now: func() time.Time { return now }})
		gw := newGateway("least-privilege")

		By("being refused without the markers' permissions")
		_, err = p.Ensure(ctx, gw, defaultParams)
		Expect(apierrors.IsForbidden(err)).To(BeTrue(), "Ensure without permissions: %v", err)

		By("granting exactly the markers' permissions")
		role := &rbacv1.ClusterRole{
			ObjectMeta: metav1.ObjectMeta{Name: "toolgate-provision-markers"},
			Rules:      rulesFromMarkers("rbac.go"),
		}
		Expect(k8sClient.Create(ctx, role)).To(Succeed())
		Expect(k8sClient.Create(ctx, &rbacv1.ClusterRoleBinding{
			ObjectMeta: metav1.ObjectMeta{Name: "toolgate-provision-markers"},
			RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: role.Name},
			Subjects:   []rbacv1.Subject{{Kind: rbacv1.UserKind, APIGroup: rbacv1.GroupName, Name: user}},
		})).To(Succeed())

		// The API server's authorizer learns of new bindings through an
		// informer, so the first success may take a moment.
		Eventually(func() error {
			_, err := p.Ensure(ctx, gw, defaultParams)
			return err
		}).WithTimeout(time.Minute).WithPolling(200 * time.Millisecond).Should(Succeed())

		By("repairing a deleted Service")
		Expect(k8sClient.Delete(ctx, getService(gw))).To(Succeed())
		_, err = p.Ensure(ctx, gw, defaultParams)
		Expect(err).NotTo(HaveOccurred())
		getService(gw)

		By("re-issuing a client certificate that is due")
		before := getConfigSecret(gw)
		now = now.Add(pki.ClientCertLifetime - pki.ClientCertRenewBefore + 24*time.Hour)
		_, err = p.Ensure(ctx, gw, defaultParams)
		Expect(err).NotTo(HaveOccurred())
		after := getConfigSecret(gw)
		Expect(after.ResourceVersion).NotTo(Equal(before.ResourceVersion))
		Expect(ca.ClientCertCurrent(after.Data["tls.crt"], gatewayKey(gw), now, pki.ClientCertRenewBefore)).To(BeTrue())

		By("cleaning up after the Gateway is deleted")
		Expect(k8sClient.Delete(ctx, gw)).To(Succeed())
		Expect(p.Cleanup(ctx, existingGateways())).To(Succeed())
	})
})
