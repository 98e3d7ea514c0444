// Package env is the world the conformance suite runs in: a Kubernetes API
// server with the Gateway API and toolgate CRDs, Redis, an MCP backend built
// with the go-sdk, an OpenID Connect issuer, and the toolgate binary running
// as the controller and as two proxy replicas of one Gateway, each a
// separate process.
//
// By default everything is started here: kube-apiserver and etcd through
// envtest, redis-server, and a toolgate binary built from this checkout.
// Flags (see [Flags]) swap in an existing cluster, Redis or binary, so the
// same specs can run against a real cluster.
//
// The proxies always run on this machine, on 127.0.0.1 and 127.0.0.2 with
// one listener port, so that the suite can address each replica and read its
// /metrics, and so that the backend on this machine is reachable through
// EndpointSlices. They have no Kubernetes credentials: they read their
// Gateway's snapshot from the controller's config stream with the client
// certificate the controller provisions, whose Secret the suite copies into
// a folder as the kubelet would mount it. With its own API server the suite
// runs the controller as the ServiceAccount of config/rbac. The backend listens on a non-loopback address of this
// machine (see HostIP): the API server refuses loopback addresses in
// EndpointSlices. The controller provisions a Deployment for the Gateway as
// it would in a cluster; envtest runs no kubelet, so with a local API server
// the suite stands in for one and reports the Deployment available once its
// own proxy processes are ready.
package env

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"
	gwv1beta1 "sigs.k8s.io/gateway-api/apis/v1beta1"

	"github.com/toolgate/toolgate/apis/v1alpha1"
	"github.com/toolgate/toolgate/internal/testkube"
	"github.com/toolgate/toolgate/internal/testredis"
)

// ControllerName is the GatewayClass controllerName toolgate serves.
const ControllerName gwv1.GatewayController = "toolgate.dev/gateway-controller"

// ListenerName is the name of the suite Gateway's only listener.
const ListenerName gwv1.SectionName = "http"

// proxyIPs are the loopback addresses of the two proxy replicas.
var proxyIPs = []string{"127.0.0.1", "127.0.0.2"}

// Timeouts of start-up and shutdown.
const (
	startTimeout = 2 * time.Minute
	stopGrace    = 10 * time.Second
	// storeTimeout is the proxies' --store-timeout. The default (tens of
	// milliseconds) suits production; on a busy test machine a slow Redis
	// answer would fail open and let a call through that the specs expect
	// to be refused. A Redis that is down fails at once, whatever this is.
	storeTimeout = "2s"
)

// Env is a running environment.
type Env struct {
	// Client reaches the API server as an administrator.
	Client client.Client
	// KubeconfigPath is what the toolgate processes and kubectl use.
	KubeconfigPath string
	// KubectlPath is the kubectl binary.
	KubectlPath string

	// Namespace holds the suite's Gateway.
	Namespace string
	// GatewayClass is the suite's GatewayClass, served by toolgate.
	GatewayClass string
	// Gateway is the Gateway the proxies serve. Its listener ListenerName
	// allows HTTPRoutes from every namespace.
	Gateway types.NamespacedName
	// ListenerPort is the Gateway listener's port, on every proxy.
	ListenerPort int

	// Proxies are the replicas of the Gateway's data plane.
	Proxies []*Proxy
	// Controller is the controller process.
	Controller *Process
	// StreamURL is the controller's config stream, which the proxies read.
	StreamURL string

	Issuer  *Issuer
	Backend *Backend
	Redis   *Redis

	// LogDir holds the processes' logs.
	LogDir string

	// RESTConfig reaches the API server as an administrator.
	RESTConfig *rest.Config

	kube       *testkube.Env
	scratch    string
	progress   io.Writer
	pods       bool   // toolgate runs in the cluster (--pods)
	ownClass   bool   // the suite created GatewayClass
	binary     string // the toolgate binary
	sessionKey string // the proxies' $TOOLGATE_SESSION_KEY setting
	tlsDir     string // the suite Gateway's client certificate files
}

// Proxy is one `toolgate proxy` replica.
type Proxy struct {
	*Process
	// URL is the listener, such as http://127.0.0.2:41234.
	URL string
	// AdminURL serves /readyz and /metrics.
	AdminURL string
}

