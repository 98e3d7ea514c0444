package translate

import (
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/toolgate/toolgate/gateway"
)

// caCertificateKey is the key of a ConfigMap or Secret that holds a
// BackendTLSPolicy's CA certificates.
const caCertificateKey = "ca.crt"

// maxPolicyAncestors is the most ancestors a policy's status may list.
const maxPolicyAncestors = 16

// tlsTarget is what a BackendTLSPolicy applies to: a Service, or one port
// of it (sectionName, the port's name).
type tlsTarget struct {
	service types.NamespacedName
	section string
}

// tlsPolicy is a BackendTLSPolicy resolved once per translation: the TLS
// its backends get, its conditions, and the Gateways it applies under.
type tlsPolicy struct {
	policy *gwv1.BackendTLSPolicy
	// tls is what backends whose Service it targets get; without a valid
	// CA certificate it has no roots, and their requests answer 500.
	tls gateway.BackendTLS
	// invalid, when set, is the reason and message of Accepted=False that
	// every ancestor gets (NoValidCACertificate, Invalid).
	invalid *reasonMessage
	// resolved, resolvedRefs: its ResolvedRefs condition.
	resolved     bool
	resolvedRefs reasonMessage
	// ancestors are the Gateways whose routes send traffic to a Service it
	// targets; true when another policy took precedence there.
	ancestors map[types.NamespacedName]bool
	// winners name, by target, the policy that took precedence over this
	// one, for the Conflicted message.
	winners map[tlsTarget]*gwv1.BackendTLSPolicy
}

// reasonMessage is a condition's reason and message.
type reasonMessage struct {
	reason  gwv1.PolicyConditionReason
	message string
}

// tlsUse is a backend's BackendTLSPolicy, and those that lost to it.
type tlsUse struct {
	target  tlsTarget
	applied *tlsPolicy
	losers  []*tlsPolicy
}

// indexBackendTLSPolicies resolves every BackendTLSPolicy and orders those
// of each target by precedence: the oldest first, then by namespace/name,
// as the spec says.
func (t *translator) indexBackendTLSPolicies() {
	t.tlsPolicies = map[types.NamespacedName]*tlsPolicy{}
	t.tlsTargets = map[tlsTarget][]*tlsPolicy{}
	for _, p := range sortedByAge(t.res.BackendTLSPolicies) {
		tp := t.resolveBackendTLSPolicy(p)
		t.tlsPolicies[key(p)] = tp
		var seen []tlsTarget
		for _, ref := range p.Spec.TargetRefs {
			if ref.Group != "" || ref.Kind != kindService {
				continue // toolgate applies policies to Services only
			}
			target := tlsTarget{service: types.NamespacedName{Namespace: p.Namespace, Name: string(ref.Name)}}
			if ref.SectionName != nil {
				target.section = string(*ref.SectionName)
			}
			if slices.Contains(seen, target) {
				continue
			}
			seen = append(seen, target)
			t.tlsTargets[target] = append(t.tlsTargets[target], tp)
		}
	}
}

