//go:build scale

package scale

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/toolgate/toolgate/apis/v1alpha1"
	"github.com/toolgate/toolgate/controller"
	"github.com/toolgate/toolgate/controller/configstream"
	"github.com/toolgate/toolgate/controller/provision"
	"github.com/toolgate/toolgate/internal/testkube"
	"github.com/toolgate/toolgate/internal/testproc"
)

// The scale of the run; flags let a quick run use less.
var (
	gateways         = flag.Int("gateways", 200, "Gateways")
	routesPerGateway = flag.Int("routes-per-gateway", 5, "HTTPRoutes (each with its own MCPServer and Service) per Gateway")
	unrelatedSecrets = flag.Int("unrelated-secrets", 5000, "Secrets of 1 KiB that nothing refers to")
	unrelatedSlices  = flag.Int("unrelated-endpointslices", 20000, "EndpointSlices of Services that nothing routes to")
	churn            = flag.Int("churn", 2000, "updates of unrelated EndpointSlices")
	watchedGateways  = flag.Int("watched-gateways", 10, "Gateways whose snapshots the config-stream clients read")
	clientsPerGW     = flag.Int("clients-per-gateway", 10, "config-stream clients per watched Gateway")
	edits            = flag.Int("edits", 50, "HTTPRoute edits timed to every client of their Gateway")
	routeSteps       = flag.String("route-steps", "", "comma-separated numbers of HTTPRoutes, ascending, below the full number (-gateways × -routes-per-gateway) and multiples of -routes-per-gateway, at which -edits edits are timed too as the routes are created, and once more at the full number before the unrelated objects come: the edit-to-clients latency against the number of routes")
	restFor          = flag.Duration("rest", time.Minute, "how long the API requests at rest are counted")
	resultsPath      = flag.String("results", "", "write the results as JSON to this file")
	profileDir       = flag.String("profile", "", "write the controller's CPU profiles (while it attaches the routes, while unrelated objects come, during the timed edits at the end) and heap profile (at the end) to this folder")
)

const (
	controllerNamespace      = "toolgate-system"
	controllerServiceAccount = "toolgate-controller"
	className                = "toolgate"
	unrelatedNamespace       = "unrelated"
	// workers is how many objects the harness creates at once.
	workers = 16
)

// Results are what the run measured.
type Results struct {
	Gateways, HTTPRoutes, MCPServers, Clients int
	UnrelatedSecrets, UnrelatedSlices, Churn  int
	// WatchedGateways are the Gateways the Clients read, as many each.
	WatchedGateways int

	// Memory of the controller process, MiB, right after a garbage
	// collection: settled with what it routes, then with the unrelated
	// objects besides. Heap is the live heap (heap_alloc after the GC).
	RSSBaseMiB, RSSUnrelatedMiB   float64
	HeapBaseMiB, HeapUnrelatedMiB float64
	// UnrelatedMemoryRatio is RSSUnrelatedMiB / RSSBaseMiB (goal: at most
	// 1.10), UnrelatedHeapRatio the same of the heap.
	UnrelatedMemoryRatio, UnrelatedHeapRatio float64

	// CPU the controller spent per unrelated event (create or update of an
	// unrelated Secret or EndpointSlice), and its reconciles meanwhile.
	CPUPerUnrelatedEventMillis float64
	ReconcilesDuringUnrelated  map[string]float64

	// EditToAllClients: from an HTTPRoute edit to its Gateway's new
	// snapshot at every client (goal: p99 at most 1 s), at the end, with
	// the unrelated objects.
	EditToAllClientsP50Millis, EditToAllClientsP99Millis float64
	// CPUPerEditMillis is the CPU the controller spent per edit of those,
	// the translation of everything the config stream makes within 10 s
	// of translating some Gateways included; SnapshotTranslationsPerEdit
	// the config stream's translations per edit by scope ("all", "some"),
	// and SnapshotGatewaysPerEdit the Gateways they translated.
	CPUPerEditMillis            float64
	SnapshotTranslationsPerEdit map[string]float64
	SnapshotGatewaysPerEdit     map[string]float64
	// EditsByRoutes: the same at each of -route-steps and at the full
	// number of routes, before the unrelated objects; empty without
	// -route-steps.
	EditsByRoutes []EditsAt

	// At rest, per minute: the controller's requests by verb and
	// resource (goal: no writes), and the watches it holds (started
	// during the whole run).
	RestRequestsPerMinute map[string]float64
	Watches               []string
}

