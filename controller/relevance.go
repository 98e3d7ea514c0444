package controller

import (
	"context"
	"fmt"
	"maps"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	toolscache "k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/toolgate/toolgate/apis/v1alpha1"
	"github.com/toolgate/toolgate/controller/provision"
	"github.com/toolgate/toolgate/controller/translate"
)

// Relevance knows which Secrets, ConfigMaps, Services and EndpointSlices
// can change what the controller computes: those its last translations
// looked up (translate.Dependencies, found or not) and those toolgate
// manages. The others are most of a cluster's, and cost little:
//
//   - the caches keep only their metadata (CacheOptions' transforms): a
//     Secret's or ConfigMap's data, an EndpointSlice's endpoints are
//     dropped, and managedFields and annotations of every object;
//   - their events wake no reconcile (eventHandler).
//
// An object that becomes relevant, because an edit elsewhere refers to
// it, is read from the API server once (see bodies) until it changes, and
// then cached whole.
//
// Secrets, ConfigMaps and EndpointSlices are moreover cached only in the
// namespaces translations read them from (scopedCaches), but for those
// toolgate made: a namespace nothing refers to costs nothing.
type Relevance struct {
	mu sync.RWMutex
	// deps holds the Dependencies of each translating reconciler (status,
	// config stream), which may differ by their options; an object is
	// relevant to any.
	deps map[string]translate.Dependencies
	// bodies reads what translations want of metadata-only objects; set
	// by Setup.
	bodies *bodies
	// everything makes every object relevant: the cache was built without
	// the transforms.
	everything bool
	// scoped caches the Secrets, ConfigMaps and EndpointSlices of the
	// namespaces translations read; set by Setup unless everything, when
	// the manager's cache holds every object.
	scoped *scopedCaches
}

// NewRelevance returns a Relevance for which nothing is relevant yet but
// what toolgate manages: the first translation, made before any event is
// handled, says what is.
func NewRelevance() *Relevance {
	return &Relevance{deps: map[string]translate.Dependencies{}}
}

// set records what the translation of source depended on.
func (r *Relevance) set(source string, d translate.Dependencies) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.deps[source] = d
}

func (r *Relevance) any(f func(translate.Dependencies) bool) bool {
	r.mu.RLock()
	defer r.mu.RUnlock()
	for _, d := range r.deps {
		if f(d) {
			return true
		}
	}
	return false
}

func (r *Relevance) secret(nn types.NamespacedName) bool {
	return r.any(func(d translate.Dependencies) bool { return d.Secrets[nn] })
}

func (r *Relevance) configMap(nn types.NamespacedName) bool {
	return r.any(func(d translate.Dependencies) bool { return d.ConfigMaps[nn] })
}

func (r *Relevance) service(nn types.NamespacedName) bool {
	return r.any(func(d translate.Dependencies) bool { return d.AllServices || d.Services[nn] })
}

// endpointsOf reports whether a translation looked up the Service nn,
// and so its EndpointSlices. AllServices does not count: it reads the
// addresses of every Service, not their endpoints.
func (r *Relevance) endpointsOf(nn types.NamespacedName) bool {
	return r.any(func(d translate.Dependencies) bool { return d.Services[nn] })
}

// relevant reports whether obj's change can change what the controller
// computes. Objects of other kinds always can.
func (r *Relevance) relevant(obj client.Object) bool {
	if r.everything || managed(obj) {
		return true
	}
	nn := types.NamespacedName{Namespace: obj.GetNamespace(), Name: obj.GetName()}
	switch o := obj.(type) {
	case *corev1.Secret:
		return r.secret(nn)
	case *corev1.ConfigMap:
		return r.configMap(nn)
	case *corev1.Service:
		return r.service(nn)
	case *discoveryv1.EndpointSlice:
		return r.endpointsOf(types.NamespacedName{Namespace: o.Namespace, Name: o.Labels[discoveryv1.LabelServiceName]})
	default:
		return true
	}
}

// managed reports whether toolgate made obj (a data plane's objects).
func managed(obj client.Object) bool {
	return obj.GetLabels()[provision.LabelManagedBy] == provision.ManagedBy
}

// metadataOnly marks a cached object whose body the transform dropped;
// bodies reads such an object again when a translation wants it.
const metadataOnly = "toolgate.dev/cached-metadata-only"

