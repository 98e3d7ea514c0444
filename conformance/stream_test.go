package conformance

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/retry"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	coordinationv1 "k8s.io/api/coordination/v1"

	"github.com/toolgate/toolgate/apis/v1alpha1"
	"github.com/toolgate/toolgate/conformance/env"
	"github.com/toolgate/toolgate/controller/configstream"
	"github.com/toolgate/toolgate/controller/pki"
)

var _ = Describe("The config stream", Label(labelProcesses), func() {
	BeforeEach(func() { requireProcesses() })

	It("carries every edit to the proxies, which never talk to the API server", func(ctx SpecContext) {
		for _, p := range world.Proxies {
			Expect(strings.Join(p.Args(), " ")).NotTo(ContainSubstring("kubeconfig"), "%s runs without API credentials", p.Name)
		}
		t := newTenant(ctx, "stream")
		create(ctx, t.mcpServer(mcpServerName, &v1alpha1.RateLimiting{PerUser: bucket(100, longRefill)}))
		start := time.Now()
		create(ctx, t.route(mcpServerName, backendMCPServer))
		t.waitServed(ctx)
		AddReportEntry("new route to served by every proxy", time.Since(start).Round(time.Millisecond).String())

		// An edit: a second path on the route, served at once.
		alias := "/" + t.Namespace + "-alias/mcp"
		start = time.Now()
		t.addPath(ctx, alias)
		for _, p := range world.Proxies {
			Eventually(func(g Gomega) {
				g.Expect(newRawClient(p.URL, alias, tokenFor("edit")).initialize(ctx)).To(Succeed())
			}).WithContext(ctx).Should(Succeed(), "%s serves %s", p.Name, alias)
		}
		AddReportEntry("route edit to served by every proxy", time.Since(start).Round(time.Millisecond).String())

		// Each proxy says which version it serves.
		for _, p := range world.Proxies {
			body := httpGet(ctx, p.AdminURL+"/readyz")
			Expect(body).To(MatchRegexp(`version [0-9a-f]{16}`), "%s /readyz", p.Name)
			Expect(httpGet(ctx, p.AdminURL+"/metrics")).To(ContainSubstring("toolgate_config_version_info{"), "%s /metrics", p.Name)
		}
	})

	It("gives a Gateway's proxies that Gateway's snapshot only, and refuses any other identity", func(ctx SpecContext) {
		// Gateway B, in a namespace of its own, with an HTTPS listener whose
		// certificate Secret and a route A's proxies must never see.
		ns := "tg-other-gw-" + env.RandomSuffix()
		create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}})
		certPEM, keyPEM := selfSigned("b.example.com")
		create(ctx, &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Name: "b-cert", Namespace: ns},
			Type:       corev1.SecretTypeTLS,
			Data:       map[string][]byte{corev1.TLSCertKey: certPEM, corev1.TLSPrivateKeyKey: keyPEM},
		})
		terminate := gwv1.TLSModeTerminate
		create(ctx, &gwv1.Gateway{
			ObjectMeta: metav1.ObjectMeta{Name: "b", Namespace: ns},
			Spec: gwv1.GatewaySpec{
				GatewayClassName: gwv1.ObjectName(world.GatewayClass),
				Listeners: []gwv1.Listener{{
					Name: "https", Protocol: gwv1.HTTPSProtocolType, Port: 8443, Hostname: ptrTo(gwv1.Hostname("b.example.com")),
					TLS: &gwv1.ListenerTLSConfig{Mode: &terminate, CertificateRefs: []gwv1.SecretObjectReference{{Name: "b-cert"}}},
				}},
			},
		})
		bRoute := &gwv1.HTTPRoute{
			ObjectMeta: metav1.ObjectMeta{Name: "b-only-route", Namespace: ns},
			Spec: gwv1.HTTPRouteSpec{
				CommonRouteSpec: gwv1.CommonRouteSpec{ParentRefs: []gwv1.ParentReference{{Name: "b"}}},
				Rules: []gwv1.HTTPRouteRule{{BackendRefs: []gwv1.HTTPBackendRef{{BackendRef: gwv1.BackendRef{
					BackendObjectReference: gwv1.BackendObjectReference{Name: "nowhere", Port: ptrTo(gwv1.PortNumber(80))},
				}}}}},
			},
		}
		create(ctx, bRoute)
		gwB := types.NamespacedName{Namespace: ns, Name: "b"}
		bDir, err := world.ConfigClientFiles(ctx, gwB)
		Expect(err).NotTo(HaveOccurred())
		aDir, err := world.ConfigClientFiles(ctx, world.Gateway)
		Expect(err).NotTo(HaveOccurred())

		// B's proxies get B's snapshot, with its route and certificate.
		Eventually(func(g Gomega) {
			status, body, err := readSnapshot(ctx, bDir, gwB)
			g.Expect(err).NotTo(HaveOccurred())
			g.Expect(status).To(Equal(http.StatusOK))
			g.Expect(body).To(ContainSubstring("b-only-route"))
			g.Expect(body).To(ContainSubstring(firstLine(certPEM, 2)))
		}).WithContext(ctx).Should(Succeed())

		// A's proxies never see any of it.
		status, body, err := readSnapshot(ctx, aDir, world.Gateway)
		Expect(err).NotTo(HaveOccurred())
		Expect(status).To(Equal(http.StatusOK))
		Expect(body).To(ContainSubstring(string(env.ListenerName)))
		Expect(body).NotTo(ContainSubstring("b-only-route"))
		Expect(body).NotTo(ContainSubstring(ns))
		Expect(body).NotTo(ContainSubstring(firstLine(certPEM, 2)))
		Expect(body).NotTo(ContainSubstring("PRIVATE KEY"))

		// B's certificate cannot read A's snapshot.
		status, body, err = readSnapshot(ctx, bDir, world.Gateway)
		Expect(err).NotTo(HaveOccurred())
		Expect(status).To(Equal(http.StatusForbidden), "%s", body)

		// A certificate for A from a CA that is not the controller's is
		// refused during the handshake, as is a client without one.
		forged := GinkgoT().TempDir()
		ca, err := pki.NewCA(time.Now())
		Expect(err).NotTo(HaveOccurred())
		forgedCert, forgedKey, err := ca.IssueClient(world.Gateway, time.Now(), time.Hour)
		Expect(err).NotTo(HaveOccurred())
		writeFiles(forged, map[string][]byte{
			corev1.TLSCertKey: forgedCert, corev1.TLSPrivateKeyKey: forgedKey, "ca.crt": mustRead(filepath.Join(aDir, "ca.crt")),
		})
		_, _, err = readSnapshot(ctx, forged, world.Gateway)
		Expect(err).To(HaveOccurred(), "a forged client certificate is refused")
		_, _, err = readSnapshotWithout(ctx, aDir, world.Gateway)
		Expect(err).To(HaveOccurred(), "a client without a certificate is refused")
	})

	It("keeps the proxies serving while the controller is away, and resyncs them when it is back", func(ctx SpecContext) {
		t := newTenant(ctx, "away")
		t.deploy(ctx, &v1alpha1.RateLimiting{PerUser: bucket(100, longRefill)})
		later := newTenant(ctx, "later")
		Expect(world.Controller.Stop(10 * time.Second)).To(Succeed())
		restarted := false
		DeferCleanup(func(ctx SpecContext) {
			if !restarted {
				Expect(world.RestartController(ctx)).To(Succeed())
			}
		})

		// With the controller gone, every proxy keeps serving its last
		// snapshot, and stays ready.
		create(ctx, later.mcpServer(mcpServerName, &v1alpha1.RateLimiting{PerUser: bucket(100, longRefill)}))
		create(ctx, later.route(mcpServerName, backendMCPServer))
		Consistently(func(g Gomega) {
			for _, p := range world.Proxies {
				g.Expect(newRawClient(p.URL, t.Path, tokenFor("away")).initialize(ctx)).To(Succeed(), "%s serves %s", p.Name, t.Path)
				g.Expect(httpStatus(ctx, p.AdminURL+"/readyz")).To(Equal(http.StatusOK), "%s is ready", p.Name)
			}
		}).WithContext(ctx).WithTimeout(3 * time.Second).WithPolling(500 * time.Millisecond).Should(Succeed())

		// Back: the proxies reconnect and pick up what changed meanwhile.
		start := time.Now()
		Expect(world.RestartController(ctx)).To(Succeed())
		restarted = true
		later.waitServed(ctx)
		AddReportEntry("controller restart to the missed edit served by every proxy", time.Since(start).Round(time.Millisecond).String())
	})

	It("is served by every controller replica, the leader or not", Label(labelOwnAPIServer), func(ctx SpecContext) {
		requireOwnAPIServer()
		// A Lease held by another replica keeps the new one from ever
		// leading: it must serve the stream all the same.
		create(ctx, &coordinationv1.Lease{
			ObjectMeta: metav1.ObjectMeta{Name: "toolgate-controller.toolgate.dev", Namespace: "toolgate-system"},
			Spec: coordinationv1.LeaseSpec{
				HolderIdentity:       ptrTo("another-replica"),
				LeaseDurationSeconds: ptrTo[int32](3600),
				AcquireTime:          &metav1.MicroTime{Time: time.Now()},
				RenewTime:            &metav1.MicroTime{Time: time.Now()},
			},
		})
		follower, followerURL, err := world.StartControllerReplica(ctx, "controller-follower")
		Expect(err).NotTo(HaveOccurred())
		DeferCleanup(func() { _ = follower.Stop(10 * time.Second) })
		dir, err := world.ConfigClientFiles(ctx, world.Gateway)
		Expect(err).NotTo(HaveOccurred())

		Eventually(func(g Gomega) {
			leader, err := streamRequest(ctx, world.StreamURL, dir, world.Gateway, true)
			g.Expect(err).NotTo(HaveOccurred())
			other, err := streamRequest(ctx, followerURL, dir, world.Gateway, true)
			g.Expect(err).NotTo(HaveOccurred())
			g.Expect(other.status).To(Equal(http.StatusOK), "%s", other.body)
			g.Expect(other.version).To(Equal(leader.version), "both replicas translate the same objects into the same snapshot")
			g.Expect(other.body).To(Equal(leader.body))
		}).WithContext(ctx).Should(Succeed())
		Expect(follower.LogSince(0, 1<<20)).To(ContainSubstring("Attempting to acquire leader lease"))
		Expect(follower.LogSince(0, 1<<20)).NotTo(ContainSubstring("successfully acquired lease"))
	})

	It("adds no API server requests or watches per proxy", Label(labelOwnAPIServer), func(ctx SpecContext) {
		requireOwnAPIServer()
		// What proxies could cost the API server is what the controller
		// does for them: a watch, a read or a review per connection. The
		// proxies themselves hold no credentials (the first spec). Count
		// the controller's own requests (the API server's audit log names
		// their user) while three proxies join, once it is quiet, and the
		// watches being served. Its leader Lease renewals go on regardless.
		controllerRequests := func(since int64) []string {
			all, err := world.ControllerRequests(since)
			Expect(err).NotTo(HaveOccurred())
			var requests []string
			for _, r := range all {
				if !strings.Contains(r, " leases ") {
					requests = append(requests, r)
				}
			}
			return requests
		}
		// The log names the controller's requests: its watches since it
		// started are there.
		since, err := world.ControllerRequests(0)
		Expect(err).NotTo(HaveOccurred())
		Expect(since).To(ContainElement(HavePrefix("watch gateways")), "the audit log records the controller's requests")
		// Quiet: the earlier specs' objects have settled, and the
		// controller made no request for two seconds.
		var mark int64
		Eventually(func(g Gomega) {
			start, err := world.AuditOffset()
			g.Expect(err).NotTo(HaveOccurred())
			time.Sleep(2 * time.Second)
			g.Expect(controllerRequests(start)).To(BeEmpty(), "the controller's requests meanwhile")
			mark, err = world.AuditOffset()
			g.Expect(err).NotTo(HaveOccurred())
		}).WithContext(ctx).Should(Succeed())
		watchesBefore, err := world.APIServerWatches(ctx)
		Expect(err).NotTo(HaveOccurred())

		var extra []*env.Proxy
		DeferCleanup(func() {
			for _, p := range extra {
				_ = p.Stop(10 * time.Second)
			}
		})
		for i, ip := range []string{"127.0.0.3", "127.0.0.4", "127.0.0.5"} {
			p, err := world.StartExtraProxy(ctx, fmt.Sprintf("proxy-extra-%d", i+1), ip)
			Expect(err).NotTo(HaveOccurred())
			extra = append(extra, p)
		}
		// Each new proxy is ready: it has its snapshot and waits on the
		// stream for the next.

		joined := controllerRequests(mark)
		watchesAfter, err := world.APIServerWatches(ctx)
		Expect(err).NotTo(HaveOccurred())
		AddReportEntry("API server watches", fmt.Sprintf("1 controller + 2 proxies: %.0f; 1 controller + 5 proxies: %.0f", watchesBefore, watchesAfter))
		Expect(joined).To(BeEmpty(), "the controller's requests while three proxies joined")
		// A watch the API server ends and the controller renews may be
		// counted twice for a moment; a watch per proxy would be three.
		Expect(watchesAfter - watchesBefore).To(BeNumerically("<", 2))
	})
})

