//go:build gatewayapi

package gatewayapi

import (
	"cmp"
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrlconfig "sigs.k8s.io/controller-runtime/pkg/client/config"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"
	"sigs.k8s.io/gateway-api/conformance"
	"sigs.k8s.io/gateway-api/conformance/utils/flags"
	"sigs.k8s.io/gateway-api/conformance/utils/suite"
	"sigs.k8s.io/gateway-api/pkg/consts"
	"sigs.k8s.io/gateway-api/pkg/features"
)

// The suite's own flags (sigs.k8s.io/gateway-api/conformance/utils/flags:
// -gateway-class, -supported-features, -exempt-features, -run-test,
// -skip-tests, -report-output, -version, -debug, ...) and controller-runtime's
// -kubeconfig are registered by the imports; this file only changes their
// defaults for toolgate, and only when they are not given.

// defaultGatewayClass is the GatewayClass config/local installs.
const defaultGatewayClass = "toolgate"

// The addresses GatewayStaticAddresses claims, for the local cluster:
// usableAddress lies in the static address pool of config/local's
// GatewayClass (10.200.1.0/24), unusableAddress outside it. Neither is used
// by the cluster (node 10.200.0.10/24, pods 10.244.0.0/24, Services
// 10.96.0.0/16), and both exist only inside its network namespace, which
// has no route out. Another cluster passes its own with -usable-address
// and -unusable-address.
const (
	usableAddress   = "10.200.1.10"
	unusableAddress = "10.200.2.10"
)