// EditsAt is the edit-to-all-clients latency with a number of HTTPRoutes.
type EditsAt struct {
	HTTPRoutes           int
	P50Millis, P99Millis float64
}

func TestControllerAtScale(t *testing.T) {
	ctx := t.Context()
	steps := gatewaySteps(t)
	gatewayCRDs, err := testkube.GatewayAPICRDDir()
	if err != nil {
		t.Fatal(err)
	}
	kube, err := testkube.Start(testkube.CRDDir(), gatewayCRDs)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = kube.Stop() })
	scheme, err := controller.NewScheme()
	if err != nil {
		t.Fatal(err)
	}
	admin, err := client.New(kube.Config, client.Options{Scheme: scheme})
	if err != nil {
		t.Fatal(err)
	}
	kubeconfig, err := kube.ServiceAccountKubeconfig(ctx, controllerNamespace, controllerServiceAccount)
	if err != nil {
		t.Fatal(err)
	}
	if out, err := kube.Kubectl("apply", "-k", filepath.Join(testkube.RepoRoot(), "config", "rbac")); err != nil {
		t.Fatalf("kubectl apply -k config/rbac: %v\n%s", err, out)
	}

	ports := testproc.FreePorts(t, 4)
	metricsAddr := net.JoinHostPort("127.0.0.1", strconv.Itoa(ports[0]))
	healthAddr := net.JoinHostPort("127.0.0.1", strconv.Itoa(ports[1]))
	streamURL := "https://" + net.JoinHostPort("127.0.0.1", strconv.Itoa(ports[2]))
	pprofAddr := net.JoinHostPort("127.0.0.1", strconv.Itoa(ports[3]))
	ctrl := testproc.Start(t, "toolgate controller", testproc.Build(t, "github.com/toolgate/toolgate/cmd/toolgate"),
		"controller", "--kubeconfig", kubeconfig, "--namespace", controllerNamespace,
		"--leader-elect=false", "--log-level", "warn",
		"--metrics-address", metricsAddr, "--health-address", healthAddr, "--pprof-address", pprofAddr,
		"--config-stream-address", strings.TrimPrefix(streamURL, "https://"), "--config-stream-url", streamURL,
		"--proxy-service-type", string(corev1.ServiceTypeClusterIP))
	ctrl.WaitFor(t, "ready", testproc.AnswersOK("http://"+healthAddr+"/readyz"))
	m := &metrics{url: "http://" + metricsAddr + "/metrics"}

	res := Results{
		Gateways: *gateways, HTTPRoutes: *gateways * *routesPerGateway, MCPServers: *gateways * *routesPerGateway,
		Clients: *watchedGateways * *clientsPerGW, WatchedGateways: *watchedGateways, UnrelatedSecrets: *unrelatedSecrets, UnrelatedSlices: *unrelatedSlices, Churn: *churn,
	}

	start := time.Now()
	attachProfile := profile(t, pprofAddr, "cpu-attach.pprof", "profile?seconds=60")
	var (
		gws     []types.NamespacedName
		watched []types.NamespacedName
		clients map[types.NamespacedName][]*watchClient
		edited  int // edits so far: each sets a new header value
	)
	for i, n := range steps {
		gws = append(gws, createRouted(t, admin, len(gws), n)...)
		routes := n * *routesPerGateway
		t.Logf("created %d Gateways, %d HTTPRoutes, %d MCPServers in %s", len(gws), routes, routes, time.Since(start).Round(time.Second))
		waitAttached(t, admin, gws)
		t.Logf("every Gateway accepted and every route attached after %s", time.Since(start).Round(time.Second))
		if clients == nil {
			watched = gws[:*watchedGateways]
			clients = startClients(t, admin, streamURL, watched)
		}
		if len(steps) == 1 {
			break
		}
		settle(t, m)
		latencies := timeEdits(t, admin, watched, clients, edited)
		edited += len(latencies)
		at := EditsAt{HTTPRoutes: routes, P50Millis: percentile(latencies, 0.50), P99Millis: percentile(latencies, 0.99)}
		res.EditsByRoutes = append(res.EditsByRoutes, at)
		t.Logf("step %d: %d HTTPRoutes: edit to all clients p50 %.0f ms, p99 %.0f ms", i+1, routes, at.P50Millis, at.P99Millis)
	}
	attachProfile()
	settle(t, m)
	collect(t, pprofAddr)
	res.RSSBaseMiB = rssMiB(t, ctrl.Pid())
	res.HeapBaseMiB = m.value(t, "go_memstats_heap_alloc_bytes") / (1 << 20)

	auditFrom := auditOffset(t, kube)
	restStart := time.Now()
	time.Sleep(*restFor)
	requests := controllerRequests(t, kube, auditFrom)
	res.RestRequestsPerMinute = map[string]float64{}
	for _, r := range requests {
		res.RestRequestsPerMinute[r] += 1 / time.Since(restStart).Minutes()
	}
	for _, r := range controllerRequests(t, kube, 0) {
		if strings.HasPrefix(r, "watch ") {
			res.Watches = append(res.Watches, r)
		}
	}

	before := m.reconciles(t)
	cpuBefore := cpuTime(t, ctrl.Pid())
	unrelatedProfile := profile(t, pprofAddr, "cpu-unrelated.pprof", "profile?seconds=60")
	createUnrelated(t, admin)
	settle(t, m)
	unrelatedProfile()
	profile(t, pprofAddr, "heap.pprof", "heap")()
	events := *unrelatedSecrets + *unrelatedSlices + *churn
	res.CPUPerUnrelatedEventMillis = float64((cpuTime(t, ctrl.Pid()) - cpuBefore).Milliseconds()) / float64(events)
	res.ReconcilesDuringUnrelated = map[string]float64{}
	for name, n := range m.reconciles(t) {
		res.ReconcilesDuringUnrelated[name] = n - before[name]
	}
	collect(t, pprofAddr)
	res.RSSUnrelatedMiB = rssMiB(t, ctrl.Pid())
	res.HeapUnrelatedMiB = m.value(t, "go_memstats_heap_alloc_bytes") / (1 << 20)
	res.UnrelatedMemoryRatio = res.RSSUnrelatedMiB / res.RSSBaseMiB
	res.UnrelatedHeapRatio = res.HeapUnrelatedMiB / res.HeapBaseMiB

	cpuBefore = cpuTime(t, ctrl.Pid())
	translationsBefore := m.byLabel(t, "toolgate_controller_snapshot_translations_total", "scope")
	gatewaysBefore := m.byLabel(t, "toolgate_controller_snapshot_translated_gateways_total", "scope")
	editsProfile := profile(t, pprofAddr, "cpu-edits.pprof", "profile?seconds=20")
	latencies := timeEdits(t, admin, watched, clients, edited)
	res.EditToAllClientsP50Millis = percentile(latencies, 0.50)
	res.EditToAllClientsP99Millis = percentile(latencies, 0.99)
	// The config stream translates everything once more within 10 s of
	// translating some Gateways (controller.sweepDelay): that is part of
	// what the edits cost.
	time.Sleep(11 * time.Second)
	settle(t, m)
	editsProfile()
	res.CPUPerEditMillis = float64((cpuTime(t, ctrl.Pid()) - cpuBefore).Milliseconds()) / float64(*edits)
	res.SnapshotTranslationsPerEdit = perEdit(m.byLabel(t, "toolgate_controller_snapshot_translations_total", "scope"), translationsBefore)
	res.SnapshotGatewaysPerEdit = perEdit(m.byLabel(t, "toolgate_controller_snapshot_translated_gateways_total", "scope"), gatewaysBefore)

	report(t, res)
}

