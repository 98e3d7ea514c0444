package conformance

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	appsv1 "k8s.io/api/apps/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/toolgate/toolgate/conformance/env"
	"github.com/toolgate/toolgate/controller/provision"
)

// The load of a rollout spec: go-sdk sessions, each holding its standalone
// event stream open and calling a tool over and over, and raw clients
// posting tools/call over and over on keep-alive connections. All of them
// reach the Gateway through its Service, as clients in the cluster do, and
// are authenticated. Their MCPServer sets no rate limit: a spec of rollouts
// is about connections, and on a loaded machine the suite's Redis can
// answer later than the proxies' store timeout, which refuses a call with
// 503 for reasons of its own (failopen_test.go covers the store).
const (
	rolloutSDKSessions = 4
	rolloutRawClients  = 4
	// rolloutPause spaces one client's calls, to keep the load on a shared
	// two-core machine moderate. It is no bound on anything.
	rolloutPause = 10 * time.Millisecond
	// rolloutTimeout bounds a rollout (kubectl rollout status) and the
	// termination of the pods it replaces: new pods must start, and each
	// old one drains (provision.DefaultDrainDelay and its streams).
	rolloutTimeout = 3 * time.Minute
	// The controller Deployment of hack/cluster deploy (the chart).
	controllerSelectorLabel = "app.kubernetes.io/name"
	controllerSelectorValue = "toolgate-controller"
	leaseName               = "toolgate-controller.toolgate.dev"
)

// Specs of rolling updates under load (--pods, make e2e).
var _ = Describe("Rollouts", Label(labelPods), func() {
	BeforeEach(func() { requirePods() })

	It("of a Gateway's proxies fail no call, and end event streams cleanly for their clients to reopen", func(ctx SpecContext) {
		t := newTenant(ctx, "rollout-proxies")
		t.deploy(ctx, nil) // see rolloutSDKSessions
		// Later specs reach the proxies at their pods' addresses, which
		// this rollout changes.
		DeferCleanup(func(ctx SpecContext) { Expect(world.RefreshProxyPods(ctx)).To(Succeed()) })
		var gw gwv1.Gateway
		Expect(world.Client.Get(ctx, world.Gateway, &gw)).To(Succeed())
		deployment := types.NamespacedName{Namespace: gw.Namespace, Name: provision.Names(&gw).Name}

		load := startRolloutLoad(ctx, t)
		before := podUIDs(ctx, gw.Namespace, proxySelector(ctx))
		start := time.Now()
		rolloutRestart(ctx, deployment)
		waitPodsGone(ctx, gw.Namespace, before)
		AddReportEntry("proxy rollout: restart to the last old pod gone", time.Since(start).Round(time.Millisecond).String())
		// Every stream was on an old pod, which ended it: its client opens
		// it again on a new one.
		load.waitStreamsReopened(ctx)
		r := load.stop()
		AddReportEntry("proxy rollout under load", r.String())

		expectProxiesReplacedDroppingNothing(r, "rollout")
	})

	It("of the controller keep the proxies serving, and the new leader takes over status and provisioning", func(ctx SpecContext) {
		t := newTenant(ctx, "rollout-controller")
		t.deploy(ctx, nil)
		proxiesBefore := proxyPods(ctx)
		deployment := controllerDeployment(ctx)
		selector := client.MatchingLabels{controllerSelectorLabel: controllerSelectorValue}
		before := podUIDs(ctx, deployment.Namespace, selector)

		load := startRolloutLoad(ctx, t)
		start := time.Now()
		rolloutRestart(ctx, deployment)
		waitPodsGone(ctx, deployment.Namespace, before)
		AddReportEntry("controller rollout: restart to the last old pod gone", time.Since(start).Round(time.Millisecond).String())
		r := load.stop()
		AddReportEntry("controller rollout under load", r.String())

		Expect(r.failures).To(BeEmpty(), "calls failed during the controller's rollout: %s", r)
		Expect(r.callsOK).To(BeNumerically(">", 0), "no call was made during the rollout")
		Expect(r.streamsBroken).To(BeEmpty(), "event streams were cut: %s", r)
		Expect(r.streamsEnded).To(BeZero(), "the proxies ended streams, which they only do when they stop: %s", r)
		Expect(proxyPods(ctx)).To(Equal(proxiesBefore), "the same proxy pods, none restarted")

		By("the leader's Lease is held by a new controller pod")
		Eventually(func(g Gomega) {
			var lease coordinationv1.Lease
			g.Expect(world.Client.Get(ctx, types.NamespacedName{Namespace: deployment.Namespace, Name: leaseName}, &lease)).To(Succeed())
			holder := ""
			if lease.Spec.HolderIdentity != nil {
				holder = *lease.Spec.HolderIdentity
			}
			pod, _, _ := strings.Cut(holder, "_") // controller-runtime's identity: HOSTNAME_UUID
			var p corev1.Pod
			g.Expect(world.Client.Get(ctx, types.NamespacedName{Namespace: deployment.Namespace, Name: pod}, &p)).To(Succeed(), "the Lease's holder %q is no pod", holder)
			g.Expect(before).NotTo(HaveKey(p.UID), "the Lease is still held by an old pod")
		}).WithContext(ctx).Should(Succeed())

		By("the new leader writes status and serves a route edit")
		alias := "/" + t.Namespace + "-after/mcp"
		t.addPath(ctx, alias)
		for _, p := range world.Proxies {
			Eventually(func(g Gomega) {
				g.Expect(newRawClient(p.URL, alias, tokenFor("after")).initialize(ctx)).To(Succeed())
			}).WithContext(ctx).Should(Succeed(), "%s serves %s", p.Name, alias)
		}
		Eventually(func(g Gomega) {
			var route gwv1.HTTPRoute
			g.Expect(world.Client.Get(ctx, t.key(routeName), &route)).To(Succeed())
			g.Expect(route.Status.Parents).NotTo(BeEmpty())
			for _, parent := range route.Status.Parents {
				for _, c := range parent.Conditions {
					g.Expect(c.ObservedGeneration).To(Equal(route.Generation), "condition %s of the edited route", c.Type)
				}
			}
		}).WithContext(ctx).Should(Succeed())

		By("the new leader provisions: a deleted ServiceAccount of the proxies is made again")
		var gw gwv1.Gateway
		Expect(world.Client.Get(ctx, world.Gateway, &gw)).To(Succeed())
		var sa corev1.ServiceAccount
		saKey := types.NamespacedName{Namespace: gw.Namespace, Name: provision.Names(&gw).Name}
		Expect(world.Client.Get(ctx, saKey, &sa)).To(Succeed())
		old := sa.UID
		Expect(world.Client.Delete(ctx, &sa)).To(Succeed())
		Eventually(func(g Gomega) {
			var again corev1.ServiceAccount
			g.Expect(world.Client.Get(ctx, saKey, &again)).To(Succeed())
			g.Expect(again.UID).NotTo(Equal(old))
		}).WithContext(ctx).Should(Succeed())
	})
})

