package translate

import (
	"crypto/tls"
	"fmt"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/toolgate/toolgate/gateway"
)

const (
	gatewayGroup  = gwv1.GroupName
	kindHTTPRoute = "HTTPRoute"
	kindGateway   = "Gateway"
	kindService   = "Service"
	kindSecret    = "Secret"
)

func (t *translator) translateGatewayClasses() {
	for _, c := range t.res.GatewayClasses {
		if c.Spec.ControllerName != t.opts.ControllerName {
			continue
		}
		t.out.Status.GatewayClasses[c.Name] = &gwv1.GatewayClassStatus{
			Conditions: []metav1.Condition{
				condition(gwv1.GatewayClassConditionStatusAccepted, true, gwv1.GatewayClassReasonAccepted,
					"toolgate serves Gateways of this class", c.Generation),
			},
		}
	}
}

// ours reports whether the Gateway's class is served by this controller.
func (t *translator) ours(gw *gwv1.Gateway) bool {
	c, ok := t.idx.classes[string(gw.Spec.GatewayClassName)]
	return ok && c.Spec.ControllerName == t.opts.ControllerName
}

// gatewayState is a Gateway during translation.
type gatewayState struct {
	gw        *gwv1.Gateway
	listeners []*listenerState
	// sets are the ListenerSets whose parentRef is this Gateway, in order
	// of precedence (see listenerset.go).
	sets []*listenerSetState
}

// listenerOwner is the object that declares a listener: its Gateway, or a
// ListenerSet attached to it. Its conditions carry the owner's generation,
// its references are the owner's, and allowedRoutes' Same is the owner's
// namespace.
type listenerOwner struct {
	kind       string // kindGateway or kindListenerSet
	namespace  string
	generation int64
}

func gatewayOwner(gw *gwv1.Gateway) listenerOwner {
	return listenerOwner{kind: kindGateway, namespace: gw.Namespace, generation: gw.Generation}
}

// listenerState is one listener during translation.
type listenerState struct {
	spec           gwv1.Listener
	owner          listenerOwner
	accepted       metav1.Condition
	resolvedRefs   metav1.Condition
	conflicted     metav1.Condition
	supportedKinds []gwv1.RouteGroupKind
	certificates   []gateway.Certificate
	// clientValidation verifies clients' certificates (spec.tls.frontend).
	clientValidation *gateway.ClientValidation
	attachedRoutes   int32
	virtualHosts     []gateway.VirtualHost
}

// usable reports whether routes can attach and traffic can be served.
func (l *listenerState) usable() bool {
	return l.accepted.Status == metav1.ConditionTrue && l.conflicted.Status == metav1.ConditionFalse
}

// programmable reports whether the listener goes into the snapshot.
func (l *listenerState) programmable() bool {
	return l.usable() && l.resolvedRefs.Status == metav1.ConditionTrue
}

func (t *translator) translateGateways() []*gatewayState {
	var out []*gatewayState
	for _, gw := range sortedByAge(t.res.Gateways) {
		if !t.ours(gw) {
			continue
		}
		gs := &gatewayState{gw: gw}
		for _, l := range gw.Spec.Listeners {
			gs.listeners = append(gs.listeners, t.translateListener(gw, gatewayOwner(gw), l))
		}
		markConflicts(gw, gs.listeners)
		t.translateListenerSets(gs)
		out = append(out, gs)
	}
	return out
}

