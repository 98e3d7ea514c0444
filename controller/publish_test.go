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

// lastServes reports whether the last snapshot snapshots recorded holds
// marker.
func lastServes(snapshots func() [][]byte, marker string) func() bool {
	return func() bool {
		all := snapshots()
		return len(all) > 0 && bytes.Contains(all[len(all)-1], []byte(marker))
	}
}

// settledTranslations waits until the publisher has made no translation
// of some Gateways for a second (what came before has settled) and
// returns its counters of that scope.
func settledTranslations() translationCounts {
	GinkgoHelper()
	Eventually(func() bool {
		before := snapshotTranslations("some")
		time.Sleep(time.Second)
		return snapshotTranslations("some") == before
	}, 30*time.Second).Should(BeTrue())
	return snapshotTranslations("some")
}

// expectTranslatedAlone asserts that since before the publisher made
// translations of some Gateways, one Gateway each: what changed was
// translated alone.
func expectTranslatedAlone(before translationCounts, what string) {
	GinkgoHelper()
	after := snapshotTranslations("some")
	Expect(after.translations).To(BeNumerically(">", before.translations), "no translation of some Gateways")
	Expect(after.gateways-before.gateways).To(Equal(after.translations-before.translations),
		"a translation for "+what+" translated other Gateways too")
}

// newGateways creates n Gateways of class in ns.
func newGateways(ns, class string, n int) []*gwv1.Gateway {
	var gws []*gwv1.Gateway
	for range n {
		gws = append(gws, newGateway(ns, class, 80))
	}
	return gws
}

var _ = Describe("Snapshots of the Gateways an event can affect", func() {
	It("translates only the Gateway an HTTPRoute names when the route changes", func() {
		ns := newNamespace()
		gws := newGateways(ns, newGatewayClass(translate.ControllerName), 3)
		snapshots := recordSnapshots(types.NamespacedName{Namespace: ns, Name: gws[0].Name})
		route := newBackendRoute(ns, gws[0].Name, ns, "svc")
		Eventually(lastServes(snapshots, route.Name), 30*time.Second, 50*time.Millisecond).Should(BeTrue())
		before := settledTranslations()

		By("changing the route: its Gateway's snapshot follows, translated alone")
		Expect(change(route, func() {
			route.Spec.Rules[0].Matches = []gwv1.HTTPRouteMatch{{Path: &gwv1.HTTPPathMatch{Value: ptr("/edited")}}}
		})).To(Succeed())
		Eventually(lastServes(snapshots, "/edited"), 30*time.Second, 50*time.Millisecond).Should(BeTrue())
		expectTranslatedAlone(before, "the route's change")
	})

	It("translates only the Gateway whose route applies an MCPServer when the MCPServer changes", func() {
		ns := newNamespace()
		gws := newGateways(ns, newGatewayClass(translate.ControllerName), 3)
		snapshots := recordSnapshots(types.NamespacedName{Namespace: ns, Name: gws[1].Name})
		m := newMCPServer(ns, "tools", 17)
		newRoute(ns, gws[1].Name, m.Name, "mcp", 80)
		newBackendRoute(ns, gws[2].Name, ns, "other")
		Eventually(lastServes(snapshots, `"maxTokens":17`), 30*time.Second, 50*time.Millisecond).Should(BeTrue())
		before := settledTranslations()

		By("changing the MCPServer's limit: the Gateway whose route applies it follows, translated alone")
		Expect(change(m, func() { m.Spec.RateLimiting.PerUser.MaxTokens = 23 })).To(Succeed())
		Eventually(lastServes(snapshots, `"maxTokens":23`), 30*time.Second, 50*time.Millisecond).Should(BeTrue())
		expectTranslatedAlone(before, "the MCPServer's change")
	})
})
