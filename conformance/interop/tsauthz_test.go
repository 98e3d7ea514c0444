package interop

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"

	"github.com/toolgate/toolgate/internal/testgateway"
	"github.com/toolgate/toolgate/internal/testissuer"
)

// tsAuthzReport is what ts-authz.mjs prints.
type tsAuthzReport struct {
	ProtocolVersion string   `json:"protocolVersion"`
	Tools           []string `json:"tools"`
	Calls           []struct {
		Name  string   `json:"name"`
		OK    bool     `json:"ok"`
		Text  string   `json:"text"`
		Error *tsError `json:"error"`
	} `json:"calls"`
	Fatal *tsError `json:"fatal"`
}

// Two users of the TypeScript SDK see different tools through the
// gateway; a tool hidden from one is unknown to him when he calls it, and
// an argument-based rule lets one call through and not another.
func TestTypeScriptClientSeesOnlyWhatItMayUse(t *testing.T) {
	issuer, err := testissuer.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(issuer.Close)
	url := startGateway(t, gatewayRoute{
		backend: startToolsBackend(t),
		policy: testgateway.OIDC(issuer.URL(), issuer.JWKSURL(), tsAudience) + `  authorization:
    rules:
    - name: engineers
      tools: [` + limitedTool + `]
      when: "'engineering' in claims.groups"
    - name: team-a
      tools: [` + otherTool + `]
      when: "request.arguments.team == 'a'"`,
	})
	for _, tc := range []struct {
		user   string
		groups []string
		tools  []string
	}{
		{"alice", []string{"engineering"}, []string{limitedTool, otherTool}},
		{"bob", []string{"sales"}, []string{otherTool}},
	} {
		t.Run(tc.user, func(t *testing.T) {
			token, err := issuer.TokenWithClaims(tc.user, tsAudience, map[string]any{"groups": tc.groups})
			if err != nil {
				t.Fatal(err)
			}
			out := runNode(t, []string{"TOOLGATE_TOKEN=" + token}, "ts-authz.mjs", url,
				limitedTool, otherTool+`={"team":"a"}`, otherTool+`={"team":"b"}`)
			var report tsAuthzReport
			if err := json.Unmarshal(out, &report); err != nil || report.Fatal != nil {
				t.Fatalf("ts-authz.mjs: %v %+v\n%s", err, report.Fatal, out)
			}
			slices.Sort(report.Tools)
			if !slices.Equal(report.Tools, tc.tools) {
				t.Errorf("tools/list showed %v, want %v", report.Tools, tc.tools)
			}
			if len(report.Calls) != 3 {
				t.Fatalf("calls %+v", report.Calls)
			}
			limited := report.Calls[0]
			if slices.Contains(tc.tools, limitedTool) {
				if !limited.OK || limited.Text != limitedTool+" done" {
					t.Errorf("%s: %+v, want its result", limitedTool, limited)
				}
			} else if limited.OK || limited.Error == nil || string(limited.Error.Code) != "-32602" || !strings.Contains(limited.Error.Message, limitedTool) {
				t.Errorf("%s hidden from %s: %+v, want the SDK's McpError -32602 naming it", limitedTool, tc.user, limited)
			}
			if a := report.Calls[1]; !a.OK || a.Text != otherTool+" done" {
				t.Errorf("%s for team a: %+v, want its result", otherTool, a)
			}
			if b := report.Calls[2]; b.OK || b.Error == nil || string(b.Error.Code) != "-32602" {
				t.Errorf("%s for team b: %+v, want it refused as unknown", otherTool, b)
			}
		})
	}
}
