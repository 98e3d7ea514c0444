package main

import (
	"context"
	"fmt"
	"time"

	"k8s.io/client-go/discovery"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	ctrl "sigs.k8s.io/controller-runtime"
)

// restConfig loads the cluster configuration from --kubeconfig, or the
// usual places (in-cluster, $KUBECONFIG, ~/.kube/config), and checks that
// the API server answers, so that a wrong setting fails at once and says so.
func restConfig(ctx context.Context, kubeconfig string) (*rest.Config, error) {
	var cfg *rest.Config
	var err error
	if kubeconfig != "" {
		cfg, err = clientcmd.BuildConfigFromFlags("", kubeconfig)
	} else {
		cfg, err = ctrl.GetConfig()
	}
	if err != nil {
		return nil, fmt.Errorf("load the cluster configuration: %w (set --kubeconfig, or run in a cluster)", err)
	}
	check := rest.CopyConfig(cfg)
	check.Timeout = 10 * time.Second
	dc, err := discovery.NewDiscoveryClientForConfig(check)
	if err != nil {
		return nil, fmt.Errorf("API server client: %w", err)
	}
	done := make(chan error, 1)
	go func() { _, err := dc.ServerVersion(); done <- err }()
	select {
	case err := <-done:
		if err != nil {
			return nil, fmt.Errorf("cannot reach the API server at %s: %w (check --kubeconfig and the network)", cfg.Host, err)
		}
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	return cfg, nil
}
