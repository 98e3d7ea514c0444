package translate

import (
	"fmt"
	"strings"

	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/toolgate/toolgate/gateway"
)

// frontendValidation is the client certificate validation of an HTTPS
// listener on port: the Gateway's spec.tls.frontend entry for the port,
// else its default; nil when it asks for none.
func frontendValidation(gw *gwv1.Gateway, port gwv1.PortNumber) *gwv1.FrontendTLSValidation {
	if gw.Spec.TLS == nil || gw.Spec.TLS.Frontend == nil {
		return nil
	}
	f := gw.Spec.TLS.Frontend
	for _, p := range f.PerPort {
		if p.Port == port {
			return p.TLS.Validation
		}
	}
	return f.Default.Validation
}

// resolveClientValidation resolves the CA certificates an HTTPS listener
// verifies client certificates with. A reference that cannot be used sets
// ResolvedRefs=False with a reason that says why; when none can, the
// listener is not accepted (NoValidCACertificate) and serves nothing.
func (t *translator) resolveClientValidation(gw *gwv1.Gateway, ls *listenerState) {
	v := frontendValidation(gw, ls.spec.Port)
	if v == nil {
		return
	}
	gen := ls.owner.generation
	var pems, problems []string
	var reason gwv1.ListenerConditionReason
	for i, ref := range v.CACertificateRefs {
		where := fmt.Sprintf("tls.frontend caCertificateRefs[%d]", i)
		ns := gw.Namespace
		if ref.Namespace != nil && *ref.Namespace != "" {
			ns = string(*ref.Namespace)
		}
		kind, group := string(ref.Kind), string(ref.Group)
		if group != "" || (kind != "ConfigMap" && kind != kindSecret) {
			reason = gwv1.ListenerReasonInvalidCACertificateKind
			problems = append(problems, fmt.Sprintf("%s: %s %q of group %q is not a kind toolgate reads CA certificates from: use a ConfigMap or a Secret (group \"\") with key %s", where, kind, ref.Name, group, caCertificateKey))
			continue
		}
		if ns != gw.Namespace && !t.referenceAllowed(gatewayGroup, kindGateway, gw.Namespace, "", kind, ns, string(ref.Name)) {
			reason = gwv1.ListenerReasonRefNotPermitted
			problems = append(problems, fmt.Sprintf("%s: %s %s/%s is in another namespace and no ReferenceGrant there allows it", where, kind, ns, ref.Name))
			continue
		}
		data, _, err := t.caCertificates(ns, gwv1.LocalObjectReference{Group: ref.Group, Kind: ref.Kind, Name: ref.Name})
		if err != nil {
			if reason == "" {
				reason = gwv1.ListenerReasonInvalidCACertificateRef
			}
			problems = append(problems, where+": "+err.Error())
			continue
		}
		pems = append(pems, data)
	}
	if len(problems) > 0 {
		ls.resolvedRefs = condition(gwv1.ListenerConditionResolvedRefs, false, reason, strings.Join(problems, "; "), gen)
	}
	if len(pems) == 0 {
		ls.accepted = condition(gwv1.ListenerConditionAccepted, false, gwv1.ListenerReasonNoValidCACertificate,
			"no caCertificateRefs of spec.tls.frontend for this port can be used, so no client can be verified: "+strings.Join(problems, "; "), gen)
		return
	}
	ls.clientValidation = &gateway.ClientValidation{
		CACertificatesPEM:     strings.Join(pems, ""),
		AllowInsecureFallback: v.Mode == gwv1.AllowInsecureFallback,
	}
}

// insecureFrontend reports whether gw lets any HTTPS port accept clients
// whose certificate is missing or fails validation.
func insecureFrontend(gw *gwv1.Gateway) bool {
	if gw.Spec.TLS == nil || gw.Spec.TLS.Frontend == nil {
		return false
	}
	f := gw.Spec.TLS.Frontend
	if v := f.Default.Validation; v != nil && v.Mode == gwv1.AllowInsecureFallback {
		return true
	}
	for _, p := range f.PerPort {
		if v := p.TLS.Validation; v != nil && v.Mode == gwv1.AllowInsecureFallback {
			return true
		}
	}
	return false
}
