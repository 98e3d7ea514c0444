package conformance

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"
	"sigs.k8s.io/yaml"

	"github.com/toolgate/toolgate/apis/v1alpha1"
	"github.com/toolgate/toolgate/conformance/env"
	"github.com/toolgate/toolgate/controller/provision"
	"github.com/toolgate/toolgate/controller/translate"
	"github.com/toolgate/toolgate/internal/testkube"
)

// What hack/cluster deploy installs, and how: the Helm release, its
// namespace, the local cluster's values, and the chart's GatewayClass.
const (
	helmRelease          = "toolgate"
	helmNamespace        = "toolgate-system"
	localValues          = "config/local/values.yaml"
	chartDir             = "charts/toolgate"
	chartGatewayClass    = "toolgate"
	controllerDeployName = "toolgate-controller"
	// controllerMetricsPort serves the controller's /metrics (the chart's
	// port "metrics").
	controllerMetricsPort = 8080
	// upgradeListenerPort is the listener port of the upgrade spec's
	// Gateway, on its proxy pods.
	upgradeListenerPort = 8080
	// upgradeTokens fill the upgrade spec's buckets: its load never
	// empties them, and a refusal would count as a failed call.
	upgradeTokens = 1_000_000
)

// Specs of upgrades (--pods --previous-release, make e2e).
var _ = Describe("Upgrades", Label(labelPods, labelUpgrade), func() {
	BeforeEach(func() { requireUpgrade() })

	It("from the previous release's chart to this one, as the README says, fail no call, upgrade the CRDs, run the new image everywhere and keep every status", func(ctx SpecContext) {
		prev := readPreviousRelease()
		h := newHelm()
		root := testkube.RepoRoot()
		current := filepath.Join(root, chartDir)
		currentValues := filepath.Join(root, localValues)
		prevImage := h.controllerImage(prev.chart(), prev.values())
		currentImage := h.controllerImage(current, currentValues)
		Expect(prevImage).NotTo(Equal(currentImage), "the previous release and this checkout name one image")
		AddReportEntry("upgrade", fmt.Sprintf("%s (commit %.12s, image %s) -> this checkout (image %s)", prev.Version, prev.Commit, prevImage, currentImage))
		changed := "none: the upgrade applies them unchanged"
		if names := changedCRDs(prev.crds(), filepath.Join(current, "crds")); len(names) > 0 {
			changed = strings.Join(names, ", ")
		}
		AddReportEntry("CRDs that differ between the two charts", changed)

		// Whatever happens, the cluster is left as hack/cluster deploy
		// leaves it, for make conformance after make e2e: this checkout's
		// chart with the local cluster's values.
		upgraded := false
		DeferCleanup(func(ctx SpecContext) {
			if !upgraded {
				upgradeAsREADME(ctx, h, current, currentValues, "--install")
			}
		})

		By("uninstalling toolgate and its CRD, so that the previous release installs its own")
		before := podUIDs(ctx, helmNamespace, controllerSelector())
		h.run("uninstall", helmRelease, "--namespace", helmNamespace, "--ignore-not-found", "--wait")
		kubectl("delete", "--ignore-not-found", "--wait", "-f", filepath.Join(current, "crds"), "-f", prev.crds())
		waitPodsGone(ctx, helmNamespace, before)

		By("installing " + prev.Version + "'s chart as its README says")
		h.run("install", helmRelease, prev.chart(), "--namespace", helmNamespace, "--create-namespace", "--values", prev.values())
		kubectl("-n", helmNamespace, "rollout", "status", "deployment/"+controllerDeployName, "--timeout", rolloutTimeout.String())
		expectCRDs(ctx, prev.crds())
		expectNoKubectlApply(ctx, prev.crds())

		By("a Gateway of the chart's GatewayClass, an HTTPRoute and an MCPServer with limits, served by " + prev.Version + "'s proxies")
		t := newTenant(ctx, "upgrade")
		gw := &gwv1.Gateway{
			ObjectMeta: metav1.ObjectMeta{Name: "upgrade", Namespace: t.Namespace},
			Spec: gwv1.GatewaySpec{
				GatewayClassName: chartGatewayClass,
				Listeners: []gwv1.Listener{{
					Name: env.ListenerName, Protocol: gwv1.HTTPProtocolType, Port: upgradeListenerPort,
				}},
			},
		}
		create(ctx, gw)
		t.Gateway, t.ListenerPort = client.ObjectKeyFromObject(gw), upgradeListenerPort
		create(ctx, t.mcpServer(mcpServerName, &v1alpha1.RateLimiting{
			PerUser: bucket(upgradeTokens, time.Hour),
			Tools:   []v1alpha1.ToolRateLimit{{Name: env.OtherTool, PerUser: bucket(upgradeTokens, time.Hour)}},
		}))
		create(ctx, t.route(mcpServerName, backendMCPServer))
		var statusBefore map[string]metav1.Time
		Eventually(func(g Gomega) { statusBefore = upgradeStatus(g, ctx, t) }).WithContext(ctx).WithTimeout(rolloutTimeout).Should(Succeed())
		proxies := t.gatewayDeployment(ctx)
		waitEveryProxyServes(ctx, t)
		expectRunning(ctx, t, prevImage, Equal(prev.Version), Equal(prev.Commit))
		prevImageIDs := imageIDs(ctx, t)

		By("upgrading to this checkout's chart as the README says, under load")
		load := startRolloutLoad(ctx, t)
		controllersBefore := podUIDs(ctx, helmNamespace, controllerSelector())
		proxiesBefore := podUIDs(ctx, t.Namespace, t.proxySelector(ctx))
		start := time.Now()
		upgradeAsREADME(ctx, h, current, currentValues)
		upgraded = true
		waitPodsGone(ctx, helmNamespace, controllersBefore)
		// The new controller provisions the proxies with its image: their
		// Deployment rolls.
		Eventually(func(g Gomega) {
			var d appsv1.Deployment
			g.Expect(world.Client.Get(ctx, proxies, &d)).To(Succeed())
			g.Expect(d.Spec.Template.Spec.Containers).NotTo(BeEmpty())
			g.Expect(d.Spec.Template.Spec.Containers[0].Image).To(Equal(currentImage))
		}).WithContext(ctx).WithTimeout(rolloutTimeout).Should(Succeed(), "the new controller provisions Deployment %s with %s", proxies, currentImage)
		kubectl("-n", proxies.Namespace, "rollout", "status", "deployment/"+proxies.Name, "--timeout", rolloutTimeout.String())
		waitPodsGone(ctx, t.Namespace, proxiesBefore)
		AddReportEntry("upgrade: helm upgrade to the last old pod gone", time.Since(start).Round(time.Millisecond).String())
		load.waitStreamsReopened(ctx)
		r := load.stop()
		AddReportEntry("upgrade under load", r.String())

		expectProxiesReplacedDroppingNothing(r, "upgrade")

		By("the CRDs are this checkout's, applied by the README's kubectl command")
		expectCRDs(ctx, filepath.Join(current, "crds"))
		expectKubectlApply(ctx, filepath.Join(current, "crds"))

		By("the controller and the proxies run this checkout's image")
		expectRunning(ctx, t, currentImage, Not(Equal(prev.Version)), Not(Equal(prev.Commit)))
		for id := range imageIDs(ctx, t) {
			Expect(prevImageIDs).NotTo(HaveKey(id), "a pod still runs the image %s ran", prevImage)
		}

		By("the GatewayClass, the Gateway, its listener, the HTTPRoute and the MCPServer stayed Accepted and Programmed throughout")
		Eventually(func(g Gomega) {
			g.Expect(upgradeStatus(g, ctx, t)).To(Equal(statusBefore), "each condition keeps the lastTransitionTime it had before the upgrade")
		}).WithContext(ctx).Should(Succeed())
		waitEveryProxyServes(ctx, t)
	})
})

