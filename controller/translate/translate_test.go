package translate_test

import (
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/toolgate/toolgate/apis/v1alpha1"
	"github.com/toolgate/toolgate/controller/admission"
	"github.com/toolgate/toolgate/controller/translate"
)

// An MCPServer stored before the CRD refused perUser without auth (or
// written around admission) is reported, not enforced half-way.
func TestRateLimitingConfigValidIsFalseForPerUserWithoutAuth(t *testing.T) {
	validator, err := admission.New()
	if err != nil {
		t.Fatal(err)
	}
	m := &v1alpha1.MCPServer{
		ObjectMeta: metav1.ObjectMeta{Name: "legacy", Namespace: "default", Generation: 7},
		Spec: v1alpha1.MCPServerSpec{
			ServiceRef: v1alpha1.ServiceReference{Name: "mcp", Port: 80},
			Path:       "/mcp", Transport: v1alpha1.TransportStreamableHTTP,
			RateLimiting: &v1alpha1.RateLimiting{
				PerUser: &v1alpha1.Bucket{MaxTokens: 5, RefillPeriod: metav1.Duration{Duration: time.Minute}},
			},
		},
	}
	res := translate.Translate(&translate.Resources{MCPServers: []*v1alpha1.MCPServer{m}}, translate.Options{Admission: validator})
	nn := types.NamespacedName{Namespace: "default", Name: "legacy"}
	if _, ok := res.Policies[nn]; ok {
		t.Error("an invalid MCPServer produced a policy")
	}
	status := res.Status.MCPServers[nn]
	if status == nil || status.ObservedGeneration != 7 {
		t.Fatalf("status = %+v, want observedGeneration 7", status)
	}
	var found bool
	for _, c := range status.Conditions {
		if c.Type != v1alpha1.ConditionRateLimitingConfigValid {
			continue
		}
		found = true
		if c.Status != metav1.ConditionFalse || c.Reason != translate.ReasonInvalid || c.ObservedGeneration != 7 {
			t.Errorf("condition = %+v, want False/Invalid at generation 7", c)
		}
		if !strings.Contains(c.Message, "rateLimiting.perUser needs spec.auth.oidc") {
			t.Errorf("message %q does not say what to fix", c.Message)
		}
	}
	if !found {
		t.Error("no RateLimitingConfigValid condition")
	}
}
