// Package admissioncases is the table of MCPServer admission cases: specs the
// CRD must accept and specs it must reject, with the field and message the
// user sees. The API server tests and the in-process validator tests share it,
// so both refuse exactly the same objects with the same words.
package admissioncases

import (
	"fmt"
	"strings"

	"github.com/toolgate/toolgate/apis/v1alpha1"
)

// Case is one MCPServer spec, written as a user would write it in YAML.
type Case struct {
	Name string
	Spec string
	// Field and Message are in the rejection of a spec that must be rejected.
	Field   string
	Message string
}

const (
	service = "serviceRef: {name: github-mcp, port: 8080}\n"
	auth    = "auth:\n  oidc: {issuer: 'https://issuer.example.com', audience: toolgate}\n"
)

// tools renders n tools[] entries with a global bucket each.
func tools(n int) string {
	var b strings.Builder
	b.WriteString("  tools:\n")
	for i := range n {
		fmt.Fprintf(&b, "  - name: tool_%d\n    global: {maxTokens: 1, refillPeriod: 1m}\n", i)
	}
	return b.String()
}

// Accepted are specs the CRD must accept.
var Accepted = []Case{
	{Name: "a server with no auth and no rate limiting", Spec: service},
	{Name: "a global limit without auth", Spec: service + "rateLimiting:\n  global: {maxTokens: 1000, refillPeriod: 1m}\n"},
	{Name: "a per-tool global limit without auth", Spec: service + "rateLimiting:\n  tools:\n  - name: expensive_tool\n    global: {maxTokens: 5, refillPeriod: 1m}\n"},
	{Name: "a server-level perUser limit with OIDC auth", Spec: service + auth + "rateLimiting:\n  perUser: {maxTokens: 100, refillPeriod: 1m}\n"},
	{Name: "a per-tool perUser limit with OIDC auth", Spec: service + auth + "rateLimiting:\n  tools:\n  - name: expensive_tool\n    perUser: {maxTokens: 10, refillPeriod: 1m}\n"},
	{Name: "global, perUser and per-tool limits together", Spec: service + auth + "rateLimiting:\n  global: {maxTokens: 1000, refillPeriod: 1m}\n  perUser: {maxTokens: 100, refillPeriod: 1m}\n  tools:\n  - name: expensive_tool\n    global: {maxTokens: 50, refillPeriod: 1m}\n    perUser: {maxTokens: 10, refillPeriod: 1m}\n  - name: other_tool\n    perUser: {maxTokens: 20, refillPeriod: 30s}\n"},
	{Name: "maxTokens of 1", Spec: service + "rateLimiting:\n  global: {maxTokens: 1, refillPeriod: 1s}\n"},
	{Name: "the longest refillPeriod, 24h", Spec: service + "rateLimiting:\n  global: {maxTokens: 1, refillPeriod: 24h}\n"},
	{Name: "a compound refillPeriod, 1h30m", Spec: service + "rateLimiting:\n  global: {maxTokens: 1, refillPeriod: 1h30m}\n"},
	{Name: "a fractional refillPeriod, 1.5s", Spec: service + "rateLimiting:\n  global: {maxTokens: 1, refillPeriod: 1.5s}\n"},
	{Name: "a sub-second refillPeriod, 500ms", Spec: service + "rateLimiting:\n  global: {maxTokens: 1, refillPeriod: 500ms}\n"},
	{Name: "the largest number of tools", Spec: service + "rateLimiting:\n" + tools(v1alpha1.MaxTools)},
	{Name: "a resource URL and scopes", Spec: service + "auth:\n  oidc: {issuer: 'https://issuer.example.com', audience: toolgate}\n  resourceURL: https://mcp.example.com/github/mcp\n  scopes: [tools.read, tools.call]\n"},
	{Name: "a test issuer over plain http, allowed", Spec: service + "auth:\n  oidc: {issuer: 'http://127.0.0.1:9002', jwksURL: 'http://127.0.0.1:9002/keys', audience: toolgate, allowInsecureHTTP: true}\n"},
	{Name: "authorization rules", Spec: service + auth + "authorization:\n  rules:\n  - {name: engineers, tools: ['search_*', get_issue], when: \"'engineering' in claims.groups\"}\n  - {name: admins, tools: ['delete_*'], scopes: ['repo:admin']}\n  - {name: docs, prompts: ['review_*'], resources: ['file:///docs/*']}\n"},
	{Name: "costs, prompts and resources", Spec: service + auth + "rateLimiting:\n  global: {maxTokens: 100, refillPeriod: 1m}\n  tools:\n  - {name: report, cost: 5, perUser: {maxTokens: 10, refillPeriod: 1h}}\n  - {name: search, cost: 2}\n  prompts:\n  - {name: review, perUser: {maxTokens: 3, refillPeriod: 1h}}\n  resources:\n  - {uri: 'file:///docs/{name}', cost: 2, global: {maxTokens: 10, refillPeriod: 1m}}\n  - {uri: 'file:///docs/index.md', global: {maxTokens: 100, refillPeriod: 1m}}\n"},
	{Name: "quotas, a server's and a tool's, in a time zone", Spec: service + auth + "rateLimiting:\n  timeZone: Europe/Paris\n  quota:\n    perUser: {max: 1000, window: Day}\n    global: {max: 100000, window: Month}\n  tools:\n  - {name: report, cost: 5, quota: {perUser: {max: 50, window: Week}}}\n"},
	{Name: "a prompt's quota and a resource's", Spec: service + auth + "rateLimiting:\n  prompts:\n  - {name: review, quota: {perUser: {max: 20, window: Day}}}\n  resources:\n  - {uri: 'file:///docs/{name}', cost: 2, quota: {global: {max: 1000, window: Hour}}}\n"},
	{Name: "limits in shadow mode", Spec: service + "rateLimiting:\n  mode: Shadow\n  global: {maxTokens: 5, refillPeriod: 1m}\n"},
	{Name: "a tool entry with only a cost", Spec: service + "rateLimiting:\n  global: {maxTokens: 5, refillPeriod: 1m}\n  tools:\n  - {name: report, cost: 5}\n"},
	{Name: "auth that forwards the checked token", Spec: service + "auth:\n  oidc: {issuer: 'https://issuer.example.com', audience: toolgate}\n  forwardAuthorization: true\n"},
	{Name: "the SSE transport and an explicit JWKS URL", Spec: service + "transport: sse\npath: /sse\nauth:\n  oidc: {issuer: 'https://issuer.example.com', audience: toolgate, jwksURL: 'https://issuer.example.com/keys', userClaim: email}\n"},
}

