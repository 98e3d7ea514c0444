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
)

func runProxy(ctx context.Context, args []string, stderr io.Writer) error {
	fs := newFlagSet("proxy --gateway NAMESPACE/NAME", "Serve one Gateway's listeners, configured from the cluster (read-only).", stderr)
	var (
		gatewayName  = fs.String("gateway", "", "the Gateway to serve, as NAMESPACE/NAME (required)")
		kubeconfig   = fs.String("kubeconfig", "", "kubeconfig file; empty uses the in-cluster configuration or $KUBECONFIG")
		adminAddress = fs.String("admin-address", ":9901", "address of /healthz, /readyz, /metrics and /config")
		listenAddr   = fs.String("listen-address", "", "IP address the Gateway's listeners bind; empty binds all")
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
	sessionKey, err := sessionKeyFromEnv()
	if err != nil {
		return err
	}
	cfg, err := restConfig(ctx, *kubeconfig)
	if err != nil {
		return err
	}
	log.SetLogger(logr.FromSlogHandler(logger.Handler()))

	dp, err := store.newDataPlane(ctx, *adminAddress, sessionKey, logger)
	if err != nil {
		return err
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
