// Package admission evaluates toolgate's CRDs in-process: OpenAPI schema,
// defaults, list invariants and CEL rules, with the API server's own code, so
// that an object read from a file is refused exactly as `kubectl apply` would
// refuse it, and the controller can re-check stored objects.
package admission

import (
	"context"
	"fmt"
	"math"

	"k8s.io/apiextensions-apiserver/pkg/apis/apiextensions"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	structuralschema "k8s.io/apiextensions-apiserver/pkg/apiserver/schema"
	"k8s.io/apiextensions-apiserver/pkg/apiserver/schema/cel"
	structuraldefaulting "k8s.io/apiextensions-apiserver/pkg/apiserver/schema/defaulting"
	"k8s.io/apiextensions-apiserver/pkg/apiserver/schema/listtype"
	structuralpruning "k8s.io/apiextensions-apiserver/pkg/apiserver/schema/pruning"
	apiservervalidation "k8s.io/apiextensions-apiserver/pkg/apiserver/validation"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/validation/field"
	celconfig "k8s.io/apiserver/pkg/apis/cel"

	"github.com/toolgate/toolgate/config/crd"
)

// Validator admits objects of the kinds its CRDs define.
type Validator struct {
	versions map[schema.GroupVersionKind]*version
}

type version struct {
	structural *structuralschema.Structural
	schema     apiservervalidation.SchemaValidator
	cel        *cel.Validator
}

// New builds a Validator from toolgate's embedded CRDs.
func New() (*Validator, error) {
	crds, err := crd.All()
	if err != nil {
		return nil, err
	}
	return NewFromCRDs(crds...)
}

// NewFromCRDs builds a Validator from the given CRDs.
func NewFromCRDs(crds ...*apiextensionsv1.CustomResourceDefinition) (*Validator, error) {
	v := &Validator{versions: map[schema.GroupVersionKind]*version{}}
	for _, c := range crds {
		for _, ver := range c.Spec.Versions {
			gvk := schema.GroupVersionKind{Group: c.Spec.Group, Version: ver.Name, Kind: c.Spec.Names.Kind}
			if ver.Schema == nil || ver.Schema.OpenAPIV3Schema == nil {
				return nil, fmt.Errorf("CRD %s version %s has no schema", c.Name, ver.Name)
			}
			internal := &apiextensions.JSONSchemaProps{}
			if err := apiextensionsv1.Convert_v1_JSONSchemaProps_To_apiextensions_JSONSchemaProps(ver.Schema.OpenAPIV3Schema, internal, nil); err != nil {
				return nil, fmt.Errorf("convert the schema of %s: %w", gvk, err)
			}
			structural, err := structuralschema.NewStructural(internal)
			if err != nil {
				return nil, fmt.Errorf("structural schema of %s: %w", gvk, err)
			}
			schemaValidator, _, err := apiservervalidation.NewSchemaValidator(internal)
			if err != nil {
				return nil, fmt.Errorf("schema validator of %s: %w", gvk, err)
			}
			v.versions[gvk] = &version{
				structural: structural,
				schema:     schemaValidator,
				cel:        cel.NewValidator(structural, true, celconfig.PerCallLimit),
			}
		}
	}
	return v, nil
}

// Handles reports whether the Validator knows the kind.
func (v *Validator) Handles(gvk schema.GroupVersionKind) bool {
	_, ok := v.versions[gvk]
	return ok
}

// Admit defaults obj in place and validates it as the API server does on
// create. The error, when not nil, reads as the API server's Invalid error.
func (v *Validator) Admit(ctx context.Context, obj *unstructured.Unstructured) error {
	gvk := obj.GroupVersionKind()
	ver, ok := v.versions[gvk]
	if !ok {
		return fmt.Errorf("no CRD defines %s", gvk)
	}
	var errs field.ErrorList
	if obj.GetName() == "" {
		errs = append(errs, field.Required(field.NewPath("metadata", "name"), "name is required"))
	}
	// The API server decodes whole JSON numbers as integers; a map decoded
	// with encoding/json holds them as float64, which CEL would refuse to
	// compare with an integer field.
	normalizeNumbers(obj.Object)
	// Unknown fields are an error, as with kubectl's default strict field validation.
	unknown := structuralpruning.PruneWithOptions(obj.Object, ver.structural, true, structuralschema.UnknownFieldPathOptions{TrackUnknownFieldPaths: true})
	for _, path := range unknown {
		errs = append(errs, field.Invalid(field.NewPath(path), nil, "unknown field"))
	}
	structuraldefaulting.Default(obj.Object, ver.structural)

	errs = append(errs, apiservervalidation.ValidateCustomResource(nil, obj.Object, ver.schema)...)
	errs = append(errs, listtype.ValidateListSetsAndMaps(nil, ver.structural, obj.Object)...)
	// The API server runs CEL rules only when the schema holds, as here.
	if ver.cel != nil {
		if hasBlocking(errs) {
			errs = append(errs, field.Invalid(nil, nil, "some validation rules were not checked because the object was invalid; correct the existing errors to complete validation"))
		} else {
			celErrs, _ := ver.cel.Validate(ctx, nil, ver.structural, obj.Object, nil, celconfig.RuntimeCELCostBudget)
			errs = append(errs, celErrs...)
		}
	}
	if len(errs) == 0 {
		return nil
	}
	return apierrors.NewInvalid(gvk.GroupKind(), obj.GetName(), errs)
}

// normalizeNumbers turns the whole float64 numbers of a decoded JSON value
// into int64, in place, as the API server's decoder reads them.
func normalizeNumbers(v any) {
	switch v := v.(type) {
	case map[string]any:
		for k, e := range v {
			if f, ok := e.(float64); ok && f == math.Trunc(f) && math.Abs(f) < 1<<63 {
				v[k] = int64(f)
				continue
			}
			normalizeNumbers(e)
		}
	case []any:
		for i, e := range v {
			if f, ok := e.(float64); ok && f == math.Trunc(f) && math.Abs(f) < 1<<63 {
				v[i] = int64(f)
				continue
			}
			normalizeNumbers(e)
		}
	}
}

// hasBlocking mirrors the API server: these errors stop CEL evaluation.
func hasBlocking(errs field.ErrorList) bool {
	for _, e := range errs {
		switch e.Type {
		case field.ErrorTypeNotSupported, field.ErrorTypeRequired, field.ErrorTypeTooLong, field.ErrorTypeTooMany, field.ErrorTypeTypeInvalid:
			return true
		}
	}
	return false
}
