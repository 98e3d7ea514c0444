package admission_test

import (
	"context"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/yaml"

	"github.com/toolgate/toolgate/controller/admission"
	"github.com/toolgate/toolgate/internal/admissioncases"
)

func mcpServer(t *testing.T, spec string) *unstructured.Unstructured {
	t.Helper()
	var s map[string]any
	if err := yaml.Unmarshal([]byte(spec), &s); err != nil {
		t.Fatalf("spec YAML: %v", err)
	}
	return &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "toolgate.dev/v1alpha1",
		"kind":       "MCPServer",
		"metadata":   map[string]any{"name": "test", "namespace": "default"},
		"spec":       s,
	}}
}

// The same cases the API server tests use: the in-process validator must
// accept and refuse exactly what the API server does, with the same words.
func TestAdmitMatchesTheAPIServer(t *testing.T) {
	v, err := admission.New()
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range admissioncases.Accepted {
		t.Run("accepts "+c.Name, func(t *testing.T) {
			if err := v.Admit(context.Background(), mcpServer(t, c.Spec)); err != nil {
				t.Fatalf("rejected: %v", err)
			}
		})
	}
	for _, c := range admissioncases.Rejected {
		t.Run("rejects "+c.Name, func(t *testing.T) {
			err := v.Admit(context.Background(), mcpServer(t, c.Spec))
			if err == nil {
				t.Fatal("accepted")
			}
			for _, want := range []string{`MCPServer.toolgate.dev "test" is invalid`, c.Field, c.Message} {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q does not contain %q", err, want)
				}
			}
		})
	}
}

func TestAdmitAppliesDefaults(t *testing.T) {
	v, err := admission.New()
	if err != nil {
		t.Fatal(err)
	}
	obj := mcpServer(t, "serviceRef: {name: s, port: 80}\nauth:\n  oidc: {issuer: 'https://i.example.com', audience: a}\n")
	if err := v.Admit(context.Background(), obj); err != nil {
		t.Fatal(err)
	}
	for path, want := range map[string]string{"spec.path": "/mcp", "spec.transport": "streamable-http", "spec.auth.oidc.userClaim": "sub"} {
		got, _, _ := unstructured.NestedString(obj.Object, strings.Split(path, ".")...)
		if got != want {
			t.Errorf("%s = %q, want %q", path, got, want)
		}
	}
}

func TestAdmitRefusesUnknownFields(t *testing.T) {
	v, err := admission.New()
	if err != nil {
		t.Fatal(err)
	}
	err = v.Admit(context.Background(), mcpServer(t, "serviceRef: {name: s, port: 80}\nrateLimits: {}\n"))
	if err == nil || !strings.Contains(err.Error(), "spec.rateLimits") || !strings.Contains(err.Error(), "unknown field") {
		t.Fatalf("want an unknown field error for spec.rateLimits, got %v", err)
	}
}
