// Package load reads the translator's inputs from YAML manifests: the
// objects standalone mode serves and the translator's test fixtures, with
// one loader for both. toolgate's own kinds are defaulted and validated with
// the CRD's schema and CEL rules, as the API server would.
package load

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"
	gwv1beta1 "sigs.k8s.io/gateway-api/apis/v1beta1"

	"github.com/toolgate/toolgate/apis/v1alpha1"
	"github.com/toolgate/toolgate/controller/admission"
	"github.com/toolgate/toolgate/controller/translate"
)

// Loader reads manifests into translator Resources.
type Loader struct {
	admission *admission.Validator
}

// New builds a Loader that validates toolgate's kinds with its CRDs.
func New() (*Loader, error) {
	v, err := admission.New()
	if err != nil {
		return nil, err
	}
	return &Loader{admission: v}, nil
}

// Dir reads every *.yaml and *.yml file of dir, in name order.
func (l *Loader) Dir(dir string) (*translate.Resources, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("read config folder: %w", err)
	}
	res := &translate.Resources{}
	var errs []error
	for _, e := range entries {
		name := e.Name()
		if e.IsDir() || !(strings.HasSuffix(name, ".yaml") || strings.HasSuffix(name, ".yml")) {
			continue
		}
		path := filepath.Join(dir, name)
		f, err := os.Open(path)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		errs = append(errs, l.read(res, f, path))
		_ = f.Close() // read only
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return res, nil
}

// Read reads one multi-document YAML stream; source names it in errors.
func (l *Loader) Read(r io.Reader, source string) (*translate.Resources, error) {
	res := &translate.Resources{}
	if err := l.read(res, r, source); err != nil {
		return nil, err
	}
	return res, nil
}

func (l *Loader) read(res *translate.Resources, r io.Reader, source string) error {
	dec := utilyaml.NewYAMLOrJSONDecoder(r, 4096)
	var errs []error
	for doc := 1; ; doc++ {
		u := &unstructured.Unstructured{}
		if err := dec.Decode(&u.Object); err != nil {
			if errors.Is(err, io.EOF) {
				break
			}
			return fmt.Errorf("%s: document %d: %w", source, doc, err)
		}
		if len(u.Object) == 0 {
			continue
		}
		if err := l.add(res, u); err != nil {
			errs = append(errs, fmt.Errorf("%s: document %d (%s %q): %w", source, doc, u.GetKind(), u.GetName(), err))
		}
	}
	return errors.Join(errs...)
}

var (
	gwGroup        = gwv1.GroupName
	kindsSupported = []string{"GatewayClass", "Gateway", "HTTPRoute", "ReferenceGrant", "BackendTLSPolicy", "ListenerSet", "MCPServer", "Service", "EndpointSlice", "Secret", "ConfigMap", "Namespace"}
)

func (l *Loader) add(res *translate.Resources, u *unstructured.Unstructured) error {
	gvk := u.GroupVersionKind()
	if u.GetName() == "" {
		return errors.New("metadata.name is required")
	}
	namespaced := gvk.Kind != "GatewayClass" && gvk.Kind != "Namespace"
	if namespaced && u.GetNamespace() == "" {
		u.SetNamespace("default")
	}
	if l.admission.Handles(gvk) {
		if err := l.admission.Admit(context.Background(), u); err != nil {
			return err
		}
	}
	var err error
	switch {
	case gvk == v1alpha1.GroupVersion.WithKind("MCPServer"):
		err = into(u, &res.MCPServers)
	case gvk.Group == gwGroup && gvk.Kind == "GatewayClass" && servedGW(gvk):
		err = into(u, &res.GatewayClasses)
	case gvk.Group == gwGroup && gvk.Kind == "Gateway" && servedGW(gvk):
		err = into(u, &res.Gateways)
	case gvk.Group == gwGroup && gvk.Kind == "HTTPRoute" && servedGW(gvk):
		err = into(u, &res.HTTPRoutes)
	case gvk.Group == gwGroup && gvk.Kind == "ReferenceGrant" && (gvk.Version == gwv1.GroupVersion.Version || gvk.Version == gwv1beta1.GroupVersion.Version):
		err = into(u, &res.ReferenceGrants)
	case gvk == corev1.SchemeGroupVersion.WithKind("Service"):
		err = into(u, &res.Services)
	case gvk == discoveryv1.SchemeGroupVersion.WithKind("EndpointSlice"):
		err = into(u, &res.EndpointSlices)
	case gvk.Group == gwGroup && gvk.Kind == "BackendTLSPolicy" && gvk.Version == gwv1.GroupVersion.Version:
		err = into(u, &res.BackendTLSPolicies)
	case gvk.Group == gwGroup && gvk.Kind == "ListenerSet" && gvk.Version == gwv1.GroupVersion.Version:
		err = into(u, &res.ListenerSets)
	case gvk == corev1.SchemeGroupVersion.WithKind("Secret"):
		err = into(u, &res.Secrets)
	case gvk == corev1.SchemeGroupVersion.WithKind("ConfigMap"):
		err = into(u, &res.ConfigMaps)
	case gvk == corev1.SchemeGroupVersion.WithKind("Namespace"):
		err = into(u, &res.Namespaces)
	default:
		if !slices.Contains(kindsSupported, gvk.Kind) {
			return fmt.Errorf("kind %s is not one toolgate reads (%s)", gvk, strings.Join(kindsSupported, ", "))
		}
		return fmt.Errorf("%s is not a supported version of %s", gvk.GroupVersion(), gvk.Kind)
	}
	return err
}

func servedGW(gvk schema.GroupVersionKind) bool {
	return gvk.Version == gwv1.GroupVersion.Version || gvk.Version == gwv1beta1.GroupVersion.Version
}

// into converts u strictly into a new T and appends it to list.
func into[T any](u *unstructured.Unstructured, list *[]*T) error {
	obj := new(T)
	if err := runtime.DefaultUnstructuredConverter.FromUnstructuredWithValidation(u.Object, obj, true); err != nil {
		return err
	}
	*list = append(*list, obj)
	return nil
}