// translateListener checks one listener of gw, declared by owner.
func (t *translator) translateListener(gw *gwv1.Gateway, owner listenerOwner, l gwv1.Listener) *listenerState {
	gen := owner.generation
	ls := &listenerState{
		spec:         l,
		owner:        owner,
		accepted:     condition(gwv1.ListenerConditionAccepted, true, gwv1.ListenerReasonAccepted, "the listener is valid", gen),
		resolvedRefs: condition(gwv1.ListenerConditionResolvedRefs, true, gwv1.ListenerReasonResolvedRefs, "all references resolved", gen),
		conflicted:   condition(gwv1.ListenerConditionConflicted, false, gwv1.ListenerReasonNoConflicts, "no conflicts", gen),
	}
	switch l.Protocol {
	case gwv1.HTTPProtocolType:
	case gwv1.HTTPSProtocolType:
		t.resolveCertificates(ls)
		t.resolveClientValidation(gw, ls)
	default:
		ls.accepted = condition(gwv1.ListenerConditionAccepted, false, gwv1.ListenerReasonUnsupportedProtocol,
			fmt.Sprintf("protocol %q is not supported: use HTTP or HTTPS", l.Protocol), gen)
		// No route kind is served over a protocol toolgate does not speak:
		// supportedKinds is empty (upstream conformance test
		// GatewayListenerUnsupportedProtocol), and kinds that allowedRoutes
		// names cannot be served.
		ls.supportedKinds = []gwv1.RouteGroupKind{}
		if l.AllowedRoutes != nil && len(l.AllowedRoutes.Kinds) > 0 {
			ls.resolvedRefs = condition(gwv1.ListenerConditionResolvedRefs, false, gwv1.ListenerReasonInvalidRouteKinds,
				fmt.Sprintf("no route kind is served over protocol %q: toolgate serves HTTPRoute over HTTP and HTTPS", l.Protocol), gen)
		}
		return ls
	}
	ls.supportedKinds, ls.resolvedRefs = supportedKinds(l, ls.resolvedRefs, gen)
	return ls
}

// supportedKinds filters allowedRoutes.kinds to the kinds toolgate serves.
func supportedKinds(l gwv1.Listener, resolved metav1.Condition, gen int64) ([]gwv1.RouteGroupKind, metav1.Condition) {
	httpRoute := gwv1.RouteGroupKind{Group: ptr(gwv1.Group(gatewayGroup)), Kind: kindHTTPRoute}
	if l.AllowedRoutes == nil || len(l.AllowedRoutes.Kinds) == 0 {
		return []gwv1.RouteGroupKind{httpRoute}, resolved
	}
	var kinds []gwv1.RouteGroupKind
	var invalid []string
	for _, k := range l.AllowedRoutes.Kinds {
		group := gatewayGroup
		if k.Group != nil {
			group = string(*k.Group)
		}
		if group == gatewayGroup && k.Kind == kindHTTPRoute {
			if !slices.ContainsFunc(kinds, func(x gwv1.RouteGroupKind) bool { return x.Kind == kindHTTPRoute }) {
				kinds = append(kinds, httpRoute)
			}
			continue
		}
		invalid = append(invalid, group+"/"+string(k.Kind))
	}
	if len(invalid) > 0 {
		resolved = condition(gwv1.ListenerConditionResolvedRefs, false, gwv1.ListenerReasonInvalidRouteKinds,
			fmt.Sprintf("route kinds %s are not supported: toolgate serves HTTPRoute", strings.Join(invalid, ", ")), gen)
	}
	if kinds == nil {
		kinds = []gwv1.RouteGroupKind{}
	}
	return kinds, resolved
}

