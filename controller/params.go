package controller

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/toolgate/toolgate/controller/provision"
	"github.com/toolgate/toolgate/controller/translate"
)

// classParams resolves the data-plane parameters of every GatewayClass this
// controller serves: the controller's defaults, overridden by a ConfigMap
// named in spec.parametersRef. A class whose parameters cannot be read gets
// Accepted=False with reason InvalidParameters (returned as problems) and
// no parameters, so its Gateways get no data plane. It fails only when the
// parameters' namespaces cannot be read.
func (r *Reconciler) classParams(ctx context.Context, res *translate.Resources) (map[string]provision.Params, map[string][]metav1.Condition, error) {
	params := map[string]provision.Params{}
	problems := map[string][]metav1.Condition{}
	// The parameters' ConfigMaps are relevant: cached whole, their events
	// reconcile.
	refs := translate.Dependencies{ConfigMaps: map[types.NamespacedName]bool{}}
	for _, c := range res.GatewayClasses {
		if ref := c.Spec.ParametersRef; ref != nil && c.Spec.ControllerName == r.opts.ControllerName && ref.Namespace != nil {
			refs.ConfigMaps[types.NamespacedName{Namespace: string(*ref.Namespace), Name: ref.Name}] = true
		}
	}
	r.relevance.set("gatewayclass-parameters", refs)
	if r.relevance.scoped != nil {
		if err := r.relevance.scoped.want(ctx, "gatewayclass-parameters", scopesOf(refs)); err != nil {
			return nil, nil, fmt.Errorf("read the namespaces of GatewayClass parameters: %w", err)
		}
	}
	for _, c := range res.GatewayClasses {
		if c.Spec.ControllerName != r.opts.ControllerName {
			continue
		}
		p, err := r.paramsOf(ctx, c)
		if err != nil {
			problems[c.Name] = []metav1.Condition{{
				Type: string(gwv1.GatewayClassConditionStatusAccepted), Status: metav1.ConditionFalse,
				Reason: string(gwv1.GatewayClassReasonInvalidParameters), Message: err.Error(), ObservedGeneration: c.Generation,
			}}
			continue
		}
		params[c.Name] = p
	}
	return params, problems, nil
}

func (r *Reconciler) paramsOf(ctx context.Context, c *gwv1.GatewayClass) (provision.Params, error) {
	ref := c.Spec.ParametersRef
	if ref == nil {
		return r.opts.Params, nil
	}
	if ref.Group != "" || ref.Kind != "ConfigMap" {
		return provision.Params{}, fmt.Errorf("spec.parametersRef must name a core ConfigMap (group \"\", kind ConfigMap), not %s/%s", ref.Group, ref.Kind)
	}
	if ref.Namespace == nil || *ref.Namespace == "" {
		return provision.Params{}, fmt.Errorf("spec.parametersRef to ConfigMap %s needs a namespace", ref.Name)
	}
	key := types.NamespacedName{Namespace: string(*ref.Namespace), Name: ref.Name}
	var cm corev1.ConfigMap
	if err := r.getConfigMap(ctx, key, &cm); err != nil {
		if apierrors.IsNotFound(err) {
			return provision.Params{}, fmt.Errorf("spec.parametersRef: ConfigMap %s not found", key)
		}
		return provision.Params{}, fmt.Errorf("spec.parametersRef: read ConfigMap %s: %w", key, err)
	}
	if isMetadataOnly(&cm) {
		// Cached before it was known to be relevant: read it whole.
		var full corev1.ConfigMap
		if err := r.relevance.bodies.get(ctx, &cm, &full); err != nil {
			return provision.Params{}, fmt.Errorf("spec.parametersRef: %w", err)
		}
		cm = full
	}
	p, err := provision.ParamsFromConfigMap(&cm, r.opts.Params)
	if err != nil {
		return provision.Params{}, fmt.Errorf("spec.parametersRef: ConfigMap %s: %w", key, err)
	}
	return p, nil
}

// getConfigMap reads a ConfigMap from the cache that holds its namespace's:
// a scoped cache (classParams wants it), else the manager's.
func (r *Reconciler) getConfigMap(ctx context.Context, key types.NamespacedName, cm *corev1.ConfigMap) error {
	if r.relevance.scoped == nil {
		return r.client.Get(ctx, key, cm)
	}
	return r.relevance.scoped.get(ctx, scope{namespace: key.Namespace, kind: scopedConfigMaps}, key, cm)
}
