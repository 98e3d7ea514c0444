package main

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"os"
	"slices"
	"strings"

	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest"
	ctrlclient "sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/toolgate/toolgate/controller/pki"
)

const (
	// defaultNamespace is where config/default installs the controller.
	defaultNamespace = "toolgate-system"
	// controllerService is the Service in front of the controller's config
	// stream (config/manager).
	controllerService = "toolgate-controller"
	// serviceAccountNamespace is where the kubelet writes the pod's
	// namespace.
	serviceAccountNamespace = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"
)

// controllerNamespace returns the controller's namespace: the flag, else
// the pod's, else defaultNamespace.
func controllerNamespace(flag string) (string, error) {
	if flag != "" {
		return flag, nil
	}
	if b, err := os.ReadFile(serviceAccountNamespace); err == nil {
		if ns := strings.TrimSpace(string(b)); ns != "" {
			return ns, nil
		}
	}
	return defaultNamespace, nil
}

// streamConfig is where the proxies reach the config stream and the names
// its serving certificate holds.
type streamConfig struct {
	url      string
	dnsNames []string
	ips      []net.IP
}

// streamSettings derives the stream's URL and certificate names from the
// flags: the URL defaults to the controller Service in namespace ns, and
// the certificate names that Service and the URL's host.
func streamSettings(address, rawURL, extraNames, ns string) (streamConfig, error) {
	_, port, err := net.SplitHostPort(address)
	if err != nil {
		return streamConfig{}, fmt.Errorf("--config-stream-address %q: %w", address, err)
	}
	svc := controllerService + "." + ns + ".svc"
	if rawURL == "" {
		rawURL = "https://" + net.JoinHostPort(svc, port)
	}
	u, err := url.Parse(rawURL)
	if err != nil || u.Scheme != "https" || u.Hostname() == "" {
		return streamConfig{}, fmt.Errorf("--config-stream-url %q: give an https:// URL with a host", rawURL)
	}
	sc := streamConfig{url: rawURL}
	names := []string{controllerService, controllerService + "." + ns, svc, svc + ".cluster.local", u.Hostname()}
	for _, n := range strings.Split(extraNames, ",") {
		if n = strings.TrimSpace(n); n != "" {
			names = append(names, n)
		}
	}
	for _, n := range names {
		if ip := net.ParseIP(n); ip != nil {
			sc.ips = append(sc.ips, ip)
		} else if !slices.Contains(sc.dnsNames, n) {
			sc.dnsNames = append(sc.dnsNames, n)
		}
	}
	return sc, nil
}

// loadCA reads the config stream's CA from its Secret, creating it on the
// first start. It reads the API server directly: the manager's cache does
// not run yet.
func loadCA(ctx context.Context, cfg *rest.Config, scheme *runtime.Scheme, secret types.NamespacedName) (*pki.CA, error) {
	c, err := ctrlclient.New(cfg, ctrlclient.Options{Scheme: scheme})
	if err != nil {
		return nil, fmt.Errorf("API client: %w", err)
	}
	ca, err := pki.LoadOrCreateCA(ctx, c, secret)
	if err != nil {
		return nil, fmt.Errorf("the config stream's CA (Secret %s): %w", secret, err)
	}
	return ca, nil
}
