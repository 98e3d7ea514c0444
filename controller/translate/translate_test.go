package translate_test

import (
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/toolgate/toolgate/apis/v1alpha1"
	"github.com/toolgate/toolgate/controller/admission"
	"github.com/toolgate/toolgate/controller/load"
	"github.com/toolgate/toolgate/controller/translate"
	"github.com/toolgate/toolgate/filter"
	"github.com/toolgate/toolgate/gateway"
)

// An MCPServer stored before the CRD refused perUser without auth (or
// written around admission) is reported, not enforced half-way.
func TestRateLimitingConfigValidIsFalseForPerUserWithoutAuth(t *testing.T) {
	validator, err := admission.New()
	if err != nil {
		t.Fatal(err)
	}
	m := &v1alpha1.MCPServer{
		ObjectMeta: metav1.ObjectMeta{Name: "legacy", Namespace: "default", Generation: 7},
		Spec: v1alpha1.MCPServerSpec{
			ServiceRef: v1alpha1.ServiceReference{Name: "mcp", Port: 80},
			Path:       "/mcp", Transport: v1alpha1.TransportStreamableHTTP,
			RateLimiting: &v1alpha1.RateLimiting{
				PerUser: &v1alpha1.Bucket{MaxTokens: 5, RefillPeriod: metav1.Duration{Duration: time.Minute}},
			},
		},
	}
	res := translate.Translate(&translate.Resources{MCPServers: []*v1alpha1.MCPServer{m}}, translate.Options{Admission: validator})
	nn := types.NamespacedName{Namespace: "default", Name: "legacy"}
	if _, ok := res.Policies[nn]; ok {
		t.Error("an invalid MCPServer produced a policy")
	}
	status := res.Status.MCPServers[nn]
	if status == nil || status.ObservedGeneration != 7 {
		t.Fatalf("status = %+v, want observedGeneration 7", status)
	}
	var found bool
	for _, c := range status.Conditions {
		if c.Type != v1alpha1.ConditionRateLimitingConfigValid {
			continue
		}
		found = true
		if c.Status != metav1.ConditionFalse || c.Reason != translate.ReasonInvalid || c.ObservedGeneration != 7 {
			t.Errorf("condition = %+v, want False/Invalid at generation 7", c)
		}
		if !strings.Contains(c.Message, "rateLimiting.perUser needs spec.auth.oidc") {
			t.Errorf("message %q does not say what to fix", c.Message)
		}
	}
	if !found {
		t.Error("no RateLimitingConfigValid condition")
	}
}

// Whoever can write an EndpointSlice must not reach the proxy's own
// loopback (its admin port) through a route, unless the mode says backends
// live there (standalone, or a proxy in development).
func TestLoopbackEndpointsAreKeptOnlyWhenAllowed(t *testing.T) {
	cases := []struct {
		name        string
		addressType string
		address     string
		without     string // the endpoint without LoopbackEndpoints; "" when left out
		with        string // the endpoint with it
	}{
		{"a name under localhost is the loopback address", "FQDN", "mcp.localhost", "", "127.0.0.1:8000"},
		{"localhost names are matched without regard to case or a final dot", "FQDN", "MCP.Localhost.", "", "127.0.0.1:8000"},
		{"another name is kept for the resolver", "FQDN", "mcp.example.com", "mcp.example.com:8000", "mcp.example.com:8000"},
		{"a loopback IP written as a name", "FQDN", "127.0.0.1", "", "127.0.0.1:8000"},
		{"the unspecified IP written as a name", "FQDN", "0.0.0.0", "", "0.0.0.0:8000"},
		{"a link-local IP written as a name", "FQDN", "169.254.169.254", "", "169.254.169.254:8000"},
		{"a loopback IPv4 address", "IPv4", "127.0.0.1", "", "127.0.0.1:8000"},
		{"a loopback IPv6 address", "IPv6", "::1", "", "[::1]:8000"},
		{"a routable IPv4 address", "IPv4", "10.1.0.1", "10.1.0.1:8000", "10.1.0.1:8000"},
		{"a routable IPv6 address", "IPv6", "2001:db8::1", "[2001:db8::1]:8000", "[2001:db8::1]:8000"},
	}
	loader, err := load.New()
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			res, err := loader.Read(strings.NewReader(fmt.Sprintf(loopbackFixture, tc.addressType, tc.address)), "fixture")
			if err != nil {
				t.Fatal(err)
			}
			for _, allowed := range []bool{false, true} {
				want := map[bool]string{false: tc.without, true: tc.with}[allowed]
				out := translate.Translate(res, translate.Options{LoopbackEndpoints: allowed})
				cfg := out.Gateways[types.NamespacedName{Namespace: "apps", Name: "gw"}]
				if cfg == nil || len(cfg.Listeners) != 1 {
					t.Fatalf("no snapshot of apps/gw: %+v", out.Status.Gateways)
				}
				endpoints := cfg.Listeners[0].VirtualHosts[0].Routes[0].Rules[0].Backends[0].Endpoints
				if got := strings.Join(endpoints, ","); got != want {
					t.Errorf("LoopbackEndpoints=%v: %s %q gives endpoints %q, want %q", allowed, tc.addressType, tc.address, got, want)
				}
			}
		})
	}
}

