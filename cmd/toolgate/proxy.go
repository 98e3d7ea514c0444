package main

import (
	"context"
	"encoding/base64"
	"fmt"
	"io"
	"os"
	"strings"

	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/log"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/go-logr/logr"

	"github.com/toolgate/toolgate/controller"
	"github.com/toolgate/toolgate/gateway"
)

// trustedHopsHelp describes --trusted-hops, a flag of proxy and standalone
// modes.
const trustedHopsHelp = "number of proxies in front of the gateway (load balancers) whose X-Forwarded-For entries are trusted, like Envoy's xff_num_trusted_hops. " +
	"0 replaces a client's X-Forwarded-For and X-Real-IP with its own address; N keeps X-Forwarded-For, appends the peer, and sets X-Real-IP to the Nth entry from the right"

func runProxy(ctx context.Context, args []string, stderr io.Writer) error {
	fs := newFlagSet("proxy --gateway NAMESPACE/NAME", "Serve one Gateway's listeners, configured from the cluster (read-only).", stderr)
	var (
		gatewayName  = fs.String("gateway", "", "the Gateway to serve, as NAMESPACE/NAME (required)")
		kubeconfig   = fs.String("kubeconfig", "", "kubeconfig file; empty uses the in-cluster configuration or $KUBECONFIG")
		adminAddress = fs.String("admin-address", ":9901", "address of /healthz, /readyz, /metrics and /config (/config answers loopback clients only)")
		listenAddr   = fs.String("listen-address", "", "IP address the Gateway's listeners bind; empty binds all")
		trustedHops  = fs.Int("trusted-hops", 0, trustedHopsHelp)
		devLocalhost = fs.Bool("dev-localhost-endpoints", false, "let EndpointSlices point at this host's loopback: FQDN addresses under localhost become 127.0.0.1. For development and tests on one host, never in a cluster")
		logLevel     = fs.String("log-level", "info", "debug, info, warn or error")
		store        storeFlags
	)
	store.register(fs)
	if err := parse(fs, args); err != nil {
		return err
	}
	logger, err := newLogger(stderr, *logLevel)
	if err != nil {
		return err
	}
	ns, name, ok := strings.Cut(*gatewayName, "/")
	if !ok || ns == "" || name == "" || strings.Contains(name, "/") {
		return fmt.Errorf("--gateway must be NAMESPACE/NAME, got %q", *gatewayName)
	}
	if *trustedHops < 0 {
		return fmt.Errorf("--trusted-hops %d: give the number of proxies in front of the gateway, 0 or more", *trustedHops)
	}
	sessionKey, err := sessionKeyFromEnv()
	if err != nil {
		return err
	}
	cfg, err := restConfig(ctx, *kubeconfig)
	if err != nil {
		return err
	}
	log.SetLogger(logr.FromSlogHandler(logger.Handler()))

	// The admin port listens on every interface for probes and Prometheus;
	// /config stays answered to loopback clients only (the gateway's
	// default, AllowRemoteConfig unset).
	dp, err := store.newDataPlane(ctx, gateway.Options{
		SessionKey: sessionKey, AdminAddress: *adminAddress, TrustedHops: *trustedHops,
	}, logger)
	if err != nil {
		return err
	}
	if *devLocalhost {
		logger.Warn("--dev-localhost-endpoints: EndpointSlices may point at this host's loopback; never use this in a cluster")
	}
	scheme, err := controller.NewScheme()
	if err != nil {
		return err
	}
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Scheme:                 scheme,
		Metrics:                metricsserver.Options{BindAddress: "0"},
		HealthProbeBindAddress: "0",
		Logger:                 logr.FromSlogHandler(logger.Handler()),
	})
	if err != nil {
		return fmt.Errorf("create the cluster cache: %w", err)
	}
	err = controller.SetupProxy(mgr, controller.ProxyOptions{
		Gateway: types.NamespacedName{Namespace: ns, Name: name},
		Server:  dp.server, Filters: dp.filters, ListenAddress: *listenAddr, Logger: logger,
		LoopbackEndpoints: *devLocalhost,
	})
	if err != nil {
		return err
	}
	logger.Info("toolgate proxy starting", "gateway", *gatewayName, "version", versionString(), "admin", *adminAddress)
	runErr := mgr.Start(ctx)
	dp.shutdown(logger)
	return runErr
}

// sessionKeyFromEnv reads the key that authenticates MCP session ids, shared
// by every replica of a Gateway, from $TOOLGATE_SESSION_KEY (base64).
func sessionKeyFromEnv() ([]byte, error) {
	v := os.Getenv("TOOLGATE_SESSION_KEY")
	if v == "" {
		return nil, nil
	}
	key, err := base64.StdEncoding.DecodeString(v)
	if err != nil || len(key) < 32 {
		return nil, fmt.Errorf("$TOOLGATE_SESSION_KEY must be at least 32 bytes, base64-encoded")
	}
	return key, nil
}