// previousRelease is the release make e2e upgrades from: hack/previous-release
// names it, hack/previous-release.sh builds it into Dir.
type previousRelease struct {
	Version, Commit, Dir string
}

func readPreviousRelease() previousRelease {
	GinkgoHelper()
	path := filepath.Join(testkube.RepoRoot(), "hack", "previous-release")
	f, err := os.Open(path)
	Expect(err).NotTo(HaveOccurred())
	defer func() { _ = f.Close() }() // read only
	var fields []string
	for s := bufio.NewScanner(f); s.Scan(); {
		line := strings.TrimSpace(s.Text())
		if line != "" && !strings.HasPrefix(line, "#") {
			fields = strings.Fields(line)
			break
		}
	}
	Expect(fields).To(HaveLen(2), "%s holds 'VERSION COMMIT'", path)
	p := previousRelease{Version: fields[0], Commit: fields[1], Dir: flags.PreviousRelease}
	Expect(filepath.Base(p.Dir)).To(Equal(p.Version+"-"+p.Commit), "--previous-release is the folder hack/previous-release.sh prints for %s", path)
	for _, file := range []string{p.chart(), p.values(), p.crds()} {
		_, err := os.Stat(file)
		Expect(err).NotTo(HaveOccurred(), "the previous release's files (hack/previous-release.sh)")
	}
	return p
}

