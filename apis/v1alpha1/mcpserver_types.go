package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Transport is the MCP transport a server speaks.
// +kubebuilder:validation:Enum=streamable-http;sse
type Transport string

const (
	// TransportStreamableHTTP is the Streamable HTTP transport of MCP 2025-03-26 and later.
	TransportStreamableHTTP Transport = "streamable-http"
	// TransportSSE is the legacy HTTP+SSE transport of MCP 2024-11-05.
	TransportSSE Transport = "sse"
)

// MaxTools bounds spec.rateLimiting.tools. It keeps the cost of the CEL rules
// that walk the list within the API server's budget.
const MaxTools = 128

// MCPServerSpec describes an MCP server and the policy the gateway enforces
// on its callers.
//
// +kubebuilder:validation:XValidation:rule="!has(self.rateLimiting) || !has(self.rateLimiting.perUser) || (has(self.auth) && has(self.auth.oidc))",fieldPath=".rateLimiting.perUser",reason="FieldValueForbidden",message="rateLimiting.perUser needs spec.auth.oidc: per-user buckets are keyed by the verified token's user claim. Add spec.auth.oidc, or use rateLimiting.global for a limit shared by all callers"
// +kubebuilder:validation:XValidation:rule="!has(self.backendAuth) || !has(self.backendAuth.tokenExchange) || (has(self.auth) && has(self.auth.oidc))",fieldPath=".backendAuth.tokenExchange",reason="FieldValueForbidden",message="backendAuth.tokenExchange needs spec.auth.oidc: it exchanges the caller's verified token"
// +kubebuilder:validation:XValidation:rule="!has(self.backendAuth) || !has(self.auth) || !has(self.auth.forwardAuthorization) || !self.auth.forwardAuthorization",fieldPath=".backendAuth",reason="FieldValueForbidden",message="backendAuth and auth.forwardAuthorization exclude each other: the server gets the gateway's credential, never the caller's token"
// +kubebuilder:validation:XValidation:rule="!has(self.backendAuth) || !has(self.backendAuth.clientCredentials) || !self.backendAuth.clientCredentials.tokenURL.startsWith('http://') || (has(self.backendAuth.clientCredentials.allowInsecureHTTP) && self.backendAuth.clientCredentials.allowInsecureHTTP)",fieldPath=".backendAuth.clientCredentials.tokenURL",message="tokenURL must be https://: the client secret would cross the network in clear (allowInsecureHTTP lets a test server use http)"
// +kubebuilder:validation:XValidation:rule="!has(self.backendAuth) || !has(self.backendAuth.tokenExchange) || !self.backendAuth.tokenExchange.tokenURL.startsWith('http://') || (has(self.backendAuth.tokenExchange.allowInsecureHTTP) && self.backendAuth.tokenExchange.allowInsecureHTTP)",fieldPath=".backendAuth.tokenExchange.tokenURL",message="tokenURL must be https://: the client secret would cross the network in clear (allowInsecureHTTP lets a test server use http)"
// +kubebuilder:validation:XValidation:rule="!has(self.authorization) || !self.authorization.rules.exists(r, has(r.scopes) && size(r.scopes) > 0) || (has(self.auth) && has(self.auth.oidc))",fieldPath=".authorization.rules",reason="FieldValueForbidden",message="authorization.rules[].scopes need spec.auth.oidc: scopes are read from the caller's verified token"
// +kubebuilder:validation:XValidation:rule="!has(self.rateLimiting) || !has(self.rateLimiting.tools) || !self.rateLimiting.tools.exists(t, has(t.perUser)) || (has(self.auth) && has(self.auth.oidc))",fieldPath=".rateLimiting.tools",reason="FieldValueForbidden",message="rateLimiting.tools[].perUser needs spec.auth.oidc: per-user buckets are keyed by the verified token's user claim. Add spec.auth.oidc, or use tools[].global for a limit shared by all callers"
// +kubebuilder:validation:XValidation:rule="!has(self.rateLimiting) || ((!has(self.rateLimiting.maxConcurrent) || !has(self.rateLimiting.maxConcurrent.perUser)) && (!has(self.rateLimiting.tools) || !self.rateLimiting.tools.exists(t, has(t.maxConcurrent) && has(t.maxConcurrent.perUser))) && (!has(self.rateLimiting.prompts) || !self.rateLimiting.prompts.exists(t, has(t.maxConcurrent) && has(t.maxConcurrent.perUser))) && (!has(self.rateLimiting.resources) || !self.rateLimiting.resources.exists(t, has(t.maxConcurrent) && has(t.maxConcurrent.perUser)))) || (has(self.auth) && has(self.auth.oidc))",fieldPath=".rateLimiting",reason="FieldValueForbidden",message="a perUser maxConcurrent needs spec.auth.oidc: per-user caps are keyed by the verified token's user claim. Add spec.auth.oidc, or use a global cap"
// +kubebuilder:validation:XValidation:rule="!has(self.rateLimiting) || ((!has(self.rateLimiting.quota) || !has(self.rateLimiting.quota.perUser)) && (!has(self.rateLimiting.tools) || !self.rateLimiting.tools.exists(t, has(t.quota) && has(t.quota.perUser))) && (!has(self.rateLimiting.prompts) || !self.rateLimiting.prompts.exists(t, has(t.quota) && has(t.quota.perUser))) && (!has(self.rateLimiting.resources) || !self.rateLimiting.resources.exists(t, has(t.quota) && has(t.quota.perUser)))) || (has(self.auth) && has(self.auth.oidc))",fieldPath=".rateLimiting",reason="FieldValueForbidden",message="a perUser quota needs spec.auth.oidc: per-user quotas are keyed by the verified token's user claim. Add spec.auth.oidc, or use a global quota"
// +kubebuilder:validation:XValidation:rule="!has(self.rateLimiting) || !has(self.rateLimiting.prompts) || !self.rateLimiting.prompts.exists(t, has(t.perUser)) || (has(self.auth) && has(self.auth.oidc))",fieldPath=".rateLimiting.prompts",reason="FieldValueForbidden",message="rateLimiting.prompts[].perUser needs spec.auth.oidc: per-user buckets are keyed by the verified token's user claim. Add spec.auth.oidc, or use prompts[].global for a limit shared by all callers"
// +kubebuilder:validation:XValidation:rule="!has(self.rateLimiting) || !has(self.rateLimiting.resources) || !self.rateLimiting.resources.exists(t, has(t.perUser)) || (has(self.auth) && has(self.auth.oidc))",fieldPath=".rateLimiting.resources",reason="FieldValueForbidden",message="rateLimiting.resources[].perUser needs spec.auth.oidc: per-user buckets are keyed by the verified token's user claim. Add spec.auth.oidc, or use resources[].global for a limit shared by all callers"
// +kubebuilder:validation:XValidation:rule="!has(self.rateLimiting) || !has(self.rateLimiting.methods) || !self.rateLimiting.methods.exists(t, has(t.perUser) || (has(t.quota) && has(t.quota.perUser)) || (has(t.maxConcurrent) && has(t.maxConcurrent.perUser))) || (has(self.auth) && has(self.auth.oidc))",fieldPath=".rateLimiting.methods",reason="FieldValueForbidden",message="a perUser limit of rateLimiting.methods[] needs spec.auth.oidc: per-user limits are keyed by the verified token's user claim. Add spec.auth.oidc, or use a global limit"
type MCPServerSpec struct {
	// ServiceRef is the Service in the MCPServer's namespace that runs the
	// MCP server.
	ServiceRef ServiceReference `json:"serviceRef"`

	// Path is the MCP endpoint on the server, for example /mcp. Every
	// request that an HTTPRoute sends to this MCPServer (a backendRef of
	// kind MCPServer) reaches the server at this path, whatever path the
	// client used, so the public URL is the route's choice; a rule with a
	// URLRewrite of the path keeps its own rewrite.
	//
	// +kubebuilder:default=/mcp
	// +kubebuilder:validation:MaxLength=1024
	// +kubebuilder:validation:XValidation:rule="self.startsWith('/')",message="path must start with /, for example /mcp"
	// +optional
	Path string `json:"path,omitempty"`

	// Transport is the MCP transport the server speaks. With
	// streamable-http every request goes to Path. With sse (the legacy
	// HTTP+SSE transport of MCP 2024-11-05) only the GET that opens the
	// event stream goes to Path; messages are POSTed to the path the server
	// announces in that stream, which the route must also match.
	//
	// +kubebuilder:default=streamable-http
	// +optional
	Transport Transport `json:"transport,omitempty"`

	// Auth says how callers authenticate. Without it every caller is
	// anonymous and only global rate limits can apply.
	//
	// +optional
	Auth *Auth `json:"auth,omitempty"`

	// RateLimiting configures token buckets for tools/call requests.
	//
	// +optional
	RateLimiting *RateLimiting `json:"rateLimiting,omitempty"`

	// Authorization decides which tools, prompts and resources each caller
	// may use. Without it every authenticated caller may use everything;
	// with it, a tools/call, prompts/get, resources/read or
	// resources/subscribe that no rule allows is answered as a request for
	// something that does not exist.
	//
	// +optional
	Authorization *Authorization `json:"authorization,omitempty"`

	// Audit says what this server's records in the gateway's audit trail
	// (the proxy's --audit-log) hold beyond the defaults.
	//
	// +optional
	Audit *Audit `json:"audit,omitempty"`

	// BackendAuth says how the gateway authenticates to the MCP server:
	// with a static header from a Secret, with a token of its own (OAuth
	// 2.0 client credentials) or with each caller's token exchanged for
	// one meant for the server (RFC 8693). The caller's token is never
	// forwarded with it. Secrets are read from the MCPServer's namespace.
	//
	// +optional
	BackendAuth *BackendAuth `json:"backendAuth,omitempty"`
}