// collect makes the controller collect its garbage (pprof's heap profile
// with gc=1) and waits a moment, so that memory is measured without the
// garbage of whatever ran last: RSS otherwise moves by tens of MiB with the
// GC's timing.
func collect(t *testing.T, pprofAddr string) {
	resp, err := http.Get("http://" + pprofAddr + "/debug/pprof/heap?gc=1")
	if err != nil {
		t.Fatalf("collect the controller's garbage: %v", err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	_ = resp.Body.Close()
	time.Sleep(2 * time.Second)
}

// profile starts fetching the controller's /debug/pprof/<what> into file
// in -profile's folder, and returns a function that waits for it to be
// written; without -profile it does nothing.
func profile(t *testing.T, addr, file, what string) (wait func()) {
	if *profileDir == "" {
		return func() {}
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		resp, err := http.Get("http://" + addr + "/debug/pprof/" + what)
		if err != nil {
			t.Errorf("profile %s: %v", what, err)
			return
		}
		defer resp.Body.Close()
		data, err := io.ReadAll(resp.Body)
		if err == nil {
			err = os.WriteFile(filepath.Join(*profileDir, file), data, 0o644)
		}
		if err != nil {
			t.Errorf("profile %s: %v", what, err)
		}
	}()
	return func() { <-done }
}

// gatewaySteps are the numbers of Gateways the routes are created in:
// those of -route-steps, then -gateways.
func gatewaySteps(t *testing.T) []int {
	var steps []int
	for f := range strings.SplitSeq(*routeSteps, ",") {
		if f = strings.TrimSpace(f); f == "" {
			continue
		}
		routes, err := strconv.Atoi(f)
		last := *watchedGateways * *routesPerGateway
		if len(steps) > 0 {
			last = steps[len(steps)-1]**routesPerGateway + 1
		}
		if err != nil || routes%*routesPerGateway != 0 || routes < last || routes >= *gateways**routesPerGateway {
			t.Fatalf("-route-steps %q: give ascending multiples of -routes-per-gateway (%d), each at least -watched-gateways × -routes-per-gateway (%d) and below -gateways × -routes-per-gateway (%d)",
				*routeSteps, *routesPerGateway, *watchedGateways**routesPerGateway, *gateways**routesPerGateway)
		}
		steps = append(steps, routes / *routesPerGateway)
	}
	return append(steps, *gateways)
}

// createRouted creates the Gateways from (the first with the GatewayClass
// and the namespaces) up to to, each with its routes, their MCPServers,
// Services and EndpointSlices, spread over ten namespaces; it returns
// those Gateways.
func createRouted(t *testing.T, c client.Client, from, to int) []types.NamespacedName {
	ctx := t.Context()
	if from == 0 {
		must(t, c.Create(ctx, &gwv1.GatewayClass{
			ObjectMeta: metav1.ObjectMeta{Name: className},
			Spec:       gwv1.GatewayClassSpec{ControllerName: "toolgate.dev/gateway-controller"},
		}))
		for i := range min(10, *gateways) {
			must(t, c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("team-%d", i)}}))
		}
	}
	var objs []client.Object
	var gws []types.NamespacedName
	for g := from; g < to; g++ {
		ns := fmt.Sprintf("team-%d", g%10)
		gw := fmt.Sprintf("gw-%d", g)
		gws = append(gws, types.NamespacedName{Namespace: ns, Name: gw})
		objs = append(objs, &gwv1.Gateway{
			ObjectMeta: metav1.ObjectMeta{Name: gw, Namespace: ns},
			Spec: gwv1.GatewaySpec{
				GatewayClassName: className,
				Listeners: []gwv1.Listener{{
					Name: "http", Protocol: gwv1.HTTPProtocolType, Port: 8080,
					Hostname: ptr(gwv1.Hostname(gw + ".example.com")),
				}},
			},
		})
		for r := range *routesPerGateway {
			name := fmt.Sprintf("%s-r%d", gw, r)
			objs = append(objs,
				&corev1.Service{
					ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
					// Headless: envtest's service range holds fewer
					// addresses than there are Services.
					Spec: corev1.ServiceSpec{ClusterIP: corev1.ClusterIPNone, Ports: []corev1.ServicePort{{Name: "mcp", Port: 8080}}},
				},
				endpointSlice(ns, name+"-1", name, fmt.Sprintf("10.%d.%d.%d", 1+g/250, g%250, 1+r)),
				&v1alpha1.MCPServer{
					ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
					Spec: v1alpha1.MCPServerSpec{
						ServiceRef: v1alpha1.ServiceReference{Name: name, Port: 8080},
						Path:       "/mcp",
					},
				},
				route(ns, name, gw, 0))
		}
	}
	createAll(t, c, objs)
	return gws
}

