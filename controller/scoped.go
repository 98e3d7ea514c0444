package controller

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/selection"
	"k8s.io/apimachinery/pkg/types"
	toolscache "k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/source"

	"github.com/toolgate/toolgate/controller/provision"
	"github.com/toolgate/toolgate/controller/translate"
)

// scopedKind is a kind of object the controller caches only in the
// namespaces its translations read it from: most of a cluster's Secrets,
// ConfigMaps and EndpointSlices belong to nothing toolgate routes, and a
// cluster-wide cache would hold them all.
type scopedKind string

const (
	scopedSecrets        scopedKind = "Secret"
	scopedConfigMaps     scopedKind = "ConfigMap"
	scopedEndpointSlices scopedKind = "EndpointSlice"
)

// newObject is an empty object of kind k.
func (k scopedKind) newObject() client.Object {
	switch k {
	case scopedSecrets:
		return &corev1.Secret{}
	case scopedConfigMaps:
		return &corev1.ConfigMap{}
	case scopedEndpointSlices:
		return &discoveryv1.EndpointSlice{}
	}
	panic(fmt.Sprintf("scoped kind %q", string(k)))
}

// isScoped reports whether obj is of a scoped kind.
func isScoped(obj client.Object) bool {
	switch obj.(type) {
	case *corev1.Secret, *corev1.ConfigMap, *discoveryv1.EndpointSlice:
		return true
	}
	return false
}

// scope is one kind of object in one namespace: what one scoped cache
// holds.
type scope struct {
	namespace string
	kind      scopedKind
}

func (s scope) String() string { return s.namespace + "/" + string(s.kind) }

// scopesOf are the scopes a translation with dependencies d read: the
// namespaces of the Secrets and ConfigMaps it looked up, and those of the
// Services it looked up for their EndpointSlices. AllServices adds none:
// it reads the addresses of every Service, which are cached cluster-wide,
// and the endpoints of none but those it looked up.
func scopesOf(d translate.Dependencies) map[scope]bool {
	out := map[scope]bool{}
	add := func(names map[types.NamespacedName]bool, kind scopedKind) {
		for nn := range names {
			out[scope{namespace: nn.Namespace, kind: kind}] = true
		}
	}
	add(d.Secrets, scopedSecrets)
	add(d.ConfigMaps, scopedConfigMaps)
	add(d.Services, scopedEndpointSlices)
	return out
}

// unmanagedSecrets selects the Secrets toolgate did not make: those it
// made are in the manager's cache, cluster-wide (CacheOptions), where the
// provisioner reads them.
var unmanagedSecrets = func() labels.Selector {
	req, err := labels.NewRequirement(provision.LabelManagedBy, selection.NotEquals, []string{provision.ManagedBy})
	if err != nil {
		panic(err)
	}
	return labels.NewSelector().Add(*req)
}()

// scopedCaches holds one cache per scope that a translation reads (each
// source's last, see want), started when a translation first reads the
// scope and stopped, with the memory it held, when none does any more.
// Their events reach every registered controller through its handler
// (source), as those of the manager's cache do.
type scopedCaches struct {
	// newCache makes the cache of one scope, not started.
	newCache func(scope) (cache.Cache, error)
	// managed is the manager's cache, which holds the Secrets toolgate
	// made.
	managed client.Reader
	log     *slog.Logger

	mu sync.Mutex
	// ctx is the manager's, which the caches run under; started is
	// closed once it is set.
	ctx     context.Context
	started chan struct{}
	// active holds the cache of every scope some source wants.
	active map[scope]*scopedCache
	// wanted holds, by source, the scopes its last translation read.
	wanted map[string]map[scope]bool
	// sinks receive the events of every cache. The slice is replaced,
	// never changed, so that emit may use it outside the lock.
	sinks []eventSink
}

// scopedCache is the running cache of one scope.
type scopedCache struct {
	cache    cache.Cache
	informer cache.Informer
	stop     context.CancelFunc
}

// eventSink is one controller's handler and queue.
type eventSink struct {
	handler handler.EventHandler
	queue   workqueue.TypedRateLimitingInterface[reconcile.Request]
}