// BackendAuth is how the gateway authenticates to the MCP server: exactly
// one way.
//
// +kubebuilder:validation:XValidation:rule="(has(self.header) ? 1 : 0) + (has(self.clientCredentials) ? 1 : 0) + (has(self.tokenExchange) ? 1 : 0) == 1",message="backendAuth must set exactly one of header, clientCredentials and tokenExchange"
type BackendAuth struct {
	// Header sends one header with every request to the server, its value
	// read from a Secret: an API key or a personal access token.
	//
	// +optional
	Header *BackendHeader `json:"header,omitempty"`

	// ClientCredentials gets the gateway's own token for the server from
	// an authorization server (the client credentials grant), cached until
	// it nears its expiry, and sends it as a bearer token.
	//
	// +optional
	ClientCredentials *OAuth2Client `json:"clientCredentials,omitempty"`

	// TokenExchange exchanges each caller's verified token at an
	// authorization server for one whose audience is the server (RFC
	// 8693), cached per caller's token until it nears its expiry, and
	// sends it as a bearer token. Requires spec.auth.oidc and audience.
	//
	// +kubebuilder:validation:XValidation:rule="has(self.audience)",message="tokenExchange needs audience: it names the MCP server the exchanged token is for"
	// +optional
	TokenExchange *OAuth2Client `json:"tokenExchange,omitempty"`
}

