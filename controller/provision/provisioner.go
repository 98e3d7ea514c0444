// Package provision creates and keeps in shape the data plane of each
// Gateway toolgate serves: a Deployment of `toolgate proxy`, the Service that
// exposes its listeners, the proxies' ServiceAccount (bound to no role: the
// proxies never call the Kubernetes API), and the Secrets they get through
// the kubelet: the session key, and the client certificate with which they
// fetch their configuration from the controller.
//
// The desired objects come from pure builders (Deployment, Service,
// ServiceAccount, ConfigClientSecret); the Provisioner applies
// them with server-side apply as the field manager FieldManager, forcing
// ownership, so every field toolgate sets is reset on each reconcile while
// fields others add (annotations from other tools, for example) are left
// alone, and fields a newer toolgate stops setting are removed.
//
// An apply that would change nothing is skipped: the Provisioner remembers,
// per object, the document it last applied and the resourceVersion the API
// server answered with, and applies again only when the document changed or
// the live object is not the one it left (edited, deleted or never written).
// The Secrets are not applied but created, and the client certificate
// re-issued, only when needed.
package provision

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"reflect"
	"slices"
	"strings"
	"sync"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/apiutil"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/toolgate/toolgate/controller/pki"
)

// FieldManager is the server-side apply field manager of everything the
// Provisioner writes.
const FieldManager = "toolgate-controller"

// Provisioner applies the data plane of Gateways.
type Provisioner struct {
	client client.Client
	scheme *runtime.Scheme
	ca     *pki.CA
	now    func() time.Time

	mu sync.Mutex
	// applied holds, per object, what the Provisioner last applied to it.
	applied map[objectKey]lastApply
	// certs holds, per Gateway, the version of its client certificate
	// Secret last found current (clientCertCurrent).
	certs map[types.NamespacedName]checkedCert
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
	// gateway is the Gateway the object belongs to.
	gateway types.NamespacedName
}

// Options configure a Provisioner.
type Options struct {
	// CA issues the client certificates with which the proxies
	// authenticate to the controller's configuration stream; the stream
	// must trust the same CA. Required: Ensure fails without it.
	CA *pki.CA
	// Now is the clock that dates the client certificates and decides
	// when they are renewed; time.Now when nil.
	Now func() time.Time
}

// New returns a Provisioner writing through c. The scheme must know the core
// and apps types.
//
// The Provisioner reads each object through c before writing it, to skip
// writes that would change nothing: give it a client that reads the kinds
// of OwnedKinds from a cache, such as a manager's, so that the reads do not
// reach the API server.
func New(c client.Client, scheme *runtime.Scheme, opts Options) *Provisioner {
	now := opts.Now
	if now == nil {
		now = time.Now
	}
	return &Provisioner{client: c, scheme: scheme, ca: opts.CA, now: now, applied: map[objectKey]lastApply{}, certs: map[types.NamespacedName]checkedCert{}}
}

