package controller

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrlcontroller "sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/toolgate/toolgate/apis/v1alpha1"
	"github.com/toolgate/toolgate/controller/admission"
	"github.com/toolgate/toolgate/controller/configstream"
	"github.com/toolgate/toolgate/controller/pki"
	"github.com/toolgate/toolgate/controller/translate"
	"github.com/toolgate/toolgate/gateway"
)

// StreamOptions configure the config stream through which the controller
// hands each Gateway's proxies their snapshot. Every replica serves it,
// leader or not: each runs the translator on its own caches, and a
// snapshot's version is the hash of its content, so a proxy that moves from
// one replica to another sees no spurious change.
type StreamOptions struct {
	// Address is where the stream listens, such as ":9443".
	Address string
	// CA issues the serving certificate and the proxies' client
	// certificates, and verifies the latter.
	CA *pki.CA
	// DNSNames and IPs are the serving certificate's names: those the
	// proxies dial.
	DNSNames []string
	IPs      []net.IP
	// LoopbackEndpoints lets EndpointSlices point at the proxies' own
	// loopback (translate.Options.LoopbackEndpoints): for development and
	// tests on one host only.
	LoopbackEndpoints bool
	// PollTimeout is the longest wait of one proxy request; zero picks the
	// configstream default.
	PollTimeout time.Duration
	// Registerer, when set, receives the stream server's metrics (requests
	// waiting, certificate expiry): the controller's metrics registry in
	// the binary, none in tests that start several managers.
	Registerer prometheus.Registerer
}

// serverCertLifetime is how long a serving certificate of the stream is
// valid; it is issued again in memory once a third of that is left.
const serverCertLifetime = 365 * 24 * time.Hour

// setupStream registers, on every replica, the publisher that translates
// each change into snapshots and the server that streams them.
func setupStream(mgr ctrl.Manager, opts Options, memory *translate.PolicyMemory) error {
	so := opts.Stream
	if so.CA == nil {
		return errors.New("the config stream needs a CA")
	}
	hub := configstream.NewHub()
	certs := &servingCertificate{ca: so.CA, dnsNames: so.DNSNames, ips: so.IPs}
	if _, err := certs.get(); err != nil {
		return err
	}
	server, err := configstream.NewServer(configstream.ServerOptions{
		Hub: hub, CA: so.CA, Certificate: certs.get, PollTimeout: so.PollTimeout, Logger: opts.Logger,
		Registerer: so.Registerer,
	})
	if err != nil {
		return err
	}
	if err := mgr.Add(&streamRunnable{server: server, address: so.Address, log: opts.Logger}); err != nil {
		return err
	}
	validator, err := admission.New()
	if err != nil {
		return err
	}
	metrics, err := newPublisherMetrics(so.Registerer)
	if err != nil {
		return err
	}
	p := &publisher{
		reader: mgr.GetCache(), admission: validator, hub: hub, memory: memory,
		controllerName: opts.ControllerName, loopback: so.LoopbackEndpoints, log: opts.Logger,
		refuseExternalNames: opts.RefuseExternalNames, relevance: opts.Relevance,
		pending: map[types.NamespacedName]bool{}, metrics: metrics,
	}
	b := ctrl.NewControllerManagedBy(mgr).Named("toolgate-config").
		WithOptions(ctrlcontroller.Options{NeedLeaderElection: ptr.To(false)})
	return opts.Relevance.watch(b, inputKinds(), opts.Relevance.eventHandlerWith(p.wake)).Complete(p)
}

// someGateways is the publisher's work item for the Gateways in its
// pending set: events that can change only their snapshots.
var someGateways = reconcile.Request{NamespacedName: types.NamespacedName{Name: "toolgate-some-gateways"}}