// Rejected are specs the CRD must reject.
var Rejected = []Case{
	{Name: "a resource URL with a query",
		Spec:  service + "auth:\n  oidc: {issuer: 'https://issuer.example.com', audience: toolgate}\n  resourceURL: 'https://mcp.example.com/mcp?tenant=a'\n",
		Field: "spec.auth.resourceURL", Message: "resourceURL must be an absolute https:// (or http://) URL without query or fragment"},
	{Name: "a relative resource URL",
		Spec:  service + "auth:\n  oidc: {issuer: 'https://issuer.example.com', audience: toolgate}\n  resourceURL: /github/mcp\n",
		Field: "spec.auth.resourceURL", Message: "resourceURL must be an absolute https:// (or http://) URL"},
	{Name: "a server-level perUser limit without auth",
		Spec:  service + "rateLimiting:\n  perUser: {maxTokens: 100, refillPeriod: 1m}\n",
		Field: "spec.rateLimiting.perUser", Message: "rateLimiting.perUser needs spec.auth.oidc"},
	{Name: "a per-tool perUser limit without auth",
		Spec:  service + "rateLimiting:\n  global: {maxTokens: 100, refillPeriod: 1m}\n  tools:\n  - name: other_tool\n    global: {maxTokens: 5, refillPeriod: 1m}\n  - name: expensive_tool\n    perUser: {maxTokens: 10, refillPeriod: 1m}\n",
		Field: "spec.rateLimiting.tools", Message: "rateLimiting.tools[].perUser needs spec.auth.oidc"},
	{Name: "auth without oidc",
		Spec:  service + "auth: {}\nrateLimiting:\n  perUser: {maxTokens: 100, refillPeriod: 1m}\n",
		Field: "spec.auth.oidc", Message: "Required value"},
	{Name: "rateLimiting with no bucket at all",
		Spec:  service + "rateLimiting: {}\n",
		Field: "spec.rateLimiting", Message: "rateLimiting configures no bucket"},
	{Name: "rateLimiting with an empty tools list and nothing else",
		Spec:  service + "rateLimiting:\n  tools: []\n",
		Field: "spec.rateLimiting", Message: "rateLimiting configures no bucket"},
	{Name: "a tools[] entry with no bucket",
		Spec:  service + "rateLimiting:\n  global: {maxTokens: 100, refillPeriod: 1m}\n  tools:\n  - name: expensive_tool\n",
		Field: "spec.rateLimiting.tools[0]", Message: "each tools[] entry must set global, perUser, quota or cost"},
	{Name: "a tool's cost above its own bucket",
		Spec:  service + "rateLimiting:\n  tools:\n  - name: report\n    cost: 6\n    global: {maxTokens: 5, refillPeriod: 1m}\n",
		Field: "spec.rateLimiting.tools[0]", Message: "cost is above this entry's maxTokens: such a call could never pass"},
	{Name: "a tool's cost above the server's perUser bucket",
		Spec:  service + auth + "rateLimiting:\n  perUser: {maxTokens: 4, refillPeriod: 1m}\n  tools:\n  - name: report\n    cost: 5\n",
		Field: "spec.rateLimiting.tools", Message: "a tools[] cost is above the server's global or perUser maxTokens"},
	{Name: "a cost of 0",
		Spec:  service + "rateLimiting:\n  global: {maxTokens: 5, refillPeriod: 1m}\n  tools:\n  - name: report\n    cost: 0\n",
		Field: "spec.rateLimiting.tools[0].cost", Message: "should be greater than or equal to 1"},
	{Name: "a quota of an unknown window",
		Spec:  service + "rateLimiting:\n  quota:\n    global: {max: 10, window: Fortnight}\n",
		Field: "spec.rateLimiting.quota.global.window", Message: "Unsupported value"},
	{Name: "a quota with neither global nor perUser",
		Spec:  service + "rateLimiting:\n  global: {maxTokens: 5, refillPeriod: 1m}\n  quota: {}\n",
		Field: "spec.rateLimiting.quota", Message: "a quota must set global or perUser"},
	{Name: "a perUser quota without auth",
		Spec:  service + "rateLimiting:\n  quota:\n    perUser: {max: 10, window: Day}\n",
		Field: "spec.rateLimiting", Message: "a perUser quota needs spec.auth.oidc"},
	{Name: "a tool's cost above the server's quota",
		Spec:  service + "rateLimiting:\n  quota:\n    global: {max: 4, window: Day}\n  tools:\n  - {name: report, cost: 5}\n",
		Field: "spec.rateLimiting.tools", Message: "a tools[] cost is above the server's quota max"},
	{Name: "a prompt's perUser quota without auth",
		Spec:  service + "rateLimiting:\n  prompts:\n  - {name: review, quota: {perUser: {max: 20, window: Day}}}\n",
		Field: "spec.rateLimiting", Message: "a perUser quota needs spec.auth.oidc"},
	{Name: "a resource's cost above its quota",
		Spec:  service + "rateLimiting:\n  resources:\n  - {uri: 'file:///docs/{name}', cost: 3, quota: {global: {max: 2, window: Hour}}}\n",
		Field: "spec.rateLimiting.resources[0]", Message: "cost is above this entry's quota max"},
	{Name: "an unknown mode",
		Spec:  service + "rateLimiting:\n  mode: DryRun\n  global: {maxTokens: 5, refillPeriod: 1m}\n",
		Field: "spec.rateLimiting.mode", Message: "Unsupported value"},
	{Name: "a prompts[] entry with no bucket",
		Spec:  service + "rateLimiting:\n  prompts:\n  - name: review\n    cost: 2\n",
		Field: "spec.rateLimiting.prompts[0]", Message: "each prompts[] entry must set global, perUser or quota"},
	{Name: "a resource's cost above its bucket",
		Spec:  service + "rateLimiting:\n  resources:\n  - uri: 'file:///docs/{name}'\n    cost: 3\n    global: {maxTokens: 2, refillPeriod: 1m}\n",
		Field: "spec.rateLimiting.resources[0]", Message: "cost is above this entry's maxTokens"},
	{Name: "a resource template left open",
		Spec:  service + "rateLimiting:\n  resources:\n  - uri: 'file:///docs/{name'\n    global: {maxTokens: 2, refillPeriod: 1m}\n",
		Field: "spec.rateLimiting.resources[0].uri", Message: "every { is closed by a }"},
	{Name: "a prompt's perUser without auth",
		Spec:  service + "rateLimiting:\n  prompts:\n  - name: review\n    perUser: {maxTokens: 2, refillPeriod: 1m}\n",
		Field: "spec.rateLimiting.prompts", Message: "rateLimiting.prompts[].perUser needs spec.auth.oidc"},
	{Name: "two tools[] entries with the same name",
		Spec:  service + "rateLimiting:\n  tools:\n  - name: expensive_tool\n    global: {maxTokens: 5, refillPeriod: 1m}\n  - name: expensive_tool\n    global: {maxTokens: 9, refillPeriod: 1m}\n",
		Field: "spec.rateLimiting.tools[1]", Message: "Duplicate value"},
	{Name: "a tools[] entry with an empty name",
		Spec:  service + "rateLimiting:\n  tools:\n  - name: ''\n    global: {maxTokens: 5, refillPeriod: 1m}\n",
		Field: "spec.rateLimiting.tools[0].name", Message: "at least 1 chars long"},
	{Name: "more tools than the maximum",
		Spec:  service + "rateLimiting:\n" + tools(v1alpha1.MaxTools+1),
		Field: "spec.rateLimiting.tools", Message: fmt.Sprintf("must have at most %d items", v1alpha1.MaxTools)},
	{Name: "maxTokens of 0",
		Spec:  service + "rateLimiting:\n  global: {maxTokens: 0, refillPeriod: 1m}\n",
		Field: "spec.rateLimiting.global.maxTokens", Message: "should be greater than or equal to 1"},
	{Name: "a negative maxTokens on a tool",
		Spec:  service + auth + "rateLimiting:\n  tools:\n  - name: expensive_tool\n    perUser: {maxTokens: -3, refillPeriod: 1m}\n",
		Field: "spec.rateLimiting.tools[0].perUser.maxTokens", Message: "should be greater than or equal to 1"},
	{Name: "a refillPeriod of 0s",
		Spec:  service + "rateLimiting:\n  global: {maxTokens: 10, refillPeriod: 0s}\n",
		Field: "spec.rateLimiting.global.refillPeriod", Message: "refillPeriod must be greater than 0s and at most 24h"},
	{Name: "a negative refillPeriod",
		Spec:  service + auth + "rateLimiting:\n  perUser: {maxTokens: 10, refillPeriod: -1m}\n",
		Field: "spec.rateLimiting.perUser.refillPeriod", Message: "refillPeriod must be a positive duration"},
	{Name: "a refillPeriod that is not a duration",
		Spec:  service + "rateLimiting:\n  global: {maxTokens: 10, refillPeriod: soon}\n",
		Field: "spec.rateLimiting.global.refillPeriod", Message: "refillPeriod must be a positive duration"},
	{Name: "a bare number as refillPeriod",
		Spec:  service + "rateLimiting:\n  global: {maxTokens: 10, refillPeriod: '60'}\n",
		Field: "spec.rateLimiting.global.refillPeriod", Message: "refillPeriod must be a positive duration"},
	{Name: "a refillPeriod longer than 24h",
		Spec:  service + "rateLimiting:\n  global: {maxTokens: 10, refillPeriod: 25h}\n",
		Field: "spec.rateLimiting.global.refillPeriod", Message: "refillPeriod must be greater than 0s and at most 24h"},
	{Name: "a bucket without refillPeriod",
		Spec:  service + "rateLimiting:\n  global: {maxTokens: 10}\n",
		Field: "spec.rateLimiting.global.refillPeriod", Message: "Required value"},
	{Name: "a bucket without maxTokens",
		Spec:  service + "rateLimiting:\n  global: {refillPeriod: 1m}\n",
		Field: "spec.rateLimiting.global.maxTokens", Message: "Required value"},
	{Name: "an unknown transport",
		Spec:  service + "transport: websocket\n",
		Field: "spec.transport", Message: "Unsupported value"},
	{Name: "a path without a leading slash",
		Spec:  service + "path: mcp\n",
		Field: "spec.path", Message: "path must start with /"},
	{Name: "an issuer that is not a URL",
		Spec:  service + "auth:\n  oidc: {issuer: issuer.example.com, audience: toolgate}\n",
		Field: "spec.auth.oidc.issuer", Message: "issuer must be an absolute https://"},
	{Name: "a plain http issuer",
		Spec:  service + "auth:\n  oidc: {issuer: 'http://issuer.example.com', audience: toolgate}\n",
		Field: "spec.auth.oidc.issuer", Message: "issuer must be an https:// URL"},
	{Name: "a plain http jwksURL",
		Spec:  service + "auth:\n  oidc: {issuer: 'https://issuer.example.com', jwksURL: 'http://issuer.example.com/keys', audience: toolgate}\n",
		Field: "spec.auth.oidc.jwksURL", Message: "jwksURL must be an https:// URL"},
	{Name: "OIDC without an audience",
		Spec:  service + "auth:\n  oidc: {issuer: 'https://issuer.example.com'}\n",
		Field: "spec.auth.oidc.audience", Message: "Required value"},
	{Name: "authorization scopes without auth",
		Spec:  service + "authorization:\n  rules:\n  - {name: admins, tools: ['delete_*'], scopes: ['repo:admin']}\n",
		Field: "spec.authorization.rules", Message: "scopes need spec.auth.oidc"},
	{Name: "two authorization rules of one name",
		Spec:  service + auth + "authorization:\n  rules:\n  - {name: a, tools: [x]}\n  - {name: a, tools: [y]}\n",
		Field: "spec.authorization.rules[1]", Message: "Duplicate value"},
	{Name: "an authorization rule with an empty tools list",
		Spec:  service + auth + "authorization:\n  rules:\n  - {name: a, tools: []}\n",
		Field: "spec.authorization.rules[0].tools", Message: "should have at least 1 items"},
	{Name: "an authorization rule that names nothing",
		Spec:  service + auth + "authorization:\n  rules:\n  - {name: a, when: 'true'}\n",
		Field: "spec.authorization.rules[0]", Message: "name tools, prompts or resources"},
	{Name: "authorization without rules",
		Spec:  service + auth + "authorization:\n  rules: []\n",
		Field: "spec.authorization.rules", Message: "should have at least 1 items"},
	{Name: "a scope with a space",
		Spec:  service + auth + "authorization:\n  rules:\n  - {name: a, tools: [x], scopes: ['repo admin']}\n",
		Field: "spec.authorization.rules[0].scopes[0]", Message: "should match"},
	{Name: "a server without serviceRef",
		Spec:  "path: /mcp\n",
		Field: "spec.serviceRef", Message: "Required value"},
}
