package translate

import (
	"fmt"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/toolgate/toolgate/gateway"
)

const kindListenerSet = "ListenerSet"

// listenerSetState is a ListenerSet whose parentRef is one of this
// controller's Gateways, during translation.
type listenerSetState struct {
	set *gwv1.ListenerSet
	gs  *gatewayState
	// notAllowed says why the Gateway's allowedListeners do not admit the
	// set; empty when they do. A set that is not allowed has no listeners.
	notAllowed string
	listeners  []*listenerState
}

// translateListenerSets finds the ListenerSets whose parentRef is gs's
// Gateway and checks the listeners of those its allowedListeners admit. The
// Gateway serves the merged list of its own listeners and theirs, in this
// order of precedence: the Gateway's, then the sets' oldest first, then by
// namespace/name. A listener that conflicts with one before it in that
// order is not served; one before it never yields.
func (t *translator) translateListenerSets(gs *gatewayState) {
	gw := gs.gw
	for _, set := range sortedByAge(t.res.ListenerSets) {
		if !parentIsGateway(set, gw) {
			continue
		}
		ss := &listenerSetState{set: set, gs: gs}
		t.listenerSets[key(set)] = ss
		gs.sets = append(gs.sets, ss)
		if ss.notAllowed = t.listenerSetNotAllowed(gw, set); ss.notAllowed != "" {
			continue
		}
		owner := listenerOwner{kind: kindListenerSet, namespace: set.Namespace, generation: set.Generation}
		for _, e := range set.Spec.Listeners {
			// A ListenerEntry is a Listener by another name.
			ss.listeners = append(ss.listeners, t.translateListener(gw, owner, gwv1.Listener(e)))
		}
	}
	markListenerSetConflicts(gs)
}

// parentIsGateway reports whether set's parentRef names gw.
func parentIsGateway(set *gwv1.ListenerSet, gw *gwv1.Gateway) bool {
	parent, ok := ListenerSetGateway(set)
	return ok && parent == key(gw)
}

// listenerSetNotAllowed says why gw's spec.allowedListeners do not admit
// set, or returns "" when they do.
func (t *translator) listenerSetNotAllowed(gw *gwv1.Gateway, set *gwv1.ListenerSet) string {
	from := gwv1.NamespacesFromNone
	var selector *metav1.LabelSelector
	if al := gw.Spec.AllowedListeners; al != nil && al.Namespaces != nil {
		if al.Namespaces.From != nil {
			from = *al.Namespaces.From
		}
		selector = al.Namespaces.Selector
	}
	name := key(gw).String()
	switch from {
	case gwv1.NamespacesFromAll:
		return ""
	case gwv1.NamespacesFromSame:
		if set.Namespace == gw.Namespace {
			return ""
		}
		return fmt.Sprintf("Gateway %s admits ListenerSets of its own namespace only (spec.allowedListeners.namespaces.from: Same)", name)
	case gwv1.NamespacesFromSelector:
		if selector != nil && t.namespaceSelected(selector, set.Namespace) {
			return ""
		}
		return fmt.Sprintf("Gateway %s admits ListenerSets of the namespaces its spec.allowedListeners.namespaces.selector selects, and namespace %s is not one", name, set.Namespace)
	default:
		return fmt.Sprintf("Gateway %s admits no ListenerSets (spec.allowedListeners.namespaces.from is None, the default): its owner can set it to Same, Selector or All", name)
	}
}

// markListenerSetConflicts marks the sets' listeners that conflict with a
// listener before them in the order of precedence: on another protocol on
// the same port (ProtocolConflict), or on the same protocol, port and
// hostname (HostnameConflict). A conflicted listener is not accepted.
func markListenerSetConflicts(gs *gatewayState) {
	type portUse struct {
		protocol  gwv1.ProtocolType
		first     string            // the first listener on the port
		hostnames map[string]string // hostname → the listener that serves it
	}
	ports := map[gwv1.PortNumber]*portUse{}
	use := func(l *listenerState, who string) {
		p := ports[l.spec.Port]
		if p == nil {
			p = &portUse{protocol: l.spec.Protocol, first: who, hostnames: map[string]string{}}
			ports[l.spec.Port] = p
		}
		p.hostnames[hostnameOf(l.spec.Hostname)] = who
	}
	for _, l := range gs.listeners {
		if l.usable() {
			use(l, fmt.Sprintf("listener %s of Gateway %s", l.spec.Name, key(gs.gw)))
		}
	}
	for _, ss := range gs.sets {
		for _, l := range ss.listeners {
			gen := l.owner.generation
			conflict := func(reason gwv1.ListenerConditionReason, msg string) {
				l.conflicted = condition(gwv1.ListenerConditionConflicted, true, reason, msg, gen)
				l.accepted = condition(gwv1.ListenerConditionAccepted, false, reason, msg, gen)
			}
			h := hostnameOf(l.spec.Hostname)
			p := ports[l.spec.Port]
			switch {
			case p != nil && p.protocol != l.spec.Protocol:
				conflict(gwv1.ListenerReasonProtocolConflict, fmt.Sprintf("port %d is served with protocol %s (by %s, which takes precedence): give this listener another port", l.spec.Port, p.protocol, p.first))
			case p != nil && p.hostnames[h] != "":
				conflict(gwv1.ListenerReasonHostnameConflict, fmt.Sprintf("%s, which takes precedence, already serves hostname %q on port %d", p.hostnames[h], h, l.spec.Port))
			case l.usable():
				use(l, fmt.Sprintf("listener %s of ListenerSet %s", l.spec.Name, key(ss.set)))
			}
		}
	}
}