// chart is the previous release's packaged chart, as make release wrote it.
func (p previousRelease) chart() string {
	return filepath.Join(p.Dir, "dist", "toolgate-"+p.Version+".tgz")
}

// values are the local cluster's values of the previous release's tree.
func (p previousRelease) values() string { return filepath.Join(p.Dir, "src", localValues) }

// crds are the previous release's chart's CRDs.
func (p previousRelease) crds() string { return filepath.Join(p.Dir, "src", chartDir, "crds") }

// upgradeAsREADME runs the README's upgrade steps ("Upgrade toolgate") with
// chart and values: the chart's CRDs first, with kubectl (Helm installs a
// chart's crds/ only on the first install), then helm upgrade, then the wait
// for the controller's rollout. extra goes to helm upgrade.
func upgradeAsREADME(ctx context.Context, h *helm, chart, values string, extra ...string) {
	GinkgoHelper()
	kubectl("apply", "--server-side", "--force-conflicts", "-f", filepath.Join(chart, "crds"))
	kubectl("wait", "--for=condition=Established", "-f", filepath.Join(chart, "crds"), "--timeout", rolloutTimeout.String())
	h.run(append([]string{"upgrade", helmRelease, chart, "--namespace", helmNamespace, "--values", values}, extra...)...)
	kubectl("-n", helmNamespace, "rollout", "status", "deployment/"+controllerDeployName, "--timeout", rolloutTimeout.String())
}

// kubectl runs kubectl against the cluster and expects it to succeed.
func kubectl(args ...string) {
	GinkgoHelper()
	out, err := world.Kubectl(args...)
	Expect(err).NotTo(HaveOccurred(), "kubectl %s:\n%s", strings.Join(args, " "), out)
	GinkgoWriter.Printf("kubectl %s\n%s", strings.Join(args, " "), out)
}

// helm runs the Helm of hack/helm/go.mod (or --helm) against the cluster,
// with state of its own.
type helm struct {
	bin  string
	home string
}

func newHelm() *helm {
	GinkgoHelper()
	bin := flags.Helm
	if bin == "" {
		cmd := exec.Command("go", "tool", "-n", "-modfile=hack/helm/go.mod", "helm")
		cmd.Dir = testkube.RepoRoot()
		out, err := cmd.Output()
		Expect(err).NotTo(HaveOccurred(), "build helm (go tool -n -modfile=hack/helm/go.mod helm)")
		bin = strings.TrimSpace(string(out))
	}
	return &helm{bin: bin, home: GinkgoT().TempDir()}
}

func (h *helm) output(args ...string) string {
	GinkgoHelper()
	cmd := exec.Command(h.bin, append([]string{"--kubeconfig", world.KubeconfigPath}, args...)...)
	cmd.Env = append(os.Environ(), "HELM_CACHE_HOME="+h.home, "HELM_CONFIG_HOME="+h.home, "HELM_DATA_HOME="+h.home)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	Expect(err).NotTo(HaveOccurred(), "helm %s:\n%s%s", strings.Join(args, " "), out, stderr.String())
	return string(out)
}

func (h *helm) run(args ...string) {
	GinkgoHelper()
	GinkgoWriter.Printf("helm %s\n%s", strings.Join(args, " "), h.output(args...))
}

// controllerImage is the image the chart with values gives the controller
// (and so the proxies), from helm template.
func (h *helm) controllerImage(chart, values string) string {
	GinkgoHelper()
	manifest := h.output("template", helmRelease, chart, "--namespace", helmNamespace, "--values", values,
		"--show-only", "templates/deployment.yaml")
	var d appsv1.Deployment
	Expect(yaml.Unmarshal([]byte(manifest), &d)).To(Succeed())
	Expect(d.Spec.Template.Spec.Containers).NotTo(BeEmpty(), "the chart %s renders no controller container", chart)
	return d.Spec.Template.Spec.Containers[0].Image
}

