package translate

import (
	"cmp"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/types"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/toolgate/toolgate/apis/v1alpha1"
	"github.com/toolgate/toolgate/gateway"
)

// defaultMCPPath is MCPServer spec.path when the object has none (the CRD
// defaults it; files in standalone mode may not).
const defaultMCPPath = "/mcp"

// translateBackend resolves one backendRef: a core Service (port required)
// or an MCPServer, in the route's namespace or, with a ReferenceGrant, in
// another. An unresolved backend keeps its weight and answers 500.
func (t *translator) translateBackend(rs *routeState, route *gwv1.HTTPRoute, ref gwv1.BackendRef, at string) gateway.Backend {
	weight := int32(1)
	if ref.Weight != nil {
		weight = *ref.Weight
	}
	group, kind, ns := backendTarget(route, ref.BackendObjectReference)
	b := gateway.Backend{Name: fmt.Sprintf("%s/%s", ns, ref.Name), Weight: weight}
	invalid := func(reason gwv1.RouteConditionReason, msg string) gateway.Backend {
		rs.unresolved(reason, at+": "+msg)
		b.Invalid = true
		return b
	}
	isService := group == "" && kind == kindService
	isMCPServer := group == v1alpha1.GroupVersion.Group && kind == "MCPServer"
	if !isService && !isMCPServer {
		return invalid(gwv1.RouteReasonInvalidKind, fmt.Sprintf("backend kind %s/%s is not supported: use a Service or an MCPServer", group, kind))
	}
	if ns != route.Namespace && !t.referenceAllowed(gatewayGroup, kindHTTPRoute, route.Namespace, group, kind, ns, string(ref.Name)) {
		return invalid(gwv1.RouteReasonRefNotPermitted, fmt.Sprintf("%s %s/%s is in another namespace and no ReferenceGrant there allows it", kind, ns, ref.Name))
	}
	svcName, port := types.NamespacedName{Namespace: ns, Name: string(ref.Name)}, int32(0)
	if ref.Port != nil {
		port = int32(*ref.Port)
	}
	if isMCPServer {
		m, ok := t.idx.mcpServers[svcName]
		if !ok {
			return invalid(gwv1.RouteReasonBackendNotFound, fmt.Sprintf("MCPServer %s not found", svcName))
		}
		svcName = types.NamespacedName{Namespace: ns, Name: m.Spec.ServiceRef.Name}
		if port == 0 {
			port = m.Spec.ServiceRef.Port
		}
		b.Name = fmt.Sprintf("%s/%s", ns, m.Name)
		// The server's one MCP endpoint, whatever path the route matched
		// (route.go leaves it to a rule's own URLRewrite when there is one).
		b.EndpointPath = cmp.Or(m.Spec.Path, defaultMCPPath)
		b.EndpointPathGETOnly = m.Spec.Transport == v1alpha1.TransportSSE
	} else if port == 0 {
		return invalid(gwv1.RouteReasonUnsupportedValue, fmt.Sprintf("backendRef to Service %s needs a port", svcName))
	}
	b.Name += ":" + strconv.Itoa(int(port))
	svc, ok := t.idx.services.get(svcName)
	if !ok {
		return invalid(gwv1.RouteReasonBackendNotFound, fmt.Sprintf("Service %s not found", svcName))
	}
	external := svc.Spec.Type == corev1.ServiceTypeExternalName
	svcPort, ok := servicePort(svc, port)
	if !ok && external && len(svc.Spec.Ports) == 0 {
		// An ExternalName Service often declares no port: the name is
		// all it says, and the reference gives the port.
		svcPort, ok = corev1.ServicePort{Port: port}, true
	}
	if !ok {
		return invalid(gwv1.RouteReasonBackendNotFound, fmt.Sprintf("Service %s has no port %d", svcName, port))
	}
	if svcPort.AppProtocol != nil {
		switch *svcPort.AppProtocol {
		case "https", "kubernetes.io/https":
			b.Scheme = "https"
		case "kubernetes.io/h2c":
			// HTTP/2 without TLS, with prior knowledge (GEP-1911).
			b.Protocol = gateway.BackendProtocolH2C
		}
	}
	if external {
		host, err := t.externalNameHost(svc)
		if err != nil {
			return invalid(gwv1.RouteReasonRefNotPermitted, fmt.Sprintf("Service %s: %v", svcName, err))
		}
		// The proxy resolves the name when it connects, to the port the
		// Service declares (no proxy of the cluster stands between).
		b.Endpoints = []string{net.JoinHostPort(host, strconv.Itoa(int(svcPort.Port)))}
	} else {
		b.Endpoints = t.endpoints(svcName, svcPort)
	}
	if u := t.backendTLS(svcName, svcPort); u != nil {
		tls := u.applied.tls
		tls.SubjectAltNames = slices.Clone(tls.SubjectAltNames)
		b.TLS, b.Scheme = &tls, "https"
		rs.tlsUses = append(rs.tlsUses, u)
	}
	return b
}