// isMetadataOnly reports whether the cache holds only obj's metadata.
func isMetadataOnly(obj client.Object) bool {
	_, ok := obj.GetAnnotations()[metadataOnly]
	return ok
}

// lastApplied is the annotation kubectl apply keeps a copy of the whole
// object in; nothing toolgate reads.
const lastApplied = "kubectl.kubernetes.io/last-applied-configuration"

// transform trims an object before the cache stores it: its managedFields
// and kubectl's copy of it always, and the body of a Secret, ConfigMap or
// EndpointSlice that is not relevant, with all its annotations, which it
// then marks metadataOnly.
func (r *Relevance) transform(in any) (any, error) {
	obj, ok := in.(client.Object)
	if !ok {
		return in, nil
	}
	if obj.GetManagedFields() != nil {
		obj.SetManagedFields(nil)
	}
	if a := obj.GetAnnotations(); a != nil {
		if _, ok := a[lastApplied]; ok {
			delete(a, lastApplied)
			obj.SetAnnotations(a)
		}
	}
	if r.relevant(obj) {
		return obj, nil
	}
	var labels map[string]string
	switch o := obj.(type) {
	case *corev1.Secret:
		o.Data, o.StringData, o.Type, o.Immutable = nil, nil, "", nil
	case *corev1.ConfigMap:
		o.Data, o.BinaryData, o.Immutable = nil, nil, nil
	case *discoveryv1.EndpointSlice:
		o.Endpoints, o.Ports, o.AddressType = nil, nil, ""
		if svc, ok := o.Labels[discoveryv1.LabelServiceName]; ok {
			labels = map[string]string{discoveryv1.LabelServiceName: svc}
		}
	default:
		return obj, nil
	}
	// Of the metadata, what says which object it is and whether it
	// changed; the rest of a cluster's objects would cost memory for
	// nothing.
	*metaOf(obj) = metav1.ObjectMeta{
		Name: obj.GetName(), Namespace: obj.GetNamespace(), ResourceVersion: obj.GetResourceVersion(),
		Labels: labels, Annotations: metadataOnlyAnnotations,
	}
	return obj, nil
}

// metadataOnlyAnnotations are the annotations of every object the cache
// keeps the metadata of: one map they share, which nothing writes (the
// cache hands out deep copies).
var metadataOnlyAnnotations = map[string]string{metadataOnly: ""}

// metaOf is the ObjectMeta of a Secret, ConfigMap or EndpointSlice.
func metaOf(obj client.Object) *metav1.ObjectMeta {
	switch o := obj.(type) {
	case *corev1.Secret:
		return &o.ObjectMeta
	case *corev1.ConfigMap:
		return &o.ObjectMeta
	case *discoveryv1.EndpointSlice:
		return &o.ObjectMeta
	}
	panic(fmt.Sprintf("metaOf %T", obj))
}

// holdoff is how long an event waits before it wakes a reconcile, so that
// a burst of events (a kubectl apply of many objects, an EndpointSlice
// churn) costs one translation.
const holdoff = 100 * time.Millisecond

// eventHandler enqueues the single work item, after holdoff, for events
// of relevant objects; an update is relevant when the object was or is,
// and for the Gateway API's kinds and MCPServers, when it changed their
// spec (see specUnchanged).
func (r *Relevance) eventHandler() handler.EventHandler {
	return r.eventHandlerWith(func(_ context.Context, q workQueue, _ ...client.Object) {
		q.AddAfter(everything, holdoff)
	})
}

// workQueue is a reconciler's queue of work items.
type workQueue = workqueue.TypedRateLimitingInterface[reconcile.Request]

