package controller

import (
	"context"
	"fmt"
	"log/slog"
	"maps"

	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/toolgate/toolgate/controller/admission"
	"github.com/toolgate/toolgate/controller/translate"
	"github.com/toolgate/toolgate/filter"
	"github.com/toolgate/toolgate/gateway"
)

// ProxyOptions configure proxy mode: one Gateway's data plane, fed from a
// read-only cache of the cluster.
type ProxyOptions struct {
	// Gateway is the Gateway this proxy serves.
	Gateway types.NamespacedName
	// ControllerName selects the GatewayClasses served.
	ControllerName gwv1.GatewayController
	// Server serves the snapshots.
	Server *gateway.Server
	// Filters is what the MCP filters share across snapshots.
	Filters *filter.Shared
	// ListenAddress is the IP address listeners bind; empty binds all.
	ListenAddress string
	// LoopbackEndpoints lets EndpointSlices point at this host's loopback
	// (translate.Options.LoopbackEndpoints): for development and tests on
	// one host, never in a cluster, where it would let whoever writes an
	// EndpointSlice reach the proxy's own loopback services.
	LoopbackEndpoints bool
	// Logger receives the proxy's logs.
	Logger *slog.Logger
}

// proxyReconciler turns every change into a new snapshot for one Gateway.
type proxyReconciler struct {
	reader    client.Reader
	admission *admission.Validator
	opts      ProxyOptions
	missing   bool // the Gateway was missing or not accepted last time
}

// SetupProxy registers with mgr the reconciler that keeps opts.Server
// serving the Gateway's current snapshot. It writes nothing to the cluster.
func SetupProxy(mgr ctrl.Manager, opts ProxyOptions) error {
	if opts.ControllerName == "" {
		opts.ControllerName = translate.ControllerName
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Server == nil || opts.Filters == nil {
		return fmt.Errorf("proxy mode needs a gateway server and filter state")
	}
	validator, err := admission.New()
	if err != nil {
		return err
	}
	r := &proxyReconciler{reader: mgr.GetCache(), admission: validator, opts: opts}
	all := handler.EnqueueRequestsFromMapFunc(func(context.Context, client.Object) []reconcile.Request {
		return []reconcile.Request{everything}
	})
	b := ctrl.NewControllerManagedBy(mgr).Named("toolgate-proxy")
	for _, kind := range inputKinds() {
		b = b.Watches(kind, all)
	}
	return b.Complete(r)
}

func (r *proxyReconciler) Reconcile(ctx context.Context, _ reconcile.Request) (reconcile.Result, error) {
	res, err := ListResources(ctx, r.reader)
	if err != nil {
		return reconcile.Result{}, err
	}
	out := translate.Translate(res, translate.Options{
		ControllerName:    r.opts.ControllerName,
		Filters:           r.opts.Filters,
		ListenAddress:     r.opts.ListenAddress,
		Admission:         r.admission,
		LoopbackEndpoints: r.opts.LoopbackEndpoints,
	})
	cfg, ok := out.Gateways[r.opts.Gateway]
	if !ok {
		if !r.missing {
			r.opts.Logger.Warn("the Gateway does not exist or is not accepted: serving no listeners; see its status", "gateway", r.opts.Gateway)
		}
		cfg = &gateway.Config{}
	}
	r.missing = !ok
	if err := r.opts.Server.Apply(cfg); err != nil {
		return reconcile.Result{}, fmt.Errorf("apply the snapshot of Gateway %s: %w", r.opts.Gateway, err)
	}
	r.opts.Filters.Retain(maps.Values(out.Policies))
	return reconcile.Result{}, nil
}