// supportedFeatures are the extended features of the GATEWAY-HTTP profile
// that toolgate implements; the profile's core features (Gateway,
// HTTPRoute, ReferenceGrant) are enabled by the profile itself. Each entry
// names the code that implements it. The features whose fields only the
// experimental channel's CRDs have are experimentalFeatures.
var supportedFeatures = []features.FeatureName{
	// Listeners bind any port; the provisioned Service exposes each one
	// (controller/provision/objects.go listenerPorts).
	features.SupportGatewayPort8080,
	// spec.infrastructure's labels and annotations reach the provisioned
	// ServiceAccount, Deployment, pods and Service
	// (controller/provision/objects.go infrastructureMeta); a
	// parametersRef refuses the Gateway with InvalidParameters
	// (translate/gateway.go finishGateways).
	features.SupportGatewayInfrastructure,
	// spec.tls.frontend: HTTPS listeners verify client certificates
	// against CA ConfigMaps or Secrets, per port or by default
	// (translate/frontendtls.go; gateway/server.go clientValidationFor).
	features.SupportGatewayFrontendClientCertificateValidation,
	features.SupportGatewayFrontendClientCertificateValidationInsecureFallback,
	// Listeners sharing a port: the most specific hostname alone serves a
	// request (gateway/host.go hostIndex, gateway/compile.go lookup).
	features.SupportGatewayHTTPListenerIsolation,
	// 421 when an HTTPS request's Host selects another listener than its
	// TLS server name: gateway/handler.go misdirected.
	features.SupportGatewayHTTPSListenerDetectMisdirectedRequests,
	// Matches (gateway/match.go addMuxRoute).
	features.SupportHTTPRouteQueryParamMatching,
	features.SupportHTTPRouteMethodMatching,
	// Filters (gateway/filters.go, gateway/rewrite.go); backendRefs[].filters
	// run per backend (translate/route.go translateRules).
	features.SupportHTTPRouteResponseHeaderModification,
	features.SupportHTTPRouteBackendRequestHeaderModification,
	features.SupportHTTPRoutePortRedirect,
	features.SupportHTTPRouteSchemeRedirect,
	features.SupportHTTPRoutePathRedirect,
	features.SupportHTTPRoute303RedirectStatusCode,
	features.SupportHTTPRoute307RedirectStatusCode,
	features.SupportHTTPRoute308RedirectStatusCode,
	features.SupportHTTPRouteHostRewrite,
	features.SupportHTTPRoutePathRewrite,
	// The CORS filter answers preflights and sets the CORS headers of every
	// answer of its rule (gateway/cors.go; translate/filters.go corsFilter).
	features.SupportHTTPRouteCORS,
	// timeouts.request and timeouts.backendRequest (gateway/compile.go
	// requestTimeout, gateway/proxy.go).
	features.SupportHTTPRouteRequestTimeout,
	features.SupportHTTPRouteBackendTimeout,
	// parentRefs[].port selects listeners by port, and a port no listener
	// has leaves the route unattached with NoMatchingParent
	// (translate/route.go attach); GEP-957 calls this destination port
	// matching.
	features.SupportHTTPRouteParentRefPort,
	features.SupportHTTPRouteDestinationPortMatching,
	// rules[].name (translate/route.go translateRules).
	features.SupportHTTPRouteNamedRouteRule,
	// Upgrades pass through httputil.ReverseProxy (gateway/proxy.go).
	features.SupportHTTPRouteBackendProtocolWebSocket,
	// appProtocol kubernetes.io/h2c (gateway/backendtls.go h2c), and
	// cleartext listeners that speak HTTP/2 with prior knowledge
	// (gateway/server.go listen).
	features.SupportHTTPRouteBackendProtocolH2C,
	// BackendTLSPolicy: the translator resolves policies, their CA
	// ConfigMaps and their status (translate/backendtls.go); the proxy
	// connects with the policy's SNI, roots and subject alternative names
	// (gateway/backendtls.go).
	features.SupportBackendTLSPolicy,
	features.SupportBackendTLSPolicySANValidation,
	// spec.tls.backend.clientCertificateRef: the translator resolves the
	// Secret and sets the Gateway's ResolvedRefs
	// (translate/backendclientcert.go); the proxy presents it to backends
	// over TLS (gateway/backendtls.go backendClientCert).
	features.SupportGatewayBackendClientCertificate,
	// The RequestMirror filter: copies sent when a request is forwarded,
	// one endpoint per mirror, each request drawn for percent and fraction
	// (gateway/mirror.go; translate/filters.go requestMirror).
	features.SupportHTTPRouteRequestMirror,
	features.SupportHTTPRouteRequestMultipleMirrors,
	features.SupportHTTPRouteRequestPercentageMirror,
	// ListenerSets attach to the Gateways whose allowedListeners admit
	// them; their listeners follow the Gateway's in precedence
	// (translate/listenerset.go).
	features.SupportListenerSet,
	// spec.addresses: an IPAddress of the class's static address pool
	// (ConfigMap key staticAddressPool) becomes an external IP of the
	// Gateway's Service; other addresses are not usable or not supported,
	// and one without a value takes the Service's own address
	// (translate/addresses.go; provision/objects.go Service).
	features.SupportGatewayStaticAddresses,
	features.SupportGatewayAddressEmpty,
}

// experimentalChannel is the channel preflight reports for the
// experimental CRDs.
const experimentalChannel = "experimental"

// experimentalFeatures are declared besides supportedFeatures when the
// cluster has the experimental channel's CRDs (hack/conformance.sh runs
// the suite on them after the standard ones): the standard channel's
// HTTPRoute has no rules[].retry, the API server drops it, and the test
// could not pass there. HTTPRouteRetryConnectionError and
// HTTPRouteRetryBackendTimeout are implemented too (a failed connection
// is retried; backendRequest bounds each attempt) but v1.6.3 has no test
// of them, so they are not declared.
var experimentalFeatures = []features.FeatureName{
	// rules[].retry: codes, attempts and backoff (translate/retry.go,
	// gateway/retry.go).
	features.SupportHTTPRouteRetry,
}