func controllerSelector() client.MatchingLabels {
	return client.MatchingLabels{controllerSelectorLabel: controllerSelectorValue}
}

// proxySelector selects the pods of the tenant's Gateway's proxies.
func (t *tenant) proxySelector(ctx context.Context) client.MatchingLabels {
	GinkgoHelper()
	var gw gwv1.Gateway
	Expect(world.Client.Get(ctx, t.Gateway, &gw)).To(Succeed())
	return client.MatchingLabels(provision.Names(&gw).Labels)
}

// gatewayDeployment is the proxies' Deployment of the tenant's Gateway.
func (t *tenant) gatewayDeployment(ctx context.Context) types.NamespacedName {
	GinkgoHelper()
	var gw gwv1.Gateway
	Expect(world.Client.Get(ctx, t.Gateway, &gw)).To(Succeed())
	return types.NamespacedName{Namespace: gw.Namespace, Name: provision.Names(&gw).Name}
}

// readyPods are the ready pods, not being deleted, selected in namespace.
func readyPods(g Gomega, ctx context.Context, namespace string, selector client.MatchingLabels) []corev1.Pod {
	var list corev1.PodList
	g.Expect(world.Client.List(ctx, &list, client.InNamespace(namespace), selector)).To(Succeed())
	var out []corev1.Pod
	for _, p := range list.Items {
		if p.DeletionTimestamp != nil || p.Status.PodIP == "" {
			continue
		}
		for _, c := range p.Status.Conditions {
			if c.Type == corev1.PodReady && c.Status == corev1.ConditionTrue {
				out = append(out, p)
			}
		}
	}
	return out
}

// waitEveryProxyServes waits until each proxy pod of the tenant's Gateway
// opens sessions on its path, at the pod's address.
func waitEveryProxyServes(ctx context.Context, t *tenant) {
	GinkgoHelper()
	token := tokenFor("upgrade-probe")
	Eventually(func(g Gomega) {
		pods := readyPods(g, ctx, t.Namespace, t.proxySelector(ctx))
		g.Expect(pods).NotTo(BeEmpty())
		for _, p := range pods {
			base := "http://" + net.JoinHostPort(p.Status.PodIP, strconv.Itoa(t.ListenerPort))
			g.Expect(newRawClient(base, t.Path, token).initialize(ctx)).To(Succeed(), "pod %s serves %s", p.Name, t.Path)
		}
	}).WithContext(ctx).WithTimeout(rolloutTimeout).Should(Succeed())
}

// expectRunning checks that every controller pod and every proxy pod of the
// tenant's Gateway runs image, and that its toolgate_build_info names a
// version and a commit that match.
func expectRunning(ctx context.Context, t *tenant, image string, version, commit OmegaMatcher) {
	GinkgoHelper()
	type target struct {
		namespace string
		selector  client.MatchingLabels
		port      int
	}
	for _, tg := range []target{
		{helmNamespace, controllerSelector(), controllerMetricsPort},
		{t.Namespace, t.proxySelector(ctx), int(provision.AdminPort)},
	} {
		var seen []string
		Eventually(func(g Gomega) {
			seen = nil
			var list corev1.PodList
			g.Expect(world.Client.List(ctx, &list, client.InNamespace(tg.namespace), tg.selector)).To(Succeed())
			g.Expect(list.Items).NotTo(BeEmpty())
			for _, p := range list.Items {
				g.Expect(p.Spec.Containers).NotTo(BeEmpty())
				g.Expect(p.Spec.Containers[0].Image).To(Equal(image), "the image of pod %s/%s", p.Namespace, p.Name)
			}
			for _, p := range readyPods(g, ctx, tg.namespace, tg.selector) {
				v, c, err := buildInfo(ctx, "http://"+net.JoinHostPort(p.Status.PodIP, strconv.Itoa(tg.port))+"/metrics")
				g.Expect(err).NotTo(HaveOccurred(), "pod %s/%s", p.Namespace, p.Name)
				g.Expect(v).To(version, "the version pod %s/%s runs", p.Namespace, p.Name)
				g.Expect(c).To(commit, "the commit pod %s/%s runs", p.Namespace, p.Name)
				seen = append(seen, fmt.Sprintf("%s/%s: %s, toolgate %s (commit %s)", p.Namespace, p.Name, image, v, c))
			}
		}).WithContext(ctx).Should(Succeed())
		AddReportEntry("pods running "+image, strings.Join(seen, "\n"))
	}
}

