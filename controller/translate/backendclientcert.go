package translate

import (
	"crypto/tls"
	"fmt"
	"strings"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/toolgate/toolgate/gateway"
)

// backendClientCertificate resolves a Gateway's
// spec.tls.backend.clientCertificateRef: the certificate its proxies
// present to backends over TLS. It returns nil and no problem when the
// Gateway names none, and nil with the reason and message of its
// ResolvedRefs=False condition when the reference cannot be used: a kind
// other than a core Secret, a Secret that does not exist or holds no valid
// tls.crt and tls.key (InvalidClientCertificateRef), or one in another
// namespace without a ReferenceGrant there (RefNotPermitted). A Secret of
// any type holding the two keys will do; kubernetes.io/tls is the usual
// one. The Gateway is served either way: until the reference is fixed, its
// proxies present no client certificate, and backends that require one
// refuse the handshake (503).
func (t *translator) backendClientCertificate(gw *gwv1.Gateway) (*gateway.Certificate, gwv1.GatewayConditionReason, string) {
	if gw.Spec.TLS == nil || gw.Spec.TLS.Backend == nil || gw.Spec.TLS.Backend.ClientCertificateRef == nil {
		return nil, "", ""
	}
	const field = "spec.tls.backend.clientCertificateRef"
	const until = ": until it is fixed, backends reached over TLS get no client certificate"
	ref := gw.Spec.TLS.Backend.ClientCertificateRef
	if (ref.Group != nil && *ref.Group != "") || (ref.Kind != nil && *ref.Kind != kindSecret) {
		return nil, gwv1.GatewayReasonInvalidClientCertificateRef,
			fmt.Sprintf("%s: kind %s of group %q is not supported: refer to a core Secret of type kubernetes.io/tls%s", field, strOrDefault(ref.Kind, kindSecret), strOrDefault(ref.Group, ""), until)
	}
	ns := gw.Namespace
	if ref.Namespace != nil && *ref.Namespace != "" {
		ns = string(*ref.Namespace)
	}
	if ns != gw.Namespace && !t.referenceAllowed(gatewayGroup, kindGateway, gw.Namespace, "", kindSecret, ns, string(ref.Name)) {
		return nil, gwv1.GatewayReasonRefNotPermitted,
			fmt.Sprintf("%s: Secret %s/%s is in another namespace and no ReferenceGrant there allows Gateways of namespace %s to refer to it%s", field, ns, ref.Name, gw.Namespace, until)
	}
	secret, ok := t.idx.secrets.get(types.NamespacedName{Namespace: ns, Name: string(ref.Name)})
	if !ok {
		return nil, gwv1.GatewayReasonInvalidClientCertificateRef,
			fmt.Sprintf("%s: Secret %s/%s not found%s", field, ns, ref.Name, until)
	}
	certPEM, keyPEM := secret.Data[corev1.TLSCertKey], secret.Data[corev1.TLSPrivateKeyKey]
	if _, err := tls.X509KeyPair(certPEM, keyPEM); err != nil {
		return nil, gwv1.GatewayReasonInvalidClientCertificateRef,
			fmt.Sprintf("%s: Secret %s/%s does not hold a valid certificate and key in tls.crt and tls.key (%v)%s", field, ns, ref.Name, err, until)
	}
	return &gateway.Certificate{CertificatePEM: string(certPEM), PrivateKeyPEM: string(keyPEM)}, "", ""
}

// gatewayResolvedRefs is a Gateway's ResolvedRefs condition: False with the
// reason of its own references' problem (spec.tls.backend) when there is
// one, else False with ListenersNotResolved when some of its listeners
// have unresolved references, else True.
func gatewayResolvedRefs(gs *gatewayState, reason gwv1.GatewayConditionReason, msg string) metav1.Condition {
	gen := gs.gw.Generation
	if reason != "" {
		return condition(gwv1.GatewayConditionResolvedRefs, false, reason, msg, gen)
	}
	var unresolved []string
	for _, l := range gs.listeners {
		if l.resolvedRefs.Status != metav1.ConditionTrue {
			unresolved = append(unresolved, string(l.spec.Name))
		}
	}
	if len(unresolved) > 0 {
		return condition(gwv1.GatewayConditionResolvedRefs, false, gwv1.GatewayReasonListenersNotResolved,
			"listeners with unresolved references (see their ResolvedRefs condition): "+strings.Join(unresolved, ", "), gen)
	}
	return condition(gwv1.GatewayConditionResolvedRefs, true, gwv1.GatewayReasonResolvedRefs, "all references resolved", gen)
}

func strOrDefault[T ~string](p *T, def string) string {
	if p == nil {
		return def
	}
	return string(*p)
}
