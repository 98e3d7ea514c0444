// Package provision creates and keeps in shape the data plane of each
// Gateway toolgate serves: a Deployment of `toolgate proxy`, the Service that
// exposes its listeners, and the proxies' ServiceAccount and read-only RBAC.
//
// The desired objects come from pure builders (Deployment, Service,
// ServiceAccount, ClusterRoleBinding, ClusterRole); the Provisioner applies
// them with server-side apply as the field manager FieldManager, forcing
// ownership, so every field toolgate sets is reset on each reconcile while
// fields others add (annotations from other tools, for example) are left
// alone, and fields a newer toolgate stops setting are removed.
//
// An apply that would change nothing is skipped: the Provisioner remembers,
// per object, the document it last applied and the resourceVersion the API
// server answered with, and applies again only when the document changed or
// the live object is not the one it left (edited, deleted or never written).
package provision

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"sync"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/apiutil"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"
)

// FieldManager is the server-side apply field manager of everything the
// Provisioner writes.
const FieldManager = "toolgate-controller"

// Provisioner applies the data plane of Gateways.
type Provisioner struct {
	client client.Client
	scheme *runtime.Scheme

	mu sync.Mutex
	// applied holds, per object, what the Provisioner last applied to it.
	applied map[objectKey]lastApply
}

// objectKey identifies one object the Provisioner applies.
type objectKey struct {
	gvk schema.GroupVersionKind
	types.NamespacedName
}

// lastApply is what the Provisioner last applied to an object and what the
// API server answered.
type lastApply struct {
	// document is the SHA-256 of the applied document.
	document [sha256.Size]byte
	// resourceVersion is the object's resourceVersion in the answer.
	resourceVersion string
	// gateway is the Gateway the object belongs to; zero for the
	// ClusterRole, which all Gateways share.
	gateway types.NamespacedName
}

// New returns a Provisioner writing through c. The scheme must know the core,
// apps and rbac types.
//
// The Provisioner reads each object through c before applying it, to skip
// applies that would change nothing: give it a client that reads the kinds
// of OwnedKinds from a cache, such as a manager's, so that the reads do not
// reach the API server.
func New(c client.Client, scheme *runtime.Scheme) *Provisioner {
	return &Provisioner{client: c, scheme: scheme, applied: map[objectKey]lastApply{}}
}

// OwnedKinds are the kinds the Provisioner writes; a controller watches them
// so that an edit or a deletion is repaired on the next reconcile.
func OwnedKinds() []client.Object {
	return []client.Object{
		&appsv1.Deployment{}, &corev1.Service{}, &corev1.ServiceAccount{},
		&rbacv1.ClusterRoleBinding{}, &rbacv1.ClusterRole{},
	}
}

// State is what a Gateway's data plane looks like after Ensure.
type State struct {
	// Ready is true when the Deployment has at least one available replica.
	Ready bool
	// Message says what is still missing: no available replica, or a load
	// balancer without an address yet. Empty when there is nothing to say.
	Message string
	// Addresses are where the Gateway is reached: the Service's load
	// balancer addresses, or its cluster IPs while the load balancer is
	// pending or when the Service has no load balancer.
	Addresses []gwv1.GatewayStatusAddress
}

// EnsureClusterRole creates or repairs the ClusterRole the proxies are bound
// to. Ensure calls it too; call it alone to have the role in place before any
// Gateway exists.
func (p *Provisioner) EnsureClusterRole(ctx context.Context) error {
	if err := p.apply(ctx, types.NamespacedName{}, ClusterRole()); err != nil {
		return fmt.Errorf("apply ClusterRole %s: %w", ClusterRoleName, err)
	}
	return nil
}