// controllerDeployment is toolgate's controller Deployment, as hack/cluster
// deploys it (the chart), found by its label.
func controllerDeployment(ctx context.Context) types.NamespacedName {
	GinkgoHelper()
	var list appsv1.DeploymentList
	Expect(world.Client.List(ctx, &list, client.MatchingLabels{controllerSelectorLabel: controllerSelectorValue})).To(Succeed())
	Expect(list.Items).To(HaveLen(1), "Deployments labelled %s=%s", controllerSelectorLabel, controllerSelectorValue)
	return types.NamespacedName{Namespace: list.Items[0].Namespace, Name: list.Items[0].Name}
}

// rolloutRestart restarts a Deployment as `kubectl rollout restart` does
// and waits until its rollout is complete.
func rolloutRestart(ctx context.Context, d types.NamespacedName) {
	GinkgoHelper()
	out, err := world.Kubectl("-n", d.Namespace, "rollout", "restart", "deployment/"+d.Name)
	Expect(err).NotTo(HaveOccurred(), out)
	out, err = world.Kubectl("-n", d.Namespace, "rollout", "status", "deployment/"+d.Name, "--timeout", rolloutTimeout.String())
	Expect(err).NotTo(HaveOccurred(), out)
}

// podUIDs are the UIDs of the pods selected.
func podUIDs(ctx context.Context, namespace string, selector client.MatchingLabels) map[types.UID]bool {
	GinkgoHelper()
	var pods corev1.PodList
	Expect(world.Client.List(ctx, &pods, client.InNamespace(namespace), selector)).To(Succeed())
	out := map[types.UID]bool{}
	for _, p := range pods.Items {
		out[p.UID] = true
	}
	return out
}

// waitPodsGone waits until none of the pods is left: each has drained and
// exited.
func waitPodsGone(ctx context.Context, namespace string, uids map[types.UID]bool) {
	GinkgoHelper()
	Eventually(func(g Gomega) {
		var pods corev1.PodList
		g.Expect(world.Client.List(ctx, &pods, client.InNamespace(namespace))).To(Succeed())
		for _, p := range pods.Items {
			g.Expect(uids).NotTo(HaveKey(p.UID), "pod %s is still there (%s)", p.Name, p.Status.Phase)
		}
	}).WithContext(ctx).WithTimeout(rolloutTimeout).WithPolling(250 * time.Millisecond).Should(Succeed())
}