// route is the HTTPRoute name of Gateway gw: its MCPServer's filter, and a
// header whose value the edits change.
func route(ns, name, gw string, generation int) *gwv1.HTTPRoute {
	return &gwv1.HTTPRoute{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec: gwv1.HTTPRouteSpec{
			CommonRouteSpec: gwv1.CommonRouteSpec{ParentRefs: []gwv1.ParentReference{{Name: gwv1.ObjectName(gw)}}},
			Rules: []gwv1.HTTPRouteRule{{
				Matches: []gwv1.HTTPRouteMatch{{Path: &gwv1.HTTPPathMatch{Type: ptr(gwv1.PathMatchPathPrefix), Value: ptr("/" + name)}}},
				Filters: []gwv1.HTTPRouteFilter{
					{Type: gwv1.HTTPRouteFilterExtensionRef, ExtensionRef: &gwv1.LocalObjectReference{Group: gwv1.Group(v1alpha1.GroupVersion.Group), Kind: "MCPServer", Name: gwv1.ObjectName(name)}},
					{Type: gwv1.HTTPRouteFilterRequestHeaderModifier, RequestHeaderModifier: &gwv1.HTTPHeaderFilter{
						Set: []gwv1.HTTPHeader{{Name: "X-Edit", Value: strconv.Itoa(generation)}},
					}},
				},
				BackendRefs: []gwv1.HTTPBackendRef{{BackendRef: gwv1.BackendRef{BackendObjectReference: gwv1.BackendObjectReference{
					Name: gwv1.ObjectName(name), Port: ptr(gwv1.PortNumber(8080)),
				}}}},
			}},
		},
	}
}

