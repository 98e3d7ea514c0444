package translate

import (
	"fmt"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/toolgate/toolgate/apis/v1alpha1"
	"github.com/toolgate/toolgate/gateway"
)

// routeProblem is the first problem found in a route, which sets one of its
// parent conditions.
type routeProblem struct {
	condition gwv1.RouteConditionType
	reason    gwv1.RouteConditionReason
	message   string
}

// routeState is an HTTPRoute during translation: its rules in snapshot form
// and what went wrong, shared by all its parents.
type routeState struct {
	route *gwv1.HTTPRoute
	rules []gateway.Rule
	// mcpServers are the MCPServers its ExtensionRefs apply.
	mcpServers []types.NamespacedName
	accepted   *routeProblem // Accepted=False for every parent
	refs       *routeProblem // ResolvedRefs=False for every parent
	// reachesMCP is set when a backend of the route is an MCPServer or its
	// Service; bypasses lists the backends that reach one without its
	// ExtensionRef filter (ConditionMCPPolicyEnforced).
	reachesMCP bool
	bypasses   []string
	// tlsUses are the BackendTLSPolicies of its backends.
	tlsUses []*tlsUse
}

// ConditionMCPPolicyEnforced is the route parent condition, set on routes
// that reach an MCPServer, that says whether every such backend is behind
// that MCPServer's ExtensionRef filter. False means requests reach the
// server uninspected: unauthenticated, unlimited.
const ConditionMCPPolicyEnforced = "toolgate.dev/MCPPolicyEnforced"

// Reasons of ConditionMCPPolicyEnforced.
const (
	ReasonPolicyEnforced          = "Enforced"
	ReasonBypassesMCPServerPolicy = "BypassesMCPServerPolicy" //nolint:gosec // a condition reason, no credential
)

func (t *translator) mcpPolicyCondition(rs *routeState) (metav1.Condition, bool) {
	if !rs.reachesMCP {
		return metav1.Condition{}, false
	}
	if len(rs.bypasses) > 0 {
		return condition(ConditionMCPPolicyEnforced, false, ReasonBypassesMCPServerPolicy, strings.Join(rs.bypasses, "; "), rs.route.Generation), true
	}
	return condition(ConditionMCPPolicyEnforced, true, ReasonPolicyEnforced, "every backend that is an MCP server is behind its MCPServer's ExtensionRef filter", rs.route.Generation), true
}

// checkMCPPolicy notes whether backend ref, of a rule whose filters are
// ruleFilters, reaches an MCP server without that server's ExtensionRef
// filter (on the rule or the backendRef): a backendRef of kind MCPServer,
// or one to the Service an MCPServer names (its serviceRef, on that port).
func (t *translator) checkMCPPolicy(rs *routeState, route *gwv1.HTTPRoute, ruleFilters []gwv1.HTTPRouteFilter, br gwv1.HTTPBackendRef, at string) {
	group, kind, ns := backendTarget(route, br.BackendObjectReference)
	var servers []*v1alpha1.MCPServer
	switch {
	case group == v1alpha1.GroupVersion.Group && kind == "MCPServer":
		if m, ok := t.idx.mcpServers[types.NamespacedName{Namespace: ns, Name: string(br.Name)}]; ok {
			servers = append(servers, m)
		}
	case group == "" && kind == kindService:
		for _, m := range t.idx.mcpServersByService[types.NamespacedName{Namespace: ns, Name: string(br.Name)}] {
			if br.Port == nil || int32(*br.Port) == m.Spec.ServiceRef.Port {
				servers = append(servers, m)
			}
		}
	}
	if len(servers) == 0 {
		return
	}
	rs.reachesMCP = true
	applied := func(m *v1alpha1.MCPServer) bool {
		for _, filters := range [][]gwv1.HTTPRouteFilter{ruleFilters, br.Filters} {
			for _, f := range filters {
				if f.Type == gwv1.HTTPRouteFilterExtensionRef && f.ExtensionRef != nil &&
					string(f.ExtensionRef.Group) == v1alpha1.GroupVersion.Group && f.ExtensionRef.Kind == "MCPServer" &&
					string(f.ExtensionRef.Name) == m.Name && route.Namespace == m.Namespace {
					return true
				}
			}
		}
		return false
	}
	for _, m := range servers {
		if !applied(m) {
			rs.bypasses = append(rs.bypasses, fmt.Sprintf(
				"%s sends requests to MCPServer %s/%s (Service %s, port %d) without its ExtensionRef filter: they reach the MCP server uninspected, unauthenticated and unlimited; add the filter (extensionRef: {group: %s, kind: MCPServer, name: %s}) to the rule",
				at, m.Namespace, m.Name, m.Spec.ServiceRef.Name, m.Spec.ServiceRef.Port, v1alpha1.GroupVersion.Group, m.Name))
		}
	}
}