// eventHandlerWith calls wake with an event's objects (an update's old
// and new) when one of them is relevant, as eventHandler enqueues.
func (r *Relevance) eventHandlerWith(wake func(ctx context.Context, q workQueue, objs ...client.Object)) handler.EventHandler {
	enqueue := func(ctx context.Context, q workQueue, objs ...client.Object) {
		for _, obj := range objs {
			if obj != nil && r.relevant(obj) {
				wake(ctx, q, objs...)
				return
			}
		}
	}
	return handler.Funcs{
		CreateFunc: func(ctx context.Context, e event.CreateEvent, q workQueue) { enqueue(ctx, q, e.Object) },
		UpdateFunc: func(ctx context.Context, e event.UpdateEvent, q workQueue) {
			if !specUnchanged(e.ObjectOld, e.ObjectNew) {
				enqueue(ctx, q, e.ObjectOld, e.ObjectNew)
			}
		},
		DeleteFunc:  func(ctx context.Context, e event.DeleteEvent, q workQueue) { enqueue(ctx, q, e.Object) },
		GenericFunc: func(ctx context.Context, e event.GenericEvent, q workQueue) { enqueue(ctx, q, e.Object) },
	}
}

var _ toolscache.TransformFunc = (*Relevance)(nil).transform

// specUnchanged reports whether an update of an object of the Gateway API
// or an MCPServer left its generation alone: it changed only status or
// metadata, which translation does not read. Most such updates are the
// controller's own status writes, which would otherwise translate
// everything again once each. Other kinds' updates always count: the
// status of Deployments and Services is what a data plane's state is
// read from.
func specUnchanged(old, updated client.Object) bool {
	if old == nil || updated == nil || updated.GetGeneration() == 0 || old.GetGeneration() != updated.GetGeneration() {
		return false
	}
	switch updated.(type) {
	case *gwv1.GatewayClass, *gwv1.Gateway, *gwv1.HTTPRoute, *gwv1.ReferenceGrant, *gwv1.BackendTLSPolicy, *gwv1.ListenerSet, *v1alpha1.MCPServer:
		return true
	default:
		return false
	}
}

// dependsOn reports whether a translation with dependencies d looked up
// obj (a Secret, ConfigMap or EndpointSlice).
func dependsOn(d translate.Dependencies, obj client.Object) bool {
	nn := types.NamespacedName{Namespace: obj.GetNamespace(), Name: obj.GetName()}
	switch o := obj.(type) {
	case *corev1.Secret:
		return d.Secrets[nn]
	case *corev1.ConfigMap:
		return d.ConfigMaps[nn]
	case *discoveryv1.EndpointSlice:
		return d.Services[types.NamespacedName{Namespace: o.Namespace, Name: o.Labels[discoveryv1.LabelServiceName]}]
	default:
		return false
	}
}

// current is what source's last translation depended on.
func (r *Relevance) current(source string) translate.Dependencies {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.deps[source]
}

// bodies holds the objects the caches keep only the metadata of
// (metadataOnly) that a translation wants, read from the API server, each
// until it changes: then the cache holds it whole, as it is relevant.
type bodies struct {
	reader client.Reader // the API server, not the cache
	mu     sync.Mutex
	// byKey holds each body by kind/namespace/name.
	byKey map[string]client.Object
}

func bodyKey(obj client.Object) string {
	kind := "Secret"
	switch obj.(type) {
	case *corev1.ConfigMap:
		kind = "ConfigMap"
	case *discoveryv1.EndpointSlice:
		kind = "EndpointSlice"
	}
	return kind + "/" + obj.GetNamespace() + "/" + obj.GetName()
}

// complete replaces, in res, every metadata-only Secret, ConfigMap and
// EndpointSlice that d depends on with its body: the one read before when
// the resourceVersion is the same, else one read now. It reports whether
// it replaced any.
func (b *bodies) complete(ctx context.Context, res *translate.Resources, d translate.Dependencies) (bool, error) {
	secrets, err := completeKind(ctx, b, res.Secrets, d, func() *corev1.Secret { return &corev1.Secret{} }, &corev1.SecretList{},
		func(l *corev1.SecretList) []*corev1.Secret { return pointers(l.Items) })
	if err != nil {
		return false, err
	}
	configMaps, err := completeKind(ctx, b, res.ConfigMaps, d, func() *corev1.ConfigMap { return &corev1.ConfigMap{} }, &corev1.ConfigMapList{},
		func(l *corev1.ConfigMapList) []*corev1.ConfigMap { return pointers(l.Items) })
	if err != nil {
		return false, err
	}
	slices, err := completeKind(ctx, b, res.EndpointSlices, d, func() *discoveryv1.EndpointSlice { return &discoveryv1.EndpointSlice{} }, &discoveryv1.EndpointSliceList{},
		func(l *discoveryv1.EndpointSliceList) []*discoveryv1.EndpointSlice { return pointers(l.Items) })
	return secrets || configMaps || slices, err
}

