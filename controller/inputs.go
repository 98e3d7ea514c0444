// Package controller runs toolgate's reconcilers: it reads Gateway API
// objects, MCPServers and what they refer to, translates them (package
// translate), writes the status of every object it owns, and provisions
// each Gateway's data plane. Every replica also translates each Gateway's
// snapshot and serves it to that Gateway's proxies over the config stream
// (package configstream); the proxies never read the API server.
package controller

import (
	"context"
	"fmt"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"
	gwv1beta1 "sigs.k8s.io/gateway-api/apis/v1beta1"

	"github.com/toolgate/toolgate/apis/v1alpha1"
	"github.com/toolgate/toolgate/controller/provision"
	"github.com/toolgate/toolgate/controller/translate"
)

// NewScheme returns a scheme with every kind toolgate reads or writes.
func NewScheme() (*runtime.Scheme, error) {
	s := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{
		clientgoscheme.AddToScheme, gwv1.Install, gwv1beta1.Install, v1alpha1.AddToScheme,
	} {
		if err := add(s); err != nil {
			return nil, err
		}
	}
	return s, nil
}

// inputKinds are the objects the translator reads; a change to any of them
// triggers a new translation.
func inputKinds() []client.Object {
	return []client.Object{
		&gwv1.GatewayClass{}, &gwv1.Gateway{}, &gwv1.HTTPRoute{}, &gwv1.ReferenceGrant{},
		&gwv1.BackendTLSPolicy{}, &gwv1.ListenerSet{}, &v1alpha1.MCPServer{}, &corev1.Service{}, &discoveryv1.EndpointSlice{},
		&corev1.Secret{}, &corev1.ConfigMap{}, &corev1.Namespace{},
	}
}

// ListResources reads the translator's inputs through c (a cache in
// practice). The objects are the cache's own: nothing may change them.
func ListResources(ctx context.Context, c client.Reader) (*translate.Resources, error) {
	return listResources(ctx, c, true)
}

// listResources reads the translator's inputs through c; the Secrets,
// ConfigMaps and EndpointSlices only with withScoped.
func listResources(ctx context.Context, c client.Reader, withScoped bool) (*translate.Resources, error) {
	res := &translate.Resources{}
	var (
		classes    gwv1.GatewayClassList
		gateways   gwv1.GatewayList
		routes     gwv1.HTTPRouteList
		grants     gwv1.ReferenceGrantList
		mcpServers v1alpha1.MCPServerList
		services   corev1.ServiceList
		slices     discoveryv1.EndpointSliceList
		secrets    corev1.SecretList
		configMaps corev1.ConfigMapList
		tls        gwv1.BackendTLSPolicyList
		namespaces corev1.NamespaceList
		sets       gwv1.ListenerSetList
	)
	lists := []client.ObjectList{&classes, &gateways, &routes, &grants, &tls, &sets, &mcpServers, &services, &namespaces}
	if withScoped {
		lists = append(lists, &slices, &secrets, &configMaps)
	}
	for _, l := range lists {
		// The cache's own objects, not copies: translation only reads
		// its inputs, and copying every object of the cluster on each
		// reconcile was most of the garbage the controller made.
		if err := c.List(ctx, l, client.UnsafeDisableDeepCopy); err != nil {
			return nil, fmt.Errorf("list %T: %w", l, err)
		}
	}
	res.GatewayClasses = pointers(classes.Items)
	res.Gateways = pointers(gateways.Items)
	res.HTTPRoutes = pointers(routes.Items)
	res.ReferenceGrants = pointers(grants.Items)
	res.MCPServers = pointers(mcpServers.Items)
	res.Services = pointers(services.Items)
	res.EndpointSlices = pointers(slices.Items)
	res.Secrets = pointers(secrets.Items)
	res.ConfigMaps = pointers(configMaps.Items)
	res.BackendTLSPolicies = pointers(tls.Items)
	res.Namespaces = pointers(namespaces.Items)
	res.ListenerSets = pointers(sets.Items)
	return res, nil
}

// inputs are the translator's inputs as read, with the scopes (see
// scopedCaches) whose objects they hold.
type inputs struct {
	*translate.Resources
	// scopes are the scopes read; nil when every object is cached
	// cluster-wide.
	scopes map[scope]bool
}

func pointers[T any](items []T) []*T {
	out := make([]*T, len(items))
	for i := range items {
		out[i] = &items[i]
	}
	return out
}

// CacheOptions keeps the controller's cache small: of the kinds it owns but
// does not read as inputs, it caches only the objects toolgate manages;
// of Secrets too, and of ConfigMaps and EndpointSlices nothing: those of
// the namespaces translations read are in scoped caches (scopedCaches).
// rel's transform keeps of the others what can matter (see Relevance).
// A read of a kind the cache does not watch fails rather than starting a
// watch of the whole cluster.
func CacheOptions(rel *Relevance) cache.Options {
	managed := cache.ByObject{Label: labels.SelectorFromSet(labels.Set{provision.LabelManagedBy: provision.ManagedBy})}
	return cache.Options{
		ByObject: map[client.Object]cache.ByObject{
			&appsv1.Deployment{}:     managed,
			&corev1.ServiceAccount{}: managed,
			&corev1.Secret{}:         managed,
		},
		DefaultTransform:            rel.transform,
		ReaderFailOnMissingInformer: true,
	}
}
