package controller_test

import (
	"context"
	"fmt"
	"net/http"
	"strconv"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/toolgate/toolgate/apis/v1alpha1"
	"github.com/toolgate/toolgate/controller"
	"github.com/toolgate/toolgate/controller/translate"
	"github.com/toolgate/toolgate/filter"
	"github.com/toolgate/toolgate/filter/limiter"
	"github.com/toolgate/toolgate/gateway"
	"github.com/toolgate/toolgate/internal/testissuer"
)

var _ = Describe("Proxy mode", func() {
	It("serves an MCPServer's per-user limit from the cluster and follows edits without a restart", func() {
		issuer, err := testissuer.Start()
		Expect(err).NotTo(HaveOccurred())
		DeferCleanup(issuer.Close)
		backendPort, stopBackend := startMCPBackendT(GinkgoT())
		DeferCleanup(stopBackend)

		By("declaring a Gateway, a selector-less Service with an EndpointSlice on localhost, an MCPServer and an HTTPRoute")
		ns := newNamespace()
		listenPort := freePortT(GinkgoT())
		gw := newGateway(ns, newGatewayClass(translate.ControllerName), listenPort)
		Expect(k8sClient.Create(ctx, &corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Name: "mcp", Namespace: ns},
			Spec:       corev1.ServiceSpec{Ports: []corev1.ServicePort{{Name: "mcp", Port: 80}}},
		})).To(Succeed())
		Expect(k8sClient.Create(ctx, &discoveryv1.EndpointSlice{
			ObjectMeta: metav1.ObjectMeta{Name: "mcp-1", Namespace: ns, Labels: map[string]string{discoveryv1.LabelServiceName: "mcp"}},
			// The API server refuses loopback IPs in EndpointSlices; an FQDN
			// slice under localhost (RFC 6761) names the backend on this host,
			// which the proxy below is told to allow (LoopbackEndpoints).
			AddressType: discoveryv1.AddressTypeFQDN,
			Ports:       []discoveryv1.EndpointPort{{Name: ptr("mcp"), Port: ptr(backendPort)}},
			Endpoints:   []discoveryv1.Endpoint{{Addresses: []string{"mcp.localhost"}}},
		})).To(Succeed())
		m := &v1alpha1.MCPServer{
			ObjectMeta: metav1.ObjectMeta{Name: "tools", Namespace: ns},
			Spec: v1alpha1.MCPServerSpec{
				ServiceRef: v1alpha1.ServiceReference{Name: "mcp", Port: 80},
				Auth:       &v1alpha1.Auth{OIDC: &v1alpha1.OIDC{Issuer: issuer.URL(), JWKSURL: issuer.JWKSURL(), Audience: "toolgate"}},
				RateLimiting: &v1alpha1.RateLimiting{
					PerUser: &v1alpha1.Bucket{MaxTokens: 2, RefillPeriod: metav1.Duration{Duration: time.Hour}},
				},
			},
		}
		Expect(k8sClient.Create(ctx, m)).To(Succeed())
		route := &gwv1.HTTPRoute{
			ObjectMeta: metav1.ObjectMeta{Name: "tools", Namespace: ns},
			Spec: gwv1.HTTPRouteSpec{
				CommonRouteSpec: gwv1.CommonRouteSpec{ParentRefs: []gwv1.ParentReference{{Name: gwv1.ObjectName(gw.Name)}}},
				Rules: []gwv1.HTTPRouteRule{{
					Filters: []gwv1.HTTPRouteFilter{extensionRef("tools")},
					BackendRefs: []gwv1.HTTPBackendRef{{BackendRef: gwv1.BackendRef{BackendObjectReference: gwv1.BackendObjectReference{
						Group: ptr(gwv1.Group("toolgate.dev")), Kind: ptr(gwv1.Kind("MCPServer")), Name: "tools",
					}}}},
				}},
			},
		}
		Expect(k8sClient.Create(ctx, route)).To(Succeed())

		By("running the proxy in this process against the API server")
		shared, err := filter.NewShared(filter.SharedOptions{Store: limiter.NewMemory(limiter.MemoryOptions{})})
		Expect(err).NotTo(HaveOccurred())
		server, err := gateway.New(gateway.Options{Logger: discard})
		Expect(err).NotTo(HaveOccurred())
		mgr, err := ctrl.NewManager(kube.Config, ctrl.Options{
			Scheme: scheme, Metrics: metricsserver.Options{BindAddress: "0"}, HealthProbeBindAddress: "0",
		})
		Expect(err).NotTo(HaveOccurred())
		Expect(controller.SetupProxy(mgr, controller.ProxyOptions{
			Gateway: types.NamespacedName{Namespace: ns, Name: gw.Name},
			Server:  server, Filters: shared, ListenAddress: "127.0.0.1", Logger: discard,
			LoopbackEndpoints: true, // the backend runs on this host
		})).To(Succeed())
		proxyCtx, stopProxy := context.WithCancel(ctx)
		DeferCleanup(func() {
			stopProxy()
			sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			_ = server.Shutdown(sctx)
		})
		go func() {
			defer GinkgoRecover()
			Expect(mgr.Start(proxyCtx)).To(Succeed())
		}()

		url := "http://127.0.0.1:" + strconv.Itoa(int(listenPort)) + "/mcp"
		alice, err := issuer.Token("alice", "toolgate")
		Expect(err).NotTo(HaveOccurred())
		bob, err := issuer.Token("bob", "toolgate")
		Expect(err).NotTo(HaveOccurred())

		By("allowing a user's first two calls")
		Eventually(func() int { code, _, _ := rawCall(url, alice, "expensive_tool", 1); return code }, wait, poll).Should(Equal(http.StatusOK))
		code, _, _ := rawCall(url, alice, "expensive_tool", 2)
		Expect(code).To(Equal(http.StatusOK))

		By("refusing the third with 429, Retry-After and -32029")
		code, retryAfter, body := rawCall(url, alice, "other_tool", 3)
		Expect(code).To(Equal(http.StatusTooManyRequests))
		Expect(strconv.Atoi(retryAfter)).To(BeNumerically(">=", 1))
		Expect(body).To(HaveKeyWithValue("id", BeNumerically("==", 3)))
		rpcErr := body["error"].(map[string]any)
		Expect(rpcErr).To(HaveKeyWithValue("code", BeNumerically("==", -32029)))
		Expect(rpcErr["data"]).To(HaveKeyWithValue("retryAfterSeconds", BeNumerically(">=", 1)))

		By("leaving another user's bucket alone")
		code, _, _ = rawCall(url, bob, "expensive_tool", 4)
		Expect(code).To(Equal(http.StatusOK))

		By("raising the limit by editing the MCPServer, with nothing restarted")
		Expect(change(m, func() { m.Spec.RateLimiting.PerUser.MaxTokens = 5 })).To(Succeed())
		edited := time.Now()
		// Each attempt is a new user: the third call passes only under the new
		// limit. (A bucket keeps the time at which it is full again, so
		// raising the limit does not refill buckets already drained.)
		attempt := 0
		Eventually(func() int {
			attempt++
			token, err := issuer.Token(fmt.Sprintf("carol-%d", attempt), "toolgate")
			Expect(err).NotTo(HaveOccurred())
			var code int
			for i := range 3 {
				code, _, _ = rawCall(url, token, "other_tool", 10+i)
			}
			return code
		}, wait, poll).Should(Equal(http.StatusOK))
		// A measurement for the record, not an assertion: how long the edit
		// took to reach the serving snapshot, polled every 100ms.
		fmt.Fprintf(GinkgoWriter, "the edited limit was served %s after the update\n", time.Since(edited).Round(time.Millisecond))
	})
})