// TestGatewayAPIConformance runs the GATEWAY-HTTP conformance profile against
// the cluster of $KUBECONFIG (or -kubeconfig). It fails, never skips, when no
// cluster is named or reachable, or when toolgate's GatewayClass is missing.
func TestGatewayAPIConformance(t *testing.T) {
	cfg, where := clusterConfig(t)
	channel := preflight(t, cfg, where)

	opts := conformance.DefaultOptions(t)
	set := explicitFlags()
	if !set["gateway-class"] && opts.GatewayClassName == flags.DefaultGatewayClassName {
		opts.GatewayClassName = defaultGatewayClass
	}
	mustHaveGatewayClass(t, opts.Client, opts.GatewayClassName)
	if len(opts.ConformanceProfiles) == 0 {
		opts.ConformanceProfiles = []suite.ConformanceProfileName{suite.GatewayHTTPConformanceProfileName}
	}
	if !opts.EnableAllSupportedFeatures && len(opts.SupportedFeatures) == 0 {
		// Always declared: without them the suite would infer the features
		// from the GatewayClass status, which toolgate does not fill, and
		// a single -run-test would run with no extended feature at all.
		opts.SupportedFeatures = supportedFeatures
		if channel == experimentalChannel {
			opts.SupportedFeatures = append(slices.Clone(supportedFeatures), experimentalFeatures...)
		}
	}
	if !set["usable-address"] && len(opts.UsableNetworkAddresses) == 0 {
		opts.UsableNetworkAddresses = []gwv1.GatewaySpecAddress{{Type: ptr(gwv1.IPAddressType), Value: usableAddress}}
	}
	if !set["unusable-address"] && len(opts.UnusableNetworkAddresses) == 0 {
		opts.UnusableNetworkAddresses = []gwv1.GatewaySpecAddress{{Type: ptr(gwv1.IPAddressType), Value: unusableAddress}}
	}
	if !set["disable-parallel-tests"] && *flags.ConformanceOptionsFile == "" {
		// Every Gateway gets its own proxy Deployment (two replicas of
		// 100m CPU each with config/local), and the suite waits for every
		// Gateway of its namespace to be Programmed before each test. The
		// tests marked parallel that toolgate's features select create
		// about fifteen Gateways at once (3 CPUs of proxy requests), more
		// than a 2-CPU node can schedule: their proxies stay Pending and
		// every test running beside them times out after 5 minutes. Run
		// them one by one unless -disable-parallel-tests=false is given.
		opts.DisableParallelTests = true
	}
	impl := &opts.Implementation
	impl.Organization = cmp.Or(impl.Organization, "toolgate")
	impl.Project = cmp.Or(impl.Project, "toolgate")
	impl.URL = cmp.Or(impl.URL, "https://github.com/toolgate/toolgate")
	impl.Version = cmp.Or(impl.Version, "devel")
	if len(impl.Contact) == 0 {
		impl.Contact = []string{"https://github.com/toolgate/toolgate/issues"}
	}
	if opts.ReportOutputPath == "" {
		opts.ReportOutputPath = defaultReportPath(t, channel, impl.Version, opts.Mode)
	}
	if err := os.MkdirAll(filepath.Dir(opts.ReportOutputPath), 0o755); err != nil {
		t.Fatalf("create the report folder: %v", err)
	}
	t.Logf("cluster %s, GatewayClass %s, report %s", where, opts.GatewayClassName, opts.ReportOutputPath)
	conformance.RunConformanceWithOptions(t, opts)
}

// clusterConfig loads the cluster named by -kubeconfig or $KUBECONFIG; it
// does not fall back to an in-cluster or ~/.kube/config cluster, so that the
// suite never lands on a cluster nobody named.
func clusterConfig(t *testing.T) (*rest.Config, string) {
	t.Helper()
	path := os.Getenv("KUBECONFIG")
	if f := flag.Lookup(ctrlconfig.KubeconfigFlagName); f != nil && f.Value.String() != "" {
		path = f.Value.String()
	}
	if path == "" {
		t.Fatal("no cluster named: set $KUBECONFIG or pass -kubeconfig. For the local cluster: " +
			"./hack/cluster exec env KUBECONFIG=/var/lib/toolgate-cluster/kubeconfig/admin <test binary> (see conformance/gatewayapi/README.md)")
	}
	cfg, err := ctrlconfig.GetConfig()
	if err != nil {
		t.Fatalf("load kubeconfig %s: %v", path, err)
	}
	return cfg, fmt.Sprintf("%s (kubeconfig %s)", cfg.Host, path)
}

