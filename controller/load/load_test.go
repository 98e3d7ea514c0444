package load_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/toolgate/toolgate/controller/load"
)

func TestReadSaysWhereAndWhatIsWrong(t *testing.T) {
	loader, err := load.New()
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		yaml string
		want []string
	}{
		{
			name: "a kind toolgate does not read",
			yaml: "apiVersion: v1\nkind: Pod\nmetadata: {name: c}\n",
			want: []string{"f.yaml: document 1 (Pod \"c\")", "kind /v1, Kind=Pod is not one toolgate reads"},
		},
		{
			name: "a BackendTLSPolicy of a version the API server no longer serves",
			yaml: "apiVersion: gateway.networking.k8s.io/v1alpha3\nkind: BackendTLSPolicy\nmetadata: {name: p}\n",
			want: []string{"gateway.networking.k8s.io/v1alpha3 is not a supported version of BackendTLSPolicy"},
		},
		{
			name: "an MCPServer with perUser and no auth, refused as the API server refuses it",
			yaml: "apiVersion: gateway.networking.k8s.io/v1\nkind: GatewayClass\nmetadata: {name: ok}\nspec: {controllerName: toolgate.dev/gateway-controller}\n---\n" +
				"apiVersion: toolgate.dev/v1alpha1\nkind: MCPServer\nmetadata: {name: m}\nspec:\n  serviceRef: {name: s, port: 80}\n  rateLimiting:\n    perUser: {maxTokens: 1, refillPeriod: 1m}\n",
			want: []string{"document 2 (MCPServer \"m\")", `MCPServer.toolgate.dev "m" is invalid`, "rateLimiting.perUser needs spec.auth.oidc"},
		},
		{
			name: "a field the Gateway API does not have",
			yaml: "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {name: g}\nspec: {gatewayClassName: x, listeners: [], hostnames: [a]}\n",
			want: []string{"document 1 (Gateway \"g\")", "unknown field \"spec.hostnames\""},
		},
		{
			name: "an object without a name",
			yaml: "apiVersion: v1\nkind: Service\nmetadata: {}\n",
			want: []string{"metadata.name is required"},
		},
		{
			name: "YAML that does not parse",
			yaml: "apiVersion: v1\nkind: [\n",
			want: []string{"f.yaml: document 1"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := loader.Read(strings.NewReader(tt.yaml), "f.yaml")
			if err == nil {
				t.Fatal("accepted")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}

func TestDirReadsEveryYAMLFileAndDefaultsTheNamespace(t *testing.T) {
	loader, err := load.New()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	files := map[string]string{
		"a.yaml": "apiVersion: v1\nkind: Service\nmetadata: {name: s}\nspec: {ports: [{port: 80}]}\n---\napiVersion: v1\nkind: Service\nmetadata: {name: t, namespace: other}\nspec: {ports: [{port: 80}]}\n",
		"b.yml":  "apiVersion: toolgate.dev/v1alpha1\nkind: MCPServer\nmetadata: {name: m}\nspec: {serviceRef: {name: s, port: 80}}\n",
		"c.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: ca}\ndata: {ca.crt: x}\n---\n" +
			"apiVersion: gateway.networking.k8s.io/v1\nkind: BackendTLSPolicy\nmetadata: {name: p}\n" +
			"spec: {targetRefs: [{group: '', kind: Service, name: s}], validation: {hostname: s.example.com, caCertificateRefs: [{group: '', kind: ConfigMap, name: ca}]}}\n",
		"notes.txt": "not read",
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	res, err := loader.Dir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Services) != 2 || res.Services[0].Namespace != "default" || res.Services[1].Namespace != "other" {
		t.Errorf("services = %+v", res.Services)
	}
	if len(res.MCPServers) != 1 || res.MCPServers[0].Spec.Path != "/mcp" {
		t.Errorf("the MCPServer was not read with its defaults: %+v", res.MCPServers)
	}
	if len(res.ConfigMaps) != 1 || res.ConfigMaps[0].Namespace != "default" || res.ConfigMaps[0].Data["ca.crt"] != "x" {
		t.Errorf("configMaps = %+v", res.ConfigMaps)
	}
	if len(res.BackendTLSPolicies) != 1 || res.BackendTLSPolicies[0].Spec.Validation.Hostname != "s.example.com" {
		t.Errorf("backendTLSPolicies = %+v", res.BackendTLSPolicies)
	}
}
