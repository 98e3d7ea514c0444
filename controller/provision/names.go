package provision

import (
	"crypto/sha256"
	"encoding/hex"
	"strings"

	"k8s.io/apimachinery/pkg/types"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"
)

// Labels and annotations on every data-plane object.
const (
	LabelName             = "app.kubernetes.io/name"
	LabelManagedBy        = "app.kubernetes.io/managed-by"
	LabelGatewayNamespace = "toolgate.dev/gateway-namespace"
	LabelGatewayName      = "toolgate.dev/gateway-name"
	// AnnotationGateway holds the Gateway's full NAMESPACE/NAME, which a
	// label value may be too short to hold.
	AnnotationGateway = "toolgate.dev/gateway"

	// ProxyName is the value of LabelName on the data-plane objects.
	ProxyName = "toolgate-proxy"
	// ManagedBy is the value of LabelManagedBy on the data-plane objects.
	ManagedBy = "toolgate"
)

// maxName bounds generated names: a Service name is a DNS label.
const maxName = 63

// ResourceNames are the names and labels of one Gateway's data plane.
type ResourceNames struct {
	// Gateway is the Gateway's namespace and name.
	Gateway types.NamespacedName
	// Name is the name of the Deployment, Service and ServiceAccount, in
	// the Gateway's namespace: toolgate-<gateway name>, shortened with a
	// hash when it would not be a valid Service name.
	Name string
	// Labels are on every object and select the proxy pods.
	Labels map[string]string
}

// Names returns the names and labels of gw's data plane.
func Names(gw *gwv1.Gateway) ResourceNames {
	return namesOf(types.NamespacedName{Namespace: gw.Namespace, Name: gw.Name})
}

func namesOf(gw types.NamespacedName) ResourceNames {
	return ResourceNames{
		Gateway: gw,
		Name:    boundedName("toolgate-"+gw.Name, gw.Name),
		Labels: map[string]string{
			LabelName:             ProxyName,
			LabelManagedBy:        ManagedBy,
			LabelGatewayNamespace: gw.Namespace,
			LabelGatewayName:      boundedLabelValue(gw.Name),
		},
	}
}

// boundedName turns name into a DNS label of at most 63 characters. When
// name had to change (dots, length), a hash of key is appended so that
// different keys keep different names.
func boundedName(name, key string) string {
	clean := strings.ReplaceAll(strings.ToLower(name), ".", "-")
	if clean == name && len(name) <= maxName {
		return name
	}
	suffix := "-" + shortHash(key)
	if len(clean) > maxName-len(suffix) {
		clean = clean[:maxName-len(suffix)]
	}
	return strings.TrimRight(clean, "-") + suffix
}

// boundedLabelValue keeps a Gateway name (a DNS subdomain, valid as a label
// value up to 63 characters) within a label value's 63 characters.
func boundedLabelValue(v string) string {
	if len(v) <= maxName {
		return v
	}
	suffix := "-" + shortHash(v)
	return strings.TrimRight(v[:maxName-len(suffix)], "-.") + suffix
}

func shortHash(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])[:8]
}
