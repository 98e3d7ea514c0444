package translate_test

import (
	"fmt"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/toolgate/toolgate/apis/v1alpha1"
	"github.com/toolgate/toolgate/controller/admission"
	"github.com/toolgate/toolgate/controller/translate"
)

// scaleResources are 200 Gateways with five routes each, every route with
// its own MCPServer (with a per-user bucket and authentication), Service
// and EndpointSlice: hack/scale's routed objects.
func scaleResources() *translate.Resources {
	res := &translate.Resources{
		GatewayClasses: []*gwv1.GatewayClass{{ObjectMeta: metav1.ObjectMeta{Name: "toolgate"}, Spec: gwv1.GatewayClassSpec{ControllerName: translate.ControllerName}}},
		DataPlanes:     map[types.NamespacedName]translate.DataPlane{},
	}
	pathPrefix := gwv1.PathMatchPathPrefix
	for g := range 200 {
		ns, gw := fmt.Sprintf("team-%d", g%10), fmt.Sprintf("gw-%d", g)
		host := gwv1.Hostname(gw + ".example.com")
		res.Gateways = append(res.Gateways, &gwv1.Gateway{
			ObjectMeta: metav1.ObjectMeta{Name: gw, Namespace: ns, Generation: 1},
			Spec: gwv1.GatewaySpec{GatewayClassName: "toolgate", Listeners: []gwv1.Listener{{
				Name: "http", Protocol: gwv1.HTTPProtocolType, Port: 8080, Hostname: &host,
			}}},
		})
		res.DataPlanes[types.NamespacedName{Namespace: ns, Name: gw}] = translate.DataPlane{Ready: true, Replicas: 1}
		for r := range 5 {
			name := fmt.Sprintf("%s-r%d", gw, r)
			port := gwv1.PortNumber(8080)
			value := "/" + name
			res.Services = append(res.Services, &corev1.Service{
				ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
				Spec:       corev1.ServiceSpec{Ports: []corev1.ServicePort{{Name: "mcp", Port: 8080}}},
			})
			ready := true
			res.EndpointSlices = append(res.EndpointSlices, &discoveryv1.EndpointSlice{
				ObjectMeta:  metav1.ObjectMeta{Name: name + "-1", Namespace: ns, Labels: map[string]string{discoveryv1.LabelServiceName: name}},
				AddressType: discoveryv1.AddressTypeIPv4,
				Endpoints:   []discoveryv1.Endpoint{{Addresses: []string{fmt.Sprintf("10.%d.%d.%d", 1+g/250, g%250, 1+r)}, Conditions: discoveryv1.EndpointConditions{Ready: &ready}}},
				Ports:       []discoveryv1.EndpointPort{{Port: ptr(int32(8080))}},
			})
			res.MCPServers = append(res.MCPServers, &v1alpha1.MCPServer{
				ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Generation: 1, UID: types.UID(ns + "/" + name)},
				Spec: v1alpha1.MCPServerSpec{
					ServiceRef: v1alpha1.ServiceReference{Name: name, Port: 8080},
					Path:       "/mcp",
					Auth:       &v1alpha1.Auth{OIDC: &v1alpha1.OIDC{Issuer: "https://issuer.example.com", Audience: "mcp"}},
					RateLimiting: &v1alpha1.RateLimiting{
						PerUser: &v1alpha1.Bucket{MaxTokens: 100, RefillPeriod: metav1.Duration{Duration: time.Minute}},
					},
				},
			})
			res.HTTPRoutes = append(res.HTTPRoutes, &gwv1.HTTPRoute{
				ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Generation: 1},
				Spec: gwv1.HTTPRouteSpec{
					CommonRouteSpec: gwv1.CommonRouteSpec{ParentRefs: []gwv1.ParentReference{{Name: gwv1.ObjectName(gw)}}},
					Rules: []gwv1.HTTPRouteRule{{
						Matches: []gwv1.HTTPRouteMatch{{Path: &gwv1.HTTPPathMatch{Type: &pathPrefix, Value: &value}}},
						Filters: []gwv1.HTTPRouteFilter{{Type: gwv1.HTTPRouteFilterExtensionRef, ExtensionRef: &gwv1.LocalObjectReference{
							Group: gwv1.Group(v1alpha1.GroupVersion.Group), Kind: "MCPServer", Name: gwv1.ObjectName(name),
						}}},
						BackendRefs: []gwv1.HTTPBackendRef{{BackendRef: gwv1.BackendRef{BackendObjectReference: gwv1.BackendObjectReference{
							Name: gwv1.ObjectName(name), Port: &port,
						}}}},
					}},
				},
			})
		}
	}
	return res
}

// BenchmarkTranslateAtScale translates hack/scale's routed objects: what
// each reconcile of the controller costs there.
func BenchmarkTranslateAtScale(b *testing.B) {
	validator, err := admission.New()
	if err != nil {
		b.Fatal(err)
	}
	res := scaleResources()
	opts := translate.Options{Admission: validator, Memory: translate.NewPolicyMemory()}
	out := translate.Translate(res, opts)
	if len(out.Gateways) != 200 || len(out.Policies) != 1000 {
		b.Fatalf("translated %d Gateways and %d policies, want 200 and 1000", len(out.Gateways), len(out.Policies))
	}
	b.ReportAllocs()
	for b.Loop() {
		translate.Translate(res, opts)
	}
}
