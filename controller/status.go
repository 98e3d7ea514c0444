package controller

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	"sigs.k8s.io/controller-runtime/pkg/client"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/toolgate/toolgate/controller/translate"
)

// statusWriter writes translated status through the status subresource,
// only when it changed, keeping each unchanged condition's
// lastTransitionTime so that reconciling never loops on its own writes.
type statusWriter struct {
	client   client.Client
	recorder events.EventRecorder
	now      func() time.Time
	// controllerName is the one the reconciler serves (Options); route
	// parent statuses of other controllers are never touched.
	controllerName gwv1.GatewayController
}

func (w *statusWriter) write(ctx context.Context, res *translate.Resources, out *translate.Result) error {
	var errs []error
	for _, c := range res.GatewayClasses {
		computed, ok := out.Status.GatewayClasses[c.Name]
		if !ok {
			continue
		}
		next := c.DeepCopy()
		next.Status.Conditions = w.merge(c, c.Status.Conditions, computed.Conditions)
		errs = append(errs, w.patch(ctx, c, next, c.Status, next.Status))
	}
	for _, g := range res.Gateways {
		computed, ok := out.Status.Gateways[nn(g)]
		if !ok {
			continue
		}
		next := g.DeepCopy()
		next.Status.Addresses = computed.Addresses
		next.Status.Conditions = w.merge(g, g.Status.Conditions, computed.Conditions)
		next.Status.AttachedListenerSets = computed.AttachedListenerSets
		next.Status.Listeners = mergeListeners(w, g, g.Status.Listeners, computed.Listeners,
			func(l *gwv1.ListenerStatus) (gwv1.SectionName, *[]metav1.Condition) { return l.Name, &l.Conditions })
		errs = append(errs, w.patch(ctx, g, next, g.Status, next.Status))
	}
	for _, set := range res.ListenerSets {
		computed, ok := out.Status.ListenerSets[nn(set)]
		if !ok {
			continue
		}
		next := set.DeepCopy()
		next.Status.Conditions = w.merge(set, set.Status.Conditions, computed.Conditions)
		next.Status.Listeners = mergeListeners(w, set, set.Status.Listeners, computed.Listeners,
			func(l *gwv1.ListenerEntryStatus) (gwv1.SectionName, *[]metav1.Condition) {
				return l.Name, &l.Conditions
			})
		errs = append(errs, w.patch(ctx, set, next, set.Status, next.Status))
	}
	for _, r := range res.HTTPRoutes {
		computed, ok := out.Status.HTTPRoutes[nn(r)]
		mine := func(p gwv1.RouteParentStatus) bool { return p.ControllerName == w.controllerName }
		if !ok && !hasParent(r.Status.Parents, mine) {
			continue
		}
		next := r.DeepCopy()
		next.Status.Parents = mergeOwned(w, r, r.Status.Parents, computed, mine,
			func(p gwv1.RouteParentStatus) gwv1.ParentReference { return p.ParentRef },
			func(p *gwv1.RouteParentStatus) *[]metav1.Condition { return &p.Conditions })
		errs = append(errs, w.patch(ctx, r, next, r.Status, next.Status))
	}
	for _, p := range res.BackendTLSPolicies {
		computed, ok := out.Status.BackendTLSPolicies[nn(p)]
		mine := func(a gwv1.PolicyAncestorStatus) bool { return a.ControllerName == w.controllerName }
		if !ok && !slices.ContainsFunc(p.Status.Ancestors, mine) {
			continue
		}
		next := p.DeepCopy()
		next.Status.Ancestors = mergeOwned(w, p, p.Status.Ancestors, computed, mine,
			func(a gwv1.PolicyAncestorStatus) gwv1.ParentReference { return a.AncestorRef },
			func(a *gwv1.PolicyAncestorStatus) *[]metav1.Condition { return &a.Conditions })
		if next.Status.Ancestors == nil {
			next.Status.Ancestors = []gwv1.PolicyAncestorStatus{} // the CRD requires the list
		}
		if len(next.Status.Ancestors) > maxAncestors {
			next.Status.Ancestors = next.Status.Ancestors[:maxAncestors]
		}
		errs = append(errs, w.patch(ctx, p, next, p.Status, next.Status))
	}
	for _, m := range res.MCPServers {
		computed, ok := out.Status.MCPServers[nn(m)]
		if !ok {
			continue
		}
		next := m.DeepCopy()
		next.Status.ObservedGeneration = computed.ObservedGeneration
		next.Status.Conditions = w.merge(m, m.Status.Conditions, computed.Conditions)
		errs = append(errs, w.patch(ctx, m, next, m.Status, next.Status))
	}
	return errors.Join(errs...)
}

