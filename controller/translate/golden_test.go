package translate_test

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"
	"sigs.k8s.io/yaml"

	"github.com/toolgate/toolgate/controller/admission"
	"github.com/toolgate/toolgate/controller/load"
	"github.com/toolgate/toolgate/controller/translate"
	"github.com/toolgate/toolgate/gateway"
)

var update = flag.Bool("update", false, "rewrite testdata/*.out.yaml from the translator's output")

// fixtureOptions is an optional document of kind TestOptions in a fixture.
type fixtureOptions struct {
	Kind string `json:"kind"`
	// Replicas and SharedStore describe every Gateway's data plane.
	Replicas    int32 `json:"replicas"`
	SharedStore bool  `json:"sharedStore"`
	// DataPlaneNotReady leaves every Gateway's data plane unavailable.
	DataPlaneNotReady bool `json:"dataPlaneNotReady"`
	// StaticAddressPools are the GatewayClasses' static address pools
	// (Resources.StaticAddressPools), as CIDRs by class name.
	StaticAddressPools map[string][]string `json:"staticAddressPools"`
}

// TestTranslate runs every testdata/NAME.in.yaml through the translator and
// compares the snapshot, policies and status with testdata/NAME.out.yaml.
// Run with -update to rewrite the golden files, then read the diff.
func TestTranslate(t *testing.T) {
	inputs, loader, validator := fixtures(t)
	for _, in := range inputs {
		name := strings.TrimSuffix(filepath.Base(in), ".in.yaml")
		t.Run(name, func(t *testing.T) {
			res := readFixture(t, loader, in)
			result := translate.Translate(res, translate.Options{Admission: validator})
			got := dump(t, result)
			golden := strings.TrimSuffix(in, ".in.yaml") + ".out.yaml"
			if *update {
				if err := os.WriteFile(golden, got, 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run go test ./controller/translate -update to create it)", err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("translation differs from %s (run with -update and read the diff):\n%s", golden, diff(string(want), string(got)))
			}
		})
	}
}

// fixtures are the testdata/*.in.yaml files, with the loader and the
// admission validator that read and check them.
func fixtures(t *testing.T) ([]string, *load.Loader, *admission.Validator) {
	t.Helper()
	inputs, err := filepath.Glob("testdata/*.in.yaml")
	if err != nil || len(inputs) == 0 {
		t.Fatalf("no fixtures: %v", err)
	}
	loader, err := load.New()
	if err != nil {
		t.Fatal(err)
	}
	validator, err := admission.New()
	if err != nil {
		t.Fatal(err)
	}
	return inputs, loader, validator
}

// readFixture reads the fixture in: its objects, and the data planes and
// static address pools its TestOptions document describes.
func readFixture(t *testing.T, loader *load.Loader, in string) *translate.Resources {
	t.Helper()
	raw, err := os.ReadFile(in)
	if err != nil {
		t.Fatal(err)
	}
	var docs []string
	fo := fixtureOptions{Replicas: 1}
	for _, doc := range strings.Split(string(raw), "\n---") {
		if strings.Contains(doc, "kind: TestOptions") {
			if err := yaml.UnmarshalStrict([]byte(doc), &fo); err != nil {
				t.Fatalf("TestOptions: %v", err)
			}
			continue
		}
		docs = append(docs, doc)
	}
	res, err := loader.Read(strings.NewReader(strings.Join(docs, "\n---")), in)
	if err != nil {
		t.Fatal(err)
	}
	res.DataPlanes = map[types.NamespacedName]translate.DataPlane{}
	for _, gw := range res.Gateways {
		dp := translate.DataPlane{Ready: !fo.DataPlaneNotReady, Message: "0 of 1 replicas available", Replicas: fo.Replicas, SharedStore: fo.SharedStore}
		if dp.Ready {
			dp.Message = ""
			dp.Addresses = []gwv1.GatewayStatusAddress{{Type: ptr(gwv1.IPAddressType), Value: "192.0.2.10"}}
		}
		res.DataPlanes[types.NamespacedName{Namespace: gw.Namespace, Name: gw.Name}] = dp
	}
	for class, cidrs := range fo.StaticAddressPools {
		if res.StaticAddressPools == nil {
			res.StaticAddressPools = map[string][]netip.Prefix{}
		}
		for _, c := range cidrs {
			res.StaticAddressPools[class] = append(res.StaticAddressPools[class], netip.MustParsePrefix(c))
		}
	}
	return res
}

func ptr[T any](v T) *T { return &v }