// Start brings the environment up, writing what it does to progress. On
// error, everything already started is stopped again.
func Start(ctx context.Context, f *Flags, progress io.Writer) (_ *Env, err error) {
	e := &Env{progress: progress}
	defer func() {
		if err != nil {
			e.Stop(false)
		}
	}()
	if e.scratch, err = os.MkdirTemp("", "toolgate-conformance-"); err != nil {
		return nil, err
	}
	e.LogDir = f.LogDir
	if e.LogDir == "" {
		e.LogDir = filepath.Join(e.scratch, "logs")
	}
	if err := os.MkdirAll(e.LogDir, 0o755); err != nil {
		return nil, err
	}
	if err := e.startKube(ctx, f.Kubeconfig()); err != nil {
		return nil, err
	}
	if err := e.startRedis(f.RedisURL, redisIP(f)); err != nil {
		return nil, err
	}
	if f.Pods && e.kube != nil {
		return nil, fmt.Errorf("--pods needs the --kubeconfig of a cluster that runs toolgate (hack/cluster deploy)")
	}
	e.pods = f.Pods
	var binary string
	if !f.Pods {
		if binary = f.ToolgateBinary; binary == "" {
			if binary, err = e.buildToolgate(ctx); err != nil {
				return nil, err
			}
		}
	}
	backendIP := f.BackendAddress
	if backendIP == "" {
		backendIP = "127.0.0.1"
	}
	// With --pods the proxies fetch the issuer's keys from their pods: it
	// listens where the backend does.
	issuerIP := "127.0.0.1"
	if f.Pods {
		issuerIP = backendIP
	}
	if e.Issuer, err = StartIssuer(issuerIP); err != nil {
		return nil, err
	}
	if e.Backend, err = StartBackend(backendIP); err != nil {
		return nil, err
	}
	if f.PreviousRelease != "" {
		if !f.Pods {
			return nil, fmt.Errorf("--previous-release needs --pods: the upgrade spec installs toolgate's charts in the cluster of --kubeconfig")
		}
		// The upgrade spec replaces the cluster's toolgate: a Gateway of
		// the suite's own would only be provisioned again by each version.
		e.logf("environment ready for the upgrade spec: no Gateway of the suite's own")
		return e, nil
	}
	if f.Pods {
		e.GatewayClass = f.GatewayClass
		if err := e.createGateway(ctx); err != nil {
			return nil, err
		}
		if err := e.findProxyPods(ctx); err != nil {
			return nil, err
		}
		e.logf("environment ready: Gateway %s on port %d of its pods %s", e.Gateway, e.ListenerPort, e.proxyURLs())
		return e, nil
	}
	if err := e.createGateway(ctx); err != nil {
		return nil, err
	}
	if err := e.startController(ctx, binary); err != nil {
		return nil, err
	}
	if err := e.startProxies(ctx, binary); err != nil {
		return nil, err
	}
	if e.kube != nil {
		if err := e.reportDataPlaneAvailable(ctx); err != nil {
			// Not fatal: the Gateway then stays Programmed=False, which the
			// status spec reports with the controller's own message.
			e.logf("WARNING: could not report the proxies in the Gateway's Deployment status: %v", err)
		}
	}
	e.logf("environment ready: Gateway %s on port %d of %s; logs in %s", e.Gateway, e.ListenerPort, strings.Join(proxyIPs, " and "), e.LogDir)
	return e, nil
}

func (e *Env) logf(format string, args ...any) {
	if e.progress != nil {
		fmt.Fprintf(e.progress, "conformance: "+format+"\n", args...)
	}
}

// Local reports whether the suite runs its own API server.
func (e *Env) Local() bool { return e.kube != nil }

// Scheme knows every kind the suite reads and writes.
func Scheme() (*runtime.Scheme, error) {
	s := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{
		clientgoscheme.AddToScheme, gwv1.Install, gwv1beta1.Install, v1alpha1.AddToScheme,
	} {
		if err := add(s); err != nil {
			return nil, err
		}
	}
	return s, nil
}

func (e *Env) startKube(ctx context.Context, kubeconfig string) error {
	scheme, err := Scheme()
	if err != nil {
		return err
	}
	if kubeconfig == "" {
		e.logf("starting kube-apiserver and etcd (envtest)")
		gatewayCRDs, err := testkube.GatewayAPICRDDir()
		if err != nil {
			return err
		}
		e.kube, err = testkube.Start(testkube.CRDDir(), gatewayCRDs)
		if err != nil {
			return err
		}
		e.KubeconfigPath, e.KubectlPath = e.kube.KubeconfigPath, e.kube.KubectlPath
		e.RESTConfig = e.kube.Config
		e.Client, err = client.New(e.kube.Config, client.Options{Scheme: scheme})
		return err
	}
	e.logf("using the cluster of %s", kubeconfig)
	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		return fmt.Errorf("--kubeconfig %s: %w", kubeconfig, err)
	}
	e.KubeconfigPath, e.RESTConfig = kubeconfig, cfg
	if e.KubectlPath, err = exec.LookPath("kubectl"); err != nil {
		if dir, assetsErr := testkube.AssetsDir(); assetsErr == nil {
			e.KubectlPath, err = filepath.Join(dir, "kubectl"), nil
		}
	}
	if err != nil {
		return fmt.Errorf("kubectl is needed with --kubeconfig: put it on $PATH: %w", err)
	}
	if e.Client, err = client.New(cfg, client.Options{Scheme: scheme}); err != nil {
		return err
	}
	var probe v1alpha1.MCPServerList
	if err := e.Client.List(ctx, &probe, client.Limit(1)); err != nil {
		return fmt.Errorf("list MCPServers in the cluster of %s (are toolgate's CRDs installed? kubectl apply -f config/crd/bases): %w", kubeconfig, err)
	}
	return nil
}

