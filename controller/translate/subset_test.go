package translate_test

import (
	"bytes"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/types"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/toolgate/toolgate/controller/translate"
	"github.com/toolgate/toolgate/gateway"
)

// TestForGatewaysKeepsSnapshots translates every fixture whole, then once
// per Gateway restricted to that Gateway (Resources.ForGateways): each
// Gateway's snapshot must be the same byte for byte, or be missing from
// both. Fixtures with static addresses must refuse the restriction.
func TestForGatewaysKeepsSnapshots(t *testing.T) {
	compared, refused := 0, 0
	eachFixture(t, func(t *testing.T, res *translate.Resources, opts translate.Options, whole *translate.Result) {
		for _, gw := range res.Gateways {
			nn := types.NamespacedName{Namespace: gw.Namespace, Name: gw.Name}
			static := claimsStaticAddresses(gw)
			sub, ok := res.ForGateways(map[types.NamespacedName]bool{nn: true})
			if ok == static {
				t.Fatalf("ForGateways(%s) ok = %v; want %v (claims static addresses: %v)", nn, ok, !static, static)
			}
			if !ok {
				refused++
				continue
			}
			part := translate.Translate(sub, opts)
			want, got := encoded(t, whole, nn), encoded(t, part, nn)
			if !bytes.Equal(want, got) {
				t.Errorf("snapshot of %s translated alone differs from the whole translation's:\n%s", nn, diff(string(want), string(got)))
			}
			for other := range part.Gateways {
				if other != nn {
					t.Errorf("translated alone, %s also has a snapshot for %s", nn, other)
				}
			}
			compared++
		}
	})
	// The fixtures hold dozens of Gateways: a restriction that compared
	// none would prove nothing.
	if compared < 35 || refused == 0 {
		t.Fatalf("compared %d Gateways' snapshots, refused %d; want at least 35 compared and some refused", compared, refused)
	}
}

// claimsStaticAddresses reports whether gw's spec.addresses has an entry
// of type IPAddress with a value.
func claimsStaticAddresses(gw *gwv1.Gateway) bool {
	for _, a := range gw.Spec.Addresses {
		if a.Value != "" && (a.Type == nil || *a.Type == gwv1.IPAddressType) {
			return true
		}
	}
	return false
}

// eachFixture runs check on every fixture, in a subtest of its own, with
// the fixture's inputs, the options of TestTranslate and the translation
// of the whole.
func eachFixture(t *testing.T, check func(t *testing.T, res *translate.Resources, opts translate.Options, whole *translate.Result)) {
	t.Helper()
	inputs, loader, validator := fixtures(t)
	for _, in := range inputs {
		t.Run(strings.TrimSuffix(filepath.Base(in), ".in.yaml"), func(t *testing.T) {
			res := readFixture(t, loader, in)
			opts := translate.Options{Admission: validator}
			check(t, res, opts, translate.Translate(res, opts))
		})
	}
}

// encoded is gw's snapshot in r in its wire form, or nil when r has none.
func encoded(t *testing.T, r *translate.Result, gw types.NamespacedName) []byte {
	t.Helper()
	cfg, ok := r.Gateways[gw]
	if !ok {
		return nil
	}
	data, err := gateway.EncodeConfig(cfg.Redacted())
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// TestMCPServerGatewaysCoverWhatItChanges removes each MCPServer of every
// fixture in turn: every Gateway whose snapshot that changes must be one
// MCPServerGateways names.
func TestMCPServerGatewaysCoverWhatItChanges(t *testing.T) {
	changed := 0
	eachFixture(t, func(t *testing.T, res *translate.Resources, opts translate.Options, whole *translate.Result) {
		for i, m := range res.MCPServers {
			named := map[types.NamespacedName]bool{}
			for _, gw := range translate.MCPServerGateways(m, res.HTTPRoutes, res.ListenerSets) {
				named[gw] = true
			}
			without := *res
			without.MCPServers = append(slices.Clone(res.MCPServers[:i]), res.MCPServers[i+1:]...)
			after := translate.Translate(&without, opts)
			for _, gw := range res.Gateways {
				nn := types.NamespacedName{Namespace: gw.Namespace, Name: gw.Name}
				if bytes.Equal(encoded(t, whole, nn), encoded(t, after, nn)) {
					continue
				}
				changed++
				if !named[nn] {
					t.Errorf("removing MCPServer %s/%s changes the snapshot of %s, which MCPServerGateways does not name", m.Namespace, m.Name, nn)
				}
			}
		}
	})
	// Removing MCPServers changes many snapshots of the fixtures: none
	// would prove nothing.
	if changed < 8 {
		t.Fatalf("removing MCPServers changed %d snapshots; want at least 8", changed)
	}
}
