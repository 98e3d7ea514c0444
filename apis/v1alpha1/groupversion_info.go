// Package v1alpha1 is the toolgate.dev/v1alpha1 API: the MCPServer resource,
// which says where an MCP server runs, how its callers authenticate and how
// their tool calls are rate limited.
//
// +kubebuilder:object:generate=true
// +groupName=toolgate.dev
package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

var (
	// GroupVersion is the API group and version of the resources in this package.
	GroupVersion = schema.GroupVersion{Group: "toolgate.dev", Version: "v1alpha1"}

	// SchemeBuilder registers the types of this package with a runtime.Scheme.
	SchemeBuilder = runtime.NewSchemeBuilder(addKnownTypes)

	// AddToScheme adds the types of this package to a runtime.Scheme.
	AddToScheme = SchemeBuilder.AddToScheme
)

func addKnownTypes(s *runtime.Scheme) error {
	s.AddKnownTypes(GroupVersion, &MCPServer{}, &MCPServerList{})
	metav1.AddToGroupVersion(s, GroupVersion)
	return nil
}