// redisIP is where the suite's own redis-server listens: loopback for
// proxies on this machine, the backend's address for proxy pods.
func redisIP(f *Flags) string {
	if f.Pods && f.BackendAddress != "" {
		return f.BackendAddress
	}
	return "127.0.0.1"
}

func (e *Env) startRedis(url, ip string) error {
	if url != "" {
		e.logf("using Redis at %s", url)
		e.Redis = &Redis{URL: url}
		return nil
	}
	e.logf("starting redis-server")
	server, err := testredis.StartOn(ip)
	if err != nil {
		return err
	}
	e.Redis = &Redis{URL: server.URL(), server: server}
	return nil
}

// buildToolgate builds ./cmd/toolgate of this checkout.
func (e *Env) buildToolgate(ctx context.Context) (string, error) {
	e.logf("building ./cmd/toolgate")
	out := filepath.Join(e.scratch, "toolgate")
	cmd := exec.CommandContext(ctx, "go", "build", "-o", out, "./cmd/toolgate")
	cmd.Dir = testkube.RepoRoot()
	if output, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build ./cmd/toolgate: %w\n%s", err, output)
	}
	return out, nil
}

// createGateway creates the suite's namespace, GatewayClass and Gateway, on
// a listener port free on every proxy address.
func (e *Env) createGateway(ctx context.Context) error {
	port, err := freePortOn(proxyIPs)
	if err != nil {
		return err
	}
	e.ListenerPort = port
	suffix := RandomSuffix()
	e.Namespace = "toolgate-conformance-" + suffix
	e.Gateway = types.NamespacedName{Namespace: e.Namespace, Name: "conformance"}
	all := gwv1.NamespacesFromAll
	objects := []client.Object{&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: e.Namespace}}}
	switch {
	case !e.pods:
		e.GatewayClass = "toolgate-conformance-" + suffix
		objects = append(objects, &gwv1.GatewayClass{
			ObjectMeta: metav1.ObjectMeta{Name: e.GatewayClass},
			Spec:       gwv1.GatewayClassSpec{ControllerName: ControllerName},
		})
	case e.GatewayClass == "":
		// A class of the suite's own whose proxies share the suite's Redis,
		// which the Redis outage spec stops and starts; the rest of its
		// parameters are what a local cluster needs (images never pulled,
		// a ClusterIP Service).
		e.GatewayClass = "toolgate-conformance-" + suffix
		params := &corev1.ConfigMap{
			ObjectMeta: metav1.ObjectMeta{Name: "proxy-parameters", Namespace: e.Namespace},
			Data: map[string]string{
				"imagePullPolicy": string(corev1.PullIfNotPresent),
				"serviceType":     string(corev1.ServiceTypeClusterIP),
				"replicas":        strconv.Itoa(len(proxyIPs)),
				"redisURL":        e.Redis.URL,
			},
		}
		ns := gwv1.Namespace(e.Namespace)
		objects = append(objects, params, &gwv1.GatewayClass{
			ObjectMeta: metav1.ObjectMeta{Name: e.GatewayClass},
			Spec: gwv1.GatewayClassSpec{
				ControllerName: ControllerName,
				ParametersRef:  &gwv1.ParametersReference{Group: "", Kind: "ConfigMap", Name: params.Name, Namespace: &ns},
			},
		})
		e.ownClass = true
	}
	objects = append(objects,
		&gwv1.Gateway{
			ObjectMeta: metav1.ObjectMeta{Name: e.Gateway.Name, Namespace: e.Namespace},
			Spec: gwv1.GatewaySpec{
				GatewayClassName: gwv1.ObjectName(e.GatewayClass),
				Listeners: []gwv1.Listener{{
					Name:          ListenerName,
					Protocol:      gwv1.HTTPProtocolType,
					Port:          gwv1.PortNumber(port),
					AllowedRoutes: &gwv1.AllowedRoutes{Namespaces: &gwv1.RouteNamespaces{From: &all}},
				}},
			},
		})
	for _, o := range objects {
		if err := e.Client.Create(ctx, o); err != nil {
			return fmt.Errorf("create %T %s: %w", o, o.GetName(), err)
		}
	}
	return nil
}