func (rs *routeState) unsupported(msg string) {
	if rs.accepted == nil {
		rs.accepted = &routeProblem{gwv1.RouteConditionAccepted, gwv1.RouteReasonUnsupportedValue, msg}
	}
}

// unresolved records a reference that could not be resolved. The condition
// takes the first problem's reason and lists every problem's message.
func (rs *routeState) unresolved(reason gwv1.RouteConditionReason, msg string) {
	if rs.refs == nil {
		rs.refs = &routeProblem{gwv1.RouteConditionResolvedRefs, reason, msg}
		return
	}
	rs.refs.message += "; " + msg
}

func (t *translator) translateHTTPRoutes(gateways []*gatewayState) {
	byName := map[string]*gatewayState{}
	for _, gs := range gateways {
		byName[key(gs.gw).String()] = gs
	}
	for _, route := range sortedByAge(t.res.HTTPRoutes) {
		var rs *routeState // built on first use: routes of other controllers cost nothing
		var parents []gwv1.RouteParentStatus
		for _, ref := range route.Spec.ParentRefs {
			if ref.Group != nil && *ref.Group != gatewayGroup {
				continue
			}
			var parent routeParent
			switch {
			case ref.Kind == nil || *ref.Kind == kindGateway:
				ns := route.Namespace
				if ref.Namespace != nil && *ref.Namespace != "" {
					ns = string(*ref.Namespace)
				}
				gs, ok := byName[ns+"/"+string(ref.Name)]
				if !ok {
					continue
				}
				parent = routeParent{gateway: key(gs.gw), what: "Gateway " + key(gs.gw).String(), listeners: gs.listeners}
			case *ref.Kind == kindListenerSet:
				p, ok := t.listenerSetParent(route.Namespace, ref)
				if !ok {
					continue
				}
				parent = p
			default:
				continue
			}
			if rs == nil {
				rs = t.translateRules(route)
			}
			parents = append(parents, t.attach(rs, parent, ref))
		}
		if parents != nil {
			t.out.Status.HTTPRoutes[key(route)] = parents
		}
	}
}

// routeParent is what a route's parentRef attaches it to: the listeners of
// a Gateway, or those of a ListenerSet attached to one.
type routeParent struct {
	gateway   types.NamespacedName // the Gateway whose snapshot serves the route
	what      string               // "Gateway NAMESPACE/NAME" or "ListenerSet NAMESPACE/NAME"
	listeners []*listenerState
	// notAllowed, when set, says why no route attaches to it.
	notAllowed string
}

