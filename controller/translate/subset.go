package translate

import (
	"k8s.io/apimachinery/pkg/types"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/toolgate/toolgate/apis/v1alpha1"
)

// ForGateways returns res restricted to what the snapshots of the Gateways
// in keep are computed from, so that a change that can affect only those
// Gateways is translated without the others: the Gateways in keep, the
// ListenerSets whose parentRef names one of them, and the HTTPRoutes with
// a parentRef naming one of those Gateways or ListenerSets. Every other
// input is res's own, shared and not copied. The snapshots of keep
// translated from the result equal those of a translation of res (status
// does not: a route's parents outside keep, an MCPServer's Gateways, a
// Gateway's place among its class's are not seen).
//
// ok is false, and the whole of res must be translated, when a Gateway in
// keep claims static addresses (spec.addresses of type IPAddress with
// values): whether it gets them depends on the claims of older Gateways.
func (res *Resources) ForGateways(keep map[types.NamespacedName]bool) (sub *Resources, ok bool) {
	out := *res
	out.Gateways = nil
	for _, gw := range res.Gateways {
		if !keep[key(gw)] {
			continue
		}
		if claimsStaticAddresses(gw) {
			return nil, false
		}
		out.Gateways = append(out.Gateways, gw)
	}
	sets := map[types.NamespacedName]bool{}
	out.ListenerSets = nil
	for _, set := range res.ListenerSets {
		if parent, ok := ListenerSetGateway(set); ok && keep[parent] {
			out.ListenerSets = append(out.ListenerSets, set)
			sets[key(set)] = true
		}
	}
	out.HTTPRoutes = nil
	for _, route := range res.HTTPRoutes {
		if routeNames(route, keep, sets) {
			out.HTTPRoutes = append(out.HTTPRoutes, route)
		}
	}
	return &out, true
}

// claimsStaticAddresses reports whether gw's spec.addresses has an entry
// of type IPAddress with a value: a claim, or a value that is refused.
func claimsStaticAddresses(gw *gwv1.Gateway) bool {
	for _, a := range gw.Spec.Addresses {
		if a.Value != "" && (a.Type == nil || *a.Type == gwv1.IPAddressType) {
			return true
		}
	}
	return false
}

// ListenerSetGateway is the Gateway set's parentRef names; ok is false
// when it names something else.
func ListenerSetGateway(set *gwv1.ListenerSet) (types.NamespacedName, bool) {
	ref := set.Spec.ParentRef
	if (ref.Group != nil && *ref.Group != gatewayGroup) || (ref.Kind != nil && *ref.Kind != kindGateway) {
		return types.NamespacedName{}, false
	}
	ns := set.Namespace
	if ref.Namespace != nil && *ref.Namespace != "" {
		ns = string(*ref.Namespace)
	}
	return types.NamespacedName{Namespace: ns, Name: string(ref.Name)}, true
}

// RouteParents returns the Gateways and ListenerSets route's parentRefs
// name, as translateHTTPRoutes reads them.
func RouteParents(route *gwv1.HTTPRoute) (gateways, listenerSets []types.NamespacedName) {
	for _, ref := range route.Spec.ParentRefs {
		if ref.Group != nil && *ref.Group != gatewayGroup {
			continue
		}
		ns := route.Namespace
		if ref.Namespace != nil && *ref.Namespace != "" {
			ns = string(*ref.Namespace)
		}
		nn := types.NamespacedName{Namespace: ns, Name: string(ref.Name)}
		switch {
		case ref.Kind == nil || *ref.Kind == kindGateway:
			gateways = append(gateways, nn)
		case *ref.Kind == kindListenerSet:
			listenerSets = append(listenerSets, nn)
		}
	}
	return gateways, listenerSets
}

// routeNames reports whether route has a parentRef naming a Gateway in
// gateways or a ListenerSet in sets.
func routeNames(route *gwv1.HTTPRoute, gateways, sets map[types.NamespacedName]bool) bool {
	gws, lss := RouteParents(route)
	for _, nn := range gws {
		if gateways[nn] {
			return true
		}
	}
	for _, nn := range lss {
		if sets[nn] {
			return true
		}
	}
	return false
}

// MCPServerGateways returns the Gateways whose snapshots can depend on the
// MCPServer m: those that routes using it (RouteUsesMCPServer) name,
// directly or through one of listenerSets.
func MCPServerGateways(m *v1alpha1.MCPServer, routes []*gwv1.HTTPRoute, listenerSets []*gwv1.ListenerSet) []types.NamespacedName {
	setGateway := map[types.NamespacedName]types.NamespacedName{}
	for _, set := range listenerSets {
		if gw, ok := ListenerSetGateway(set); ok {
			setGateway[key(set)] = gw
		}
	}
	var out []types.NamespacedName
	for _, route := range routes {
		if !RouteUsesMCPServer(route, m) {
			continue
		}
		gws, sets := RouteParents(route)
		out = append(out, gws...)
		for _, set := range sets {
			if gw, ok := setGateway[set]; ok {
				out = append(out, gw)
			}
		}
	}
	return out
}

// RouteUsesMCPServer reports whether the snapshots that serve route can
// depend on the MCPServer m: an ExtensionRef filter naming it (on a rule
// or a backendRef), or a backendRef or a mirror's of kind MCPServer naming
// it. (A backendRef to the Service m names changes only the route's
// status, which says the policy is bypassed.)
func RouteUsesMCPServer(route *gwv1.HTTPRoute, m *v1alpha1.MCPServer) bool {
	targets := func(ref gwv1.BackendObjectReference) bool {
		group, kind, ns := backendTarget(route, ref)
		return group == v1alpha1.GroupVersion.Group && kind == "MCPServer" && ns == m.Namespace && string(ref.Name) == m.Name
	}
	uses := func(filters []gwv1.HTTPRouteFilter) bool {
		for _, f := range filters {
			if ref := f.ExtensionRef; ref != nil && string(ref.Group) == v1alpha1.GroupVersion.Group &&
				ref.Kind == "MCPServer" && string(ref.Name) == m.Name && route.Namespace == m.Namespace {
				return true
			}
			if f.RequestMirror != nil && targets(f.RequestMirror.BackendRef) {
				return true
			}
		}
		return false
	}
	for _, rule := range route.Spec.Rules {
		if uses(rule.Filters) {
			return true
		}
		for _, br := range rule.BackendRefs {
			if targets(br.BackendObjectReference) || uses(br.Filters) {
				return true
			}
		}
	}
	return false
}