// newScopedCaches returns the scoped caches of mgr's cluster, each
// transformed by transform as the manager's cache is.
func newScopedCaches(mgr ctrl.Manager, transform toolscache.TransformFunc, log *slog.Logger) *scopedCaches {
	return &scopedCaches{
		newCache: func(s scope) (cache.Cache, error) {
			opts := cache.Options{
				HTTPClient: mgr.GetHTTPClient(), Scheme: mgr.GetScheme(), Mapper: mgr.GetRESTMapper(),
				DefaultNamespaces:           map[string]cache.Config{s.namespace: {}},
				DefaultTransform:            transform,
				ReaderFailOnMissingInformer: true,
			}
			if s.kind == scopedSecrets {
				opts.DefaultLabelSelector = unmanagedSecrets
			}
			return cache.New(mgr.GetConfig(), opts)
		},
		managed: mgr.GetCache(),
		log:     log,
		started: make(chan struct{}),
		active:  map[scope]*scopedCache{},
		wanted:  map[string]map[scope]bool{},
	}
}

// Start lets caches start under ctx, and stops them all when it ends.
func (s *scopedCaches) Start(ctx context.Context) error {
	s.mu.Lock()
	s.ctx = ctx
	close(s.started)
	s.mu.Unlock()
	<-ctx.Done()
	s.mu.Lock()
	defer s.mu.Unlock()
	for sc, c := range s.active {
		c.stop()
		delete(s.active, sc)
	}
	return nil
}

// NeedLeaderElection is false: every replica translates for the config
// stream.
func (s *scopedCaches) NeedLeaderElection() bool { return false }

// source is where a controller's handler h receives the events of every
// scoped cache, those started later included.
func (s *scopedCaches) source(h handler.EventHandler) source.Source {
	return source.Func(func(_ context.Context, q workqueue.TypedRateLimitingInterface[reconcile.Request]) error {
		s.mu.Lock()
		defer s.mu.Unlock()
		s.sinks = append(slices.Clip(s.sinks), eventSink{handler: h, queue: q})
		return nil
	})
}

// emit hands an event to every sink.
func (s *scopedCaches) emit(deliver func(context.Context, eventSink)) {
	s.mu.Lock()
	ctx, sinks := s.ctx, s.sinks
	s.mu.Unlock()
	for _, sink := range sinks {
		deliver(ctx, sink)
	}
}

// want records that source's translation reads scopes, starts the caches
// of those no source read before, stops those no source reads any more,
// and waits until source's are synced.
func (s *scopedCaches) want(ctx context.Context, source string, scopes map[scope]bool) error {
	select {
	case <-s.started:
	case <-ctx.Done():
		return fmt.Errorf("wait for the manager to start: %w", ctx.Err())
	}
	s.mu.Lock()
	s.wanted[source] = scopes
	all := map[scope]bool{}
	for _, w := range s.wanted {
		maps.Copy(all, w)
	}
	var errs []error
	for sc := range all {
		if _, ok := s.active[sc]; ok {
			continue
		}
		c, err := s.start(sc)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		s.active[sc] = c
		s.log.Debug("caching a namespace's objects", "namespace", sc.namespace, "kind", sc.kind)
	}
	for sc, c := range s.active {
		if !all[sc] {
			c.stop()
			delete(s.active, sc)
			s.log.Debug("no longer caching a namespace's objects", "namespace", sc.namespace, "kind", sc.kind)
		}
	}
	var mine []*scopedCache
	for sc := range scopes {
		if c, ok := s.active[sc]; ok {
			mine = append(mine, c)
		}
	}
	s.mu.Unlock()
	if len(errs) > 0 {
		return errors.Join(errs...)
	}
	// A cache that cannot sync (its watch refused) must not hold the
	// reconciler for ever: the reconcile fails and is retried.
	ctx, cancel := context.WithTimeout(ctx, syncTimeout)
	defer cancel()
	for _, c := range mine {
		if !c.cache.WaitForCacheSync(ctx) {
			return fmt.Errorf("the caches of %d namespaces and kinds did not sync within %s: can the controller list and watch Secrets, ConfigMaps and EndpointSlices there? %w",
				len(mine), syncTimeout, ctx.Err())
		}
	}
	return nil
}

// syncTimeout bounds the wait for the scoped caches a translation needs.
const syncTimeout = time.Minute

// start starts the cache of sc, which delivers its events to the sinks;
// s.mu is held.
func (s *scopedCaches) start(sc scope) (*scopedCache, error) {
	c, err := s.newCache(sc)
	if err != nil {
		return nil, fmt.Errorf("make the cache of %ss in namespace %s: %w", sc.kind, sc.namespace, err)
	}
	ctx, stop := context.WithCancel(s.ctx)
	informer, err := c.GetInformer(ctx, sc.kind.newObject())
	if err != nil {
		stop()
		return nil, fmt.Errorf("watch %ss in namespace %s: %w", sc.kind, sc.namespace, err)
	}
	if _, err := informer.AddEventHandler(s.eventHandler()); err != nil {
		stop()
		return nil, fmt.Errorf("handle the events of %ss in namespace %s: %w", sc.kind, sc.namespace, err)
	}
	go func() {
		if err := c.Start(ctx); err != nil {
			s.log.Error("cache of a namespace stopped", "namespace", sc.namespace, "kind", sc.kind, "error", err)
		}
	}()
	return &scopedCache{cache: c, informer: informer, stop: stop}, nil
}