// SecretKeyReference names one key of a Secret in the MCPServer's
// namespace.
type SecretKeyReference struct {
	// Name of the Secret.
	//
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	Name string `json:"name"`

	// Key in the Secret's data.
	//
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	Key string `json:"key"`
}

// BackendHeader is a header the gateway sends to the server.
type BackendHeader struct {
	// Name of the header, such as Authorization or X-API-Key (default
	// Authorization).
	//
	// +kubebuilder:validation:MaxLength=256
	// +kubebuilder:validation:Pattern=`^[A-Za-z0-9!#$%&'*+.^_|~-]+$`
	// +kubebuilder:default=Authorization
	// +optional
	Name string `json:"name,omitempty"`

	// Prefix goes before the Secret's value, such as "Bearer " for a
	// personal access token; empty by default.
	//
	// +kubebuilder:validation:MaxLength=64
	// +optional
	Prefix string `json:"prefix,omitempty"`

	// SecretRef is where the value is.
	SecretRef SecretKeyReference `json:"secretRef"`
}

// OAuth2Client is how the gateway asks an authorization server for the
// server's tokens: as a confidential client authenticated with HTTP Basic.
type OAuth2Client struct {
	// TokenURL is the authorization server's token endpoint; https://
	// unless allowInsecureHTTP.
	//
	// +kubebuilder:validation:MaxLength=2048
	// +kubebuilder:validation:Pattern=`^https?://`
	TokenURL string `json:"tokenURL"`

	// ClientID is the gateway's client id at the authorization server.
	//
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=256
	ClientID string `json:"clientID"`

	// ClientSecretRef is where the client secret is.
	ClientSecretRef SecretKeyReference `json:"clientSecretRef"`

	// Scopes asked for; optional.
	//
	// +kubebuilder:validation:MaxItems=32
	// +optional
	Scopes []string `json:"scopes,omitempty"`

	// Audience names the MCP server to the authorization server (the
	// audience parameter).
	//
	// +kubebuilder:validation:MaxLength=2048
	// +optional
	Audience string `json:"audience,omitempty"`

	// AllowInsecureHTTP lets tokenURL be a plain http:// URL, for a test
	// authorization server on a network you trust.
	//
	// +optional
	AllowInsecureHTTP bool `json:"allowInsecureHTTP,omitempty"`
}

// Audit configures an MCPServer's audit records.
type Audit struct {
	// IncludeArguments writes each tool call's and prompt's arguments into
	// its record. Off, a record holds only their size and SHA-256: the
	// arguments may carry what the audit stream's readers must not see.
	//
	// +optional
	IncludeArguments bool `json:"includeArguments,omitempty"`
}

// Authorization is an ordered list of rules that allow the use of tools,
// prompts and resources.
type Authorization struct {
	// Rules are tried in order: a request is allowed by the first rule
	// that names what it uses, whose condition holds and whose scopes the
	// caller's token holds. When a rule would allow the call but for its
	// scopes, and none allows it, the caller gets 403 insufficient_scope
	// naming them, to step up.
	//
	// +listType=map
	// +listMapKey=name
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=64
	Rules []AuthorizationRule `json:"rules"`
}