// startProxies starts one proxy per address of proxyIPs, sharing Redis and
// a session key, and waits until each is ready and serves the listener.
func (e *Env) startProxies(ctx context.Context, binary string) error {
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		return err
	}
	e.binary = binary
	e.sessionKey = "TOOLGATE_SESSION_KEY=" + base64.StdEncoding.EncodeToString(key)
	tlsDir, err := e.ConfigClientFiles(ctx, e.Gateway)
	if err != nil {
		return err
	}
	e.tlsDir = tlsDir
	for i, ip := range proxyIPs {
		p, err := e.launchProxy("proxy-"+string(rune('a'+i)), ip)
		if err != nil {
			return err
		}
		e.Proxies = append(e.Proxies, p)
	}
	for _, p := range e.Proxies {
		if err := e.waitServing(ctx, p); err != nil {
			return err
		}
	}
	return nil
}

// StartExtraProxy starts one more proxy of the suite's Gateway on ip (a
// loopback address), beside Proxies, and waits until it serves. The
// caller stops it.
func (e *Env) StartExtraProxy(ctx context.Context, name, ip string) (*Proxy, error) {
	p, err := e.launchProxy(name, ip)
	if err != nil {
		return nil, err
	}
	if err := e.waitServing(ctx, p); err != nil {
		_ = p.Stop(stopGrace)
		return nil, err
	}
	return p, nil
}

// launchProxy starts a proxy of the suite's Gateway that binds ip. It has
// no kubeconfig: its configuration comes from the controller's stream,
// authenticated by the client certificate the controller provisioned.
func (e *Env) launchProxy(name, ip string) (*Proxy, error) {
	adminPort, err := freePortOn([]string{"127.0.0.1"})
	if err != nil {
		return nil, err
	}
	e.logf("starting toolgate proxy %s on %s", name, ip)
	admin := net.JoinHostPort("127.0.0.1", strconv.Itoa(adminPort))
	args := []string{
		"proxy",
		"--gateway", e.Gateway.String(),
		"--controller", e.StreamURL,
		"--controller-tls-dir", e.tlsDir,
		"--admin-address", admin,
		"--listen-address", ip,
		"--redis-url", e.Redis.URL,
		"--store-timeout", storeTimeout,
	}
	p, err := startProcess(name, e.LogDir, e.binary, args, []string{e.sessionKey})
	if err != nil {
		return nil, err
	}
	return &Proxy{
		Process:  p,
		URL:      "http://" + net.JoinHostPort(ip, strconv.Itoa(e.ListenerPort)),
		AdminURL: "http://" + admin,
	}, nil
}