// readSnapshot asks the config stream for gw's snapshot with the client
// certificate in dir, as a proxy does, and returns the answer.
func readSnapshot(ctx context.Context, dir string, gw types.NamespacedName) (int, string, error) {
	a, err := streamRequest(ctx, world.StreamURL, dir, gw, true)
	return a.status, a.body, err
}

// readSnapshotWithout asks without a client certificate.
func readSnapshotWithout(ctx context.Context, dir string, gw types.NamespacedName) (int, string, error) {
	a, err := streamRequest(ctx, world.StreamURL, dir, gw, false)
	return a.status, a.body, err
}

// streamAnswer is the config stream's answer to one request.
type streamAnswer struct {
	status  int
	body    string
	version string // the Toolgate-Config-Version header
}

func streamRequest(ctx context.Context, streamURL, dir string, gw types.NamespacedName, withCert bool) (streamAnswer, error) {
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(mustRead(filepath.Join(dir, "ca.crt"))) {
		return streamAnswer{}, fmt.Errorf("no CA in %s", dir)
	}
	cfg := &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS13}
	if withCert {
		cert, err := tls.LoadX509KeyPair(filepath.Join(dir, corev1.TLSCertKey), filepath.Join(dir, corev1.TLSPrivateKeyKey))
		if err != nil {
			return streamAnswer{}, err
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: cfg}, Timeout: 10 * time.Second}
	defer hc.CloseIdleConnections()
	url := fmt.Sprintf("%s/v1/gateways/%s/%s/config", streamURL, gw.Namespace, gw.Name)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return streamAnswer{}, err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return streamAnswer{}, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return streamAnswer{status: resp.StatusCode, body: string(body), version: resp.Header.Get(configstream.VersionHeader)}, err
}