// imageIDs are the image IDs (digests) the controller's containers and
// those of the tenant's Gateway's proxies run.
func imageIDs(ctx context.Context, t *tenant) map[string]bool {
	GinkgoHelper()
	out := map[string]bool{}
	Eventually(func(g Gomega) {
		for _, p := range append(readyPods(g, ctx, helmNamespace, controllerSelector()), readyPods(g, ctx, t.Namespace, t.proxySelector(ctx))...) {
			g.Expect(p.Status.ContainerStatuses).NotTo(BeEmpty())
			id := p.Status.ContainerStatuses[0].ImageID
			g.Expect(id).NotTo(BeEmpty(), "the image ID of pod %s/%s", p.Namespace, p.Name)
			out[id] = true
		}
	}).WithContext(ctx).Should(Succeed())
	return out
}

var buildInfoLabel = regexp.MustCompile(`(\w+)="([^"]*)"`)

// buildInfo reads the version and commit of toolgate_build_info at url.
func buildInfo(ctx context.Context, url string) (version, commit string, err error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return "", "", err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", "", err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return "", "", fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	for s := bufio.NewScanner(resp.Body); s.Scan(); {
		line := s.Text()
		if !strings.HasPrefix(line, "toolgate_build_info{") {
			continue
		}
		labels := map[string]string{}
		for _, m := range buildInfoLabel.FindAllStringSubmatch(line, -1) {
			labels[m[1]] = m[2]
		}
		return labels["version"], labels["commit"], nil
	}
	return "", "", fmt.Errorf("no toolgate_build_info at %s", url)
}

// upgradeStatus checks the conditions of the objects of the upgrade spec --
// the chart's GatewayClass, the tenant's Gateway and its listener, the
// HTTPRoute and the MCPServer -- and returns each one's lastTransitionTime.
func upgradeStatus(g Gomega, ctx context.Context, t *tenant) map[string]metav1.Time {
	out := map[string]metav1.Time{}
	keep := func(object string, c *metav1.Condition) { out[object+" "+c.Type] = c.LastTransitionTime }

	var class gwv1.GatewayClass
	g.Expect(world.Client.Get(ctx, types.NamespacedName{Name: chartGatewayClass}, &class)).To(Succeed())
	keep("GatewayClass", expectCondition(g, class.Status.Conditions, string(gwv1.GatewayClassConditionStatusAccepted), metav1.ConditionTrue, string(gwv1.GatewayClassReasonAccepted), class.Generation))

	var gw gwv1.Gateway
	g.Expect(world.Client.Get(ctx, t.Gateway, &gw)).To(Succeed())
	keep("Gateway", expectCondition(g, gw.Status.Conditions, string(gwv1.GatewayConditionAccepted), metav1.ConditionTrue, string(gwv1.GatewayReasonAccepted), gw.Generation))
	keep("Gateway", expectCondition(g, gw.Status.Conditions, string(gwv1.GatewayConditionProgrammed), metav1.ConditionTrue, string(gwv1.GatewayReasonProgrammed), gw.Generation))
	g.Expect(gw.Status.Listeners).To(HaveLen(1))
	l := gw.Status.Listeners[0]
	keep("listener", expectCondition(g, l.Conditions, string(gwv1.ListenerConditionAccepted), metav1.ConditionTrue, string(gwv1.ListenerReasonAccepted), gw.Generation))
	keep("listener", expectCondition(g, l.Conditions, string(gwv1.ListenerConditionProgrammed), metav1.ConditionTrue, string(gwv1.ListenerReasonProgrammed), gw.Generation))
	g.Expect(l.AttachedRoutes).To(BeEquivalentTo(1))

	var route gwv1.HTTPRoute
	g.Expect(world.Client.Get(ctx, t.key(routeName), &route)).To(Succeed())
	g.Expect(route.Status.Parents).To(HaveLen(1))
	parent := route.Status.Parents[0]
	g.Expect(parent.ControllerName).To(Equal(env.ControllerName))
	keep("HTTPRoute", expectCondition(g, parent.Conditions, string(gwv1.RouteConditionAccepted), metav1.ConditionTrue, string(gwv1.RouteReasonAccepted), route.Generation))
	keep("HTTPRoute", expectCondition(g, parent.Conditions, string(gwv1.RouteConditionResolvedRefs), metav1.ConditionTrue, string(gwv1.RouteReasonResolvedRefs), route.Generation))

	var m v1alpha1.MCPServer
	g.Expect(world.Client.Get(ctx, t.key(mcpServerName), &m)).To(Succeed())
	g.Expect(m.Status.ObservedGeneration).To(Equal(m.Generation))
	keep("MCPServer", expectCondition(g, m.Status.Conditions, v1alpha1.ConditionAccepted, metav1.ConditionTrue, translate.ReasonAccepted, m.Generation))
	keep("MCPServer", expectCondition(g, m.Status.Conditions, v1alpha1.ConditionRateLimitingConfigValid, metav1.ConditionTrue, translate.ReasonValid, m.Generation))
	return out
}