// routeToMCPFixture is a Gateway apps/gw and a route apps/r to port 80 of
// Service apps/mcp, which the fixtures below define.
const routeToMCPFixture = `
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: toolgate}
spec: {controllerName: toolgate.dev/gateway-controller}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw, namespace: apps}
spec:
  gatewayClassName: toolgate
  listeners: [{name: http, protocol: HTTP, port: 80}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: r, namespace: apps}
spec:
  parentRefs: [{name: gw}]
  rules: [{backendRefs: [{name: mcp, port: 80}]}]
`

// loopbackFixture is a route to a Service with one EndpointSlice of the
// given address type and address.
const loopbackFixture = routeToMCPFixture + `---
apiVersion: v1
kind: Service
metadata: {name: mcp, namespace: apps}
spec: {ports: [{port: 80, name: http}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: mcp-1, namespace: apps, labels: {kubernetes.io/service-name: mcp}}
addressType: %s
ports: [{name: http, port: 8000}]
endpoints: [{addresses: ["%s"]}]
`

// An ExternalName Service is a backend the proxy dials by name, unless
// the name would reach the proxy itself (standalone mode, whose files are
// the operator's own, maps localhost to loopback as it does for
// EndpointSlices) or the controller refuses ExternalName Services.
func TestExternalNamesAreDialedUnlessTheModeRefusesThem(t *testing.T) {
	cases := []struct {
		name         string
		externalName string
		opts         translate.Options
		want         string // the endpoint; "" when the backend is refused
	}{
		{"a name is dialed at the Service's port", "mcp.vendor.example", translate.Options{}, "mcp.vendor.example:80"},
		{"localhost is refused in proxy mode", "localhost", translate.Options{}, ""},
		{"localhost is the loopback address in standalone mode", "localhost", translate.Options{LoopbackEndpoints: true}, "127.0.0.1:80"},
		{"a loopback IP is allowed in standalone mode", "127.0.0.1", translate.Options{LoopbackEndpoints: true}, "127.0.0.1:80"},
		{"an IPv6 address is written with brackets", "2001:db8::7", translate.Options{}, "[2001:db8::7]:80"},
		{"every name is refused when the controller refuses ExternalName", "mcp.vendor.example", translate.Options{RefuseExternalNames: true}, ""},
	}
	loader, err := load.New()
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			res, err := loader.Read(strings.NewReader(fmt.Sprintf(externalNameFixture, tc.externalName)), "fixture")
			if err != nil {
				t.Fatal(err)
			}
			out := translate.Translate(res, tc.opts)
			cfg := out.Gateways[types.NamespacedName{Namespace: "apps", Name: "gw"}]
			if cfg == nil || len(cfg.Listeners) != 1 {
				t.Fatalf("no snapshot of apps/gw: %+v", out.Status.Gateways)
			}
			b := cfg.Listeners[0].VirtualHosts[0].Routes[0].Rules[0].Backends[0]
			if got := strings.Join(b.Endpoints, ","); got != tc.want || b.Invalid != (tc.want == "") {
				t.Errorf("endpoints %q (invalid %v), want %q", got, b.Invalid, tc.want)
			}
			conditions := out.Status.HTTPRoutes[types.NamespacedName{Namespace: "apps", Name: "r"}][0].Conditions
			resolved := conditions[1]
			if tc.want == "" && (resolved.Status != metav1.ConditionFalse || resolved.Reason != "RefNotPermitted") {
				t.Errorf("ResolvedRefs = %+v, want False RefNotPermitted", resolved)
			}
		})
	}
}

// externalNameFixture is a route to an ExternalName Service.
const externalNameFixture = routeToMCPFixture + `---
apiVersion: v1
kind: Service
metadata: {name: mcp, namespace: apps}
spec: {type: ExternalName, externalName: "%s", ports: [{port: 80, name: http}]}
`

