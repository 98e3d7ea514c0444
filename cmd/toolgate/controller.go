package main

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/log"
	ctrlmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/toolgate/toolgate/controller"
	"github.com/toolgate/toolgate/controller/provision"
)

const shutdownTimeout = 30 * time.Second

// externalNamesHelp describes --allow-external-name-services.
const externalNamesHelp = "serve Services of type ExternalName as backends: the proxies dial the name, usually over TLS from a BackendTLSPolicy. " +
	"Whoever writes a Service in a namespace then chooses where that namespace's routes send traffic (names of the proxies' loopback, " +
	"link-local addresses and the cluster's Services are refused even so); false refuses them all"

func runController(ctx context.Context, args []string, stderr io.Writer) error {
	fs := newFlagSet("controller", "Run the control plane: status for GatewayClasses, Gateways, HTTPRoutes and MCPServers, and a data plane per Gateway.", stderr)
	var (
		kubeconfig     = fs.String("kubeconfig", "", "kubeconfig file; empty uses the in-cluster configuration or $KUBECONFIG")
		metricsAddress = fs.String("metrics-address", ":8080", "address of /metrics; 0 disables it")
		healthAddress  = fs.String("health-address", ":8081", "address of /healthz and /readyz; 0 disables it")
		pprofAddress   = fs.String("pprof-address", "0", "address of Go's /debug/pprof profiles, for performance work; 0 (the default) disables it")
		apiQPS         = fs.Float64("kube-api-qps", 50, "requests per second the controller may send the API server, sustained (client-go's own default, 5, provisions 200 Gateways in minutes)")
		apiBurst       = fs.Int("kube-api-burst", 100, "requests the controller may send the API server at once, above --kube-api-qps")
		leaderElect    = fs.Bool("leader-elect", true, "elect a leader so that only one replica writes")
		leaderNS       = fs.String("leader-election-namespace", "", "namespace of the leader-election Lease; empty means the controller's own (--namespace)")
		logLevel       = fs.String("log-level", "info", "debug, info, warn or error")
		namespace      = fs.String("namespace", "", "the controller's own namespace, where the config stream's CA Secret lives; empty reads the pod's namespace, else "+defaultNamespace)
		streamAddress  = fs.String("config-stream-address", ":9443", "address of the config stream the proxies read their snapshots from (HTTPS, client certificates required)")
		streamURL      = fs.String("config-stream-url", "", "URL at which proxies reach the config stream; empty means https://"+controllerService+".NAMESPACE.svc:PORT")
		streamNames    = fs.String("config-stream-names", "", "extra comma-separated DNS names or IPs of the stream's serving certificate, beside the host of --config-stream-url and the Service's names")
		caSecret       = fs.String("config-ca-secret", "toolgate-config-ca", "Secret, in the controller's namespace, holding the CA of the config stream; created when missing")
		devLocalhost   = fs.Bool("dev-localhost-endpoints", false, "let EndpointSlices point at the proxies' loopback: FQDN addresses under localhost become 127.0.0.1. For development and tests on one host, never in a cluster")
		externalNames  = fs.Bool("allow-external-name-services", true, externalNamesHelp)
		params         provision.Params
		serviceType    string
	)
	fs.StringVar(&params.Image, "proxy-image", provision.DefaultImage, "container image of the per-Gateway proxies")
	fs.Func("proxy-replicas", "proxy replicas per Gateway (default 1; more than one needs --redis-url or --redis-addrs)", func(v string) error {
		_, err := fmt.Sscan(v, &params.Replicas)
		return err
	})
	fs.StringVar(&serviceType, "proxy-service-type", string(corev1.ServiceTypeLoadBalancer), "type of each Gateway's Service: LoadBalancer, NodePort or ClusterIP")
	fs.StringVar(&params.RedisURL, "redis-url", "", "Redis URL the proxies share buckets through; a GatewayClass parametersRef ConfigMap may override it")
	fs.Func("redis-addrs", "comma-separated HOST:PORT of the Redis Cluster nodes or Sentinels the proxies share buckets through, instead of --redis-url; a GatewayClass parametersRef ConfigMap may override it", func(v string) error {
		addrs, err := provision.ParseRedisAddrs(v)
		params.RedisAddrs = addrs
		return err
	})
	fs.StringVar(&params.RedisMasterName, "redis-master-name", "", "Sentinel master name, with the Sentinels in --redis-addrs")
	if err := parse(fs, args); err != nil {
		return err
	}
	logger, err := newLogger(stderr, *logLevel)
	if err != nil {
		return err
	}
	switch corev1.ServiceType(serviceType) {
	case corev1.ServiceTypeLoadBalancer, corev1.ServiceTypeNodePort, corev1.ServiceTypeClusterIP:
		params.ServiceType = corev1.ServiceType(serviceType)
	default:
		return fmt.Errorf("--proxy-service-type %q: use LoadBalancer, NodePort or ClusterIP", serviceType)
	}
	if params.RedisURL != "" && len(params.RedisAddrs) > 0 {
		return fmt.Errorf("set --redis-url or --redis-addrs, not both: a URL names one server, addresses name Cluster nodes or Sentinels")
	}
	if params.RedisMasterName != "" && len(params.RedisAddrs) == 0 {
		return fmt.Errorf("--redis-master-name needs the Sentinels' HOST:PORT in --redis-addrs")
	}
	if params.Replicas < 0 {
		return fmt.Errorf("--proxy-replicas must be at least 1")
	}
	ns, err := controllerNamespace(*namespace)
	if err != nil {
		return err
	}
	if *leaderNS == "" {
		*leaderNS = ns
	}
	stream, err := streamSettings(*streamAddress, *streamURL, *streamNames, ns)
	if err != nil {
		return err
	}
	params.ControllerURL = stream.url
	cfg, err := restConfig(ctx, *kubeconfig)
	if err != nil {
		return err
	}
	if *apiQPS <= 0 || *apiBurst <= 0 {
		return fmt.Errorf("--kube-api-qps and --kube-api-burst must be positive")
	}
	cfg.QPS, cfg.Burst = float32(*apiQPS), *apiBurst
	log.SetLogger(logr.FromSlogHandler(logger.Handler()))
	scheme, err := controller.NewScheme()
	if err != nil {
		return err
	}
	relevance := controller.NewRelevance()
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Scheme:                  scheme,
		Cache:                   controller.CacheOptions(relevance),
		Metrics:                 metricsserver.Options{BindAddress: *metricsAddress},
		HealthProbeBindAddress:  *healthAddress,
		PprofBindAddress:        *pprofAddress,
		LeaderElection:          *leaderElect,
		LeaderElectionID:        "toolgate-controller.toolgate.dev",
		LeaderElectionNamespace: *leaderNS,
		// The leader steps down as it stops, so that another replica
		// takes over at once rather than after the Lease expires; safe
		// since the process exits when the manager returns.
		LeaderElectionReleaseOnCancel: true,
		GracefulShutdownTimeout:       ptr(shutdownTimeout),
		Logger:                        logr.FromSlogHandler(logger.Handler()),
	})
	if err != nil {
		return fmt.Errorf("create the controller manager: %w", err)
	}
	// The manager serves controller-runtime's registry on its metrics port.
	if err := registerBuildInfo(ctrlmetrics.Registry); err != nil {
		return err
	}
	if err := mgr.AddHealthzCheck("healthz", healthz.Ping); err != nil {
		return err
	}
	if err := mgr.AddReadyzCheck("readyz", healthz.Ping); err != nil {
		return err
	}
	ca, err := loadCA(ctx, cfg, scheme, types.NamespacedName{Namespace: ns, Name: *caSecret})
	if err != nil {
		return err
	}
	if *devLocalhost {
		logger.Warn("--dev-localhost-endpoints: EndpointSlices may point at the proxies' loopback; never use this in a cluster")
	}
	err = controller.Setup(mgr, controller.Options{
		Params: params, Logger: logger, CA: ca, RefuseExternalNames: !*externalNames, Relevance: relevance,
		Stream: &controller.StreamOptions{
			Address: *streamAddress, CA: ca, DNSNames: stream.dnsNames, IPs: stream.ips,
			LoopbackEndpoints: *devLocalhost, Registerer: ctrlmetrics.Registry,
		},
	})
	if err != nil {
		return err
	}
	logger.Info("toolgate controller starting", "version", versionString(), "commit", commitString(), "namespace", ns, "configStream", stream.url)
	return mgr.Start(ctx)
}

func ptr[T any](v T) *T { return &v }