// resolveCertificates loads an HTTPS listener's certificates.
func (t *translator) resolveCertificates(ls *listenerState) {
	gen, owner := ls.owner.generation, ls.owner
	l := ls.spec
	invalid := func(reason gwv1.ListenerConditionReason, msg string) {
		ls.resolvedRefs = condition(gwv1.ListenerConditionResolvedRefs, false, reason, msg, gen)
	}
	if l.TLS == nil {
		ls.accepted = condition(gwv1.ListenerConditionAccepted, false, gwv1.ListenerReasonUnsupportedValue, "an HTTPS listener needs tls.certificateRefs", gen)
		return
	}
	if l.TLS.Mode != nil && *l.TLS.Mode != gwv1.TLSModeTerminate {
		ls.accepted = condition(gwv1.ListenerConditionAccepted, false, gwv1.ListenerReasonUnsupportedValue,
			fmt.Sprintf("tls.mode %s is not supported on HTTPS listeners: use Terminate", *l.TLS.Mode), gen)
		return
	}
	if len(l.TLS.CertificateRefs) == 0 {
		invalid(gwv1.ListenerReasonInvalidCertificateRef, "an HTTPS listener needs at least one tls.certificateRefs entry")
		return
	}
	for i, ref := range l.TLS.CertificateRefs {
		if (ref.Group != nil && *ref.Group != "") || (ref.Kind != nil && *ref.Kind != kindSecret) {
			invalid(gwv1.ListenerReasonInvalidCertificateRef, fmt.Sprintf("tls.certificateRefs[%d]: only core Secrets are supported", i))
			return
		}
		ns := owner.namespace
		if ref.Namespace != nil && *ref.Namespace != "" {
			ns = string(*ref.Namespace)
		}
		if ns != owner.namespace && !t.referenceAllowed(gatewayGroup, owner.kind, owner.namespace, "", kindSecret, ns, string(ref.Name)) {
			invalid(gwv1.ListenerReasonRefNotPermitted,
				fmt.Sprintf("tls.certificateRefs[%d]: Secret %s/%s is in another namespace and no ReferenceGrant there allows it", i, ns, ref.Name))
			return
		}
		secret, ok := t.idx.secrets.get(types.NamespacedName{Namespace: ns, Name: string(ref.Name)})
		if !ok {
			invalid(gwv1.ListenerReasonInvalidCertificateRef, fmt.Sprintf("tls.certificateRefs[%d]: Secret %s/%s not found", i, ns, ref.Name))
			return
		}
		// Checked here so that the listener's status says what is wrong;
		// the data plane parses the pair again from the snapshot's PEM.
		certPEM, keyPEM := secret.Data[corev1.TLSCertKey], secret.Data[corev1.TLSPrivateKeyKey]
		if _, err := tls.X509KeyPair(certPEM, keyPEM); err != nil {
			invalid(gwv1.ListenerReasonInvalidCertificateRef,
				fmt.Sprintf("tls.certificateRefs[%d]: Secret %s/%s does not hold a valid tls.crt and tls.key: %v", i, ns, ref.Name, err))
			return
		}
		ls.certificates = append(ls.certificates, gateway.Certificate{CertificatePEM: string(certPEM), PrivateKeyPEM: string(keyPEM)})
	}
}

// markConflicts applies the spec's listener conflict rules: on one port,
// all listeners must share a protocol; two listeners with the same protocol,
// port and hostname conflict, and the first in list order keeps working.
func markConflicts(gw *gwv1.Gateway, listeners []*listenerState) {
	gen := gw.Generation
	byPort := map[gwv1.PortNumber][]*listenerState{}
	for _, l := range listeners {
		if l.accepted.Status == metav1.ConditionTrue {
			byPort[l.spec.Port] = append(byPort[l.spec.Port], l)
		}
	}
	for port, ls := range byPort {
		protocols := map[gwv1.ProtocolType]bool{}
		for _, l := range ls {
			protocols[l.spec.Protocol] = true
		}
		if len(protocols) > 1 {
			for _, l := range ls {
				l.conflicted = condition(gwv1.ListenerConditionConflicted, true, gwv1.ListenerReasonProtocolConflict,
					fmt.Sprintf("port %d is used with more than one protocol: give each protocol its own port", port), gen)
			}
			continue
		}
		seen := map[string]string{}
		for _, l := range ls {
			h := hostnameOf(l.spec.Hostname)
			if first, dup := seen[h]; dup {
				l.conflicted = condition(gwv1.ListenerConditionConflicted, true, gwv1.ListenerReasonHostnameConflict,
					fmt.Sprintf("listener %s already serves hostname %q on port %d", first, h, port), gen)
				continue
			}
			seen[h] = string(l.spec.Name)
		}
	}
}

