package controller_test

import (
	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/toolgate/toolgate/controller"
)

var _ = Describe("Status writes", func() {
	It("never replace what another controller wrote after toolgate read the object", func() {
		ns := newNamespace()
		route := &gwv1.HTTPRoute{
			ObjectMeta: metav1.ObjectMeta{Name: unique("route"), Namespace: ns},
			Spec:       gwv1.HTTPRouteSpec{CommonRouteSpec: gwv1.CommonRouteSpec{ParentRefs: []gwv1.ParentReference{{Name: "elsewhere"}}}},
		}
		Expect(k8sClient.Create(ctx, route)).To(Succeed())
		stale := route.DeepCopy() // what toolgate read

		By("another controller writing its parent status meanwhile")
		other := gwv1.RouteParentStatus{
			ParentRef:      gwv1.ParentReference{Name: "elsewhere"},
			ControllerName: "example.com/other-controller",
			Conditions: []metav1.Condition{{Type: "Accepted", Status: metav1.ConditionTrue, Reason: "Accepted",
				LastTransitionTime: metav1.Now(), ObservedGeneration: 1}},
		}
		Expect(changeStatus(route, func() { route.Status.Parents = []gwv1.RouteParentStatus{other} })).To(Succeed())

		By("toolgate writing its own from the stale copy")
		next := stale.DeepCopy()
		next.Status.Parents = []gwv1.RouteParentStatus{{
			ParentRef:      gwv1.ParentReference{Name: "mine", Namespace: ptr(gwv1.Namespace(ns))},
			ControllerName: "toolgate.dev/gateway-controller",
			Conditions: []metav1.Condition{{Type: "Accepted", Status: metav1.ConditionTrue, Reason: "Accepted",
				LastTransitionTime: metav1.Now(), ObservedGeneration: 1}},
		}}
		err := controller.PatchStatus(ctx, k8sClient, stale, next, stale.Status, next.Status)
		Expect(apierrors.IsConflict(err)).To(BeTrue(), "a write from a stale copy must conflict, got %v", err)

		stored := &gwv1.HTTPRoute{}
		Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(route), stored)).To(Succeed())
		Expect(stored.Status.Parents).To(HaveLen(1))
		Expect(stored.Status.Parents[0].ControllerName).To(Equal(other.ControllerName), "the other controller's entry must survive")
	})
})