// mergeListeners returns the computed listener statuses (of a Gateway or a
// ListenerSet), each with its conditions merged with those stored for the
// listener of the same name.
func mergeListeners[T any](w *statusWriter, obj client.Object, stored, computed []T, fields func(*T) (gwv1.SectionName, *[]metav1.Condition)) []T {
	var out []T
	for _, l := range computed {
		name, conditions := fields(&l)
		var old []metav1.Condition
		for i := range stored {
			if storedName, storedConditions := fields(&stored[i]); storedName == name {
				old = *storedConditions
			}
		}
		*conditions = w.merge(obj, old, *conditions)
		out = append(out, l)
	}
	return out
}

// mergeOwned returns the entries of stored (route parents, policy
// ancestors) that other controllers own (mine is false), then computed,
// each with its conditions merged with those of the stored entry of this
// controller for the same reference (ref), so that unchanged conditions
// keep their lastTransitionTime.
func mergeOwned[T any](w *statusWriter, obj client.Object, stored, computed []T, mine func(T) bool,
	ref func(T) gwv1.ParentReference, conditions func(*T) *[]metav1.Condition) []T {
	var out []T
	for _, e := range stored {
		if !mine(e) {
			out = append(out, e)
		}
	}
	for _, e := range computed {
		var old []metav1.Condition
		for _, se := range stored {
			if mine(se) && equality.Semantic.DeepEqual(ref(se), ref(e)) {
				old = *conditions(&se)
			}
		}
		c := conditions(&e)
		*c = w.merge(obj, old, *c)
		out = append(out, e)
	}
	return out
}

// maxAncestors is the most ancestors a policy's status may hold (the
// CRD's maxItems).
const maxAncestors = 16

func hasParent(parents []gwv1.RouteParentStatus, f func(gwv1.RouteParentStatus) bool) bool {
	for _, p := range parents {
		if f(p) {
			return true
		}
	}
	return false
}

func nn(o client.Object) types.NamespacedName {
	return types.NamespacedName{Namespace: o.GetNamespace(), Name: o.GetName()}
}

// patch writes next's status when it differs from the stored one. The patch
// carries the stored resourceVersion: a merge patch computed from a stale
// cache would replace lists such as status.parents whole, dropping what
// another controller wrote meanwhile, so a stale write fails with a
// conflict instead, and the reconcile runs again on fresh objects.
func (w *statusWriter) patch(ctx context.Context, stored, next client.Object, oldStatus, newStatus any) error {
	if equality.Semantic.DeepEqual(oldStatus, newStatus) {
		return nil
	}
	if err := w.client.Status().Patch(ctx, next, client.MergeFromWithOptions(stored, client.MergeFromWithOptimisticLock{})); err != nil {
		if apierrors.IsNotFound(err) {
			return nil // deleted meanwhile; the next reconcile sees it gone
		}
		return fmt.Errorf("write status of %T %s: %w", stored, nn(stored), err)
	}
	return nil
}

// merge returns the computed conditions with the stored lastTransitionTime
// of each condition whose status did not change, and records an Event for
// each condition that newly reports a problem.
func (w *statusWriter) merge(obj client.Object, stored, computed []metav1.Condition) []metav1.Condition {
	out := make([]metav1.Condition, 0, len(computed))
	for _, c := range computed {
		var old *metav1.Condition
		for i := range stored {
			if stored[i].Type == c.Type {
				old = &stored[i]
			}
		}
		if old != nil && old.Status == c.Status {
			c.LastTransitionTime = old.LastTransitionTime
		} else {
			c.LastTransitionTime = metav1.NewTime(w.now().Truncate(time.Second))
		}
		if problem(c) && (old == nil || old.Status != c.Status || old.Reason != c.Reason || old.Message != c.Message) && w.recorder != nil {
			w.recorder.Eventf(obj, nil, corev1.EventTypeWarning, c.Reason, c.Type, "%s", c.Message)
		}
		out = append(out, c)
	}
	return out
}

// problem reports whether a condition says something needs fixing.
func problem(c metav1.Condition) bool {
	if c.Type == string(gwv1.ListenerConditionConflicted) {
		return c.Status == metav1.ConditionTrue
	}
	if c.Type == string(gwv1.GatewayConditionProgrammed) && c.Reason == string(gwv1.GatewayReasonPending) {
		return false // waiting, not wrong
	}
	return c.Status == metav1.ConditionFalse
}