func endpointSlice(ns, name, service, ip string) *discoveryv1.EndpointSlice {
	return &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Name: name, Namespace: ns, Labels: map[string]string{discoveryv1.LabelServiceName: service}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Endpoints:   []discoveryv1.Endpoint{{Addresses: []string{ip}, Conditions: discoveryv1.EndpointConditions{Ready: ptr(true)}}},
		Ports:       []discoveryv1.EndpointPort{{Name: ptr("mcp"), Port: ptr(int32(8080))}},
	}
}

// createUnrelated creates the Secrets and EndpointSlices nothing refers to,
// then updates EndpointSlices churn times.
func createUnrelated(t *testing.T, c client.Client) {
	ctx := t.Context()
	must(t, c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: unrelatedNamespace}}))
	payload := bytes.Repeat([]byte("x"), 1024)
	var objs []client.Object
	for i := range *unrelatedSecrets {
		objs = append(objs, &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("secret-%d", i), Namespace: unrelatedNamespace},
			Data:       map[string][]byte{"data": payload},
		})
	}
	for i := range *unrelatedSlices {
		objs = append(objs, endpointSlice(unrelatedNamespace, fmt.Sprintf("slice-%d", i), fmt.Sprintf("svc-%d", i/2), fmt.Sprintf("10.200.%d.%d", i/250%250, 1+i%250)))
	}
	start := time.Now()
	createAll(t, c, objs)
	t.Logf("created %d unrelated Secrets and %d EndpointSlices in %s", *unrelatedSecrets, *unrelatedSlices, time.Since(start).Round(time.Second))
	start = time.Now()
	parallel(t, *churn, func(i int) error {
		es := &discoveryv1.EndpointSlice{}
		key := types.NamespacedName{Namespace: unrelatedNamespace, Name: fmt.Sprintf("slice-%d", i%*unrelatedSlices)}
		if err := c.Get(ctx, key, es); err != nil {
			return err
		}
		es.Endpoints[0].Conditions.Ready = ptr(!*es.Endpoints[0].Conditions.Ready)
		return c.Update(ctx, es)
	})
	t.Logf("updated %d unrelated EndpointSlices in %s", *churn, time.Since(start).Round(time.Second))
}

// waitAttached waits until every Gateway is Accepted with its routes
// attached.
func waitAttached(t *testing.T, c client.Client, gws []types.NamespacedName) {
	deadline := time.Now().Add(10 * time.Minute)
	for {
		var list gwv1.GatewayList
		must(t, c.List(t.Context(), &list))
		attached := 0
		for _, gw := range list.Items {
			if len(gw.Status.Listeners) == 1 && int(gw.Status.Listeners[0].AttachedRoutes) == *routesPerGateway {
				attached++
			}
		}
		if attached == len(gws) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d Gateways have their routes attached after 10 minutes", attached, len(gws))
		}
		time.Sleep(time.Second)
	}
}

// watchClient is one config-stream client and the versions it applied.
type watchClient struct {
	gw      types.NamespacedName
	mu      sync.Mutex
	version string
	changed chan struct{} // closed and replaced at each new version
}