// preflight checks that the API server answers and that the Gateway API
// CRDs are installed, and returns their channel, which names the report.
func preflight(t *testing.T, cfg *rest.Config, where string) string {
	t.Helper()
	quick := rest.CopyConfig(cfg)
	quick.Timeout = 10 * time.Second
	dc, err := discovery.NewDiscoveryClientForConfig(quick)
	if err != nil {
		t.Fatalf("client for %s: %v", where, err)
	}
	if _, err := dc.ServerVersion(); err != nil {
		t.Fatalf("no Kubernetes API server reachable at %s: %v. The local cluster (hack/cluster) is only reachable "+
			"inside its network namespace: run the test binary with ./hack/cluster exec", where, err)
	}
	scheme := runtime.NewScheme()
	if err := apiextensionsv1.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	c, err := client.New(quick, client.Options{Scheme: scheme})
	if err != nil {
		t.Fatalf("client for %s: %v", where, err)
	}
	crd := &apiextensionsv1.CustomResourceDefinition{}
	if err := c.Get(context.Background(), client.ObjectKey{Name: "httproutes." + gwv1.GroupName}, crd); err != nil {
		t.Fatalf("the Gateway API CRDs are not installed in %s (%v): install the %s standard channel", where, err, consts.BundleVersion)
	}
	channel := crd.Annotations[consts.ChannelAnnotation]
	if version := crd.Annotations[consts.BundleVersionAnnotation]; version != consts.BundleVersion {
		t.Fatalf("the cluster has Gateway API CRDs %q, the suite is %s: install the CRDs of %s or change the suite's version in go.mod",
			version, consts.BundleVersion, consts.BundleVersion)
	}
	return cmp.Or(channel, "standard")
}

// mustHaveGatewayClass fails early, with a message that says what to do,
// instead of letting the suite wait minutes for a class that does not exist.
func mustHaveGatewayClass(t *testing.T, c client.Client, name string) {
	t.Helper()
	gwc := &gwv1.GatewayClass{}
	err := c.Get(context.Background(), client.ObjectKey{Name: name}, gwc)
	switch {
	case apierrors.IsNotFound(err):
		t.Fatalf("GatewayClass %q not found: deploy toolgate (kubectl apply -k config/local) or name the class with -gateway-class", name)
	case err != nil:
		t.Fatalf("get GatewayClass %q: %v", name, err)
	}
}

// explicitFlags returns the names of the flags given on the command line.
func explicitFlags() map[string]bool {
	set := map[string]bool{}
	flag.Visit(func(f *flag.Flag) { set[f.Name] = true })
	return set
}

// defaultReportPath is
// conformance/reports/<Gateway API version>/<channel>-<version>-<mode>-report.yaml,
// the upstream layout and naming (conformance/reports/README.md of
// gateway-api), in the module this test belongs to, found upwards from the
// working directory (the package folder under go test, the repository root
// under hack/cluster exec).
func defaultReportPath(t *testing.T, channel, version, mode string) string {
	t.Helper()
	root, err := moduleRoot()
	if err != nil {
		t.Fatalf("find the repository to write the report into (%v): pass -report-output", err)
	}
	name := fmt.Sprintf("%s-%s-%s-report.yaml", channel, version, cmp.Or(mode, flags.DefaultMode))
	return filepath.Join(root, "conformance", "reports", consts.BundleVersion, name)
}

// moduleRoot returns the folder of the go.mod of module
// github.com/toolgate/toolgate at or above the working directory.
func moduleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		data, err := os.ReadFile(filepath.Join(dir, "go.mod"))
		if err == nil && strings.HasPrefix(string(data), "module github.com/toolgate/toolgate\n") {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no go.mod of github.com/toolgate/toolgate at or above the working directory")
		}
		dir = parent
	}
}

func ptr[T any](v T) *T { return &v }