// externalNameHost is the host an ExternalName Service names, or an error
// that says why it cannot be a backend. Whoever writes a Service in a
// namespace chooses the name, so besides Options.RefuseExternalNames some
// names are always refused, as endpointHost refuses their addresses:
//
//   - loopback, link-local and unspecified IP addresses, and names under
//     "localhost" (standalone mode, Options.LoopbackEndpoints, maps those
//     to 127.0.0.1 and allows loopback addresses), so that a route cannot
//     reach the proxy's admin port or the node's metadata service; the
//     proxy refuses a name that resolves to such addresses when it dials;
//   - names of the cluster's Services (NAME.NAMESPACE.svc...), which would
//     reach another namespace's Service without its ReferenceGrant.
func (t *translator) externalNameHost(svc *corev1.Service) (string, error) {
	if t.opts.RefuseExternalNames {
		return "", fmt.Errorf("type ExternalName (%q) is refused by this controller (--allow-external-name-services=false): "+
			"ask the cluster's administrator, or run the backend in the cluster", svc.Spec.ExternalName)
	}
	name := strings.TrimSuffix(strings.ToLower(svc.Spec.ExternalName), ".")
	if name == "" {
		return "", fmt.Errorf("type ExternalName without spec.externalName: set the host to connect to")
	}
	if ip, err := netip.ParseAddr(name); err == nil {
		if !t.opts.LoopbackEndpoints && !isEndpointIP(ip) {
			return "", fmt.Errorf("spec.externalName %s is a loopback, link-local or unspecified address, which a backend may not have", name)
		}
		return ip.String(), nil
	}
	if isLocalhost(name) {
		if !t.opts.LoopbackEndpoints {
			return "", fmt.Errorf("spec.externalName %s names the proxy's own loopback, which a backend may not be", name)
		}
		return "127.0.0.1", nil
	}
	if labels := strings.Split(name, "."); len(labels) >= 3 && labels[2] == "svc" {
		return "", fmt.Errorf("spec.externalName %s names a Service of the cluster: refer to that Service itself (in another namespace, with a ReferenceGrant there)", name)
	}
	return name, nil
}

// backendTarget is the group, kind and namespace a backendRef names, with
// the defaults filled in: a core Service in the route's namespace.
func backendTarget(route *gwv1.HTTPRoute, ref gwv1.BackendObjectReference) (group, kind, ns string) {
	group, kind, ns = "", kindService, route.Namespace
	if ref.Group != nil {
		group = string(*ref.Group)
	}
	if ref.Kind != nil {
		kind = string(*ref.Kind)
	}
	if ref.Namespace != nil && *ref.Namespace != "" {
		ns = string(*ref.Namespace)
	}
	return group, kind, ns
}

func servicePort(svc *corev1.Service, port int32) (corev1.ServicePort, bool) {
	for _, p := range svc.Spec.Ports {
		if p.Port == port {
			return p, true
		}
	}
	return corev1.ServicePort{}, false
}

// endpoints lists the ready endpoints of a Service port from its
// EndpointSlices, as "host:port", sorted for stable snapshots. Besides IP
// addresses, FQDN slices name hosts the proxy resolves when it connects.
// Which addresses are kept is endpointHost's decision.
func (t *translator) endpoints(svc types.NamespacedName, port corev1.ServicePort) []string {
	var out []string
	for _, es := range t.idx.endpointSlices[svc] {
		switch es.AddressType {
		case discoveryv1.AddressTypeIPv4, discoveryv1.AddressTypeIPv6, discoveryv1.AddressTypeFQDN:
		default:
			continue
		}
		var target int32 = -1
		for _, p := range es.Ports {
			name := ""
			if p.Name != nil {
				name = *p.Name
			}
			if name == port.Name && p.Port != nil {
				target = *p.Port
				break
			}
		}
		if target < 0 {
			continue
		}
		for _, ep := range es.Endpoints {
			if ep.Conditions.Ready != nil && !*ep.Conditions.Ready {
				continue
			}
			for _, addr := range ep.Addresses {
				host, ok := t.endpointHost(es.AddressType, addr)
				if !ok {
					continue
				}
				hp := net.JoinHostPort(host, strconv.Itoa(int(target)))
				if !slices.Contains(out, hp) {
					out = append(out, hp)
				}
			}
		}
	}
	slices.Sort(out)
	return out
}

// endpointHost returns the host to connect to for an EndpointSlice address,
// or false to leave the address out.
//
// Names under "localhost" are the loopback address, as RFC 6761 says: the
// API server refuses loopback IPs in EndpointSlices (and one-label names in
// FQDN slices), so an FQDN slice of, say, mcp.localhost is how a backend on
// the proxy's own host is declared, where Options.LoopbackEndpoints allows
// it. Otherwise such a name is left out rather than passed to the resolver,
// which may well map it to loopback too (nss-myhostname, /etc/hosts). So are
// IP addresses the API server refuses in IP slices, which an FQDN slice can
// still carry: "127.0.0.1" is a valid domain name.
func (t *translator) endpointHost(addressType discoveryv1.AddressType, addr string) (string, bool) {
	if addressType == discoveryv1.AddressTypeFQDN && isLocalhost(addr) {
		if !t.opts.LoopbackEndpoints {
			return "", false
		}
		return "127.0.0.1", true
	}
	if ip, err := netip.ParseAddr(addr); err == nil && !t.opts.LoopbackEndpoints && !isEndpointIP(ip) {
		return "", false
	}
	return addr, true
}

// isEndpointIP applies the API server's rule for addresses in IP
// EndpointSlices: not unspecified, loopback or link-local.
func isEndpointIP(ip netip.Addr) bool {
	ip = ip.Unmap()
	return !ip.IsUnspecified() && !ip.IsLoopback() && !ip.IsLinkLocalUnicast() && !ip.IsLinkLocalMulticast()
}

// isLocalhost reports whether name is "localhost" or under it (RFC 6761).
func isLocalhost(name string) bool {
	name = strings.TrimSuffix(strings.ToLower(name), ".")
	return name == "localhost" || strings.HasSuffix(name, ".localhost")
}