// publisher translates the cluster and publishes one snapshot per Gateway
// of this controller's classes. An event that can change only some
// Gateways' snapshots (an HTTPRoute's, a Gateway's, an MCPServer's) has
// only those translated (translate.Resources.ForGateways), and everything
// once more sweepDelay later; any other event, or a Gateway whose
// snapshot depends on others', has all of them translated.
type publisher struct {
	reader         client.Reader
	admission      *admission.Validator
	memory         *translate.PolicyMemory
	hub            *configstream.Hub
	controllerName gwv1.GatewayController
	loopback       bool
	log            *slog.Logger
	// refuseExternalNames is Options.RefuseExternalNames.
	refuseExternalNames bool
	relevance           *Relevance
	metrics             *publisherMetrics

	mu sync.Mutex
	// pending holds the Gateways whose snapshots events may have changed
	// since they were last translated, for someGateways.
	pending map[types.NamespacedName]bool
	// synced is set once every Gateway has been translated and published.
	synced bool
	// sweepAt, when set, is when everything is translated again after
	// translations of some Gateways (see sweepDelay).
	sweepAt time.Time
}

// sweepDelay is how long after a translation of some Gateways everything
// is translated again, at most once in that time however many events
// come. A translation of some Gateways only adds to what the config
// stream depends on (Relevance.translate): this one lets go of the
// Secrets, ConfigMaps, Services and namespaces that no snapshot depends
// on any more.
const sweepDelay = 10 * time.Second

// wake queues the translation an event of objs (a relevant change) calls
// for: of the Gateways it can affect when affected names them, else of
// everything.
func (p *publisher) wake(ctx context.Context, q workQueue, objs ...client.Object) {
	gateways, ok := p.affected(ctx, objs...)
	if !ok {
		q.AddAfter(everything, holdoff)
		return
	}
	p.mu.Lock()
	for _, gw := range gateways {
		p.pending[gw] = true
	}
	p.mu.Unlock()
	q.AddAfter(someGateways, holdoff)
}

// affected returns the Gateways whose snapshots a change of objs can
// change, when it can tell: a Gateway's own; those an HTTPRoute's
// parentRefs name, directly or through a ListenerSet; those of the routes
// that apply an MCPServer (translate.MCPServerGateways). A change of any
// other kind can change any snapshot: ok is false.
func (p *publisher) affected(ctx context.Context, objs ...client.Object) (gateways []types.NamespacedName, ok bool) {
	for _, obj := range objs {
		switch o := obj.(type) {
		case nil:
		case *gwv1.Gateway:
			gateways = append(gateways, types.NamespacedName{Namespace: o.Namespace, Name: o.Name})
		case *gwv1.HTTPRoute:
			direct, sets := translate.RouteParents(o)
			gateways = append(gateways, direct...)
			for _, nn := range sets {
				var set gwv1.ListenerSet
				if err := p.reader.Get(ctx, nn, &set); err != nil {
					if apierrors.IsNotFound(err) {
						// Attached to nothing: the set's creation will
						// translate everything.
						continue
					}
					return nil, false
				}
				if gw, ok := translate.ListenerSetGateway(&set); ok {
					gateways = append(gateways, gw)
				}
			}
		case *v1alpha1.MCPServer:
			var routes gwv1.HTTPRouteList
			var sets gwv1.ListenerSetList
			if p.reader.List(ctx, &routes) != nil || p.reader.List(ctx, &sets) != nil {
				return nil, false
			}
			gateways = append(gateways, translate.MCPServerGateways(o, pointers(routes.Items), pointers(sets.Items))...)
		default:
			return nil, false
		}
	}
	return gateways, true
}

func (p *publisher) Reconcile(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
	p.mu.Lock()
	all := req != someGateways || !p.synced || (!p.sweepAt.IsZero() && !time.Now().Before(p.sweepAt))
	some := p.pending
	if !all && len(some) == 0 {
		// A translation of everything took them meanwhile.
		p.mu.Unlock()
		return reconcile.Result{}, nil
	}
	// What is pending is translated now, whichever way: events after this
	// point are read by the listing below, or pend again.
	p.pending = map[types.NamespacedName]bool{}
	p.mu.Unlock()
	if all {
		some = nil
	}
	translated, err := p.publish(ctx, some)
	p.mu.Lock()
	defer p.mu.Unlock()
	switch {
	case err != nil:
		maps.Copy(p.pending, some)
		return reconcile.Result{}, err
	case translated == scopeAll:
		p.sweepAt = time.Time{}
		return reconcile.Result{}, nil
	default:
		if p.sweepAt.IsZero() {
			p.sweepAt = time.Now().Add(sweepDelay)
		}
		return reconcile.Result{RequeueAfter: time.Until(p.sweepAt)}, nil
	}
}

