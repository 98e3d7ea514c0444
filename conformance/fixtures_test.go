package conformance

import (
	"context"
	"net/http"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/toolgate/toolgate/apis/v1alpha1"
	"github.com/toolgate/toolgate/conformance/env"
)

// Names inside every tenant namespace.
const (
	serviceName     = "mcp"
	servicePortName = "mcp"
	servicePort     = 8080
	mcpServerName   = "tools"
	routeName       = "mcp"
)

// tenant is one spec's share of the cluster: a namespace of its own (so its
// MCPServers, and so their buckets, are its own), with a selector-less
// Service whose EndpointSlice points at the go-sdk backend, and a path on
// a Gateway, /<namespace>/mcp: the suite's, unless the spec sets another.
type tenant struct {
	Namespace string
	Path      string
	// Gateway is the parent of the tenant's HTTPRoute, and ListenerPort
	// the port of its listener env.ListenerName.
	Gateway      types.NamespacedName
	ListenerPort int
}

// newTenant creates a tenant's namespace, Service and EndpointSlice, and
// deletes them when the spec ends.
func newTenant(ctx context.Context, theme string) *tenant {
	GinkgoHelper()
	t := &tenant{Namespace: "tg-" + theme + "-" + env.RandomSuffix(), Gateway: world.Gateway, ListenerPort: world.ListenerPort}
	t.Path = "/" + t.Namespace + "/mcp"
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: serviceName, Namespace: t.Namespace},
		Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{{
			Name: servicePortName, Port: servicePort, Protocol: corev1.ProtocolTCP,
		}}},
	}
	create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: t.Namespace}})
	create(ctx, svc)
	create(ctx, world.EndpointSliceFor(svc))
	return t
}

// create creates obj and deletes it when the spec ends. Cleanups run in
// reverse order, so a namespace goes after what it holds.
func create(ctx context.Context, obj client.Object) {
	GinkgoHelper()
	Expect(world.Client.Create(ctx, obj)).To(Succeed(), "create %T %s/%s", obj, obj.GetNamespace(), obj.GetName())
	DeferCleanup(func(ctx SpecContext) {
		err := world.Client.Delete(ctx, obj)
		if err != nil && !apierrors.IsNotFound(err) {
			Expect(err).NotTo(HaveOccurred(), "delete %T %s/%s", obj, obj.GetNamespace(), obj.GetName())
		}
	})
}

// bucket is a token bucket of maxTokens refilled in period.
func bucket(maxTokens int64, period time.Duration) *v1alpha1.Bucket {
	return &v1alpha1.Bucket{MaxTokens: maxTokens, RefillPeriod: metav1.Duration{Duration: period}}
}

// mcpServer is an MCPServer for the tenant's Service, with callers
// authenticated by the suite's issuer, and the given limits.
func (t *tenant) mcpServer(name string, limits *v1alpha1.RateLimiting) *v1alpha1.MCPServer {
	return &v1alpha1.MCPServer{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: t.Namespace},
		Spec: v1alpha1.MCPServerSpec{
			ServiceRef: v1alpha1.ServiceReference{Name: serviceName, Port: servicePort},
			Path:       t.Path, // the backend picks the tenant from the path's first segment
			Auth: &v1alpha1.Auth{OIDC: &v1alpha1.OIDC{
				Issuer:   world.Issuer.URL,
				JWKSURL:  world.Issuer.JWKSURL,
				Audience: env.Audience,
				// The suite's issuer serves plain HTTP on loopback or the
				// node's address.
				AllowInsecureHTTP: true,
			}},
			RateLimiting: limits,
		},
	}
}

// backendKind says what an HTTPRoute's backendRef names.
type backendKind int

const (
	// backendMCPServer routes to the MCPServer's Service through the
	// MCPServer itself.
	backendMCPServer backendKind = iota
	// backendService routes to the Service directly.
	backendService
)