// attach attaches the route to the listeners of one parentRef and returns
// that parent's status.
func (t *translator) attach(rs *routeState, parent routeParent, ref gwv1.ParentReference) gwv1.RouteParentStatus {
	route := rs.route
	gen := route.Generation
	status := gwv1.RouteParentStatus{ParentRef: ref, ControllerName: t.opts.ControllerName}
	reject := func(reason gwv1.RouteConditionReason, msg string) gwv1.RouteParentStatus {
		status.Conditions = []metav1.Condition{
			condition(gwv1.RouteConditionAccepted, false, reason, msg, gen),
			t.resolvedRefsCondition(rs),
		}
		return status
	}
	if parent.notAllowed != "" {
		return reject(gwv1.RouteReasonNotAllowedByListeners, parent.notAllowed)
	}
	var candidates []*listenerState
	for _, l := range parent.listeners {
		if ref.SectionName != nil && *ref.SectionName != l.spec.Name {
			continue
		}
		if ref.Port != nil && *ref.Port != l.spec.Port {
			continue
		}
		candidates = append(candidates, l)
	}
	if len(candidates) == 0 {
		return reject(gwv1.RouteReasonNoMatchingParent, fmt.Sprintf("%s has no listener matching sectionName %s and port %s", parent.what, strOr(ref.SectionName), portOr(ref.Port)))
	}
	var allowed []*listenerState
	for _, l := range candidates {
		if l.usable() && t.allowsRoute(l, route.Namespace) {
			allowed = append(allowed, l)
		}
	}
	if len(allowed) == 0 {
		return reject(gwv1.RouteReasonNotAllowedByListeners, fmt.Sprintf("no listener of %s that this parentRef selects is valid and allows HTTPRoutes from namespace %s (see the listeners' allowedRoutes)", parent.what, route.Namespace))
	}
	attached := 0
	for _, l := range allowed {
		hosts, ok := intersectHostnames(hostnameOf(l.spec.Hostname), route.Spec.Hostnames)
		if !ok {
			continue
		}
		attached++
		l.attachedRoutes++
		if rs.accepted != nil {
			continue // counted as attached, but nothing is served
		}
		l.virtualHosts = append(l.virtualHosts, gateway.VirtualHost{
			Hostnames: hosts,
			Routes: []gateway.Route{{
				Namespace:         route.Namespace,
				Name:              route.Name,
				CreationTimestamp: route.CreationTimestamp.Time,
				Rules:             rs.rules,
			}},
		})
	}
	if attached == 0 {
		return reject(gwv1.RouteReasonNoMatchingListenerHostname, "no hostname of the route matches a hostname of the listeners it attaches to")
	}
	if rs.accepted != nil {
		return reject(rs.accepted.reason, rs.accepted.message)
	}
	for _, m := range rs.mcpServers {
		t.use(m, parent.gateway)
	}
	for _, u := range rs.tlsUses {
		t.useBackendTLS(u, parent.gateway)
	}
	status.Conditions = []metav1.Condition{
		condition(gwv1.RouteConditionAccepted, true, gwv1.RouteReasonAccepted, "the route is attached", gen),
		t.resolvedRefsCondition(rs),
	}
	if c, ok := t.mcpPolicyCondition(rs); ok {
		status.Conditions = append(status.Conditions, c)
	}
	return status
}

func (t *translator) resolvedRefsCondition(rs *routeState) metav1.Condition {
	if rs.refs != nil {
		return condition(gwv1.RouteConditionResolvedRefs, false, rs.refs.reason, rs.refs.message, rs.route.Generation)
	}
	return condition(gwv1.RouteConditionResolvedRefs, true, gwv1.RouteReasonResolvedRefs, "all references resolved", rs.route.Generation)
}

func strOr(s *gwv1.SectionName) string {
	if s == nil {
		return "(any)"
	}
	return string(*s)
}

func portOr(p *gwv1.PortNumber) string {
	if p == nil {
		return "(any)"
	}
	return fmt.Sprint(*p)
}

// intersectHostnames computes the hostnames a route serves on a listener:
// the spec's intersection of the listener's hostname (empty: any) with the
// route's hostnames (none: any). ok is false when they do not intersect.
func intersectHostnames(listener string, route []gwv1.Hostname) ([]string, bool) {
	if len(route) == 0 {
		if listener == "" {
			return nil, true
		}
		return []string{listener}, true
	}
	var out []string
	add := func(h string) {
		for _, x := range out {
			if x == h {
				return
			}
		}
		out = append(out, h)
	}
	for _, rh := range route {
		h := strings.ToLower(string(rh))
		switch {
		case listener == "" || listener == h:
			add(h)
		case wildcardCovers(listener, h):
			add(h)
		case wildcardCovers(h, listener):
			add(listener)
		}
	}
	return out, len(out) > 0
}

