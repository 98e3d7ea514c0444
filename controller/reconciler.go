package controller

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"reflect"
	"slices"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/toolgate/toolgate/controller/admission"
	"github.com/toolgate/toolgate/controller/pki"
	"github.com/toolgate/toolgate/controller/provision"
	"github.com/toolgate/toolgate/controller/translate"
)

// RBAC of the controller: it reads every input, writes status, and records
// Events. Provisioning's own rules live in package provision.
//
// +kubebuilder:rbac:groups=gateway.networking.k8s.io,resources=gatewayclasses;gateways;httproutes;referencegrants;backendtlspolicies;listenersets,verbs=get;list;watch
// +kubebuilder:rbac:groups=gateway.networking.k8s.io,resources=gatewayclasses/status;gateways/status;httproutes/status;backendtlspolicies/status;listenersets/status,verbs=get;update;patch
// +kubebuilder:rbac:groups=toolgate.dev,resources=mcpservers,verbs=get;list;watch
// +kubebuilder:rbac:groups=toolgate.dev,resources=mcpservers/status,verbs=get;update;patch
// +kubebuilder:rbac:groups="",resources=services;secrets;namespaces;configmaps,verbs=get;list;watch
// +kubebuilder:rbac:groups=discovery.k8s.io,resources=endpointslices,verbs=get;list;watch
// +kubebuilder:rbac:groups=events.k8s.io,resources=events,verbs=create;patch
// +kubebuilder:rbac:groups=coordination.k8s.io,resources=leases,verbs=get;list;watch;create;update;patch;delete

// Options configure the controller.
type Options struct {
	// ControllerName selects the GatewayClasses to serve.
	ControllerName gwv1.GatewayController
	// Params are the data-plane defaults; a GatewayClass parametersRef to
	// a ConfigMap overrides them.
	Params provision.Params
	// CA issues the proxies' client certificates for the config stream
	// (provision.Options.CA); without it no data plane is provisioned.
	CA *pki.CA
	// Stream, when set, serves the proxies their snapshots, on every
	// replica (see StreamOptions).
	Stream *StreamOptions
	// Logger receives the controller's logs.
	Logger *slog.Logger
	// RefuseExternalNames refuses Services of type ExternalName as
	// backends (translate.Options.RefuseExternalNames).
	RefuseExternalNames bool
	// Relevance is the one the manager's cache was built with
	// (CacheOptions): Secrets, ConfigMaps and EndpointSlices are then
	// cached only in the namespaces translations read them from, and
	// trimmed there to what matters. Without it the manager's cache must
	// hold every object whole, and every event reconciles.
	Relevance *Relevance
}

// Reconciler recomputes everything on any change: the inputs are few and the
// translation is cheap, and one pass keeps cross-object status consistent.
type Reconciler struct {
	client      client.Client
	provisioner *provision.Provisioner
	admission   *admission.Validator
	status      *statusWriter
	opts        Options
	log         *slog.Logger
	// memory keeps invalid MCPServers' last valid policies, shared with
	// the publisher so that status says what the snapshots serve.
	memory *translate.PolicyMemory
	// relevance says which objects matter, and reads the bodies of those
	// the cache keeps only the metadata of.
	relevance *Relevance
	// dataPlanes is the data planes' state the last reconcile observed.
	dataPlanes map[types.NamespacedName]translate.DataPlane
}

// everything is the single work item: any event recomputes the whole state.
var everything = reconcile.Request{NamespacedName: types.NamespacedName{Name: "toolgate"}}