// serviceURL is the listener of the tenant's Gateway at its Service's
// cluster IP.
func (t *tenant) serviceURL(ctx context.Context) string {
	GinkgoHelper()
	var gw gwv1.Gateway
	Expect(world.Client.Get(ctx, t.Gateway, &gw)).To(Succeed())
	var svc corev1.Service
	Expect(world.Client.Get(ctx, types.NamespacedName{Namespace: gw.Namespace, Name: provision.Names(&gw).Name}, &svc)).To(Succeed())
	Expect(svc.Spec.ClusterIP).NotTo(BeEmpty())
	return "http://" + net.JoinHostPort(svc.Spec.ClusterIP, strconv.Itoa(t.ListenerPort))
}

// rolloutLoad is the clients of a rollout spec, running until stop.
type rolloutLoad struct {
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	streams *streamWatch

	callsOK  atomic.Int64
	mu       sync.Mutex
	failures []string
}

// rolloutResult is what the clients saw.
type rolloutResult struct {
	callsOK       int64
	failures      []string
	streamsOpened int
	streamsEnded  int      // ended cleanly: the response was terminated
	streamsBroken []string // cut: reset, or ended mid-response
}

func (r rolloutResult) String() string {
	return fmt.Sprintf("%d calls answered, %d failed; %d event streams opened (%d sessions), %d ended cleanly, %d cut%s",
		r.callsOK, len(r.failures), r.streamsOpened, rolloutSDKSessions, r.streamsEnded, len(r.streamsBroken),
		describeErrors(append(append([]string(nil), r.failures...), r.streamsBroken...)))
}

func describeErrors(errs []string) string {
	if len(errs) == 0 {
		return ""
	}
	const most = 5
	more := ""
	if len(errs) > most {
		errs, more = errs[:most], fmt.Sprintf("\n  ... and %d more", len(errs)-most)
	}
	return ":\n  " + strings.Join(errs, "\n  ") + more
}

// startRolloutLoad opens the clients' sessions through the Service of the
// tenant's Gateway, waits until every go-sdk session holds its event
// stream, and starts their calls.
func startRolloutLoad(ctx context.Context, t *tenant) *rolloutLoad {
	GinkgoHelper()
	base := t.serviceURL(ctx)
	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	l := &rolloutLoad{cancel: cancel, streams: &streamWatch{next: http.DefaultTransport}}
	// A new Service is served once kube-proxy has its endpoints.
	Eventually(func(g Gomega) {
		g.Expect(newRawClient(base, t.Path, tokenFor("rollout-probe")).initialize(ctx)).To(Succeed())
	}).WithContext(ctx).Should(Succeed(), "the Gateway's Service %s serves %s", base, t.Path)
	var sessions []*mcp.ClientSession
	for i := range rolloutSDKSessions {
		user := fmt.Sprintf("rollout-sdk-%d", i)
		httpClient := &http.Client{Transport: &bearer{token: tokenFor(user), next: l.streams}}
		c := mcp.NewClient(&mcp.Implementation{Name: "conformance-rollout", Version: "v1"}, nil)
		cs, err := c.Connect(ctx, &mcp.StreamableClientTransport{Endpoint: base + t.Path, HTTPClient: httpClient},
			&mcp.ClientSessionOptions{ProtocolVersion: sessionProtocol})
		Expect(err).NotTo(HaveOccurred(), "go-sdk session %d through %s", i, base)
		sessions = append(sessions, cs)
	}
	var raws []*rawClient
	for i := range rolloutRawClients {
		c := newRawClient(base, t.Path, tokenFor(fmt.Sprintf("rollout-raw-%d", i)))
		Expect(c.initialize(ctx)).To(Succeed(), "raw session %d through %s", i, base)
		raws = append(raws, c)
	}
	Eventually(l.streams.opened.Load).WithContext(ctx).Should(BeEquivalentTo(rolloutSDKSessions), "every go-sdk session opens its event stream")

	for i, cs := range sessions {
		l.wg.Go(func() {
			defer func() { _ = cs.Close() }()
			for runCtx.Err() == nil {
				_, err := callSDK(runCtx, cs, env.OtherTool)
				l.record(runCtx, fmt.Sprintf("go-sdk session %d", i), err)
				pause(runCtx)
			}
		})
	}
	for i, c := range raws {
		l.wg.Go(func() {
			for id := 1; runCtx.Err() == nil; id++ {
				resp, err := c.callTool(runCtx, id, env.OtherTool)
				if err == nil && (resp.Status != http.StatusOK || resp.Message == nil || resp.Message.Error != nil) {
					err = fmt.Errorf("%s", resp)
				}
				l.record(runCtx, fmt.Sprintf("raw client %d", i), err)
				pause(runCtx)
			}
		})
	}
	return l
}