// AuthorizationRule allows the use of some tools, prompts and resources, to
// callers who meet its condition and hold its scopes.
//
// +kubebuilder:validation:XValidation:rule="has(self.tools) || has(self.prompts) || has(self.resources)",message="name tools, prompts or resources: a rule that names none allows nothing"
type AuthorizationRule struct {
	// Name names the rule in status and logs.
	//
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=63
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`
	Name string `json:"name"`

	// Tools are tool names (tools/call), or glob patterns: * matches any
	// run of characters, ? one character, [abc] one of a class.
	//
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=64
	// +kubebuilder:validation:items:MinLength=1
	// +kubebuilder:validation:items:MaxLength=128
	// +optional
	Tools []string `json:"tools,omitempty"`

	// Prompts are prompt names (prompts/get), or glob patterns.
	//
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=64
	// +kubebuilder:validation:items:MinLength=1
	// +kubebuilder:validation:items:MaxLength=128
	// +optional
	Prompts []string `json:"prompts,omitempty"`

	// Resources are resource URIs (resources/read, resources/subscribe),
	// or glob patterns such as file:///docs/*, where * matches / too.
	//
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=64
	// +kubebuilder:validation:items:MinLength=1
	// +kubebuilder:validation:items:MaxLength=2048
	// +optional
	Resources []string `json:"resources,omitempty"`

	// When is a CEL expression that must be true for the rule to allow a
	// call. It reads claims (the verified token's claims, a map), user (the
	// caller, from oidc.userClaim) and request (request.method;
	// request.name, the tool or prompt name or the resource URI; and
	// request.arguments, a tool call's or prompt's arguments). For
	// example 'engineering' in claims.groups, or
	// request.arguments.repo.startsWith('team-a/'). A condition that
	// cannot be evaluated (a missing claim or argument) counts as false.
	// The controller compiles it and reports errors in AuthorizationValid.
	//
	// +kubebuilder:validation:MaxLength=2048
	// +optional
	When string `json:"when,omitempty"`

	// Scopes are OAuth scopes the caller's token must hold (its scope or
	// scp claim), all of them. Needs spec.auth.oidc.
	//
	// +kubebuilder:validation:MaxItems=16
	// +kubebuilder:validation:items:MinLength=1
	// +kubebuilder:validation:items:MaxLength=256
	// +kubebuilder:validation:items:Pattern=`^[^\s"\\]+$`
	// +optional
	Scopes []string `json:"scopes,omitempty"`
}

// ServiceReference names a Service port in the MCPServer's namespace.
type ServiceReference struct {
	// Name of the Service.
	//
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=63
	// +kubebuilder:validation:Pattern=`^[a-z]([-a-z0-9]*[a-z0-9])?$`
	Name string `json:"name"`

	// Port of the Service.
	//
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=65535
	Port int32 `json:"port"`
}

// Auth configures how callers of an MCP server authenticate.
type Auth struct {
	// OIDC verifies a JWT bearer token on every request.
	OIDC *OIDC `json:"oidc"`

	// ForwardAuthorization passes the caller's Authorization header on to
	// the MCP server once the gateway has checked it. By default the
	// gateway removes it: the token was issued to the gateway, and the MCP
	// authorization specification forbids passing it through to another
	// service (token passthrough). Turn it on only for a server that must
	// see the caller's own token and accepts tokens for this audience.
	//
	// +optional
	ForwardAuthorization bool `json:"forwardAuthorization,omitempty"`

	// ResourceURL is the URL clients use for this MCP server through the
	// gateway, for example https://mcp.example.com/github/mcp: its resource
	// identifier in the OAuth protected resource metadata (RFC 9728) that
	// the gateway serves, and the RFC 8707 resource that clients ask tokens
	// for. A token whose aud names it is accepted, as is one for
	// oidc.audience. Without it the metadata names the URL at which each
	// request reached the gateway, but tokens for that URL are not accepted:
	// the request's Host is the client's choice, and accepted audiences
	// come from configuration only. Set it whenever clients ask tokens for
	// the resource (as MCP clients do).
	//
	// +kubebuilder:validation:MaxLength=2048
	// +kubebuilder:validation:XValidation:rule="isURL(self) && url(self).getScheme() in ['https', 'http'] && url(self).getHostname() != '' && url(self).getQuery().size() == 0 && !self.contains('#')",message="resourceURL must be an absolute https:// (or http://) URL without query or fragment, for example https://mcp.example.com/github/mcp"
	// +optional
	ResourceURL string `json:"resourceURL,omitempty"`

	// Scopes are the OAuth scopes every request's token must hold (its
	// scope or scp claim), all of them: a token without them gets 403
	// insufficient_scope naming them. They are listed in the protected
	// resource metadata (scopes_supported) for clients to ask for.
	//
	// +kubebuilder:validation:MaxItems=32
	// +kubebuilder:validation:items:MinLength=1
	// +kubebuilder:validation:items:MaxLength=128
	// +kubebuilder:validation:items:Pattern=`^[^\s"\\]+$`
	// +listType=set
	// +optional
	Scopes []string `json:"scopes,omitempty"`
}

// OIDC verifies JWT bearer tokens issued by an OpenID Connect provider.
//
// +kubebuilder:validation:XValidation:rule="self.issuer.lowerAscii().startsWith('https://') || (has(self.allowInsecureHTTP) && self.allowInsecureHTTP)",message="issuer must be an https:// URL: signing keys fetched over plain HTTP can be replaced by anyone on the network path. For a test issuer on a network you trust, set allowInsecureHTTP: true",fieldPath=".issuer"
// +kubebuilder:validation:XValidation:rule="!has(self.jwksURL) || self.jwksURL.lowerAscii().startsWith('https://') || (has(self.allowInsecureHTTP) && self.allowInsecureHTTP)",message="jwksURL must be an https:// URL: signing keys fetched over plain HTTP can be replaced by anyone on the network path. For a test issuer on a network you trust, set allowInsecureHTTP: true",fieldPath=".jwksURL"
type OIDC struct {
	// Issuer is the token issuer (the iss claim). Unless JWKSURL is set, the
	// signing keys are discovered from Issuer + /.well-known/openid-configuration.
	// It must be https:// unless AllowInsecureHTTP is set.
	//
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=2048
	// +kubebuilder:validation:XValidation:rule="isURL(self) && url(self).getScheme() in ['https', 'http'] && url(self).getHostname() != ''",message="issuer must be an absolute https:// URL, for example https://issuer.example.com"
	Issuer string `json:"issuer"`

	// Audience is the value the token's aud claim must contain.
	//
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=256
	Audience string `json:"audience"`

	// JWKSURL is where the issuer's signing keys are served. When empty they
	// are discovered from the issuer.
	//
	// +kubebuilder:validation:MaxLength=2048
	// +kubebuilder:validation:XValidation:rule="isURL(self) && url(self).getScheme() in ['https', 'http'] && url(self).getHostname() != ''",message="jwksURL must be an absolute https:// URL"
	// +optional
	JWKSURL string `json:"jwksURL,omitempty"`

	// UserClaim is the token claim that identifies the user for per-user
	// rate limits.
	//
	// +kubebuilder:default=sub
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=256
	// +optional
	UserClaim string `json:"userClaim,omitempty"`

	// AllowInsecureHTTP lets Issuer and JWKSURL be plain http:// URLs, for
	// a test issuer on a network you trust: anyone on the path could
	// replace the signing keys and forge every token. The MCPServer's
	// IssuerSecure condition is False while it is used.
	//
	// +optional
	AllowInsecureHTTP bool `json:"allowInsecureHTTP,omitempty"`
}

// RateLimiting configures the token buckets a tools/call must pass. A call
// passes only if every bucket that applies to it has a token; then one token
// is taken from each.
//
// +kubebuilder:validation:XValidation:rule="has(self.global) || has(self.perUser) || has(self.quota) || has(self.maxConcurrent) || (has(self.tools) && self.tools.exists(t, has(t.global) || has(t.perUser) || has(t.quota) || has(t.maxConcurrent))) || has(self.prompts) || has(self.resources) || has(self.methods)",message="rateLimiting configures no limit: set global, perUser, a quota or maxConcurrent, or add a tools[], prompts[], resources[] or methods[] entry (or remove rateLimiting)"
// +kubebuilder:validation:XValidation:rule="!has(self.tools) || self.tools.all(t, !has(t.cost) || ((!has(self.global) || t.cost <= self.global.maxTokens) && (!has(self.perUser) || t.cost <= self.perUser.maxTokens)))",fieldPath=".tools",message="a tools[] cost is above the server's global or perUser maxTokens: a tool call takes its cost from the server's buckets too, so such a call could never pass; lower the cost or raise maxTokens"
// +kubebuilder:validation:XValidation:rule="!has(self.tools) || !has(self.quota) || self.tools.all(t, !has(t.cost) || ((!has(self.quota.global) || t.cost <= self.quota.global.max) && (!has(self.quota.perUser) || t.cost <= self.quota.perUser.max)))",fieldPath=".tools",message="a tools[] cost is above the server's quota max: such a call could never pass; lower the cost or raise the quota"
type RateLimiting struct {
	// Quota counts the server's tool calls (their cost) per calendar
	// window, beside the buckets: decided with them, all or nothing.
	//
	// +optional
	Quota *QuotaLimits `json:"quota,omitempty"`

	// MaxConcurrent caps the server's tool calls admitted and not yet
	// answered, across every replica.
	//
	// +optional
	MaxConcurrent *ConcurrencyLimits `json:"maxConcurrent,omitempty"`

	// ConcurrencyLease bounds how long a call holds its slot when the
	// replica that admitted it dies before it is answered (default 5m): a
	// call that runs longer keeps running but stops counting.
	//
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:MaxLength=32
	// +kubebuilder:validation:XValidation:rule="self.matches('^([0-9]+(\\\\.[0-9]*)?(ns|us|µs|ms|s|m|h))+$') && duration(self) > duration('0s')",message="concurrencyLease must be a positive duration such as 5m"
	// +optional
	ConcurrencyLease *metav1.Duration `json:"concurrencyLease,omitempty"`

	// TimeZone is the IANA time zone quotas' windows are aligned to, such
	// as Europe/Paris (default UTC): a day starts at its midnight.
	//
	// +kubebuilder:validation:MaxLength=64
	// +optional
	TimeZone string `json:"timeZone,omitempty"`

	// Mode is Enforce (the default): calls over a limit are refused; or
	// Shadow: every decision is made and counted as if enforced
	// (toolgate_ratelimit_decisions_total{result="shadow_rejected"}, the
	// audit trail's wouldRefuse) but nothing is refused, so that new
	// limits can be tried on real traffic before they are enforced. One
	// bucket, quota or set of caps can be put in Shadow mode by its own
	// mode field; a call is then refused only by the enforced limits, and
	// takes from the shadow ones only what it would take if they were
	// enforced too.
	//
	// +kubebuilder:validation:Enum=Enforce;Shadow
	// +kubebuilder:default=Enforce
	// +optional
	Mode RateLimitingMode `json:"mode,omitempty"`

	// Global is one bucket shared by all callers of the server.
	//
	// +optional
	Global *Bucket `json:"global,omitempty"`

	// PerUser is one bucket per user for all tools of the server. Requires
	// spec.auth.oidc.
	//
	// +optional
	PerUser *Bucket `json:"perUser,omitempty"`

	// Tools are buckets for single tools, in addition to the server's.
	//
	// +listType=map
	// +listMapKey=name
	// +kubebuilder:validation:MaxItems=128
	// +optional
	Tools []ToolRateLimit `json:"tools,omitempty"`

	// Prompts are buckets for prompts/get, by prompt name. The server's
	// global and perUser buckets count tool calls only; a prompt without
	// an entry is not limited.
	//
	// +listType=map
	// +listMapKey=name
	// +kubebuilder:validation:MaxItems=128
	// +optional
	Prompts []PromptRateLimit `json:"prompts,omitempty"`

	// Resources are buckets for resources/read, by URI or URI template
	// (RFC 6570: file:///logs/{name} matches one path segment,
	// file:///logs/{+path} any text). An exact URI wins over a template,
	// a longer template over a shorter; a resource without an entry is
	// not limited.
	//
	// +listType=map
	// +listMapKey=uri
	// +kubebuilder:validation:MaxItems=128
	// +optional
	Resources []ResourceRateLimit `json:"resources,omitempty"`

	// Methods limit other requests by JSON-RPC method, such as
	// completion/complete, resources/subscribe or tools/list. A method
	// without an entry is not limited, and notifications never are.
	// tools/call, prompts/get and resources/read are limited by the
	// entries above.
	//
	// +listType=map
	// +listMapKey=method
	// +kubebuilder:validation:MaxItems=32
	// +optional
	Methods []MethodRateLimit `json:"methods,omitempty"`
}

// ConcurrencyLimits cap calls in flight: admitted, not yet answered.
//
// +kubebuilder:validation:XValidation:rule="has(self.global) || has(self.perUser)",message="maxConcurrent must set global or perUser"
type ConcurrencyLimits struct {
	// Global caps every caller's calls together.
	//
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=1000000
	// +optional
	Global *int64 `json:"global,omitempty"`

	// PerUser caps each user's calls. Requires spec.auth.oidc.
	//
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=1000000
	// +optional
	PerUser *int64 `json:"perUser,omitempty"`

	// Mode is Enforce (the default) or Shadow: these caps are decided and
	// counted as if enforced, but refuse nothing (see rateLimiting.mode).
	//
	// +kubebuilder:validation:Enum=Enforce;Shadow
	// +optional
	Mode RateLimitingMode `json:"mode,omitempty"`
}

// QuotaLimits are the quotas of a server or a tool.
//
// +kubebuilder:validation:XValidation:rule="has(self.global) || has(self.perUser)",message="a quota must set global or perUser"
type QuotaLimits struct {
	// Global is one quota shared by all callers.
	//
	// +optional
	Global *Quota `json:"global,omitempty"`

	// PerUser is one quota per user. Requires spec.auth.oidc.
	//
	// +optional
	PerUser *Quota `json:"perUser,omitempty"`
}

// Quota allows at most Max tokens (calls, or their cost) per calendar
// window. The window starts afresh at its boundary (the hour, midnight,
// Monday's midnight, the 1st's midnight) in rateLimiting.timeZone;
// refused calls get Retry-After up to it.
type Quota struct {
	// Max is the most tokens the window's calls may take.
	//
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=1000000000000
	Max int64 `json:"max"`

	// Window is Hour, Day, Week (from Monday) or Month.
	//
	// +kubebuilder:validation:Enum=Hour;Day;Week;Month
	Window QuotaWindow `json:"window"`

	// Mode is Enforce (the default) or Shadow: this quota is decided and
	// counted as if enforced, but refuses nothing (see rateLimiting.mode).
	//
	// +kubebuilder:validation:Enum=Enforce;Shadow
	// +optional
	Mode RateLimitingMode `json:"mode,omitempty"`
}

// QuotaWindow is a quota's calendar window.
type QuotaWindow string

// Quota windows.
const (
	QuotaWindowHour  QuotaWindow = "Hour"
	QuotaWindowDay   QuotaWindow = "Day"
	QuotaWindowWeek  QuotaWindow = "Week"
	QuotaWindowMonth QuotaWindow = "Month"
)

// RateLimitingMode says whether limits refuse calls.
type RateLimitingMode string

// Rate-limiting modes.
const (
	RateLimitingEnforce RateLimitingMode = "Enforce"
	RateLimitingShadow  RateLimitingMode = "Shadow"
)

// ToolRateLimit configures the buckets of one tool and what one call of it
// costs.
//
// +kubebuilder:validation:XValidation:rule="has(self.global) || has(self.perUser) || has(self.cost) || has(self.quota) || has(self.maxConcurrent)",message="each tools[] entry must set global, perUser, quota, maxConcurrent or cost"
// +kubebuilder:validation:XValidation:rule="!has(self.cost) || !has(self.quota) || ((!has(self.quota.global) || self.cost <= self.quota.global.max) && (!has(self.quota.perUser) || self.cost <= self.quota.perUser.max))",message="cost is above this entry's quota max: such a call could never pass; lower the cost or raise the quota"
// +kubebuilder:validation:XValidation:rule="!has(self.cost) || ((!has(self.global) || self.cost <= self.global.maxTokens) && (!has(self.perUser) || self.cost <= self.perUser.maxTokens))",message="cost is above this entry's maxTokens: such a call could never pass; lower the cost or raise maxTokens"
type ToolRateLimit struct {
	// Name of the tool, as in tools/call params.name.
	//
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=128
	Name string `json:"name"`

	// Global is one bucket for this tool shared by all callers.
	//
	// +optional
	Global *Bucket `json:"global,omitempty"`

	// PerUser is one bucket per user for this tool. Requires spec.auth.oidc.
	//
	// +optional
	PerUser *Bucket `json:"perUser,omitempty"`

	// Cost is how many tokens one call takes from every bucket and quota
	// it is checked against: this entry's and the server's. Default 1.
	//
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=1000000000
	// +optional
	Cost *int64 `json:"cost,omitempty"`

	// Quota counts this tool's calls per calendar window, on top of the
	// server's quota.
	//
	// +optional
	Quota *QuotaLimits `json:"quota,omitempty"`

	// MaxConcurrent caps this tool's calls in flight, on top of the
	// server's cap.
	//
	// +optional
	MaxConcurrent *ConcurrencyLimits `json:"maxConcurrent,omitempty"`
}

// PromptRateLimit configures the buckets of one prompt.
//
// +kubebuilder:validation:XValidation:rule="has(self.global) || has(self.perUser) || has(self.quota) || has(self.maxConcurrent)",message="each prompts[] entry must set global, perUser, quota or maxConcurrent"
// +kubebuilder:validation:XValidation:rule="!has(self.cost) || !has(self.quota) || ((!has(self.quota.global) || self.cost <= self.quota.global.max) && (!has(self.quota.perUser) || self.cost <= self.quota.perUser.max))",message="cost is above this entry's quota max: such a call could never pass; lower the cost or raise the quota"
// +kubebuilder:validation:XValidation:rule="!has(self.cost) || ((!has(self.global) || self.cost <= self.global.maxTokens) && (!has(self.perUser) || self.cost <= self.perUser.maxTokens))",message="cost is above this entry's maxTokens: such a call could never pass; lower the cost or raise maxTokens"
type PromptRateLimit struct {
	// Name of the prompt, as in prompts/get params.name.
	//
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=128
	Name string `json:"name"`

	// Global is one bucket for this prompt shared by all callers.
	//
	// +optional
	Global *Bucket `json:"global,omitempty"`

	// PerUser is one bucket per user for this prompt. Requires
	// spec.auth.oidc.
	//
	// +optional
	PerUser *Bucket `json:"perUser,omitempty"`

	// Cost is how many tokens one prompts/get takes from this entry's
	// buckets and quota. Default 1.
	//
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=1000000000
	// +optional
	Cost *int64 `json:"cost,omitempty"`

	// Quota counts this prompt's gets per calendar window.
	//
	// +optional
	Quota *QuotaLimits `json:"quota,omitempty"`

	// MaxConcurrent caps this prompt's gets in flight.
	//
	// +optional
	MaxConcurrent *ConcurrencyLimits `json:"maxConcurrent,omitempty"`
}

// ResourceRateLimit configures the buckets of one resource, or of the
// resources of one URI template.
//
// +kubebuilder:validation:XValidation:rule="has(self.global) || has(self.perUser) || has(self.quota) || has(self.maxConcurrent)",message="each resources[] entry must set global, perUser, quota or maxConcurrent"
// +kubebuilder:validation:XValidation:rule="!has(self.cost) || !has(self.quota) || ((!has(self.quota.global) || self.cost <= self.quota.global.max) && (!has(self.quota.perUser) || self.cost <= self.quota.perUser.max))",message="cost is above this entry's quota max: such a call could never pass; lower the cost or raise the quota"
// +kubebuilder:validation:XValidation:rule="!has(self.cost) || ((!has(self.global) || self.cost <= self.global.maxTokens) && (!has(self.perUser) || self.cost <= self.perUser.maxTokens))",message="cost is above this entry's maxTokens: such a call could never pass; lower the cost or raise maxTokens"
type ResourceRateLimit struct {
	// URI of the resource, as in resources/read params.uri, or a URI
	// template whose {expressions} stand for any text ({name} for no '/').
	//
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=2048
	// +kubebuilder:validation:XValidation:rule="self.matches('^[^{}]*([{][^{}]+[}][^{}]*)*$')",message="uri must be a URI or a URI template whose every { is closed by a } around a non-empty expression"
	URI string `json:"uri"`

	// Global is one bucket for the resource shared by all callers.
	//
	// +optional
	Global *Bucket `json:"global,omitempty"`

	// PerUser is one bucket per user for the resource. Requires
	// spec.auth.oidc.
	//
	// +optional
	PerUser *Bucket `json:"perUser,omitempty"`

	// Cost is how many tokens one resources/read takes from this entry's
	// buckets and quota. Default 1.
	//
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=1000000000
	// +optional
	Cost *int64 `json:"cost,omitempty"`

	// Quota counts this resource's reads per calendar window.
	//
	// +optional
	Quota *QuotaLimits `json:"quota,omitempty"`

	// MaxConcurrent caps this resource's reads in flight.
	//
	// +optional
	MaxConcurrent *ConcurrencyLimits `json:"maxConcurrent,omitempty"`
}

// MethodRateLimit configures the limits of one other JSON-RPC method.
//
// +kubebuilder:validation:XValidation:rule="has(self.global) || has(self.perUser) || has(self.quota) || has(self.maxConcurrent)",message="each methods[] entry must set global, perUser, quota or maxConcurrent"
// +kubebuilder:validation:XValidation:rule="!has(self.cost) || !has(self.quota) || ((!has(self.quota.global) || self.cost <= self.quota.global.max) && (!has(self.quota.perUser) || self.cost <= self.quota.perUser.max))",message="cost is above this entry's quota max: such a call could never pass; lower the cost or raise the quota"
// +kubebuilder:validation:XValidation:rule="!has(self.cost) || ((!has(self.global) || self.cost <= self.global.maxTokens) && (!has(self.perUser) || self.cost <= self.perUser.maxTokens))",message="cost is above this entry's maxTokens: such a call could never pass; lower the cost or raise maxTokens"
type MethodRateLimit struct {
	// Method is the JSON-RPC method of the requests this entry limits.
	// Not tools/call, prompts/get or resources/read (they have entries of
	// their own), nor a notification.
	//
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=128
	// +kubebuilder:validation:XValidation:rule="!(self in ['tools/call', 'prompts/get', 'resources/read'])",message="tools/call, prompts/get and resources/read are limited by tools[], prompts[] and resources[] entries (or the server's limits)"
	// +kubebuilder:validation:XValidation:rule="!self.startsWith('notifications/')",message="notifications are never limited: a client cannot be told it was refused"
	Method string `json:"method"`

	// Global is one bucket for this method shared by all callers.
	//
	// +optional
	Global *Bucket `json:"global,omitempty"`

	// PerUser is one bucket per user for this method. Requires
	// spec.auth.oidc.
	//
	// +optional
	PerUser *Bucket `json:"perUser,omitempty"`

	// Cost is how many tokens one request takes from this entry's buckets
	// and quota. Default 1.
	//
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=1000000000
	// +optional
	Cost *int64 `json:"cost,omitempty"`

	// Quota counts this method's requests per calendar window.
	//
	// +optional
	Quota *QuotaLimits `json:"quota,omitempty"`

	// MaxConcurrent caps this method's requests in flight.
	//
	// +optional
	MaxConcurrent *ConcurrencyLimits `json:"maxConcurrent,omitempty"`
}

// Bucket is a token bucket: it holds at most MaxTokens tokens and refills
// continuously, from empty to full in RefillPeriod. Each call takes its cost
// (default 1).
type Bucket struct {
	// MaxTokens is the capacity of the bucket: the most calls allowed in a burst.
	//
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=1000000000
	MaxTokens int64 `json:"maxTokens"`

	// RefillPeriod is the time to refill an empty bucket completely, as a
	// duration such as 30s, 1m or 1h. At most 24h.
	//
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:MaxLength=32
	// +kubebuilder:validation:XValidation:rule="self.matches('^([0-9]+(\\\\.[0-9]*)?(ns|us|µs|ms|s|m|h))+$')",message="refillPeriod must be a positive duration such as 30s, 1m or 1h30m"
	// +kubebuilder:validation:XValidation:rule="!self.matches('^([0-9]+(\\\\.[0-9]*)?(ns|us|µs|ms|s|m|h))+$') || (duration(self) > duration('0s') && duration(self) <= duration('24h'))",message="refillPeriod must be greater than 0s and at most 24h"
	RefillPeriod metav1.Duration `json:"refillPeriod"`

	// Mode is Enforce (the default) or Shadow: this bucket is decided and
	// counted as if enforced, but refuses nothing (see rateLimiting.mode).
	//
	// +kubebuilder:validation:Enum=Enforce;Shadow
	// +optional
	Mode RateLimitingMode `json:"mode,omitempty"`
}

// Condition types of an MCPServer.
const (
	// ConditionAccepted says whether the controller accepted the MCPServer.
	ConditionAccepted = "Accepted"
	// ConditionRateLimitingConfigValid says whether spec.rateLimiting can be
	// enforced as written.
	ConditionRateLimitingConfigValid = "RateLimitingConfigValid"
	// ConditionIssuerSecure says whether the signing keys of
	// spec.auth.oidc are fetched over HTTPS; False while
	// allowInsecureHTTP lets them come over plain HTTP. Set only with
	// spec.auth.oidc.
	ConditionIssuerSecure = "IssuerSecure"
	// ConditionAuthorizationValid says whether spec.authorization compiles;
	// set only with spec.authorization.
	ConditionAuthorizationValid = "AuthorizationValid"
	// ConditionBackendAuthValid says whether spec.backendAuth's Secrets
	// resolve; set only with spec.backendAuth.
	ConditionBackendAuthValid = "BackendAuthValid"
)

// MCPServerStatus is the observed state of an MCPServer.
type MCPServerStatus struct {
	// ObservedGeneration is the generation the status was computed from.
	//
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`

	// Conditions: Accepted and RateLimitingConfigValid.
	//
	// +listType=map
	// +listMapKey=type
	// +kubebuilder:validation:MaxItems=8
	// +optional
	Conditions []metav1.Condition `json:"conditions,omitempty"`
}

// MCPServer is an MCP server behind the gateway, with the authentication and
// rate limits the gateway enforces on its tool calls. An HTTPRoute applies it
// with an ExtensionRef filter.
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:shortName=mcps,categories=toolgate
// +kubebuilder:printcolumn:name="Service",type=string,JSONPath=`.spec.serviceRef.name`
// +kubebuilder:printcolumn:name="Auth",type=string,JSONPath=`.spec.auth.oidc.issuer`,priority=1
// +kubebuilder:printcolumn:name="Accepted",type=string,JSONPath=`.status.conditions[?(@.type=="Accepted")].status`
// +kubebuilder:printcolumn:name="RateLimiting",type=string,JSONPath=`.status.conditions[?(@.type=="RateLimitingConfigValid")].status`,description="Whether spec.rateLimiting is valid and enforced"
// +kubebuilder:printcolumn:name="Reason",type=string,JSONPath=`.status.conditions[?(@.type=="RateLimitingConfigValid")].reason`,priority=1
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type MCPServer struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   MCPServerSpec   `json:"spec"`
	Status MCPServerStatus `json:"status,omitempty"`
}

// MCPServerList is a list of MCPServers.
//
// +kubebuilder:object:root=true
type MCPServerList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []MCPServer `json:"items"`
}
