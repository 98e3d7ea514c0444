package provision

import (
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"
)

func gatewayNamed(namespace, name string) *gwv1.Gateway {
	return &gwv1.Gateway{ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: name}}
}

func TestNames(t *testing.T) {
	long := strings.Repeat("a", 200)
	tests := []struct {
		name       string
		gw         *gwv1.Gateway
		wantName   string // exact, or a prefix when wantHashed
		wantHashed bool
	}{
		{name: "a short name is prefixed with toolgate", gw: gatewayNamed("team-a", "web"), wantName: "toolgate-web"},
		{name: "a name of 54 characters still fits", gw: gatewayNamed("ns", strings.Repeat("b", 54)), wantName: "toolgate-" + strings.Repeat("b", 54)},
		{name: "a long name is cut and hashed", gw: gatewayNamed("ns", long), wantName: "toolgate-aaaa", wantHashed: true},
		{name: "a dotted name becomes a DNS label with a hash", gw: gatewayNamed("ns", "api.example.com"), wantName: "toolgate-api-example-com-", wantHashed: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n := Names(tt.gw)
			if tt.wantHashed {
				if !strings.HasPrefix(n.Name, tt.wantName) || n.Name == tt.wantName {
					t.Errorf("Name = %q, want %q followed by a hash", n.Name, tt.wantName)
				}
			} else if n.Name != tt.wantName {
				t.Errorf("Name = %q, want %q", n.Name, tt.wantName)
			}
			for _, problem := range validation.IsDNS1035Label(n.Name) {
				t.Errorf("Name %q is not a valid Service name: %s", n.Name, problem)
			}
			for _, problem := range validation.IsDNS1123Label(n.ClusterRoleBinding) {
				t.Errorf("ClusterRoleBinding %q is not a DNS label: %s", n.ClusterRoleBinding, problem)
			}
			for k, v := range n.Labels {
				for _, problem := range validation.IsValidLabelValue(v) {
					t.Errorf("label %s=%q is not valid: %s", k, v, problem)
				}
			}
		})
	}
}

func TestNamesLabelsSelectTheProxies(t *testing.T) {
	n := Names(gatewayNamed("team-a", "web"))
	want := map[string]string{
		"app.kubernetes.io/name":         "toolgate-proxy",
		"app.kubernetes.io/managed-by":   "toolgate",
		"toolgate.dev/gateway-namespace": "team-a",
		"toolgate.dev/gateway-name":      "web",
	}
	if len(n.Labels) != len(want) {
		t.Errorf("Labels = %v, want %v", n.Labels, want)
	}
	for k, v := range want {
		if n.Labels[k] != v {
			t.Errorf("Labels[%s] = %q, want %q", k, n.Labels[k], v)
		}
	}
}

func TestNamesKeepGatewaysApart(t *testing.T) {
	long := strings.Repeat("x", 100)
	pairs := []struct {
		name string
		a, b *gwv1.Gateway
	}{
		{name: "long names that share their start", a: gatewayNamed("ns", long+"1"), b: gatewayNamed("ns", long+"2")},
		{name: "a dotted name and its dashed look-alike", a: gatewayNamed("ns", "a.b"), b: gatewayNamed("ns", "a-b")},
		{name: "hyphens moved between namespace and name", a: gatewayNamed("a-b", "c"), b: gatewayNamed("a", "b-c")},
		{name: "one name in two namespaces", a: gatewayNamed("team-a", "web"), b: gatewayNamed("team-b", "web")},
	}
	for _, tt := range pairs {
		t.Run(tt.name, func(t *testing.T) {
			na, nb := Names(tt.a), Names(tt.b)
			if na.ClusterRoleBinding == nb.ClusterRoleBinding {
				t.Errorf("both Gateways get ClusterRoleBinding %q", na.ClusterRoleBinding)
			}
			if tt.a.Namespace == tt.b.Namespace && na.Name == nb.Name {
				t.Errorf("both Gateways get name %q in namespace %s", na.Name, tt.a.Namespace)
			}
			if tt.a.Namespace == tt.b.Namespace && na.Labels[LabelGatewayName] == nb.Labels[LabelGatewayName] {
				t.Errorf("both Gateways get label %s=%q", LabelGatewayName, na.Labels[LabelGatewayName])
			}
		})
	}
}

func TestNamesAreStable(t *testing.T) {
	gw := gatewayNamed("ns", strings.Repeat("z", 120))
	if a, b := Names(gw), Names(gw); a.Name != b.Name || a.ClusterRoleBinding != b.ClusterRoleBinding {
		t.Errorf("Names differ between calls: %+v and %+v", a, b)
	}
}