func hostnameOf(h *gwv1.Hostname) string {
	if h == nil {
		return ""
	}
	return strings.ToLower(string(*h))
}

// allowsRoute reports whether the listener's allowedRoutes admit an
// HTTPRoute from namespace ns.
func (t *translator) allowsRoute(l *listenerState, ns string) bool {
	if !slices.ContainsFunc(l.supportedKinds, func(k gwv1.RouteGroupKind) bool { return k.Kind == kindHTTPRoute }) {
		return false
	}
	from := gwv1.NamespacesFromSame
	var selector *metav1.LabelSelector
	if ar := l.spec.AllowedRoutes; ar != nil && ar.Namespaces != nil {
		if ar.Namespaces.From != nil {
			from = *ar.Namespaces.From
		}
		selector = ar.Namespaces.Selector
	}
	switch from {
	case gwv1.NamespacesFromAll:
		return true
	case gwv1.NamespacesFromSame:
		return ns == l.owner.namespace
	case gwv1.NamespacesFromSelector:
		if selector == nil {
			return false
		}
		return t.namespaceSelected(selector, ns)
	default:
		return false
	}
}

// namespaceSelected reports whether namespace ns has the labels selector
// asks for.
func (t *translator) namespaceSelected(selector *metav1.LabelSelector, ns string) bool {
	sel, err := metav1.LabelSelectorAsSelector(selector)
	if err != nil {
		return false
	}
	n, ok := t.idx.namespaces[ns]
	if !ok {
		return false
	}
	return sel.Matches(labels.Set(n.Labels))
}

