package translate

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"
)

// Static addresses (spec.addresses).
//
// toolgate assigns addresses of type IPAddress (the type an entry without
// one takes). An entry with a value claims that address: the Gateway's
// data-plane Service carries it in spec.externalIPs, which kube-proxy
// routes to the proxies. It must lie in the static address pool of the
// Gateway's class (Resources.StaticAddressPools), be claimed by no older
// Gateway and be used by no other Service (another Gateway's data plane
// included); else it is not usable and the
// Gateway is not Programmed (AddressNotUsable) while its usable addresses
// are assigned. An entry without a value asks for an address of toolgate's
// choosing: the Service's own, as for a Gateway without spec.addresses.
// Any other type, or a value that is no IP address, is refused
// (Accepted=False, UnsupportedAddress).

// requestedAddresses is what a Gateway's spec.addresses asks for.
type requestedAddresses struct {
	// any is true when spec.addresses has entries.
	any bool
	// static are the entries with a value, in the order of the spec.
	static []staticAddress
	// chosen is true when an entry without a value asks for an address of
	// toolgate's choosing.
	chosen bool
	// unsupported says why the Gateway cannot be accepted, or is empty.
	unsupported string
}

// staticAddress is one IP address a Gateway claims.
type staticAddress struct {
	index int    // in spec.addresses
	value string // as written
	ip    netip.Addr
}

// requestedAddressesOf reads gw's spec.addresses.
func requestedAddressesOf(gw *gwv1.Gateway) requestedAddresses {
	req := requestedAddresses{any: len(gw.Spec.Addresses) > 0}
	var problems []string
	for i, a := range gw.Spec.Addresses {
		typ := gwv1.IPAddressType
		if a.Type != nil {
			typ = *a.Type
		}
		if typ != gwv1.IPAddressType {
			problems = append(problems, fmt.Sprintf("spec.addresses[%d] has type %q, which toolgate does not assign: use type IPAddress, with an address of the static address pool of the GatewayClass or with no value for an address toolgate chooses", i, typ))
			continue
		}
		if a.Value == "" {
			req.chosen = true
			continue
		}
		ip, err := netip.ParseAddr(a.Value)
		if err != nil || ip.Zone() != "" {
			problems = append(problems, fmt.Sprintf("spec.addresses[%d] value %q is not an IP address: write one such as 10.0.0.7 or fd00::7, or leave the value empty for an address toolgate chooses", i, a.Value))
			continue
		}
		req.static = append(req.static, staticAddress{index: i, value: a.Value, ip: ip})
	}
	if len(problems) > 0 {
		req.unsupported = strings.Join(problems, "; ")
	}
	return req
}

// claimAddresses assigns the static addresses of the accepted Gateway gw
// that it may use, in the order of its spec, and records them as claimed.
// It returns them with a message naming those it may not use, and why, or
// an empty one. Gateways claim in the order finishGateways visits them,
// oldest first, so an address stays with the Gateway that had it first.
func (t *translator) claimAddresses(gw *gwv1.Gateway, req requestedAddresses) (assigned []staticAddress, notUsable string) {
	nn := key(gw)
	class := string(gw.Spec.GatewayClassName)
	pool := t.res.StaticAddressPools[class]
	var problems []string
	for _, a := range req.static {
		at := fmt.Sprintf("spec.addresses[%d] %s", a.index, a.value)
		inPool := false
		for _, p := range pool {
			inPool = inPool || p.Contains(a.ip)
		}
		owner, claimed := t.claimed[a.ip]
		svc, inUse := t.otherServiceUsing(a.ip, nn)
		switch {
		case len(pool) == 0:
			problems = append(problems, fmt.Sprintf("%s is not usable: GatewayClass %s has no static address pool; ask its administrator to list the addresses Gateways may claim (key staticAddressPool of its parameters ConfigMap), or leave the value empty for an address toolgate chooses", at, class))
		case !inPool:
			problems = append(problems, fmt.Sprintf("%s is not usable: it is outside the static address pool of GatewayClass %s (%s); use an address of the pool", at, class, prefixList(pool)))
		case claimed && owner != nn:
			problems = append(problems, fmt.Sprintf("%s is not usable: Gateway %s claimed it first; use another address of the pool", at, owner))
		case inUse:
			problems = append(problems, fmt.Sprintf("%s is not usable: Service %s uses it; use another address of the pool", at, svc))
		default:
			t.claimed[a.ip] = nn
			assigned = append(assigned, a)
		}
	}
	return assigned, strings.Join(problems, "; ")
}

// statusAddresses are the addresses of a Gateway that asked for req and was
// assigned assigned: those, and its data plane's own (dataPlane) when it
// asked for no address or for one of toolgate's choosing.
func statusAddresses(req requestedAddresses, assigned []staticAddress, dataPlane []gwv1.GatewayStatusAddress) []gwv1.GatewayStatusAddress {
	if !req.any {
		return dataPlane
	}
	var out []gwv1.GatewayStatusAddress
	for _, a := range assigned {
		out = append(out, gwv1.GatewayStatusAddress{Type: ptr(gwv1.IPAddressType), Value: a.value})
	}
	if req.chosen {
		out = append(out, dataPlane...)
	}
	return out
}

// externalIPs are the assigned addresses as the data-plane Service carries
// them: in canonical form.
func externalIPs(assigned []staticAddress) []string {
	var out []string
	for _, a := range assigned {
		out = append(out, a.ip.String())
	}
	return out
}

// serviceUse is a Service that uses an address, and the Gateway that
// controls it when it is a data plane.
type serviceUse struct {
	service, gateway types.NamespacedName
}

// otherServiceUsing returns a Service that uses ip (as a cluster IP, an
// external IP or a load balancer IP) and is not gw's own data plane.
// Data planes of other Gateways count: the one of a Gateway that is no
// longer accepted keeps its addresses until it is deleted or accepted
// again without them.
func (t *translator) otherServiceUsing(ip netip.Addr, gw types.NamespacedName) (types.NamespacedName, bool) {
	if t.serviceIPs == nil {
		t.allServices = true // any Service may take an address
		t.serviceIPs = map[netip.Addr][]serviceUse{}
		for _, s := range t.res.Services {
			use := serviceUse{service: key(s)}
			if ref := metav1.GetControllerOf(s); ref != nil && ref.Kind == kindGateway && strings.HasPrefix(ref.APIVersion, gatewayGroup+"/") {
				use.gateway = types.NamespacedName{Namespace: s.Namespace, Name: ref.Name}
			}
			ips := append([]string{s.Spec.ClusterIP}, s.Spec.ClusterIPs...)
			ips = append(ips, s.Spec.ExternalIPs...)
			for _, in := range s.Status.LoadBalancer.Ingress {
				ips = append(ips, in.IP)
			}
			for _, v := range ips {
				if a, err := netip.ParseAddr(v); err == nil && !slices.Contains(t.serviceIPs[a], use) {
					t.serviceIPs[a] = append(t.serviceIPs[a], use)
				}
			}
		}
	}
	for _, use := range t.serviceIPs[ip] {
		if use.gateway != gw {
			return use.service, true
		}
	}
	return types.NamespacedName{}, false
}

func prefixList(pool []netip.Prefix) string {
	s := make([]string, len(pool))
	for i, p := range pool {
		s[i] = p.String()
	}
	return strings.Join(s, ", ")
}