// The snapshot carries what the data plane needs to serve, secrets
// included; only its redacted form (the golden files, /config) hides them.
// Each ExtensionRef carries its own copy of the MCPServer's policy.
func TestSnapshotsCarryKeysHeaderValuesAndPolicyCopies(t *testing.T) {
	loader, err := load.New()
	if err != nil {
		t.Fatal(err)
	}
	// snapshot translates a fixture and returns the snapshot of Gateway gw
	// with the translation's policies.
	snapshot := func(fixture string, gw types.NamespacedName) (*gateway.Config, map[types.NamespacedName]*filter.Policy) {
		t.Helper()
		f, err := os.Open(filepath.Join("testdata", fixture+".in.yaml"))
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = f.Close() }()
		res, err := loader.Read(f, f.Name())
		if err != nil {
			t.Fatal(err)
		}
		out := translate.Translate(res, translate.Options{})
		cfg := out.Gateways[gw]
		if cfg == nil {
			t.Fatalf("%s: no snapshot for Gateway %s", fixture, gw)
		}
		return cfg, out.Policies
	}

	cfg, _ := snapshot("https-certificates", types.NamespacedName{Namespace: "default", Name: "tls"})
	if c := cfg.Listeners[0].Certificates; len(c) == 0 || !strings.Contains(c[0].PrivateKeyPEM, "PRIVATE KEY") || !strings.Contains(c[0].CertificatePEM, "BEGIN CERTIFICATE") {
		t.Errorf("certificates = %+v, want the Secret's PEM certificate and key", c)
	}

	cfg, _ = snapshot("filters", types.NamespacedName{Namespace: "default", Name: "gw"})
	rule := cfg.Listeners[0].VirtualHosts[0].Routes[0].Rules[0]
	if m := rule.Filters[0].RequestHeaderModifier; m == nil || len(m.Set) == 0 || m.Set[0].Value != "toolgate" {
		t.Errorf("requestHeaderModifier = %+v, want the value toolgate", m)
	}
	if h := rule.Matches[0].Headers; len(h) == 0 || h[0].Value != "a" {
		t.Errorf("header matches = %+v, want the value a", h)
	}

	cfg, policies := snapshot("mcp-extensionref", types.NamespacedName{Namespace: "team-a", Name: "mcp"})
	ref := cfg.Listeners[0].VirtualHosts[0].Routes[0].Rules[0].Filters[0].ExtensionRef
	policy := policies[types.NamespacedName{Namespace: "team-a", Name: "github"}]
	if ref == nil || ref.MCPServer == nil || policy == nil || !reflect.DeepEqual(ref.MCPServer, policy) {
		t.Fatalf("extensionRef = %+v, want the policy %+v", ref, policy)
	}
	if ref.MCPServer == policy || ref.MCPServer.PerUser == policy.PerUser {
		t.Error("the snapshot shares its policy with Result.Policies")
	}
}

// An edit that breaks an MCPServer's authorization leaves its last valid
// policy serving, and its status says so; the memory forgets an MCPServer
// once it is gone, so that one created again under its name starts afresh.
func TestAnInvalidEditKeepsTheLastValidPolicyServing(t *testing.T) {
	memory := translate.NewPolicyMemory()
	server := func(uid types.UID, generation int64, when string) *v1alpha1.MCPServer {
		return &v1alpha1.MCPServer{
			ObjectMeta: metav1.ObjectMeta{Name: "github", Namespace: "default", UID: uid, Generation: generation},
			Spec: v1alpha1.MCPServerSpec{
				ServiceRef: v1alpha1.ServiceReference{Name: "mcp", Port: 80},
				Auth:       &v1alpha1.Auth{OIDC: &v1alpha1.OIDC{Issuer: "https://issuer.example.com", Audience: "toolgate"}},
				Authorization: &v1alpha1.Authorization{Rules: []v1alpha1.AuthorizationRule{
					{Name: "engineers", Tools: []string{"search"}, When: when},
				}},
			},
		}
	}
	nn := types.NamespacedName{Namespace: "default", Name: "github"}
	translateOne := func(m *v1alpha1.MCPServer) *translate.Result {
		var servers []*v1alpha1.MCPServer
		if m != nil {
			servers = append(servers, m)
		}
		return translate.Translate(&translate.Resources{MCPServers: servers}, translate.Options{Memory: memory})
	}
	conditionOf := func(res *translate.Result, kind string) metav1.Condition {
		for _, c := range res.Status.MCPServers[nn].Conditions {
			if c.Type == kind {
				return c
			}
		}
		return metav1.Condition{}
	}

	good := "'engineering' in claims.groups"
	res := translateOne(server("uid-1", 1, good))
	if p := res.Policies[nn]; p == nil || p.Authorization.Rules[0].When != good {
		t.Fatalf("generation 1: policy %+v", p)
	}

	res = translateOne(server("uid-1", 2, "claims.groups contains 'engineering'"))
	if p := res.Policies[nn]; p == nil || p.Authorization.Rules[0].When != good {
		t.Errorf("generation 2 is invalid: policy %+v, want generation 1's serving", p)
	}
	for _, kind := range []string{v1alpha1.ConditionAccepted, v1alpha1.ConditionAuthorizationValid} {
		c := conditionOf(res, kind)
		if c.Status != metav1.ConditionFalse || c.ObservedGeneration != 2 || !strings.Contains(c.Message, "the policy of generation 1 keeps serving") {
			t.Errorf("%s = %+v, want False at generation 2, saying generation 1 serves", kind, c)
		}
	}
	if c := conditionOf(res, v1alpha1.ConditionAuthorizationValid); !strings.Contains(c.Message, "authorization.rules[engineers].when") {
		t.Errorf("AuthorizationValid %q does not name the rule to fix", c.Message)
	}

	translateOne(nil) // deleted
	res = translateOne(server("uid-2", 1, "claims.groups contains 'engineering'"))
	if p := res.Policies[nn]; p != nil {
		t.Errorf("an MCPServer created again, invalid, serves %+v; want nothing", p)
	}
	if c := conditionOf(res, v1alpha1.ConditionAccepted); !strings.Contains(c.Message, "serves nothing") {
		t.Errorf("Accepted %q does not say it serves nothing", c.Message)
	}
}