// finishListenerSets writes the status of gs's ListenerSets, adds the
// listeners of those accepted to the Gateway's snapshot cfg, and returns
// how many are accepted. gatewayAccepted is the Gateway's own acceptance;
// dp and haveDP are its data plane's state.
func (t *translator) finishListenerSets(gs *gatewayState, gatewayAccepted bool, dp DataPlane, haveDP bool, cfg *gateway.Config) int32 {
	var attached int32
	gwKey := key(gs.gw)
	for _, ss := range gs.sets {
		set := ss.set
		gen := set.Generation
		var invalid []string
		valid := 0
		for _, l := range ss.listeners {
			if l.programmable() {
				valid++
			} else {
				invalid = append(invalid, string(l.spec.Name))
			}
		}
		var accepted metav1.Condition
		switch {
		case ss.notAllowed != "":
			accepted = condition(gwv1.ListenerSetConditionAccepted, false, gwv1.ListenerSetReasonNotAllowed, ss.notAllowed, gen)
		case !gatewayAccepted:
			accepted = condition(gwv1.ListenerSetConditionAccepted, false, gwv1.ListenerSetReasonParentNotAccepted,
				fmt.Sprintf("Gateway %s is not accepted: see its conditions", gwKey), gen)
		case valid == 0:
			accepted = condition(gwv1.ListenerSetConditionAccepted, false, gwv1.ListenerSetReasonListenersNotValid,
				"no listener is valid, so none is served: "+strings.Join(invalid, ", ")+" (see each listener's conditions)", gen)
		case len(invalid) > 0:
			accepted = condition(gwv1.ListenerSetConditionAccepted, true, gwv1.ListenerSetReasonAccepted,
				fmt.Sprintf("attached to Gateway %s; some listeners are not valid and are not served: %s (see their conditions)", gwKey, strings.Join(invalid, ", ")), gen)
		default:
			accepted = condition(gwv1.ListenerSetConditionAccepted, true, gwv1.ListenerSetReasonAccepted,
				fmt.Sprintf("attached to Gateway %s", gwKey), gen)
		}
		setAccepted := accepted.Status == metav1.ConditionTrue
		ready := haveDP && dp.Ready
		var programmed metav1.Condition
		switch {
		case !setAccepted:
			programmed = condition(gwv1.ListenerSetConditionProgrammed, false, accepted.Reason, "the ListenerSet is not accepted: "+accepted.Message, gen)
		case !ready:
			programmed = condition(gwv1.ListenerSetConditionProgrammed, false, gwv1.ListenerSetReasonPending, "waiting for the data plane: "+dataPlaneMessage(dp, haveDP), gen)
		default:
			programmed = condition(gwv1.ListenerSetConditionProgrammed, true, gwv1.ListenerSetReasonProgrammed, "the data plane serves the ListenerSet's valid listeners", gen)
		}
		status := &gwv1.ListenerSetStatus{Conditions: []metav1.Condition{accepted, programmed}}
		for _, l := range ss.listeners {
			var lp metav1.Condition
			switch {
			case l.conflicted.Status == metav1.ConditionTrue:
				lp = condition(gwv1.ListenerConditionProgrammed, false, l.conflicted.Reason, "the listener is not served: "+l.conflicted.Message, gen)
			case !l.programmable():
				lp = condition(gwv1.ListenerConditionProgrammed, false, gwv1.ListenerReasonInvalid, "the listener is invalid: see its other conditions", gen)
			case !setAccepted:
				lp = condition(gwv1.ListenerConditionProgrammed, false, gwv1.ListenerReasonInvalid, "the ListenerSet is not accepted: see its conditions", gen)
			case !ready:
				lp = condition(gwv1.ListenerConditionProgrammed, false, gwv1.ListenerReasonPending, "waiting for the data plane: "+dataPlaneMessage(dp, haveDP), gen)
			default:
				lp = condition(gwv1.ListenerConditionProgrammed, true, gwv1.ListenerReasonProgrammed, "the listener is served", gen)
			}
			status.Listeners = append(status.Listeners, gwv1.ListenerEntryStatus{
				Name:           l.spec.Name,
				SupportedKinds: l.supportedKinds,
				AttachedRoutes: l.attachedRoutes,
				Conditions:     []metav1.Condition{l.accepted, lp, l.resolvedRefs, l.conflicted},
			})
			if setAccepted && l.programmable() {
				cfg.Listeners = append(cfg.Listeners, t.snapshotListener(gwKey.String()+"/"+key(set).String()+"/"+string(l.spec.Name), l))
				t.out.ListenerSetListeners[gwKey] = append(t.out.ListenerSetListeners[gwKey], l.spec)
			}
		}
		t.out.Status.ListenerSets[key(set)] = status
		if setAccepted {
			attached++
		}
	}
	return attached
}

// listenerSetParent is the listeners a route's parentRef of kind
// ListenerSet attaches it to, or a problem that rejects it. ok is false
// when the set is not this controller's.
func (t *translator) listenerSetParent(routeNamespace string, ref gwv1.ParentReference) (parent routeParent, ok bool) {
	ns := routeNamespace
	if ref.Namespace != nil && *ref.Namespace != "" {
		ns = string(*ref.Namespace)
	}
	nn := types.NamespacedName{Namespace: ns, Name: string(ref.Name)}
	ss, ok := t.listenerSets[nn]
	if !ok {
		return routeParent{}, false
	}
	parent = routeParent{gateway: key(ss.gs.gw), what: "ListenerSet " + nn.String(), listeners: ss.listeners}
	if ss.notAllowed != "" {
		parent.notAllowed = "ListenerSet " + nn.String() + " is not attached: " + ss.notAllowed
	}
	return parent, true
}
