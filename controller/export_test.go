package controller

import (
	"context"

	"sigs.k8s.io/controller-runtime/pkg/client"
)

// PatchStatus writes next's status over stored's as the reconciler's
// status writer does.
func PatchStatus(ctx context.Context, c client.Client, stored, next client.Object, oldStatus, newStatus any) error {
	w := &statusWriter{client: c}
	return w.patch(ctx, stored, next, oldStatus, newStatus)
}

// CachedScopes lists the namespaces and kinds ("namespace/Kind") whose
// Secrets, ConfigMaps or EndpointSlices r caches now, sorted.
func (r *Relevance) CachedScopes() []string { return r.scoped.scopes() }