// crdFiles reads the CRDs of a chart's crds/ folder, by name.
func crdFiles(dir string) map[string]*apiextensionsv1.CustomResourceDefinition {
	GinkgoHelper()
	files, err := filepath.Glob(filepath.Join(dir, "*.yaml"))
	Expect(err).NotTo(HaveOccurred())
	Expect(files).NotTo(BeEmpty(), "no CRDs in %s", dir)
	out := map[string]*apiextensionsv1.CustomResourceDefinition{}
	for _, f := range files {
		data, err := os.ReadFile(f)
		Expect(err).NotTo(HaveOccurred())
		var crd apiextensionsv1.CustomResourceDefinition
		Expect(yaml.Unmarshal(data, &crd)).To(Succeed(), f)
		Expect(crd.Name).NotTo(BeEmpty(), "%s is one CRD", f)
		out[crd.Name] = &crd
	}
	return out
}

// changedCRDs names the CRDs whose versions differ between two charts'
// crds/ folders, or that only one has.
func changedCRDs(before, after string) []string {
	GinkgoHelper()
	a, b := crdFiles(before), crdFiles(after)
	var out []string
	for name, crd := range b {
		if old, ok := a[name]; !ok || !equality.Semantic.DeepEqual(old.Spec.Versions, crd.Spec.Versions) {
			out = append(out, name)
		}
	}
	for name := range a {
		if _, ok := b[name]; !ok {
			out = append(out, name)
		}
	}
	return out
}

// clusterCRD reads a CRD from the cluster (the suite's client does not know
// the kind).
func clusterCRD(ctx context.Context, name string) *apiextensionsv1.CustomResourceDefinition {
	GinkgoHelper()
	u := &unstructured.Unstructured{}
	u.SetGroupVersionKind(apiextensionsv1.SchemeGroupVersion.WithKind("CustomResourceDefinition"))
	Expect(world.Client.Get(ctx, types.NamespacedName{Name: name}, u)).To(Succeed(), "CRD %s", name)
	var crd apiextensionsv1.CustomResourceDefinition
	Expect(runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, &crd)).To(Succeed())
	return &crd
}

// expectCRDs checks that the cluster's CRDs have the versions (schemas,
// served and stored versions, subresources, columns) of those in dir.
func expectCRDs(ctx context.Context, dir string) {
	GinkgoHelper()
	for name, want := range crdFiles(dir) {
		got := clusterCRD(ctx, name)
		Expect(equality.Semantic.DeepEqual(got.Spec.Versions, want.Spec.Versions)).To(BeTrue(),
			"the cluster's CRD %s has the versions of %s", name, dir)
	}
}

// kubectlApplied reports whether kubectl apply --server-side (field manager
// kubectl) manages fields of the CRD.
func kubectlApplied(crd *apiextensionsv1.CustomResourceDefinition) bool {
	for _, f := range crd.ManagedFields {
		if f.Manager == "kubectl" && f.Operation == metav1.ManagedFieldsOperationApply {
			return true
		}
	}
	return false
}

func expectNoKubectlApply(ctx context.Context, dir string) {
	GinkgoHelper()
	for name := range crdFiles(dir) {
		crd := clusterCRD(ctx, name)
		Expect(kubectlApplied(crd)).To(BeFalse(), "CRD %s, which Helm installed, names kubectl among its managers: %+v", name, crd.ManagedFields)
	}
}

func expectKubectlApply(ctx context.Context, dir string) {
	GinkgoHelper()
	for name := range crdFiles(dir) {
		crd := clusterCRD(ctx, name)
		Expect(kubectlApplied(crd)).To(BeTrue(), "CRD %s was applied with kubectl apply --server-side: %+v", name, crd.ManagedFields)
	}
}
