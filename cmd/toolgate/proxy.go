package main

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"k8s.io/apimachinery/pkg/types"

	"github.com/toolgate/toolgate/controller/configstream"
	"github.com/toolgate/toolgate/gateway"
)

// trustedHopsHelp describes --trusted-hops, a flag of proxy and standalone
// modes.
const trustedHopsHelp = "number of proxies in front of the gateway (load balancers) whose X-Forwarded-For entries are trusted, like Envoy's xff_num_trusted_hops. " +
	"0 replaces a client's X-Forwarded-For and X-Real-IP with its own address; N keeps X-Forwarded-For, appends the peer, and sets X-Real-IP to the Nth entry from the right"

func runProxy(ctx context.Context, args []string, stderr io.Writer) error {
	fs := newFlagSet("proxy --gateway NAMESPACE/NAME --controller URL", "Serve one Gateway's listeners, configured by the controller's config stream. The proxy never talks to the Kubernetes API.", stderr)
	var (
		gatewayName   = fs.String("gateway", "", "the Gateway to serve, as NAMESPACE/NAME (required)")
		controllerURL = fs.String("controller", "", "URL of the controller's config stream, such as https://toolgate-controller.toolgate-system.svc:9443 (required)")
		tlsDir        = fs.String("controller-tls-dir", "/etc/toolgate/config", "folder holding this Gateway's client certificate (tls.crt, tls.key) and the stream's CA (ca.crt), as the controller's Secret mounts them; re-read on every connection")
		serverName    = fs.String("controller-server-name", "", "name to verify the controller's certificate against, when it is not the host of --controller")
		adminAddress  = fs.String("admin-address", ":9901", "address of /healthz, /readyz, /metrics and /config (/config answers loopback clients only)")
		listenAddr    = fs.String("listen-address", "", "IP address the Gateway's listeners bind; empty binds all")
		trustedHops   = fs.Int("trusted-hops", 0, trustedHopsHelp)
		logLevel      = fs.String("log-level", "info", "debug, info, warn or error")
		drainDelay    = fs.Duration("drain-delay", defaultDrainDelay, drainDelayHelp)
		drainTimeout  = fs.Duration("drain-timeout", defaultDrainTimeout, drainTimeoutHelp)
		store         storeFlags
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
	if *controllerURL == "" {
		return fmt.Errorf("--controller is required: the URL of the controller's config stream")
	}
	if *trustedHops < 0 {
		return fmt.Errorf("--trusted-hops %d: give the number of proxies in front of the gateway, 0 or more", *trustedHops)
	}
	if *drainDelay < 0 || *drainTimeout < 0 {
		return fmt.Errorf("--drain-delay %s, --drain-timeout %s: give durations of 0 or more", *drainDelay, *drainTimeout)
	}
	if *listenAddr != "" && net.ParseIP(*listenAddr) == nil {
		return fmt.Errorf("--listen-address %q: give an IP address", *listenAddr)
	}
	sessionKey, err := sessionKeyFromEnv()
	if err != nil {
		return err
	}

	// The admin port listens on every interface for probes and Prometheus;
	// /config stays answered to loopback clients only (the gateway's
	// default, AllowRemoteConfig unset).
	dp, err := store.newDataPlane(ctx, gateway.Options{
		SessionKey: sessionKey, AdminAddress: *adminAddress, TrustedHops: *trustedHops,
	}, logger)
	if err != nil {
		return err
	}
	stream, err := configstream.NewClient(configstream.ClientOptions{
		URL:        *controllerURL,
		Gateway:    types.NamespacedName{Namespace: ns, Name: name},
		TLSDir:     *tlsDir,
		ServerName: *serverName,
		Logger:     logger,
		Registerer: dp.registry,
		Apply: func(version string, payload []byte) error {
			cfg, err := gateway.DecodeConfig(payload)
			if err != nil {
				return err
			}
			cfg.Version = version
			if *listenAddr != "" {
				for i := range cfg.Listeners {
					cfg.Listeners[i].Address = *listenAddr
				}
			}
			return dp.apply(cfg)
		},
	})
	if err != nil {
		return err
	}
	logger.Info("toolgate proxy starting", "gateway", *gatewayName, "controller", *controllerURL, "version", versionString(), "commit", commitString(), "admin", *adminAddress)
	// The stream keeps feeding the proxy while it drains: backends may move
	// meanwhile.
	streamCtx, stopStream := context.WithCancel(context.WithoutCancel(ctx))
	defer stopStream()
	streamDone := make(chan error, 1)
	go func() { streamDone <- stream.Run(streamCtx) }()
	var runErr error
	select {
	case <-ctx.Done():
		drain(dp, logger, *drainDelay)
	case runErr = <-streamDone:
		streamDone <- runErr
	}
	dp.shutdown(logger, *drainTimeout)
	stopStream()
	if err := <-streamDone; runErr == nil && !errors.Is(err, context.Canceled) {
		runErr = err
	}
	return runErr
}

// Defaults of a proxy's graceful stop; the controller passes the values of
// its provision.Params to the proxies it provisions, and sets their pods'
// terminationGracePeriodSeconds to their sum and a margin.
const (
	defaultDrainDelay   = 5 * time.Second
	defaultDrainTimeout = 30 * time.Second
)

const (
	drainDelayHelp = "on SIGTERM, how long the proxy keeps accepting connections, with /readyz failing and every response closing its connection, before it stops listening: " +
		"the time kube-proxy and load balancers take to stop sending it new connections once its pod is terminating. A second SIGTERM ends it early"
	drainTimeoutHelp = "once the proxy stops listening, how long requests in flight may take to finish before their connections are closed; " +
		"open GET event streams are ended cleanly at once, for their clients to reopen on another replica"
)

// drain starts the proxy's graceful stop on SIGTERM (gateway.Server.Drain)
// and waits delay, or until a second SIGTERM or interrupt.
func drain(dp *dataPlane, log *slog.Logger, delay time.Duration) {
	dp.server.Drain()
	if delay <= 0 {
		return
	}
	again := make(chan os.Signal, 1)
	signal.Notify(again, os.Interrupt, syscall.SIGTERM)
	defer signal.Stop(again)
	log.Info("draining before the listeners close", "delay", delay)
	select {
	case <-time.After(delay):
	case sig := <-again:
		log.Info("draining cut short", "signal", sig.String())
	}
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
