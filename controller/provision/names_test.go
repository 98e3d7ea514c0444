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
			for _, secret := range []string{SessionKeySecretName(tt.gw), ConfigClientSecretName(tt.gw)} {
				for _, problem := range validation.IsDNS1123Subdomain(secret) {
					t.Errorf("Secret name %q is not valid: %s", secret, problem)
				}
				if len(secret) > maxName {
					t.Errorf("Secret name %q is longer than %d characters", secret, maxName)
				}
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
		{name: "a name and the same name with a Secret's suffix", a: gatewayNamed("ns", "web"), b: gatewayNamed("ns", "web-config")},
		{name: "long names that differ in their suffix only", a: gatewayNamed("ns", long+"-config"), b: gatewayNamed("ns", long+"-session")},
	}
	for _, tt := range pairs {
		t.Run(tt.name, func(t *testing.T) {
			na, nb := Names(tt.a), Names(tt.b)
			if na.Name == nb.Name {
				t.Errorf("both Gateways get name %q", na.Name)
			}
			if na.Labels[LabelGatewayName] == nb.Labels[LabelGatewayName] {
				t.Errorf("both Gateways get label %s=%q", LabelGatewayName, na.Labels[LabelGatewayName])
			}
			// The Secrets of both Gateways share one namespace: no two of
			// them may share a name.
			secrets := map[string]string{}
			for _, s := range []struct{ what, name string }{
				{"a's session key", SessionKeySecretName(tt.a)}, {"a's client certificate", ConfigClientSecretName(tt.a)},
				{"b's session key", SessionKeySecretName(tt.b)}, {"b's client certificate", ConfigClientSecretName(tt.b)},
			} {
				if other, taken := secrets[s.name]; taken {
					t.Errorf("%s and %s are both Secret %q", other, s.what, s.name)
				}
				secrets[s.name] = s.what
			}
		})
	}
}

func TestSecretNames(t *testing.T) {
	long := gatewayNamed("ns", strings.Repeat("c", 54)) // its data plane's name has 63 characters
	tests := []struct {
		name       string
		got        string
		want       string // exact, or a prefix when wantHashed
		wantHashed bool
	}{
		{name: "the session key is the data plane's name with -session", got: SessionKeySecretName(gatewayNamed("team-a", "web")), want: "toolgate-web-session"},
		{name: "the client certificate is the data plane's name with -config", got: ConfigClientSecretName(gatewayNamed("team-a", "web")), want: "toolgate-web-config"},
		{name: "a session key name too long is cut and hashed", got: SessionKeySecretName(long), want: "toolgate-ccc", wantHashed: true},
		{name: "a client certificate name too long is cut and hashed", got: ConfigClientSecretName(long), want: "toolgate-ccc", wantHashed: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.wantHashed {
				if !strings.HasPrefix(tt.got, tt.want) || strings.HasSuffix(tt.got, "-config") || strings.HasSuffix(tt.got, "-session") {
					t.Errorf("name = %q, want %q followed by a hash", tt.got, tt.want)
				}
			} else if tt.got != tt.want {
				t.Errorf("name = %q, want %q", tt.got, tt.want)
			}
			if len(tt.got) > maxName {
				t.Errorf("name %q is longer than %d characters", tt.got, maxName)
			}
		})
	}
}

func TestNamesAreStable(t *testing.T) {
	gw := gatewayNamed("ns", strings.Repeat("z", 120))
	if a, b := Names(gw), Names(gw); a.Name != b.Name {
		t.Errorf("Names differ between calls: %+v and %+v", a, b)
	}
	if a, b := ConfigClientSecretName(gw), ConfigClientSecretName(gw); a != b {
		t.Errorf("ConfigClientSecretName differs between calls: %q and %q", a, b)
	}
}