// Ensure creates or repairs gw's data plane with the parameters params and
// reports its state. It applies, in order, the ClusterRole, the
// ServiceAccount, the ClusterRoleBinding, the Deployment and the Service; the
// namespaced ones are owned by gw, so the garbage collector deletes them with
// it.
func (p *Provisioner) Ensure(ctx context.Context, gw *gwv1.Gateway, params Params) (State, error) {
	if err := p.EnsureClusterRole(ctx); err != nil {
		return State{}, err
	}
	n := Names(gw)
	owner := types.NamespacedName{Namespace: gw.Namespace, Name: gw.Name}
	at := func(kind string) string { return kind + " " + gw.Namespace + "/" + n.Name }
	if err := p.apply(ctx, owner, ServiceAccount(gw)); err != nil {
		return State{}, fmt.Errorf("apply %s: %w", at("ServiceAccount"), err)
	}
	if err := p.apply(ctx, owner, ClusterRoleBinding(gw)); err != nil {
		return State{}, fmt.Errorf("apply ClusterRoleBinding %s: %w", n.ClusterRoleBinding, err)
	}
	if err := p.ensureSessionKey(ctx, gw); err != nil {
		return State{}, err
	}
	var dep appsv1.Deployment
	if err := p.applyInto(ctx, owner, Deployment(gw, params), &dep); err != nil {
		return State{}, fmt.Errorf("apply %s: %w", at("Deployment"), err)
	}
	var svc corev1.Service
	if err := p.applyInto(ctx, owner, Service(gw, params), &svc); err != nil {
		return State{}, fmt.Errorf("apply %s: %w", at("Service"), err)
	}
	return stateOf(&dep, &svc), nil
}

// Cleanup deletes the ClusterRoleBindings of Gateways that are not in live.
// ClusterRoleBindings are cluster-scoped, so the Gateway cannot own them and
// the garbage collector does not remove them; the namespaced objects are
// removed by the garbage collector through their owner references. Pass
// every Gateway whose data plane should keep running.
//
// Cleanup also forgets what it applied for the Gateways not in live, so that
// the records of applies stay as many as the live Gateways' objects.
func (p *Provisioner) Cleanup(ctx context.Context, live []types.NamespacedName) error {
	keep := map[string]bool{}
	liveGateways := map[types.NamespacedName]bool{}
	for _, gw := range live {
		keep[namesOf(gw).ClusterRoleBinding] = true
		liveGateways[gw] = true
	}
	p.forgetGatewaysExcept(liveGateways)
	var list rbacv1.ClusterRoleBindingList
	if err := p.client.List(ctx, &list,
		client.MatchingLabels{LabelName: ProxyName, LabelManagedBy: ManagedBy},
		client.HasLabels{LabelGatewayNamespace, LabelGatewayName},
	); err != nil {
		return fmt.Errorf("list the proxies' ClusterRoleBindings: %w", err)
	}
	var errs []error
	for i := range list.Items {
		crb := &list.Items[i]
		if keep[crb.Name] {
			continue
		}
		if err := p.client.Delete(ctx, crb); err != nil && !apierrors.IsNotFound(err) {
			errs = append(errs, fmt.Errorf("delete ClusterRoleBinding %s of Gateway %s: %w", crb.Name, crb.Annotations[AnnotationGateway], err))
		}
	}
	return errors.Join(errs...)
}

// stateOf reads the data plane's state from the applied Deployment and
// Service.
func stateOf(dep *appsv1.Deployment, svc *corev1.Service) State {
	var st State
	var notes []string
	st.Ready = dep.Status.AvailableReplicas >= 1
	if !st.Ready {
		want := int32(1)
		if dep.Spec.Replicas != nil {
			want = *dep.Spec.Replicas
		}
		notes = append(notes, fmt.Sprintf("Deployment %s/%s has no available replica yet (%d of %d ready)",
			dep.Namespace, dep.Name, dep.Status.ReadyReplicas, want))
	}

	add := func(t gwv1.AddressType, value string) {
		if value == "" {
			return
		}
		a := gwv1.GatewayStatusAddress{Type: &t, Value: value}
		if !slices.ContainsFunc(st.Addresses, func(b gwv1.GatewayStatusAddress) bool { return *b.Type == t && b.Value == value }) {
			st.Addresses = append(st.Addresses, a)
		}
	}
	for _, in := range svc.Status.LoadBalancer.Ingress {
		add(gwv1.IPAddressType, in.IP)
		add(gwv1.HostnameAddressType, in.Hostname)
	}
	if len(st.Addresses) == 0 {
		clusterIPs := svc.Spec.ClusterIPs
		if len(clusterIPs) == 0 && svc.Spec.ClusterIP != "" {
			clusterIPs = []string{svc.Spec.ClusterIP}
		}
		for _, ip := range clusterIPs {
			if ip != corev1.ClusterIPNone {
				add(gwv1.IPAddressType, ip)
			}
		}
		if svc.Spec.Type == corev1.ServiceTypeLoadBalancer {
			notes = append(notes, fmt.Sprintf("the load balancer of Service %s/%s has no address yet, so the Gateway's address is its cluster IP for now",
				svc.Namespace, svc.Name))
		}
	}
	st.Message = strings.Join(notes, "; ")
	return st
}