// OwnedKinds are the kinds the Provisioner writes; a controller watches them
// so that an edit or a deletion is repaired on the next reconcile.
func OwnedKinds() []client.Object {
	return []client.Object{
		&appsv1.Deployment{}, &corev1.Service{}, &corev1.ServiceAccount{}, &corev1.Secret{},
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

// Ensure creates or repairs gw's data plane with the parameters params and
// reports its state. It applies the ServiceAccount, creates the session-key
// Secret and the client certificate Secret (re-issuing the certificate when
// it is due), then applies the Deployment, which mounts them, and the
// Service. Every object is owned by gw, so the garbage collector deletes
// them with it.
//
// params.ControllerURL must be an https URL, and the Provisioner must have a
// CA (Options.CA).
func (p *Provisioner) Ensure(ctx context.Context, gw *gwv1.Gateway, params Params) (State, error) {
	if p.ca == nil {
		return State{}, errors.New("the provisioner has no CA to issue the proxies' client certificates: pass provision.Options.CA to provision.New")
	}
	if err := checkControllerURL(params.ControllerURL); err != nil {
		return State{}, err
	}
	n := Names(gw)
	owner := types.NamespacedName{Namespace: gw.Namespace, Name: gw.Name}
	at := func(kind string) string { return kind + " " + gw.Namespace + "/" + n.Name }
	if err := p.apply(ctx, owner, ServiceAccount(gw)); err != nil {
		return State{}, fmt.Errorf("apply %s: %w", at("ServiceAccount"), err)
	}
	if err := p.ensureSessionKey(ctx, gw); err != nil {
		return State{}, err
	}
	// Before the Deployment: a CA change rolls the proxies, and the new
	// pods must mount the certificate of the new CA.
	if err := p.ensureConfigClientSecret(ctx, gw, p.now()); err != nil {
		return State{}, err
	}
	var dep appsv1.Deployment
	if err := p.applyInto(ctx, owner, Deployment(gw, params, p.ca.CertPEM()), &dep); err != nil {
		return State{}, fmt.Errorf("apply %s: %w", at("Deployment"), err)
	}
	var svc corev1.Service
	if err := p.applyInto(ctx, owner, Service(gw, params), &svc); err != nil {
		return State{}, fmt.Errorf("apply %s: %w", at("Service"), err)
	}
	return stateOf(&dep, &svc), nil
}

// Cleanup forgets what the Provisioner applied for the Gateways that are
// not in live, so that its records of applies stay as many as the live
// Gateways' objects. Pass every Gateway whose data plane should keep
// running. Cleanup deletes nothing: every data-plane object is owned by its
// Gateway, and the garbage collector removes it with the Gateway.
func (p *Provisioner) Cleanup(_ context.Context, live []types.NamespacedName) error {
	liveGateways := make(map[types.NamespacedName]bool, len(live))
	for _, gw := range live {
		liveGateways[gw] = true
	}
	p.forgetGatewaysExcept(liveGateways)
	return nil
}

// checkControllerURL says what is wrong with the URL the proxies are to
// reach the controller at, if anything.
func checkControllerURL(raw string) error {
	if raw == "" {
		return errors.New("no controller URL for the proxies to fetch their configuration from: set it in the controller's configuration (provision.Params.ControllerURL); it is not a GatewayClass parameter")
	}
	u, err := url.Parse(raw)
	if err != nil || u.Scheme != "https" || u.Host == "" {
		return fmt.Errorf("controller URL %q is not an https://HOST[:PORT] URL: the proxies authenticate to the controller with TLS client certificates, so set an https URL the proxies can reach", raw)
	}
	return nil
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
// object that belongs to the Gateway gateway.
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
// gateway. When the live object is the one the last apply
// of the same document answered with, nothing would change: applyInto then
// sends nothing and out is the live object, read through the client.
func (p *Provisioner) applyInto(ctx context.Context, gateway types.NamespacedName, obj, out client.Object) error {
	// The document is made from the object's JSON form: when that is the
	// one last applied, so is the document, which is then not made.
	gvk, typed, err := p.typedForm(obj)
	if err != nil {
		return err
	}
	key := objectKey{gvk: gvk, NamespacedName: types.NamespacedName{Namespace: obj.GetNamespace(), Name: obj.GetName()}}
	document := sha256.Sum256(typed)

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

	u, err := documentOf(typed)
	if err != nil {
		return fmt.Errorf("%s: %w", gvk.Kind, err)
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
// in live.
func (p *Provisioner) forgetGatewaysExcept(live map[types.NamespacedName]bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for key, last := range p.applied {
		if !live[last.gateway] {
			delete(p.applied, key)
		}
	}
	for gw := range p.certs {
		if !live[gw] {
			delete(p.certs, gw)
		}
	}
}

// typedForm sets obj's kind from the scheme and returns it with obj's
// JSON form.
func (p *Provisioner) typedForm(obj client.Object) (schema.GroupVersionKind, []byte, error) {
	gvk, err := apiutil.GVKForObject(obj, p.scheme)
	if err != nil {
		return gvk, nil, err
	}
	obj.GetObjectKind().SetGroupVersionKind(gvk)
	typed, err := json.Marshal(obj)
	if err != nil {
		return gvk, nil, fmt.Errorf("encode %s: %w", gvk.Kind, err)
	}
	return gvk, typed, nil
}

// applyDocument turns a typed object into the document to apply.
func (p *Provisioner) applyDocument(obj client.Object) (*unstructured.Unstructured, error) {
	gvk, typed, err := p.typedForm(obj)
	if err != nil {
		return nil, err
	}
	u, err := documentOf(typed)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", gvk.Kind, err)
	}
	return u, nil
}

// documentOf turns the JSON form of a typed object (typedForm) into the
// document to apply. The builders leave unset every field toolgate does
// not own, and the JSON form drops them (omitempty); what is left besides
// them is removed here: nulls (such as a zero creationTimestamp) and
// status, which is not ours to set.
func documentOf(typed []byte) (*unstructured.Unstructured, error) {
	u := &unstructured.Unstructured{}
	if err := u.UnmarshalJSON(typed); err != nil {
		return nil, fmt.Errorf("decode: %w", err)
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