// dump renders a Result as YAML. Each Gateway is its snapshot's wire form
// (gateway.EncodeConfig of the redacted Config), exactly what the config
// stream and /config carry, private keys redacted; policies and status are
// their JSON forms.
func dump(t *testing.T, r *translate.Result) []byte {
	t.Helper()
	gateways := map[string]json.RawMessage{}
	for nn, cfg := range r.Gateways {
		data, err := gateway.EncodeConfig(cfg.Redacted())
		if err != nil {
			t.Fatalf("encode the snapshot of %s: %v", nn, err)
		}
		gateways[nn.String()] = data
	}
	policies := map[string]any{}
	for nn, p := range r.Policies {
		policies[nn.String()] = p
	}
	routes := map[string]any{}
	for nn, s := range r.Status.HTTPRoutes {
		routes[nn.String()] = withoutNulls(t, s)
	}
	gws := map[string]any{}
	for nn, s := range r.Status.Gateways {
		gws[nn.String()] = withoutNulls(t, s)
	}
	mcps := map[string]any{}
	for nn, s := range r.Status.MCPServers {
		mcps[nn.String()] = withoutNulls(t, s)
	}
	classes := map[string]any{}
	for name, s := range r.Status.GatewayClasses {
		classes[name] = withoutNulls(t, s)
	}
	status := map[string]any{
		"gatewayClasses": classes,
		"gateways":       gws,
		"httpRoutes":     routes,
		"mcpServers":     mcps,
	}
	if len(r.Status.ListenerSets) > 0 {
		sets := map[string]any{}
		for nn, s := range r.Status.ListenerSets {
			sets[nn.String()] = withoutNulls(t, s)
		}
		status["listenerSets"] = sets
	}
	if len(r.Status.BackendTLSPolicies) > 0 {
		tlsPolicies := map[string]any{}
		for nn, s := range r.Status.BackendTLSPolicies {
			tlsPolicies[nn.String()] = withoutNulls(t, s)
		}
		status["backendTLSPolicies"] = tlsPolicies
	}
	out := map[string]any{
		"gateways": gateways,
		"policies": policies,
		"status":   status,
	}
	if len(r.StaticAddresses) > 0 {
		static := map[string][]string{}
		for nn, ips := range r.StaticAddresses {
			static[nn.String()] = ips
		}
		out["staticAddresses"] = static
	}
	data, err := json.Marshal(out)
	if err != nil {
		t.Fatal(err)
	}
	doc, err := yaml.JSONToYAML(data)
	if err != nil {
		t.Fatal(err)
	}
	return doc
}

// withoutNulls renders a status without its null fields (the translator
// leaves lastTransitionTime to the status writer).
func withoutNulls(t *testing.T, v any) any {
	raw, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	var out any
	if err := json.Unmarshal(raw, &out); err != nil {
		t.Fatal(err)
	}
	return dropNulls(out)
}

func dropNulls(v any) any {
	switch x := v.(type) {
	case map[string]any:
		for k, val := range x {
			if val == nil {
				delete(x, k)
				continue
			}
			x[k] = dropNulls(val)
		}
	case []any:
		for i := range x {
			x[i] = dropNulls(x[i])
		}
	}
	return v
}

// diff shows the first lines where want and got differ.
func diff(want, got string) string {
	w, g := strings.Split(want, "\n"), strings.Split(got, "\n")
	var b strings.Builder
	shown := 0
	for i := 0; i < len(w) || i < len(g); i++ {
		var wl, gl string
		if i < len(w) {
			wl = w[i]
		}
		if i < len(g) {
			gl = g[i]
		}
		if wl != gl {
			fmt.Fprintf(&b, "line %d:\n  want: %s\n  got:  %s\n", i+1, wl, gl)
			if shown++; shown == 10 {
				break
			}
		}
	}
	return b.String()
}

// TestOnlyDependenciesMatter translates every fixture again without the
// Services (and their EndpointSlices), Secrets and ConfigMaps its
// Dependencies leave out, and expects the same outcome: what the
// controller may leave out of its caches and ignore the events of.
func TestOnlyDependenciesMatter(t *testing.T) {
	inputs, loader, validator := fixtures(t)
	left := 0
	for _, in := range inputs {
		t.Run(strings.TrimSuffix(filepath.Base(in), ".in.yaml"), func(t *testing.T) {
			read := func() *translate.Resources { return readFixture(t, loader, in) }
			opts := translate.Options{Admission: validator}
			all := translate.Translate(read(), opts)
			deps := all.Dependencies
			res := read()
			n := len(res.Services) + len(res.EndpointSlices) + len(res.Secrets) + len(res.ConfigMaps)
			res.Secrets = keep(res.Secrets, func(nn types.NamespacedName) bool { return deps.Secrets[nn] })
			res.ConfigMaps = keep(res.ConfigMaps, func(nn types.NamespacedName) bool { return deps.ConfigMaps[nn] })
			if !deps.AllServices {
				res.Services = keep(res.Services, func(nn types.NamespacedName) bool { return deps.Services[nn] })
			}
			// Even when every Service's addresses count (AllServices),
			// only the EndpointSlices of those looked up do: the
			// controller caches no others.
			res.EndpointSlices = slices.DeleteFunc(res.EndpointSlices, func(es *discoveryv1.EndpointSlice) bool {
				return !deps.Services[types.NamespacedName{Namespace: es.Namespace, Name: es.Labels[discoveryv1.LabelServiceName]}]
			})
			left += n - (len(res.Services) + len(res.EndpointSlices) + len(res.Secrets) + len(res.ConfigMaps))
			if got, want := dump(t, translate.Translate(res, opts)), dump(t, all); !bytes.Equal(got, want) {
				t.Errorf("the translation without what its Dependencies leave out differs:\n%s", diff(string(want), string(got)))
			}
		})
	}
	if left == 0 {
		t.Error("no fixture has a Service, Secret or ConfigMap its translation does not depend on: the test shows nothing")
	}
}

func keep[T metav1.Object](objs []T, wanted func(types.NamespacedName) bool) []T {
	return slices.DeleteFunc(objs, func(o T) bool {
		return !wanted(types.NamespacedName{Namespace: o.GetNamespace(), Name: o.GetName()})
	})
}