// waitServing waits until p is ready and its listener answers.
func (e *Env) waitServing(ctx context.Context, p *Proxy) error {
	deadline := time.Now().Add(startTimeout)
	for {
		if err := p.errExited(); err != nil {
			return err
		}
		if err := e.Controller.errExited(); err != nil {
			return err
		}
		if p.serving(ctx) {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s is not ready and serving %s after %s; its output:\n%s", p.Name, p.URL, startTimeout, p.LogSince(0, 8<<10))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// serving reports whether the proxy is ready and its listener answers.
func (p *Proxy) serving(ctx context.Context) bool {
	for _, url := range []string{p.AdminURL + "/readyz", p.URL + "/"} {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return false
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return false
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if strings.HasSuffix(url, "/readyz") && resp.StatusCode != http.StatusOK {
			return false
		}
	}
	return true
}

// reportDataPlaneAvailable does what the kubelet and the Deployment
// controller would: once the controller has provisioned the Gateway's
// Deployment, it reports the suite's proxy processes as its available
// replicas.
func (e *Env) reportDataPlaneAvailable(ctx context.Context) error {
	var gw gwv1.Gateway
	if err := e.Client.Get(ctx, e.Gateway, &gw); err != nil {
		return err
	}
	deadline := time.Now().Add(time.Minute)
	for {
		var list appsv1.DeploymentList
		if err := e.Client.List(ctx, &list, client.InNamespace(e.Namespace)); err != nil {
			return err
		}
		for i := range list.Items {
			dep := &list.Items[i]
			if !ownedBy(dep, gw.UID) {
				continue
			}
			n := int32(len(e.Proxies))
			next := dep.DeepCopy()
			next.Status = appsv1.DeploymentStatus{
				ObservedGeneration: dep.Generation,
				Replicas:           n, UpdatedReplicas: n, ReadyReplicas: n, AvailableReplicas: n,
				Conditions: []appsv1.DeploymentCondition{{
					Type: appsv1.DeploymentAvailable, Status: corev1.ConditionTrue,
					Reason: "MinimumReplicasAvailable", Message: "the conformance suite runs the proxies as processes",
					LastUpdateTime: metav1.Now(), LastTransitionTime: metav1.Now(),
				}},
			}
			if err := e.Client.Status().Patch(ctx, next, client.MergeFrom(dep)); err != nil {
				return fmt.Errorf("report Deployment %s/%s available: %w", dep.Namespace, dep.Name, err)
			}
			e.logf("reported Deployment %s/%s available with the %d proxy processes", dep.Namespace, dep.Name, n)
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the controller provisioned no Deployment owned by Gateway %s within a minute", e.Gateway)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func ownedBy(o metav1.Object, uid types.UID) bool {
	for _, ref := range o.GetOwnerReferences() {
		if ref.UID == uid {
			return true
		}
	}
	return false
}

// Kubectl runs kubectl against the environment's cluster and returns its
// combined output.
func (e *Env) Kubectl(args ...string) (string, error) {
	cmd := exec.Command(e.KubectlPath, append([]string{"--kubeconfig", e.KubeconfigPath}, args...)...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// Processes are the toolgate processes the suite runs.
func (e *Env) Processes() []*Process {
	var out []*Process
	if e.Controller != nil {
		out = append(out, e.Controller)
	}
	if e.pods {
		return out // the proxies are pods
	}
	for _, p := range e.Proxies {
		out = append(out, p.Process)
	}
	return out
}

// CheckProcesses returns an error naming every toolgate process that has
// exited.
func (e *Env) CheckProcesses() error {
	var errs []error
	for _, p := range e.Processes() {
		errs = append(errs, p.errExited())
	}
	return errors.Join(errs...)
}

// Stop stops everything Start started. The logs are kept when the suite
// failed or --log-dir was given.
func (e *Env) Stop(passed bool) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if e.kube == nil && e.Client != nil && e.Namespace != "" {
		// A real cluster outlives the suite: remove what it created. The
		// controller, still running, removes the data plane's
		// cluster-scoped objects once the Gateway is gone.
		_ = e.Client.Delete(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: e.Namespace}})
		if !e.pods || e.ownClass {
			_ = e.Client.Delete(ctx, &gwv1.GatewayClass{ObjectMeta: metav1.ObjectMeta{Name: e.GatewayClass}})
		}
	}
	for _, p := range e.Proxies {
		if !e.pods {
			_ = p.Stop(stopGrace)
		}
	}
	if e.Controller != nil {
		_ = e.Controller.Stop(stopGrace)
	}
	if e.Backend != nil {
		_ = e.Backend.Close()
	}
	if e.Issuer != nil {
		_ = e.Issuer.Close()
	}
	if e.Redis != nil {
		_ = e.Redis.close()
	}
	if e.kube != nil {
		if err := e.kube.Stop(); err != nil {
			e.logf("stop the API server: %v", err)
		}
	}
	if e.scratch == "" {
		return
	}
	if !passed && strings.HasPrefix(e.LogDir, e.scratch) {
		e.logf("the processes' logs are kept in %s", e.LogDir)
		return
	}
	_ = os.RemoveAll(e.scratch)
}

// RandomSuffix is a short random lowercase name suffix, so that objects of
// different runs against one cluster (and buckets in one Redis) never meet.
func RandomSuffix() string {
	b := make([]byte, 3)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// freePortOn finds a TCP port free on every one of the addresses.
func freePortOn(ips []string) (int, error) {
	for range 20 {
		ln, err := net.Listen("tcp", net.JoinHostPort(ips[0], "0"))
		if err != nil {
			return 0, fmt.Errorf("find a free port: %w", err)
		}
		port := ln.Addr().(*net.TCPAddr).Port
		free := true
		var held []net.Listener
		for _, ip := range ips[1:] {
			l, err := net.Listen("tcp", net.JoinHostPort(ip, strconv.Itoa(port)))
			if err != nil {
				free = false
				break
			}
			held = append(held, l)
		}
		for _, l := range held {
			_ = l.Close()
		}
		_ = ln.Close()
		if free {
			return port, nil
		}
	}
	return 0, fmt.Errorf("found no port free on all of %s", strings.Join(ips, ", "))
}