// Setup registers the reconciler with mgr.
func Setup(mgr ctrl.Manager, opts Options) error {
	if opts.ControllerName == "" {
		opts.ControllerName = translate.ControllerName
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Relevance == nil {
		opts.Relevance = NewRelevance()
		opts.Relevance.everything = true
	}
	opts.Relevance.bodies = &bodies{reader: mgr.GetAPIReader(), byKey: map[string]client.Object{}}
	if !opts.Relevance.everything {
		opts.Relevance.scoped = newScopedCaches(mgr, opts.Relevance.transform, opts.Logger)
		if err := mgr.Add(opts.Relevance.scoped); err != nil {
			return err
		}
	}
	validator, err := admission.New()
	if err != nil {
		return err
	}
	r := &Reconciler{
		client:      mgr.GetClient(),
		provisioner: provision.New(mgr.GetClient(), mgr.GetScheme(), provision.Options{CA: opts.CA}),
		admission:   validator,
		status: &statusWriter{client: mgr.GetClient(), recorder: mgr.GetEventRecorder("toolgate-controller"), now: time.Now,
			controllerName: opts.ControllerName},
		opts:      opts,
		log:       opts.Logger,
		memory:    translate.NewPolicyMemory(),
		relevance: opts.Relevance,
	}
	all := r.relevance.eventHandler()
	b := ctrl.NewControllerManagedBy(mgr).Named("toolgate")
	kinds := inputKinds()
	for _, owned := range provision.OwnedKinds() {
		if !slices.ContainsFunc(kinds, func(k client.Object) bool { return reflect.TypeOf(k) == reflect.TypeOf(owned) }) {
			kinds = append(kinds, owned)
		}
	}
	// ConfigMaps are inputs: BackendTLSPolicies' CA certificates, and
	// GatewayClass parameters.
	b = r.relevance.watch(b, kinds, all)
	if err := b.Complete(r); err != nil {
		return err
	}
	if opts.Stream != nil {
		return setupStream(mgr, opts, r.memory)
	}
	return nil
}

// Reconcile translates the current state, provisions data planes and writes
// status.
func (r *Reconciler) Reconcile(ctx context.Context, _ reconcile.Request) (reconcile.Result, error) {
	in, err := r.relevance.list(ctx, r.client)
	if err != nil {
		return reconcile.Result{}, err
	}
	res := in.Resources
	params, classProblems, err := r.classParams(ctx, res)
	if err != nil {
		return reconcile.Result{}, err
	}
	res.StaticAddressPools = map[string][]netip.Prefix{}
	for class, p := range params {
		if len(p.StaticAddressPool) > 0 {
			res.StaticAddressPools[class] = p.StaticAddressPool
		}
	}

	// Which Gateways are accepted, and so get a data plane: translated
	// with the data planes as the last reconcile saw them, so that the
	// same translation gives the status when they have not changed since
	// (which Gateways are accepted, their static addresses and their
	// ListenerSets' listeners do not depend on them).
	opts := translate.Options{
		ControllerName: r.opts.ControllerName, Admission: r.admission, Memory: r.memory,
		RefuseExternalNames: r.opts.RefuseExternalNames,
	}
	res.DataPlanes = r.dataPlanes
	first, err := r.relevance.translate(ctx, "status", in, opts, false)
	if err != nil {
		return reconcile.Result{}, err
	}
	dataPlanes := map[types.NamespacedName]translate.DataPlane{}
	var live []types.NamespacedName
	var errs []error
	for _, gw := range res.Gateways {
		key := nn(gw)
		p, ok := params[string(gw.Spec.GatewayClassName)]
		if !ok {
			continue
		}
		// A Gateway of this controller keeps its provisioning records while
		// it exists, even while it is not accepted.
		live = append(live, key)
		if _, accepted := first.Gateways[key]; !accepted {
			continue
		}
		p.ExternalIPs = first.StaticAddresses[key]
		state, err := r.provisioner.Ensure(ctx, withListeners(gw, first.ListenerSetListeners[key]), p)
		if err != nil {
			errs = append(errs, fmt.Errorf("provision the data plane of Gateway %s: %w", key, err))
			dataPlanes[key] = translate.DataPlane{Message: err.Error()}
			continue
		}
		dataPlanes[key] = translate.DataPlane{
			Ready: state.Ready, Message: state.Message, Addresses: state.Addresses,
			Replicas: p.WithDefaults().Replicas, SharedStore: p.SharedStore(),
		}
	}
	if err := r.provisioner.Cleanup(ctx, live); err != nil {
		errs = append(errs, err)
	}

	// Status with the data planes' state: translated again only when it
	// is not the one the first translation had.
	out := first
	if !reflect.DeepEqual(dataPlanes, res.DataPlanes) {
		res.DataPlanes = dataPlanes
		if out, err = r.relevance.translate(ctx, "status", in, opts, false); err != nil {
			return reconcile.Result{}, err
		}
	}
	r.dataPlanes = dataPlanes
	for name, problem := range classProblems {
		if st, ok := out.Status.GatewayClasses[name]; ok {
			st.Conditions = problem
		}
	}
	if err := r.status.write(ctx, res, out); err != nil {
		errs = append(errs, err)
	}
	if len(errs) > 0 {
		for _, e := range errs {
			r.log.Error("reconcile", "error", e)
		}
		if apierrors.IsConflict(errs[0]) {
			// Someone wrote meanwhile: read again shortly.
			return reconcile.Result{RequeueAfter: 200 * time.Millisecond}, nil
		}
		return reconcile.Result{}, errs[0]
	}
	return reconcile.Result{}, nil
}

// withListeners is gw with more listeners (those of its ListenerSets), so
// that its data plane exposes their ports too. gw itself is not changed.
func withListeners(gw *gwv1.Gateway, more []gwv1.Listener) *gwv1.Gateway {
	if len(more) == 0 {
		return gw
	}
	gw = gw.DeepCopy()
	gw.Spec.Listeners = append(gw.Spec.Listeners, more...)
	return gw
}