// wildcardCovers reports whether pattern "*.example.com" covers name, which
// may itself be a more specific wildcard.
func wildcardCovers(pattern, name string) bool {
	if !strings.HasPrefix(pattern, "*.") {
		return false
	}
	suffix := pattern[1:]
	if strings.HasPrefix(name, "*.") {
		return len(name) > len(pattern) && strings.HasSuffix(name, suffix)
	}
	return len(name) > len(suffix) && strings.HasSuffix(name, suffix)
}

// translateRules converts a route's rules to the snapshot.
func (t *translator) translateRules(route *gwv1.HTTPRoute) *routeState {
	rs := &routeState{route: route}
	for i, rule := range route.Spec.Rules {
		r := gateway.Rule{}
		if rule.Name != nil {
			r.Name = string(*rule.Name)
		}
		hasPrefixOnly := true
		for _, m := range rule.Matches {
			gm := translateMatch(m)
			if gm.Path.Type != gateway.PathMatchPathPrefix {
				hasPrefixOnly = false
			}
			r.Matches = append(r.Matches, gm)
		}
		where := fmt.Sprintf("rules[%d]", i)
		r.Filters = t.translateFilters(rs, route, rule.Filters, nil, where+".filters", hasPrefixOnly)
		if rule.Timeouts != nil {
			r.Timeouts.Request = parseDuration(rs, rule.Timeouts.Request, where+".timeouts.request")
			r.Timeouts.BackendRequest = parseDuration(rs, rule.Timeouts.BackendRequest, where+".timeouts.backendRequest")
		}
		if rule.Retry != nil {
			r.Retry = translateRetry(rs, rule.Retry, where+".retry")
		}
		for j, br := range rule.BackendRefs {
			t.checkMCPPolicy(rs, route, rule.Filters, br, fmt.Sprintf("%s.backendRefs[%d]", where, j))
			b := t.translateBackend(rs, route, br.BackendRef, fmt.Sprintf("%s.backendRefs[%d]", where, j))
			b.Filters = t.translateFilters(rs, route, br.Filters, rule.Filters, fmt.Sprintf("%s.backendRefs[%d].filters", where, j), hasPrefixOnly)
			if rewritesPath(r.Filters) || rewritesPath(b.Filters) {
				// The route says where requests go on the backend.
				b.EndpointPath, b.EndpointPathGETOnly = "", false
			}
			r.Backends = append(r.Backends, b)
		}
		rs.rules = append(rs.rules, r)
	}
	return rs
}

// rewritesPath reports whether filters hold a URLRewrite of the path.
func rewritesPath(filters []gateway.Filter) bool {
	for _, f := range filters {
		if f.Type == gateway.FilterURLRewrite && f.URLRewrite != nil && f.URLRewrite.Path != nil {
			return true
		}
	}
	return false
}

func parseDuration(rs *routeState, d *gwv1.Duration, where string) time.Duration {
	if d == nil {
		return 0
	}
	v, err := time.ParseDuration(string(*d))
	if err != nil || v < 0 {
		rs.unsupported(fmt.Sprintf("%s: %q is not a valid duration", where, *d))
		return 0
	}
	return v
}

func translateMatch(m gwv1.HTTPRouteMatch) gateway.Match {
	gm := gateway.Match{Path: gateway.PathMatch{Type: gateway.PathMatchPathPrefix, Value: "/"}}
	if m.Path != nil {
		if m.Path.Type != nil {
			gm.Path.Type = gateway.PathMatchType(*m.Path.Type)
		}
		if m.Path.Value != nil {
			gm.Path.Value = *m.Path.Value
		}
	}
	for _, h := range m.Headers {
		typ := gateway.MatchExact
		if h.Type != nil {
			typ = gateway.MatchType(*h.Type)
		}
		gm.Headers = append(gm.Headers, gateway.HeaderMatch{Type: typ, Name: string(h.Name), Value: h.Value})
	}
	for _, q := range m.QueryParams {
		typ := gateway.MatchExact
		if q.Type != nil {
			typ = gateway.MatchType(*q.Type)
		}
		gm.QueryParams = append(gm.QueryParams, gateway.QueryParamMatch{Type: typ, Name: string(q.Name), Value: q.Value})
	}
	if m.Method != nil {
		gm.Method = string(*m.Method)
	}
	return gm
}