// publish translates the Gateways in some (every Gateway when some is nil,
// or when their snapshots depend on others') and publishes their
// snapshots. It returns the scope it translated.
func (p *publisher) publish(ctx context.Context, some map[types.NamespacedName]bool) (scope string, err error) {
	start := time.Now()
	in, err := p.relevance.list(ctx, p.reader)
	if err != nil {
		return "", err
	}
	if some != nil {
		if sub, ok := in.ForGateways(some); ok {
			in.Resources = sub
		} else {
			some = nil
		}
	}
	res := in.Resources
	out, err := p.relevance.translate(ctx, "config-stream", in, translate.Options{
		ControllerName: p.controllerName, Admission: p.admission, LoopbackEndpoints: p.loopback, Memory: p.memory,
		RefuseExternalNames: p.refuseExternalNames,
	}, some != nil)
	if err != nil {
		return "", err
	}
	ours := map[string]bool{}
	for _, c := range res.GatewayClasses {
		ours[c.Name] = c.Spec.ControllerName == p.controllerName
	}
	keep := map[types.NamespacedName]bool{}
	for _, gw := range res.Gateways {
		if !ours[string(gw.Spec.GatewayClassName)] {
			continue
		}
		key := nn(gw)
		// A Gateway that is not accepted gets an empty snapshot: its
		// proxies serve no listeners until its status says what to fix.
		cfg, ok := out.Gateways[key]
		if !ok {
			cfg = &gateway.Config{}
		}
		payload, err := gateway.EncodeConfig(cfg)
		if err != nil {
			return "", fmt.Errorf("encode the snapshot of Gateway %s: %w", key, err)
		}
		if version := p.hub.Publish(key, payload); version != "" {
			p.log.Debug("snapshot published", "gateway", key, "version", version)
		}
		keep[key] = true
	}
	scope = scopeSome
	if some == nil {
		scope = scopeAll
		p.hub.Retain(keep)
		p.hub.MarkSynced()
		p.mu.Lock()
		p.synced = true
		p.mu.Unlock()
	} else {
		// A Gateway of some that is gone, or no longer of this controller.
		for gw := range some {
			if !keep[gw] {
				p.hub.Forget(gw)
			}
		}
	}
	p.metrics.translated(scope, len(res.Gateways), time.Since(start))
	return scope, nil
}

// streamRunnable serves the config stream on every replica.
type streamRunnable struct {
	server  *configstream.Server
	address string
	log     *slog.Logger
}

func (s *streamRunnable) Start(ctx context.Context) error {
	l, err := (&net.ListenConfig{}).Listen(ctx, "tcp", s.address)
	if err != nil {
		return fmt.Errorf("config stream: listen on %s: %w", s.address, err)
	}
	s.log.Info("config stream serving", "address", l.Addr().String())
	return s.server.Serve(ctx, l)
}

// NeedLeaderElection is false: every replica serves proxies.
func (s *streamRunnable) NeedLeaderElection() bool { return false }

// servingCertificate issues the stream's serving certificate from the CA,
// and again in memory when a third of its lifetime is left.
type servingCertificate struct {
	ca       *pki.CA
	dnsNames []string
	ips      []net.IP

	mu   sync.Mutex
	cert *tls.Certificate
}

func (s *servingCertificate) get() (*tls.Certificate, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := time.Now()
	if s.cert != nil && s.cert.Leaf != nil && now.Add(serverCertLifetime/3).Before(s.cert.Leaf.NotAfter) {
		return s.cert, nil
	}
	cert, err := s.ca.IssueServer(s.dnsNames, s.ips, now, serverCertLifetime)
	if err != nil {
		return nil, fmt.Errorf("issue the config stream's serving certificate: %w", err)
	}
	s.cert = &cert
	return s.cert, nil
}