func (w *watchClient) current() (string, chan struct{}) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.version, w.changed
}

// startClients connects clientsPerGW config-stream clients to each
// watched Gateway, with the client certificate the controller provisioned
// for it, and waits for each to apply a snapshot.
func startClients(t *testing.T, c client.Client, streamURL string, watched []types.NamespacedName) map[types.NamespacedName][]*watchClient {
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	t.Cleanup(func() { cancel(); wg.Wait() })
	out := map[types.NamespacedName][]*watchClient{}
	for _, gw := range watched {
		dir := clientFiles(t, c, gw)
		for range *clientsPerGW {
			w := &watchClient{gw: gw, changed: make(chan struct{})}
			cl, err := configstream.NewClient(configstream.ClientOptions{
				URL: streamURL, Gateway: gw, TLSDir: dir, Logger: slog.New(slog.DiscardHandler),
				Apply: func(version string, _ []byte) error {
					w.mu.Lock()
					defer w.mu.Unlock()
					w.version = version
					close(w.changed)
					w.changed = make(chan struct{})
					return nil
				},
			})
			must(t, err)
			wg.Go(func() { _ = cl.Run(ctx) })
			out[gw] = append(out[gw], w)
		}
	}
	deadline := time.Now().Add(2 * time.Minute)
	for _, ws := range out {
		for _, w := range ws {
			for v, _ := w.current(); v == ""; v, _ = w.current() {
				if time.Now().After(deadline) {
					t.Fatalf("a config-stream client of Gateway %s has no snapshot after 2 minutes", w.gw)
				}
				time.Sleep(50 * time.Millisecond)
			}
		}
	}
	return out
}