// selfSigned is a throwaway certificate and key for host, in PEM.
func selfSigned(host string) (certPEM, keyPEM []byte) {
	GinkgoHelper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	Expect(err).NotTo(HaveOccurred())
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: host},
		DNSNames:     []string{host},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	Expect(err).NotTo(HaveOccurred())
	keyDER, err := x509.MarshalECPrivateKey(key)
	Expect(err).NotTo(HaveOccurred())
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER})
}

// firstLine returns line n (from 0) of a PEM block: a piece of its base64
// body that identifies it in a JSON document.
func firstLine(pemBytes []byte, n int) string {
	return strings.Split(string(pemBytes), "\n")[n]
}

func writeFiles(dir string, files map[string][]byte) {
	GinkgoHelper()
	for name, data := range files {
		Expect(os.WriteFile(filepath.Join(dir, name), data, 0o600)).To(Succeed())
	}
}

func mustRead(path string) []byte {
	GinkgoHelper()
	b, err := os.ReadFile(path)
	Expect(err).NotTo(HaveOccurred())
	return b
}

func httpGet(ctx context.Context, url string) string {
	GinkgoHelper()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	Expect(err).NotTo(HaveOccurred())
	resp, err := http.DefaultClient.Do(req)
	Expect(err).NotTo(HaveOccurred())
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	Expect(err).NotTo(HaveOccurred())
	return string(b)
}

func httpStatus(ctx context.Context, url string) int {
	GinkgoHelper()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	Expect(err).NotTo(HaveOccurred())
	resp, err := http.DefaultClient.Do(req)
	Expect(err).NotTo(HaveOccurred())
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

// addPath adds a PathPrefix match for path to the tenant's route. The
// controller writes the route's status meanwhile: read again on a conflict.
func (t *tenant) addPath(ctx context.Context, path string) {
	GinkgoHelper()
	prefix := gwv1.PathMatchPathPrefix
	Expect(retry.RetryOnConflict(retry.DefaultRetry, func() error {
		var route gwv1.HTTPRoute
		if err := world.Client.Get(ctx, t.key(routeName), &route); err != nil {
			return err
		}
		route.Spec.Rules[0].Matches = append(route.Spec.Rules[0].Matches, gwv1.HTTPRouteMatch{Path: &gwv1.HTTPPathMatch{Type: &prefix, Value: &path}})
		return world.Client.Update(ctx, &route)
	})).To(Succeed())
}