// finishGateways writes the Gateways' status and snapshots once routes are
// attached.
func (t *translator) finishGateways(gateways []*gatewayState) {
	for _, gs := range gateways {
		gw := gs.gw
		gen := gw.Generation
		nn := key(gw)
		dp, haveDP := t.res.DataPlanes[nn]
		cfg := &gateway.Config{}
		status := &gwv1.GatewayStatus{}
		requested := requestedAddressesOf(gw)
		var invalid []string
		for _, l := range gs.listeners {
			programmed := condition(gwv1.ListenerConditionProgrammed, true, gwv1.ListenerReasonProgrammed, "the listener is served", gen)
			switch {
			case !l.programmable():
				programmed = condition(gwv1.ListenerConditionProgrammed, false, gwv1.ListenerReasonInvalid, "the listener is invalid: see its other conditions", gen)
			case !haveDP || !dp.Ready:
				programmed = condition(gwv1.ListenerConditionProgrammed, false, gwv1.ListenerReasonPending, "waiting for the data plane: "+dataPlaneMessage(dp, haveDP), gen)
			}
			if !l.usable() {
				invalid = append(invalid, string(l.spec.Name))
			}
			status.Listeners = append(status.Listeners, gwv1.ListenerStatus{
				Name:           l.spec.Name,
				SupportedKinds: l.supportedKinds,
				AttachedRoutes: l.attachedRoutes,
				Conditions:     []metav1.Condition{l.accepted, programmed, l.resolvedRefs, l.conflicted},
			})
			if l.programmable() {
				cfg.Listeners = append(cfg.Listeners, t.snapshotListener(nn.String()+"/"+string(l.spec.Name), l))
			}
		}
		accepted := condition(gwv1.GatewayConditionAccepted, true, gwv1.GatewayReasonAccepted, "the Gateway is accepted", gen)
		switch {
		case gw.Spec.Infrastructure != nil && gw.Spec.Infrastructure.ParametersRef != nil:
			ref := gw.Spec.Infrastructure.ParametersRef
			accepted = condition(gwv1.GatewayConditionAccepted, false, gwv1.GatewayReasonInvalidParameters,
				fmt.Sprintf("spec.infrastructure.parametersRef (%s %s/%s) is not supported: a Gateway takes its data plane's parameters from its GatewayClass's parametersRef; remove it", ref.Kind, ref.Group, ref.Name), gen)
		case requested.unsupported != "":
			accepted = condition(gwv1.GatewayConditionAccepted, false, gwv1.GatewayReasonUnsupportedAddress, requested.unsupported, gen)
		case len(invalid) == len(gs.listeners) && len(invalid) > 0:
			accepted = condition(gwv1.GatewayConditionAccepted, false, gwv1.GatewayReasonListenersNotValid,
				"no listener is valid: "+strings.Join(invalid, ", "), gen)
		case len(invalid) > 0:
			accepted = condition(gwv1.GatewayConditionAccepted, true, gwv1.GatewayReasonListenersNotValid,
				"some listeners are not valid and are not served: "+strings.Join(invalid, ", "), gen)
		}
		var assigned []staticAddress
		var notUsable string
		if accepted.Status == metav1.ConditionTrue {
			assigned, notUsable = t.claimAddresses(gw, requested)
			if len(assigned) > 0 {
				t.out.StaticAddresses[nn] = externalIPs(assigned)
			}
		}
		status.Addresses = statusAddresses(requested, assigned, dp.Addresses)
		programmed := condition(gwv1.GatewayConditionProgrammed, true, gwv1.GatewayReasonProgrammed, "the data plane serves the Gateway", gen)
		switch {
		case accepted.Status == metav1.ConditionFalse:
			programmed = condition(gwv1.GatewayConditionProgrammed, false, gwv1.GatewayReasonInvalid, "the Gateway is not accepted", gen)
		case notUsable != "":
			programmed = condition(gwv1.GatewayConditionProgrammed, false, gwv1.GatewayReasonAddressNotUsable, notUsable, gen)
		case !haveDP || !dp.Ready:
			programmed = condition(gwv1.GatewayConditionProgrammed, false, gwv1.GatewayReasonPending, "waiting for the data plane: "+dataPlaneMessage(dp, haveDP), gen)
		}
		clientCert, reason, msg := t.backendClientCertificate(gw)
		cfg.BackendClientCertificate = clientCert
		status.Conditions = []metav1.Condition{accepted, programmed, gatewayResolvedRefs(gs, reason, msg)}
		status.AttachedListenerSets = ptr(t.finishListenerSets(gs, accepted.Status == metav1.ConditionTrue, dp, haveDP, cfg))
		if insecureFrontend(gw) {
			status.Conditions = append(status.Conditions, condition(gwv1.GatewayConditionInsecureFrontendValidationMode, true, gwv1.GatewayReasonConfigurationChanged,
				"spec.tls.frontend lets clients whose certificate is missing or fails validation connect (AllowInsecureFallback): the backends must authorize them", gen))
		}
		t.out.Status.Gateways[nn] = status
		if accepted.Status == metav1.ConditionTrue {
			t.out.Gateways[nn] = cfg
		}
	}
}

// snapshotListener is listener l in the snapshot, named name.
func (t *translator) snapshotListener(name string, l *listenerState) gateway.Listener {
	return gateway.Listener{
		Name:             name,
		Address:          t.opts.ListenAddress,
		Port:             int(l.spec.Port),
		Protocol:         gateway.Protocol(l.spec.Protocol),
		Hostname:         hostnameOf(l.spec.Hostname),
		Certificates:     l.certificates,
		ClientValidation: l.clientValidation,
		VirtualHosts:     l.virtualHosts,
	}
}

func dataPlaneMessage(dp DataPlane, have bool) string {
	switch {
	case !have:
		return "no proxy has been provisioned yet"
	case dp.Message != "":
		return dp.Message
	default:
		return "no proxy replica is available yet"
	}
}

func ptr[T any](v T) *T { return &v }