// apply makes the object obj describes match it, as applyInto does, for an
// object that belongs to the Gateway gateway (zero for none).
func (p *Provisioner) apply(ctx context.Context, gateway types.NamespacedName, obj client.Object) error {
	gvk, err := apiutil.GVKForObject(obj, p.scheme)
	if err != nil {
		return err
	}
	fresh, err := p.scheme.New(gvk)
	if err != nil {
		return fmt.Errorf("make an empty %s: %w", gvk.Kind, err)
	}
	live, ok := fresh.(client.Object)
	if !ok {
		return fmt.Errorf("%s is not a Kubernetes object", gvk.Kind)
	}
	return p.applyInto(ctx, gateway, obj, live)
}

// applyInto sends obj as a server-side apply patch and decodes the API
// server's answer into out, for an object that belongs to the Gateway
// gateway (zero for none). When the live object is the one the last apply
// of the same document answered with, nothing would change: applyInto then
// sends nothing and out is the live object, read through the client.
func (p *Provisioner) applyInto(ctx context.Context, gateway types.NamespacedName, obj, out client.Object) error {
	u, err := p.applyDocument(obj)
	if err != nil {
		return err
	}
	data, err := u.MarshalJSON()
	if err != nil {
		return fmt.Errorf("encode %s: %w", u.GetKind(), err)
	}
	key := objectKey{gvk: u.GroupVersionKind(), NamespacedName: types.NamespacedName{Namespace: u.GetNamespace(), Name: u.GetName()}}
	document := sha256.Sum256(data)

	last, known := p.lastApply(key)
	if known && last.document == document {
		err := p.client.Get(ctx, key.NamespacedName, out)
		switch {
		case err == nil && out.GetResourceVersion() == last.resourceVersion:
			return nil
		case err != nil && !apierrors.IsNotFound(err):
			return fmt.Errorf("read the live object: %w", err)
		}
		// Edited or deleted since: apply to repair it.
	}

	if err := p.client.Apply(ctx, client.ApplyConfigurationFromUnstructured(u),
		client.FieldOwner(FieldManager), client.ForceOwnership); err != nil {
		p.forget(key)
		return err
	}
	// The client decodes the API server's answer into u.
	p.remember(key, lastApply{document: document, resourceVersion: u.GetResourceVersion(), gateway: gateway})
	reflect.ValueOf(out).Elem().SetZero() // out may hold the live object read above
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, out); err != nil {
		return fmt.Errorf("read the applied object: %w", err)
	}
	return nil
}

func (p *Provisioner) lastApply(key objectKey) (lastApply, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	last, ok := p.applied[key]
	return last, ok
}

func (p *Provisioner) remember(key objectKey, last lastApply) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.applied[key] = last
}

func (p *Provisioner) forget(key objectKey) {
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.applied, key)
}

// forgetGatewaysExcept drops the records of the objects of every Gateway not
// in live. The ClusterRole's record, which belongs to no Gateway, stays.
func (p *Provisioner) forgetGatewaysExcept(live map[types.NamespacedName]bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for key, last := range p.applied {
		if last.gateway != (types.NamespacedName{}) && !live[last.gateway] {
			delete(p.applied, key)
		}
	}
}

// applyDocument turns a typed object into the document to apply. The
// builders leave unset every field toolgate does not own, and the JSON form
// drops them (omitempty); what is left besides them is removed here: nulls
// (such as a zero creationTimestamp) and status, which is not ours to set.
func (p *Provisioner) applyDocument(obj client.Object) (*unstructured.Unstructured, error) {
	gvk, err := apiutil.GVKForObject(obj, p.scheme)
	if err != nil {
		return nil, err
	}
	obj.GetObjectKind().SetGroupVersionKind(gvk)
	data, err := json.Marshal(obj)
	if err != nil {
		return nil, fmt.Errorf("encode %s: %w", gvk.Kind, err)
	}
	u := &unstructured.Unstructured{}
	if err := u.UnmarshalJSON(data); err != nil {
		return nil, fmt.Errorf("decode %s: %w", gvk.Kind, err)
	}
	delete(u.Object, "status")
	dropNulls(u.Object)
	return u, nil
}

// dropNulls removes null values from a decoded JSON document, in place.
// Empty objects stay: some mean something, such as emptyDir: {}.
func dropNulls(v any) {
	switch v := v.(type) {
	case map[string]any:
		for k, e := range v {
			if e == nil {
				delete(v, k)
				continue
			}
			dropNulls(e)
		}
	case []any:
		for _, e := range v {
			dropNulls(e)
		}
	}
}
