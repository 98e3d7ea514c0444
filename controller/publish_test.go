package controller_test

import (
	"bytes"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	dto "github.com/prometheus/client_model/go"
	"k8s.io/apimachinery/pkg/types"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/toolgate/toolgate/controller"
	"github.com/toolgate/toolgate/controller/translate"
)

// translationCounts are the publisher's counters of one scope.
type translationCounts struct{ translations, gateways float64 }

// snapshotTranslations reads the publisher's counters of scope ("all" or
// "some").
func snapshotTranslations(scope string) translationCounts {
	families, err := streamMetrics.Gather()
	Expect(err).NotTo(HaveOccurred())
	value := func(name string) float64 {
		for _, f := range families {
			if f.GetName() != name {
				continue
			}
			for _, m := range f.GetMetric() {
				if labelValue(m, "scope") == scope {
					return m.GetCounter().GetValue()
				}
			}
		}
		Fail("no metric " + name + " of scope " + scope)
		return 0
	}
	return translationCounts{
		translations: value(controller.MetricSnapshotTranslations),
		gateways:     value(controller.MetricSnapshotGateways),
	}
}

func labelValue(m *dto.Metric, name string) string {
	for _, l := range m.GetLabel() {
		if l.GetName() == name {
			return l.GetValue()
		}
	}
	return ""
}

var _ = Describe("Snapshots of the Gateways an event can affect", func() {
	It("translates only the Gateway an HTTPRoute names when the route changes", func() {
		ns := newNamespace()
		class := newGatewayClass(translate.ControllerName)
		var gws []*gwv1.Gateway
		for range 3 {
			gws = append(gws, newGateway(ns, class, 80))
		}
		target := types.NamespacedName{Namespace: ns, Name: gws[0].Name}
		snapshots := recordSnapshots(target)
		route := newBackendRoute(ns, gws[0].Name, ns, "svc")
		served := func(marker string) func() bool {
			return func() bool {
				all := snapshots()
				return len(all) > 0 && bytes.Contains(all[len(all)-1], []byte(marker))
			}
		}
		Eventually(served(route.Name), 30*time.Second, 50*time.Millisecond).Should(BeTrue())
		// The Gateways' creation and provisioning settle first.
		Eventually(func() bool {
			before := snapshotTranslations("some")
			time.Sleep(time.Second)
			return snapshotTranslations("some") == before
		}, 30*time.Second).Should(BeTrue())
		before := snapshotTranslations("some")

		By("changing the route: its Gateway's snapshot follows, translated alone")
		Expect(change(route, func() {
			route.Spec.Rules[0].Matches = []gwv1.HTTPRouteMatch{{Path: &gwv1.HTTPPathMatch{Value: ptr("/edited")}}}
		})).To(Succeed())
		Eventually(served("/edited"), 30*time.Second, 50*time.Millisecond).Should(BeTrue())
		after := snapshotTranslations("some")
		Expect(after.translations).To(BeNumerically(">", before.translations), "no translation of some Gateways")
		Expect(after.gateways-before.gateways).To(Equal(after.translations-before.translations),
			"a translation for the route's change translated other Gateways too")
	})

	It("translates only the Gateway whose route applies an MCPServer when the MCPServer changes", func() {
		ns := newNamespace()
		class := newGatewayClass(translate.ControllerName)
		var gws []*gwv1.Gateway
		for range 3 {
			gws = append(gws, newGateway(ns, class, 80))
		}
		snapshots := recordSnapshots(types.NamespacedName{Namespace: ns, Name: gws[1].Name})
		m := newMCPServer(ns, "tools", 17)
		newRoute(ns, gws[1].Name, m.Name, "mcp", 80)
		newBackendRoute(ns, gws[2].Name, ns, "other")
		servesLimit := func(limit string) func() bool {
			return func() bool {
				all := snapshots()
				return len(all) > 0 && bytes.Contains(all[len(all)-1], []byte(`"maxTokens":`+limit))
			}
		}
		Eventually(servesLimit("17"), 30*time.Second, 50*time.Millisecond).Should(BeTrue())
		Eventually(func() bool {
			before := snapshotTranslations("some")
			time.Sleep(time.Second)
			return snapshotTranslations("some") == before
		}, 30*time.Second).Should(BeTrue())
		before := snapshotTranslations("some")

		By("changing the MCPServer's limit: the Gateway whose route applies it follows, translated alone")
		Expect(change(m, func() { m.Spec.RateLimiting.PerUser.MaxTokens = 23 })).To(Succeed())
		Eventually(servesLimit("23"), 30*time.Second, 50*time.Millisecond).Should(BeTrue())
		after := snapshotTranslations("some")
		Expect(after.translations).To(BeNumerically(">", before.translations), "no translation of some Gateways")
		Expect(after.gateways-before.gateways).To(Equal(after.translations-before.translations),
			"a translation for the MCPServer's change translated other Gateways too")
	})
})
