package controller

import (
	"context"
	"errors"
	"fmt"
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
		next.Status.Listeners = nil
		for _, l := range computed.Listeners {
			var old []metav1.Condition
			for _, ol := range g.Status.Listeners {
				if ol.Name == l.Name {
					old = ol.Conditions
				}
			}
			l.Conditions = w.merge(g, old, l.Conditions)
			next.Status.Listeners = append(next.Status.Listeners, l)
		}
		errs = append(errs, w.patch(ctx, g, next, g.Status, next.Status))
	}
	for _, r := range res.HTTPRoutes {
		computed, ok := out.Status.HTTPRoutes[nn(r)]
		mine := func(p gwv1.RouteParentStatus) bool { return p.ControllerName == w.controllerName }
		if !ok && !hasParent(r.Status.Parents, mine) {
			continue
		}
		next := r.DeepCopy()
		next.Status.Parents = nil
		for _, p := range r.Status.Parents {
			if !mine(p) {
				next.Status.Parents = append(next.Status.Parents, p)
			}
		}
		for _, p := range computed {
			var old []metav1.Condition
			for _, op := range r.Status.Parents {
				if mine(op) && equality.Semantic.DeepEqual(op.ParentRef, p.ParentRef) {
					old = op.Conditions
				}
			}
			p.Conditions = w.merge(r, old, p.Conditions)
			next.Status.Parents = append(next.Status.Parents, p)
		}
		errs = append(errs, w.patch(ctx, r, next, r.Status, next.Status))
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