// completeKind replaces the metadata-only objects of objs that d depends
// on with their bodies: those held when their resourceVersion matches; the
// others read from the API server, a namespace's at once when it has
// several (after a start, when nothing was known to be relevant, that is
// most of them), else one by one. An object deleted meanwhile keeps its
// metadata only: its deletion's event brings the next translation.
func completeKind[T client.Object, L client.ObjectList](ctx context.Context, b *bodies, objs []T, d translate.Dependencies, newObj func() T, list L, items func(L) []T) (bool, error) {
	replaced := false
	missing := map[string][]int{} // by namespace
	for i, o := range objs {
		if !isMetadataOnly(o) || !dependsOn(d, o) {
			continue
		}
		b.mu.Lock()
		held, ok := b.byKey[bodyKey(o)]
		b.mu.Unlock()
		if ok && held.GetResourceVersion() == o.GetResourceVersion() {
			objs[i], replaced = held.DeepCopyObject().(T), true
			continue
		}
		missing[o.GetNamespace()] = append(missing[o.GetNamespace()], i)
	}
	for ns, at := range missing {
		found := map[string]T{}
		if len(at) == 1 {
			full := newObj()
			if err := b.reader.Get(ctx, client.ObjectKeyFromObject(objs[at[0]]), full); err != nil {
				if apierrors.IsNotFound(err) {
					continue
				}
				return replaced, fmt.Errorf("read %s: %w", bodyKey(objs[at[0]]), err)
			}
			found[full.GetName()] = full
		} else {
			if err := b.reader.List(ctx, list, client.InNamespace(ns)); err != nil {
				return replaced, fmt.Errorf("read %T of namespace %s: %w", list, ns, err)
			}
			for _, item := range items(list) {
				found[item.GetName()] = item
			}
		}
		for _, i := range at {
			full, ok := found[objs[i].GetName()]
			if !ok {
				continue
			}
			full.SetManagedFields(nil)
			b.mu.Lock()
			b.byKey[bodyKey(full)] = full.DeepCopyObject().(client.Object)
			b.mu.Unlock()
			objs[i], replaced = full, true
		}
	}
	return replaced, nil
}

// get fills into with the body of the cached object meta: the one read
// before when its resourceVersion matches, else the API server's. An
// object deleted meanwhile keeps its metadata only: the deletion's event
// brings the next translation.
func (b *bodies) get(ctx context.Context, meta client.Object, into client.Object) error {
	k := bodyKey(meta)
	b.mu.Lock()
	held, ok := b.byKey[k]
	b.mu.Unlock()
	if ok && held.GetResourceVersion() == meta.GetResourceVersion() {
		copyInto(held, into)
		return nil
	}
	if err := b.reader.Get(ctx, client.ObjectKeyFromObject(meta), into); err != nil {
		if apierrors.IsNotFound(err) {
			copyInto(meta, into)
			return nil
		}
		return fmt.Errorf("read %s: %w", k, err)
	}
	into.SetManagedFields(nil)
	b.mu.Lock()
	b.byKey[k] = into.DeepCopyObject().(client.Object)
	b.mu.Unlock()
	return nil
}

// retain forgets the bodies that no translation of r depends on.
func (b *bodies) retain(r *Relevance) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for k, obj := range b.byKey {
		if !r.any(func(d translate.Dependencies) bool { return dependsOn(d, obj) }) {
			delete(b.byKey, k)
		}
	}
}

// copyInto deep-copies src into dst, of the same kind.
func copyInto(src, dst client.Object) {
	switch d := dst.(type) {
	case *corev1.Secret:
		src.(*corev1.Secret).DeepCopyInto(d)
	case *corev1.ConfigMap:
		src.(*corev1.ConfigMap).DeepCopyInto(d)
	case *discoveryv1.EndpointSlice:
		src.(*discoveryv1.EndpointSlice).DeepCopyInto(d)
	}
}

// maxTranslationRounds bounds the translations of one call of translate:
// each round after the first reads what the one before found it depended
// on and was not read yet.
const maxTranslationRounds = 8