// route is the tenant's HTTPRoute: requests under its path go through the
// ExtensionRef filter of MCPServer policy, then to the backend.
func (t *tenant) route(policy string, backend backendKind) *gwv1.HTTPRoute {
	gwNamespace := gwv1.Namespace(t.Gateway.Namespace)
	section := env.ListenerName
	prefix := gwv1.PathMatchPathPrefix
	ref := gwv1.BackendObjectReference{Name: gwv1.ObjectName(policy)}
	switch backend {
	case backendMCPServer:
		group, kind := gwv1.Group(v1alpha1.GroupVersion.Group), gwv1.Kind("MCPServer")
		ref.Group, ref.Kind = &group, &kind
	case backendService:
		port := gwv1.PortNumber(servicePort)
		ref.Name, ref.Port = serviceName, &port
	}
	return &gwv1.HTTPRoute{
		ObjectMeta: metav1.ObjectMeta{Name: routeName, Namespace: t.Namespace},
		Spec: gwv1.HTTPRouteSpec{
			CommonRouteSpec: gwv1.CommonRouteSpec{ParentRefs: []gwv1.ParentReference{{
				Namespace:   &gwNamespace,
				Name:        gwv1.ObjectName(t.Gateway.Name),
				SectionName: &section,
			}}},
			Rules: []gwv1.HTTPRouteRule{{
				Matches: []gwv1.HTTPRouteMatch{{Path: &gwv1.HTTPPathMatch{Type: &prefix, Value: &t.Path}}},
				Filters: []gwv1.HTTPRouteFilter{{
					Type: gwv1.HTTPRouteFilterExtensionRef,
					ExtensionRef: &gwv1.LocalObjectReference{
						Group: gwv1.Group(v1alpha1.GroupVersion.Group), Kind: "MCPServer", Name: gwv1.ObjectName(policy),
					},
				}},
				BackendRefs: []gwv1.HTTPBackendRef{{BackendRef: gwv1.BackendRef{BackendObjectReference: ref}}},
			}},
		},
	}
}

// deploy creates an MCPServer with limits and a route through it, and
// waits until every proxy serves the route with the MCPServer's policy.
func (t *tenant) deploy(ctx context.Context, limits *v1alpha1.RateLimiting) {
	GinkgoHelper()
	create(ctx, t.mcpServer(mcpServerName, limits))
	create(ctx, t.route(mcpServerName, backendMCPServer))
	t.waitServed(ctx)
}

// waitServed waits until every proxy opens MCP sessions on the tenant's
// path for an authenticated user, which needs the route and its MCPServer.
func (t *tenant) waitServed(ctx context.Context) {
	GinkgoHelper()
	token := tokenFor("readiness-probe")
	for _, p := range world.Proxies {
		Eventually(func(g Gomega) {
			c := newRawClient(p.URL, t.Path, token)
			g.Expect(c.initialize(ctx)).To(Succeed())
		}).WithContext(ctx).Should(Succeed(), "%s does not serve %s", p.Name, t.Path)
	}
}

// tokenFor is a valid token of the suite's issuer for user.
func tokenFor(user string) string {
	GinkgoHelper()
	token, err := world.Issuer.Token(user)
	Expect(err).NotTo(HaveOccurred())
	return token
}

// rawSession opens a raw client's MCP session for user through the first
// proxy.
func (t *tenant) rawSession(ctx context.Context, user string) *rawClient {
	GinkgoHelper()
	c := newRawClient(world.Proxies[0].URL, t.Path, tokenFor(user))
	Expect(c.initialize(ctx)).To(Succeed())
	return c
}

// expectCalls calls tool n times and expects each call to end with status:
// 200 with a tool result, or 429 with the rate-limit error.
func expectCalls(ctx context.Context, c *rawClient, tool string, n int, status int) {
	GinkgoHelper()
	for i := range n {
		resp, err := c.callTool(ctx, i+1, tool)
		Expect(err).NotTo(HaveOccurred())
		Expect(resp.Status).To(Equal(status), "call %d of %d to %s: %s", i+1, n, tool, resp)
		Expect(resp.Message).NotTo(BeNil(), "call %d of %d to %s: no JSON-RPC response in %s", i+1, n, tool, resp)
		switch status {
		case http.StatusOK:
			Expect(resp.Message.Error).To(BeNil(), "call %d of %d to %s: %s", i+1, n, tool, resp)
		case http.StatusTooManyRequests:
			Expect(resp.Message.Error).NotTo(BeNil(), "call %d of %d to %s: %s", i+1, n, tool, resp)
			Expect(resp.Message.Error.Code).To(Equal(rateLimitedCode), "call %d of %d to %s: %s", i+1, n, tool, resp)
		}
	}
}

// key names an object of the tenant.
func (t *tenant) key(name string) types.NamespacedName {
	return types.NamespacedName{Namespace: t.Namespace, Name: name}
}