// resolveBackendTLSPolicy reads a policy's CA certificates and names.
func (t *translator) resolveBackendTLSPolicy(p *gwv1.BackendTLSPolicy) *tlsPolicy {
	v := p.Spec.Validation
	tp := &tlsPolicy{
		policy: p,
		tls: gateway.BackendTLS{
			Policy:     key(p).String(),
			ServerName: string(v.Hostname),
		},
		ancestors: map[types.NamespacedName]bool{},
		winners:   map[tlsTarget]*gwv1.BackendTLSPolicy{},
	}
	for _, san := range v.SubjectAltNames {
		switch san.Type {
		case gwv1.HostnameSubjectAltNameType:
			tp.tls.SubjectAltNames = append(tp.tls.SubjectAltNames, gateway.SubjectAltName{Hostname: string(san.Hostname)})
		case gwv1.URISubjectAltNameType:
			tp.tls.SubjectAltNames = append(tp.tls.SubjectAltNames, gateway.SubjectAltName{URI: string(san.URI)})
		default:
			tp.invalid = &reasonMessage{gwv1.PolicyReasonInvalid, fmt.Sprintf("spec.validation.subjectAltNames: type %q is not Hostname or URI", san.Type)}
		}
	}
	if wk := v.WellKnownCACertificates; wk != nil && *wk != "" {
		if *wk != gwv1.WellKnownCACertificatesSystem {
			tp.invalid = &reasonMessage{gwv1.PolicyReasonInvalid,
				fmt.Sprintf("spec.validation.wellKnownCACertificates: %q is not one toolgate knows: use System (the proxy's system roots) or caCertificateRefs; requests to its backends answer 500 until then", *wk)}
		} else if len(v.CACertificateRefs) == 0 {
			tp.tls.SystemRoots = true
		}
	}
	tp.resolved, tp.resolvedRefs = true, reasonMessage{gwv1.BackendTLSPolicyReasonResolvedRefs, "every CA certificate reference is resolved"}
	var certs []string
	var problems []string
	for i, ref := range v.CACertificateRefs {
		pemCerts, reason, err := t.caCertificates(p.Namespace, ref)
		if err != nil {
			if tp.resolved {
				tp.resolved, tp.resolvedRefs.reason = false, reason
			}
			problems = append(problems, fmt.Sprintf("spec.validation.caCertificateRefs[%d]: %v", i, err))
			continue
		}
		certs = append(certs, pemCerts)
	}
	if !tp.resolved {
		tp.resolvedRefs.message = strings.Join(problems, "; ")
	}
	if len(v.CACertificateRefs) > 0 {
		if len(certs) == 0 {
			if tp.invalid == nil {
				tp.invalid = &reasonMessage{gwv1.BackendTLSPolicyReasonNoValidCACertificate,
					"no CA certificate reference is valid (see ResolvedRefs): requests to the backends it applies to answer 500 until one is"}
			}
		} else {
			tp.tls.CACertificatesPEM = strings.Join(certs, "")
		}
	}
	if tp.invalid != nil {
		// Fail closed: no roots, so nothing is dialed.
		tp.tls.CACertificatesPEM, tp.tls.SystemRoots = "", false
	}
	return tp
}

// caCertificates reads the PEM certificates of one caCertificateRef: key
// ca.crt of a ConfigMap or a Secret of the policy's namespace, each
// certificate parsed and written again, other blocks dropped. The error
// says what to fix, with the reason of ResolvedRefs=False.
func (t *translator) caCertificates(namespace string, ref gwv1.LocalObjectReference) (string, gwv1.PolicyConditionReason, error) {
	nn := types.NamespacedName{Namespace: namespace, Name: string(ref.Name)}
	var data string
	switch {
	case ref.Group == "" && ref.Kind == "ConfigMap":
		cm, ok := t.idx.configMaps.get(nn)
		if !ok {
			return "", gwv1.BackendTLSPolicyReasonInvalidCACertificateRef, fmt.Errorf("ConfigMap %s not found", nn)
		}
		data = cm.Data[caCertificateKey]
		if data == "" {
			data = string(cm.BinaryData[caCertificateKey])
		}
	case ref.Group == "" && ref.Kind == "Secret":
		s, ok := t.idx.secrets.get(nn)
		if !ok {
			return "", gwv1.BackendTLSPolicyReasonInvalidCACertificateRef, fmt.Errorf("Secret %s not found", nn)
		}
		data = string(s.Data[caCertificateKey])
		if data == "" {
			data = s.StringData[caCertificateKey]
		}
	default:
		return "", gwv1.BackendTLSPolicyReasonInvalidKind,
			fmt.Errorf("%s %q of group %q is not a kind toolgate reads CA certificates from: use a ConfigMap or a Secret (group \"\") with key %s", ref.Kind, ref.Name, ref.Group, caCertificateKey)
	}
	if data == "" {
		return "", gwv1.BackendTLSPolicyReasonInvalidCACertificateRef, fmt.Errorf("%s %s has no key %s, or it is empty", ref.Kind, nn, caCertificateKey)
	}
	var out []byte
	rest := []byte(data)
	for {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			continue
		}
		if _, err := x509.ParseCertificate(block.Bytes); err != nil {
			return "", gwv1.BackendTLSPolicyReasonInvalidCACertificateRef, fmt.Errorf("%s %s: key %s: %w", ref.Kind, nn, caCertificateKey, err)
		}
		out = append(out, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: block.Bytes})...)
	}
	if len(out) == 0 {
		return "", gwv1.BackendTLSPolicyReasonInvalidCACertificateRef, fmt.Errorf("%s %s: key %s holds no PEM certificate", ref.Kind, nn, caCertificateKey)
	}
	return string(out), "", nil
}