func pause(ctx context.Context) {
	select {
	case <-ctx.Done():
	case <-time.After(rolloutPause):
	}
}

// record counts one call's outcome; a call cut short by stop is neither.
func (l *rolloutLoad) record(runCtx context.Context, who string, err error) {
	switch {
	case err == nil:
		l.callsOK.Add(1)
	case runCtx.Err() != nil:
	default:
		l.mu.Lock()
		l.failures = append(l.failures, fmt.Sprintf("%s: %s: %v", time.Now().Format("15:04:05.000"), who, err))
		l.mu.Unlock()
	}
}

// waitStreamsReopened waits until every stream that ended was opened again.
func (l *rolloutLoad) waitStreamsReopened(ctx context.Context) {
	GinkgoHelper()
	Eventually(func(g Gomega) {
		opened, ended, broken := l.streams.counts()
		g.Expect(opened).To(Equal(rolloutSDKSessions+ended+len(broken)), "streams opened, of %d sessions whose streams ended %d times", rolloutSDKSessions, ended+len(broken))
	}).WithContext(ctx).Should(Succeed())
}

// stop ends the clients and returns what they saw.
// expectProxiesReplacedDroppingNothing asserts that, while every proxy
// pod was replaced (during names it: "rollout", "upgrade"), no call of
// the load failed and every event stream was ended cleanly, on an old pod,
// and opened again once.
func expectProxiesReplacedDroppingNothing(r rolloutResult, during string) {
	GinkgoHelper()
	Expect(r.failures).To(BeEmpty(), "calls failed during the %s: %s", during, r)
	Expect(r.callsOK).To(BeNumerically(">", 0), "no call was made during the %s", during)
	Expect(r.streamsBroken).To(BeEmpty(), "event streams were cut rather than ended: %s", r)
	Expect(r.streamsEnded).To(BeNumerically(">=", rolloutSDKSessions), "every stream was on a proxy pod that the %s replaced: %s", during, r)
	Expect(r.streamsOpened).To(Equal(rolloutSDKSessions+r.streamsEnded), "each ended stream was opened again, once: %s", r)
}

func (l *rolloutLoad) stop() rolloutResult {
	opened, ended, broken := l.streams.counts()
	l.cancel()
	l.wg.Wait()
	l.mu.Lock()
	defer l.mu.Unlock()
	return rolloutResult{
		callsOK: l.callsOK.Load(), failures: l.failures,
		streamsOpened: opened, streamsEnded: ended, streamsBroken: broken,
	}
}

// streamWatch is the go-sdk clients' transport: it sees how each GET event
// stream ends. A stream ends cleanly when its body reads to io.EOF (the
// server terminated the response); any other error before the client
// closes it is a cut (a reset connection, a response ended mid-body).
type streamWatch struct {
	next   http.RoundTripper
	opened atomic.Int64

	mu     sync.Mutex
	ended  int
	broken []string
}

func (w *streamWatch) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := w.next.RoundTrip(r)
	if err != nil || r.Method != http.MethodGet || resp.StatusCode != http.StatusOK ||
		!strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
		return resp, err
	}
	w.opened.Add(1)
	resp.Body = &watchedStream{ReadCloser: resp.Body, watch: w}
	return resp, nil
}

func (w *streamWatch) counts() (opened, ended int, broken []string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return int(w.opened.Load()), w.ended, append([]string(nil), w.broken...)
}

type watchedStream struct {
	io.ReadCloser
	watch *streamWatch

	mu       sync.Mutex
	closed   bool // by the client
	reported bool
}

func (s *watchedStream) Read(p []byte) (int, error) {
	n, err := s.ReadCloser.Read(p)
	if err != nil {
		s.mu.Lock()
		if !s.closed && !s.reported {
			s.reported = true
			s.watch.mu.Lock()
			if errors.Is(err, io.EOF) {
				s.watch.ended++
			} else {
				s.watch.broken = append(s.watch.broken, fmt.Sprintf("%s: stream cut: %v", time.Now().Format("15:04:05.000"), err))
			}
			s.watch.mu.Unlock()
		}
		s.mu.Unlock()
	}
	return n, err
}

func (s *watchedStream) Close() error {
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	return s.ReadCloser.Close()
}