// clientFiles writes the Gateway's client certificate, as the kubelet
// would mount its Secret, into a folder it returns.
func clientFiles(t *testing.T, c client.Client, gw types.NamespacedName) string {
	var gateway gwv1.Gateway
	must(t, c.Get(t.Context(), gw, &gateway))
	key := types.NamespacedName{Namespace: gw.Namespace, Name: provision.ConfigClientSecretName(&gateway)}
	var secret corev1.Secret
	deadline := time.Now().Add(2 * time.Minute)
	for {
		err := c.Get(t.Context(), key, &secret)
		if err == nil {
			break
		}
		if !apierrors.IsNotFound(err) || time.Now().After(deadline) {
			t.Fatalf("Secret %s: %v", key, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	dir := t.TempDir()
	for _, k := range []string{configstream.ClientCertFile, configstream.ClientKeyFile, configstream.CAFile} {
		must(t, os.WriteFile(filepath.Join(dir, k), secret.Data[k], 0o600))
	}
	return dir
}

// timeEdits edits a route of each watched Gateway in turn and measures
// the time until every client of that Gateway has applied a new version;
// done is the number of edits made so far.
func timeEdits(t *testing.T, c client.Client, watched []types.NamespacedName, clients map[types.NamespacedName][]*watchClient, done int) []time.Duration {
	var out []time.Duration
	for i := done; i < done+*edits; i++ {
		gw := watched[i%len(watched)]
		name := gw.Name + "-r0"
		type seen struct {
			version string
			changed chan struct{}
		}
		var before []seen
		for _, w := range clients[gw] {
			v, ch := w.current()
			before = append(before, seen{v, ch})
		}
		var r gwv1.HTTPRoute
		must(t, c.Get(t.Context(), types.NamespacedName{Namespace: gw.Namespace, Name: name}, &r))
		r.Spec = route(gw.Namespace, name, gw.Name, i+1).Spec
		start := time.Now()
		must(t, c.Update(t.Context(), &r))
		for j, w := range clients[gw] {
			for v, _ := w.current(); v == before[j].version; v, _ = w.current() {
				select {
				case <-before[j].changed:
					before[j].changed = nil
					_, before[j].changed = w.current()
				case <-time.After(time.Minute):
					t.Fatalf("edit %d of route %s/%s: a client of its Gateway has no new snapshot after a minute", i, gw.Namespace, name)
				}
			}
		}
		out = append(out, time.Since(start))
	}
	return out
}

// settle waits until the controller has neither finished nor been running
// a reconcile for two seconds (a reconcile that writes the status of
// thousands of objects runs for long, and counts only when it ends).
func settle(t *testing.T, m *metrics) {
	last := m.reconciles(t)
	quiet := time.Now()
	deadline := time.Now().Add(10 * time.Minute)
	for time.Since(quiet) < 2*time.Second {
		if time.Now().After(deadline) {
			t.Fatal("the controller kept reconciling for 10 minutes")
		}
		time.Sleep(250 * time.Millisecond)
		now := m.reconciles(t)
		if !maps(now, last) || m.sum(t, "controller_runtime_active_workers") > 0 {
			last, quiet = now, time.Now()
		}
	}
}

// perEdit is, by label value, what after counts more than before, per
// edit.
func perEdit(after, before map[string]float64) map[string]float64 {
	out := map[string]float64{}
	for k, v := range after {
		out[k] = (v - before[k]) / float64(*edits)
	}
	return out
}

// byLabel is the metric name's samples by the value of their label
// label.
func (m *metrics) byLabel(t *testing.T, name, label string) map[string]float64 {
	out := map[string]float64{}
	for line := range strings.Lines(m.scrape(t)) {
		rest, ok := strings.CutPrefix(line, name+"{")
		if !ok {
			continue
		}
		labels, value, ok := strings.Cut(rest, "} ")
		if !ok {
			continue
		}
		v, err := strconv.ParseFloat(strings.TrimSpace(value), 64)
		if err != nil {
			t.Fatalf("metric %s: %v", name, err)
		}
		for pair := range strings.SplitSeq(labels, ",") {
			if k, val, ok := strings.Cut(pair, "="); ok && k == label {
				out[strings.Trim(val, `"`)] += v
			}
		}
	}
	return out
}

// sum is the sum of every sample of the metric name.
func (m *metrics) sum(t *testing.T, name string) float64 {
	total := 0.0
	for line := range strings.Lines(m.scrape(t)) {
		rest, ok := strings.CutPrefix(line, name)
		if !ok || (rest[0] != '{' && rest[0] != ' ') {
			continue
		}
		value := rest[strings.LastIndexByte(rest, ' ')+1:]
		v, err := strconv.ParseFloat(strings.TrimSpace(value), 64)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		total += v
	}
	return total
}

func maps(a, b map[string]float64) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

// metrics reads the controller's /metrics.
type metrics struct{ url string }

func (m *metrics) scrape(t *testing.T) string {
	resp, err := http.Get(m.url)
	if err != nil {
		t.Fatalf("scrape %s: %v", m.url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("scrape %s: %v", m.url, err)
	}
	return string(body)
}

// value is the first sample of the metric name.
func (m *metrics) value(t *testing.T, name string) float64 {
	for line := range strings.Lines(m.scrape(t)) {
		if rest, ok := strings.CutPrefix(line, name+" "); ok {
			v, err := strconv.ParseFloat(strings.TrimSpace(rest), 64)
			if err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			return v
		}
	}
	t.Fatalf("the controller's /metrics has no %s", name)
	return 0
}

// reconciles are the controller's reconciles so far, by controller.
func (m *metrics) reconciles(t *testing.T) map[string]float64 {
	out := map[string]float64{}
	for line := range strings.Lines(m.scrape(t)) {
		if !strings.HasPrefix(line, "controller_runtime_reconcile_total{") {
			continue
		}
		labels, value, _ := strings.Cut(strings.TrimPrefix(line, "controller_runtime_reconcile_total{"), "} ")
		var name string
		for _, kv := range strings.Split(labels, ",") {
			if v, ok := strings.CutPrefix(kv, `controller="`); ok {
				name = strings.TrimSuffix(v, `"`)
			}
		}
		v, err := strconv.ParseFloat(strings.TrimSpace(value), 64)
		if err != nil {
			t.Fatal(err)
		}
		out[name] += v
	}
	return out
}

// rssMiB is the resident memory of process pid.
func rssMiB(t *testing.T, pid int) float64 {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	must(t, err)
	for line := range strings.Lines(string(data)) {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, err := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 64)
			must(t, err)
			return kb / 1024
		}
	}
	t.Fatalf("/proc/%d/status has no VmRSS", pid)
	return 0
}

// cpuTime is the user and system CPU time process pid has used.
func cpuTime(t *testing.T, pid int) time.Duration {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	must(t, err)
	// The fields after the command name, which is in parentheses.
	fields := strings.Fields(string(data[bytes.LastIndexByte(data, ')')+2:]))
	utime, err := strconv.ParseInt(fields[11], 10, 64)
	must(t, err)
	stime, err := strconv.ParseInt(fields[12], 10, 64)
	must(t, err)
	const ticksPerSecond = 100 // USER_HZ on Linux
	return time.Duration(utime+stime) * time.Second / ticksPerSecond
}

func auditOffset(t *testing.T, kube *testkube.Env) int64 {
	info, err := os.Stat(kube.AuditLogPath)
	must(t, err)
	return info.Size()
}

// controllerRequests are the controller ServiceAccount's requests in the
// audit log after offset, as "verb resource": a watch when it starts, any
// other request when it ends.
func controllerRequests(t *testing.T, kube *testkube.Env, offset int64) []string {
	f, err := os.Open(kube.AuditLogPath)
	must(t, err)
	defer func() { _ = f.Close() }() // read only
	_, err = f.Seek(offset, io.SeekStart)
	must(t, err)
	user := "system:serviceaccount:" + controllerNamespace + ":" + controllerServiceAccount
	var out []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var ev struct {
			Stage, Verb string
			User        struct{ Username string }
			ObjectRef   *struct{ Resource, Subresource string }
		}
		must(t, json.Unmarshal(sc.Bytes(), &ev))
		once := (ev.Verb == "watch" && ev.Stage == "ResponseStarted") || (ev.Verb != "watch" && ev.Stage == "ResponseComplete")
		if ev.User.Username != user || !once {
			continue
		}
		what := ev.Verb
		if ev.ObjectRef != nil {
			what += " " + ev.ObjectRef.Resource
			if ev.ObjectRef.Subresource != "" {
				what += "/" + ev.ObjectRef.Subresource
			}
		}
		out = append(out, what)
	}
	must(t, sc.Err())
	return out
}

// createAll creates objs, workers at a time.
func createAll(t *testing.T, c client.Client, objs []client.Object) {
	parallel(t, len(objs), func(i int) error { return c.Create(t.Context(), objs[i]) })
}

// parallel runs f(0) to f(n-1), workers at a time, and fails the test on
// the first error.
func parallel(t *testing.T, n int, f func(i int) error) {
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for range workers {
		wg.Go(func() {
			for i := int(next.Add(1) - 1); i < n; i = int(next.Add(1) - 1) {
				if err := f(i); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

func percentile(ds []time.Duration, p float64) float64 {
	s := slices.Clone(ds)
	slices.Sort(s)
	i := int(p*float64(len(s))+0.5) - 1
	i = min(max(i, 0), len(s)-1)
	return float64(s[i].Microseconds()) / 1000
}

func report(t *testing.T, r Results) {
	out, err := json.MarshalIndent(r, "", "  ")
	must(t, err)
	t.Logf("results:\n%s", out)
	goal := func(ok bool) string {
		if ok {
			return "met"
		}
		return "NOT met"
	}
	writes := 0.0
	for r, n := range r.RestRequestsPerMinute {
		if verb, _, _ := strings.Cut(r, " "); verb == "create" || verb == "update" || verb == "patch" || verb == "delete" {
			writes += n
		}
	}
	t.Logf("goal: unrelated objects add at most 10%% to the controller's memory: RSS %.2fx (%s), live heap %.2fx (%s)",
		r.UnrelatedMemoryRatio, goal(r.UnrelatedMemoryRatio <= 1.10), r.UnrelatedHeapRatio, goal(r.UnrelatedHeapRatio <= 1.10))
	t.Logf("goal: edit to all clients p99 at most 1 s: %.0f ms (%s)", r.EditToAllClientsP99Millis, goal(r.EditToAllClientsP99Millis <= 1000))
	t.Logf("goal: no API writes at rest: %.1f per minute (%s)", writes, goal(writes == 0))
	t.Logf("an HTTPRoute edit: %.1f ms of controller CPU; config stream translations of all Gateways %.2f, of some %.2f (%.2f Gateways)",
		r.CPUPerEditMillis, r.SnapshotTranslationsPerEdit["all"], r.SnapshotTranslationsPerEdit["some"], r.SnapshotGatewaysPerEdit["some"])
	if *resultsPath != "" {
		must(t, os.WriteFile(*resultsPath, append(out, '\n'), 0o644))
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func ptr[T any](v T) *T { return &v }