// backendTLS finds the BackendTLSPolicy of a Service port: the one that
// targets the port by name takes precedence over one that targets the
// whole Service. Nil when none does.
func (t *translator) backendTLS(svc types.NamespacedName, port corev1.ServicePort) *tlsUse {
	targets := []tlsTarget{{svc, ""}}
	if port.Name != "" {
		targets = []tlsTarget{{svc, port.Name}, {svc, ""}}
	}
	for _, target := range targets {
		policies := t.tlsTargets[target]
		if len(policies) == 0 {
			continue
		}
		return &tlsUse{target: target, applied: policies[0], losers: policies[1:]}
	}
	return nil
}

// useBackendTLS records that the routes of gw send traffic through u.
func (t *translator) useBackendTLS(u *tlsUse, gw types.NamespacedName) {
	if _, ok := u.applied.ancestors[gw]; !ok {
		u.applied.ancestors[gw] = false
	}
	for _, l := range u.losers {
		l.ancestors[gw] = true
		l.winners[u.target] = u.applied.policy
	}
}

// finishBackendTLSPolicies writes the status of every policy that applies
// under a Gateway of this controller: one ancestor per Gateway.
func (t *translator) finishBackendTLSPolicies() {
	for nn, tp := range t.tlsPolicies {
		if len(tp.ancestors) == 0 {
			continue
		}
		gateways := make([]types.NamespacedName, 0, len(tp.ancestors))
		for gw := range tp.ancestors {
			gateways = append(gateways, gw)
		}
		slices.SortFunc(gateways, func(a, b types.NamespacedName) int { return strings.Compare(a.String(), b.String()) })
		if len(gateways) > maxPolicyAncestors {
			gateways = gateways[:maxPolicyAncestors]
		}
		gen := tp.policy.Generation
		var statuses []gwv1.PolicyAncestorStatus
		for _, gw := range gateways {
			accepted := condition(gwv1.PolicyConditionAccepted, true, gwv1.PolicyReasonAccepted,
				"the gateway connects to the Services it targets over TLS, as it says", gen)
			switch {
			case tp.ancestors[gw]:
				accepted = condition(gwv1.PolicyConditionAccepted, false, gwv1.PolicyReasonConflicted, tp.conflictMessage(), gen)
			case tp.invalid != nil:
				accepted = condition(gwv1.PolicyConditionAccepted, false, tp.invalid.reason, tp.invalid.message, gen)
			}
			statuses = append(statuses, gwv1.PolicyAncestorStatus{
				AncestorRef: gwv1.ParentReference{
					Group:     ptr(gwv1.Group(gatewayGroup)),
					Kind:      ptr(gwv1.Kind(kindGateway)),
					Namespace: ptr(gwv1.Namespace(gw.Namespace)),
					Name:      gwv1.ObjectName(gw.Name),
				},
				ControllerName: t.opts.ControllerName,
				Conditions: []metav1.Condition{
					accepted,
					condition(gwv1.BackendTLSPolicyConditionResolvedRefs, tp.resolved, tp.resolvedRefs.reason, tp.resolvedRefs.message, gen),
				},
			})
		}
		t.out.Status.BackendTLSPolicies[nn] = statuses
	}
}

// conflictMessage names the policies that took precedence over this one.
func (tp *tlsPolicy) conflictMessage() string {
	var parts []string
	for target, winner := range tp.winners {
		what := "Service " + target.service.String()
		if target.section != "" {
			what += " port " + target.section
		}
		parts = append(parts, fmt.Sprintf("BackendTLSPolicy %s also targets %s and takes precedence (older, or first by namespace/name)", key(winner), what))
	}
	slices.Sort(parts)
	return strings.Join(parts, "; ") + ": this one is not applied there"
}