// translate translates in for source (a reconciler), with the bodies its
// metadata-only objects lack where the translation depends on them: those
// its last translation depended on, then, when this one depends on more,
// those too, and again. When a translation depends on a namespace's
// Secrets, ConfigMaps or EndpointSlices that in does not hold (see
// scopedCaches), their cache is started and synced, in read again, and
// the translation made again: nothing is computed from a namespace not
// read yet. It records what the translation depended on, and lets the
// caches of the namespaces it no longer depends on go.
//
// With some set, in holds only what the snapshots of some Gateways are
// computed from (translate.Resources.ForGateways): what the translation
// depended on is then added to what source's earlier translations depended
// on, which the other Gateways' snapshots still do, and nothing is let go.
// A translation of everything says again what everything depends on.
func (r *Relevance) translate(ctx context.Context, source string, in *inputs, opts translate.Options, some bool) (*translate.Result, error) {
	before := r.current(source)
	d := before
	for range maxTranslationRounds {
		if _, err := r.bodies.complete(ctx, in.Resources, d); err != nil {
			return nil, err
		}
		out := translate.Translate(in.Resources, opts)
		d = out.Dependencies
		if some {
			d = mergeDependencies(before, d)
		}
		if r.scoped != nil && !covers(in.scopes, scopesOf(d)) {
			// Set first, so that the new caches keep whole what d names.
			r.set(source, d)
			if err := r.scoped.want(ctx, source, scopesOf(d)); err != nil {
				return nil, err
			}
			scopes, err := r.scoped.read(ctx, in.Resources)
			if err != nil {
				return nil, err
			}
			in.scopes = scopes
			continue
		}
		more, err := r.bodies.complete(ctx, in.Resources, d)
		if err != nil {
			return nil, err
		}
		if more {
			continue
		}
		r.set(source, d)
		r.bodies.retain(r)
		if r.scoped != nil {
			if err := r.scoped.want(ctx, source, scopesOf(d)); err != nil {
				return nil, err
			}
		}
		return out, nil
	}
	return nil, fmt.Errorf("the translation still depended on objects not read after %d rounds", maxTranslationRounds)
}

// mergeDependencies is what a and b depend on, together.
func mergeDependencies(a, b translate.Dependencies) translate.Dependencies {
	union := func(x, y map[types.NamespacedName]bool) map[types.NamespacedName]bool {
		out := make(map[types.NamespacedName]bool, len(x)+len(y))
		maps.Copy(out, x)
		maps.Copy(out, y)
		return out
	}
	return translate.Dependencies{
		Services: union(a.Services, b.Services), Secrets: union(a.Secrets, b.Secrets), ConfigMaps: union(a.ConfigMaps, b.ConfigMaps),
		AllServices: a.AllServices || b.AllServices,
	}
}

// covers reports whether read holds every scope of want.
func covers(read, want map[scope]bool) bool {
	for sc := range want {
		if !read[sc] {
			return false
		}
	}
	return true
}

// watch has b watch kinds with h: in the manager's cache, but for the
// Secrets, ConfigMaps and EndpointSlices of the scoped caches, whose
// events h receives through their own source.
func (r *Relevance) watch(b *builder.Builder, kinds []client.Object, h handler.EventHandler) *builder.Builder {
	for _, kind := range kinds {
		if r.scoped != nil && isScoped(kind) {
			if _, secret := kind.(*corev1.Secret); !secret {
				continue
			}
			// The Secrets toolgate made are in the manager's cache.
		}
		b = b.Watches(kind, h)
	}
	if r.scoped != nil {
		b = b.WatchesRawSource(r.scoped.source(h))
	}
	return b
}

// list reads the translator's inputs through c, the manager's cache, and
// those of Secrets, ConfigMaps and EndpointSlices from the scoped caches.
func (r *Relevance) list(ctx context.Context, c client.Reader) (*inputs, error) {
	if r.scoped == nil {
		res, err := ListResources(ctx, c)
		return &inputs{Resources: res}, err
	}
	res, err := listResources(ctx, c, false)
	if err != nil {
		return nil, err
	}
	scopes, err := r.scoped.read(ctx, res)
	if err != nil {
		return nil, err
	}
	return &inputs{Resources: res, scopes: scopes}, nil
}
