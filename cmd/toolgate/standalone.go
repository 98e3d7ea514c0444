package main

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net"
	"os"

	"github.com/toolgate/toolgate/controller"
	"github.com/toolgate/toolgate/gateway"
)

func runStandalone(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("standalone --config DIR", "Serve the Gateways, HTTPRoutes and MCPServers of the manifests in DIR, without a cluster; reload when a file changes.", stderr)
	var (
		dir          = fs.String("config", "", "folder of manifests (*.yaml): Gateways, HTTPRoutes, ReferenceGrants, BackendTLSPolicies, MCPServers, Secrets, ConfigMaps, Services and EndpointSlices (required)")
		listenAddr   = fs.String("listen-address", "127.0.0.1", "IP address the Gateways' listeners bind")
		adminAddress = fs.String("admin-address", "127.0.0.1:9901", "address of /healthz, /readyz, /metrics and /config (/config answers loopback clients only); empty disables it")
		trustedHops  = fs.Int("trusted-hops", 0, trustedHopsHelp)
		logLevel     = fs.String("log-level", "info", "debug, info, warn or error")
		store        storeFlags
	)
	store.register(fs)
	if err := parse(fs, args); err != nil {
		return err
	}
	if *dir == "" {
		fs.Usage()
		return errors.New("--config DIR is required")
	}
	if info, err := os.Stat(*dir); err != nil || !info.IsDir() {
		return fmt.Errorf("--config %s: not a readable folder", *dir)
	}
	if net.ParseIP(*listenAddr) == nil {
		return fmt.Errorf("--listen-address %q: give an IP address, such as 127.0.0.1 or 0.0.0.0", *listenAddr)
	}
	if *trustedHops < 0 {
		return fmt.Errorf("--trusted-hops %d: give the number of proxies in front of the gateway, 0 or more", *trustedHops)
	}
	logger, err := newLogger(stderr, *logLevel)
	if err != nil {
		return err
	}
	sessionKey, err := sessionKeyFromEnv()
	if err != nil {
		return err
	}
	if sessionKey == nil {
		// One process serves every session: a key of its own will do.
		sessionKey = make([]byte, 32)
		_, _ = rand.Read(sessionKey)
	}
	// The files are the operator's own: backend names resolve as the
	// system resolves them, to any address.
	dp, err := store.newDataPlane(ctx, gateway.Options{
		SessionKey: sessionKey, AdminAddress: *adminAddress, TrustedHops: *trustedHops,
		TrustBackendNames: true,
	}, logger)
	if err != nil {
		return err
	}
	defer dp.shutdown(logger, shutdownTimeout)
	fmt.Fprintf(stdout, "toolgate %s standalone: serving %s\n", versionString(), *dir)
	if *adminAddress != "" {
		fmt.Fprintf(stdout, "admin: http://%s/metrics\n", dp.server.AdminAddr())
	}
	return controller.RunStandalone(ctx, controller.StandaloneOptions{
		Dir: *dir, ListenAddress: *listenAddr, Server: dp.server, Filters: dp.filters,
		Out: stdout, Logger: logger,
	})
}