// eventHandler turns an informer's notifications into the events the
// controllers' handlers take.
func (s *scopedCaches) eventHandler() toolscache.ResourceEventHandler {
	return toolscache.ResourceEventHandlerFuncs{
		AddFunc: func(obj any) {
			o, ok := obj.(client.Object)
			if !ok {
				return
			}
			s.emit(func(ctx context.Context, sink eventSink) {
				sink.handler.Create(ctx, event.CreateEvent{Object: o}, sink.queue)
			})
		},
		UpdateFunc: func(oldObj, newObj any) {
			o, okOld := oldObj.(client.Object)
			n, okNew := newObj.(client.Object)
			if !okOld || !okNew {
				return
			}
			s.emit(func(ctx context.Context, sink eventSink) {
				sink.handler.Update(ctx, event.UpdateEvent{ObjectOld: o, ObjectNew: n}, sink.queue)
			})
		},
		DeleteFunc: func(obj any) {
			unknown := false
			if tombstone, ok := obj.(toolscache.DeletedFinalStateUnknown); ok {
				obj, unknown = tombstone.Obj, true
			}
			o, ok := obj.(client.Object)
			if !ok {
				return
			}
			s.emit(func(ctx context.Context, sink eventSink) {
				sink.handler.Delete(ctx, event.DeleteEvent{Object: o, DeleteStateUnknown: unknown}, sink.queue)
			})
		},
	}
}

// read sets res's Secrets, ConfigMaps and EndpointSlices to those of the
// synced scoped caches, and the Secrets toolgate made, which the manager's
// cache holds; it returns the scopes it read. The objects are the caches'
// own: nothing may change them.
func (s *scopedCaches) read(ctx context.Context, res *translate.Resources) (map[scope]bool, error) {
	var secrets corev1.SecretList
	if err := s.managed.List(ctx, &secrets, client.UnsafeDisableDeepCopy); err != nil {
		return nil, fmt.Errorf("list the Secrets toolgate made: %w", err)
	}
	res.Secrets, res.ConfigMaps, res.EndpointSlices = pointers(secrets.Items), nil, nil
	s.mu.Lock()
	synced := map[scope]*scopedCache{}
	for sc, c := range s.active {
		if c.informer.HasSynced() {
			synced[sc] = c
		}
	}
	s.mu.Unlock()
	read := map[scope]bool{}
	for sc, c := range synced {
		var err error
		switch sc.kind {
		case scopedSecrets:
			var l corev1.SecretList
			err = c.cache.List(ctx, &l, client.UnsafeDisableDeepCopy)
			res.Secrets = append(res.Secrets, pointers(l.Items)...)
		case scopedConfigMaps:
			var l corev1.ConfigMapList
			err = c.cache.List(ctx, &l, client.UnsafeDisableDeepCopy)
			res.ConfigMaps = append(res.ConfigMaps, pointers(l.Items)...)
		case scopedEndpointSlices:
			var l discoveryv1.EndpointSliceList
			err = c.cache.List(ctx, &l, client.UnsafeDisableDeepCopy)
			res.EndpointSlices = append(res.EndpointSlices, pointers(l.Items)...)
		}
		if err != nil {
			return nil, fmt.Errorf("list the %ss of namespace %s: %w", sc.kind, sc.namespace, err)
		}
		read[sc] = true
	}
	return read, nil
}

// get reads the object named key of sc's kind into obj from sc's cache,
// which must be synced (want).
func (s *scopedCaches) get(ctx context.Context, sc scope, key types.NamespacedName, obj client.Object) error {
	s.mu.Lock()
	c, ok := s.active[sc]
	s.mu.Unlock()
	if !ok || !c.informer.HasSynced() {
		return fmt.Errorf("the %ss of namespace %s are not cached", sc.kind, sc.namespace)
	}
	return c.cache.Get(ctx, key, obj)
}

// scopes lists the scopes cached now, sorted.
func (s *scopedCaches) scopes() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for sc := range s.active {
		out = append(out, sc.String())
	}
	slices.Sort(out)
	return out
}
