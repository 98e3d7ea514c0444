package filter

import (
	"errors"
	"fmt"
	"maps"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/toolgate/toolgate/filter/authz"
	"github.com/toolgate/toolgate/filter/limiter"
)

// Policy is what one MCP server asks of the filter: who its callers are and
// how many tool calls they may make. The translator builds it from an
// MCPServer; nothing in it is Kubernetes-specific. It is plain data with a
// JSON form (lowerCamel names, as the MCPServer API spells them), so that it
// travels to the proxies inside their Gateway's snapshot.
type Policy struct {
	// Server is "namespace/name". It names the server's buckets and is the
	// namespace and server label of its metrics.
	Server string `json:"server"`
	// Auth, when set, requires every request to carry a valid bearer token
	// and makes the token's user claim the caller. Without it every caller
	// is anonymous.
	Auth *OIDCConfig `json:"auth,omitempty"`
	// ForwardAuthorization passes the caller's Authorization header, once
	// checked, on to the backend. Off, the filter removes it: the MCP
	// authorization spec forbids passing a token issued to the gateway
	// through to another service.
	ForwardAuthorization bool `json:"forwardAuthorization,omitempty"`
	// ResourceURL is the URL clients use for the server, its resource
	// identifier in RFC 9728 metadata and RFC 8707 token requests: a token
	// whose aud names it is accepted as well as one for the Auth audience.
	// Empty derives it from each request: the scheme, Host and path at
	// which the request reached the gateway.
	ResourceURL string `json:"resourceURL,omitempty"`
	// Scopes are the OAuth scopes a client may ask for, advertised in the
	// resource metadata; optional.
	Scopes []string `json:"scopes,omitempty"`
	// Global is the bucket shared by every caller's tools/call requests.
	Global *limiter.Limit `json:"global,omitempty"`
	// PerUser is each caller's own bucket for tools/call requests. It needs
	// Auth.
	PerUser *limiter.Limit `json:"perUser,omitempty"`
	// GlobalQuota and PerUserQuota count the server's tool calls (their
	// cost) per calendar window, in TimeZone (an IANA name; UTC when
	// empty). PerUserQuota needs Auth.
	GlobalQuota  *Quota `json:"globalQuota,omitempty"`
	PerUserQuota *Quota `json:"perUserQuota,omitempty"`
	TimeZone     string `json:"timeZone,omitempty"`
	// GlobalMaxConcurrent and PerUserMaxConcurrent cap the server's tool
	// calls admitted and not yet answered (0: no cap); a slot is given
	// back when the call's response ends, or after ConcurrencyLease (a Go
	// duration; DefaultConcurrencyLease when empty) if its replica died.
	// PerUserMaxConcurrent needs Auth.
	GlobalMaxConcurrent  int64  `json:"globalMaxConcurrent,omitempty"`
	PerUserMaxConcurrent int64  `json:"perUserMaxConcurrent,omitempty"`
	ConcurrencyLease     string `json:"concurrencyLease,omitempty"`
	// MaxConcurrentShadow decides and counts the server's caps as if
	// enforced, but they refuse nothing.
	MaxConcurrentShadow bool `json:"maxConcurrentShadow,omitempty"`
	// Tools holds limits for single tools, by tool name, on top of the
	// server's.
	Tools map[string]ToolLimits `json:"tools,omitempty"`
	// Prompts holds limits for prompts/get, by prompt name; Resources for
	// resources/read, by URI or URI template (RFC 6570: an expression
	// stands for any text, and for no '/' when it is a simple {name}).
	// The server's Global and PerUser buckets count tools/call only.
	Prompts   map[string]ToolLimits `json:"prompts,omitempty"`
	Resources map[string]ToolLimits `json:"resources,omitempty"`
	// Methods holds limits for other requests, by JSON-RPC method (such
	// as completion/complete or resources/subscribe). tools/call,
	// prompts/get and resources/read have their own entries, and
	// notifications are never limited.
	Methods map[string]ToolLimits `json:"methods,omitempty"`
	// Authorization, when set, decides which tools each caller may call;
	// what no rule allows is refused. Nil lets every caller call every
	// tool.
	Authorization *authz.Policy `json:"authorization,omitempty"`
	// Shadow decides the limits and counts their decisions as if they
	// were enforced, but refuses nothing: a call they would refuse passes,
	// counted as shadow_rejected, marked in the RateLimit-Policy field and
	// the audit trail. It makes every limit a shadow one; a single bucket
	// (Limit.Shadow), quota (Quota.Shadow) or set of caps
	// (MaxConcurrentShadow) can be one by itself.
	Shadow bool `json:"shadow,omitempty"`
	// BackendAuth, when set, is how the gateway authenticates to the
	// backend: a static header, or a token of its own or exchanged for the
	// caller's. The caller's token is not forwarded with it.
	BackendAuth *BackendAuth `json:"backendAuth,omitempty"`
	// AuditArguments writes the value of each tool call's and prompt's
	// arguments into the audit trail; without it a record holds only their
	// size and SHA-256.
	AuditArguments bool `json:"auditArguments,omitempty"`
}

// ToolLimits are the limits of one tool, prompt, resource or method: its
// buckets, quotas and caps, and what one call costs. A tool's entry sets at
// least one of them; another entry sets a bucket, a quota or a cap.
type ToolLimits struct {
	// Global is shared by every caller of the tool.
	Global *limiter.Limit `json:"global,omitempty"`
	// PerUser is each caller's own bucket for the tool. It needs Auth.
	PerUser *limiter.Limit `json:"perUser,omitempty"`
	// Cost is how many tokens one call takes from every bucket it is
	// checked against (a tool's: the server's too); 0 means 1.
	Cost int64 `json:"cost,omitempty"`
	// GlobalQuota and PerUserQuota count the entry's calls per calendar
	// window, on top of the server's quotas for a tool.
	GlobalQuota  *Quota `json:"globalQuota,omitempty"`
	PerUserQuota *Quota `json:"perUserQuota,omitempty"`
	// GlobalMaxConcurrent and PerUserMaxConcurrent cap the entry's calls
	// in flight, on top of the server's caps for a tool.
	GlobalMaxConcurrent  int64 `json:"globalMaxConcurrent,omitempty"`
	PerUserMaxConcurrent int64 `json:"perUserMaxConcurrent,omitempty"`
	// MaxConcurrentShadow decides and counts the entry's caps as if
	// enforced, but they refuse nothing.
	MaxConcurrentShadow bool `json:"maxConcurrentShadow,omitempty"`
}

// DefaultConcurrencyLease is how long a slot is held at most when the
// replica that took it never gives it back: a longer call keeps running,
// but no longer counts against the cap.
const DefaultConcurrencyLease = 5 * time.Minute

// concurrencyLease is the policy's lease.
func (p *Policy) concurrencyLease() time.Duration {
	if p.ConcurrencyLease == "" {
		return DefaultConcurrencyLease
	}
	d, _ := time.ParseDuration(p.ConcurrencyLease) // validate checked it
	return d
}

// cost is what one call takes.
func (l ToolLimits) cost() int64 { return max(l.Cost, 1) }

func (l ToolLimits) clone() ToolLimits {
	return ToolLimits{Global: clone(l.Global), PerUser: clone(l.PerUser), Cost: l.Cost,
		GlobalQuota: cloneQuota(l.GlobalQuota), PerUserQuota: cloneQuota(l.PerUserQuota),
		GlobalMaxConcurrent: l.GlobalMaxConcurrent, PerUserMaxConcurrent: l.PerUserMaxConcurrent, MaxConcurrentShadow: l.MaxConcurrentShadow}
}

func cloneQuota(q *Quota) *Quota {
	if q == nil {
		return nil
	}
	c := *q
	return &c
}

// OIDCConfig says how to verify a caller's bearer token: a JWT signed by the
// issuer, for the audience, unexpired.
type OIDCConfig struct {
	// Issuer must equal the token's iss claim. Without JWKSURL, its
	// /.well-known/openid-configuration is fetched to find the keys.
	Issuer string `json:"issuer"`
	// Audience must be one of the token's aud claim.
	Audience string `json:"audience"`
	// JWKSURL is where the issuer's signing keys are; optional.
	JWKSURL string `json:"jwksURL,omitempty"`
	// UserClaim is the claim naming the caller; DefaultUserClaim when empty.
	// Its value must be a non-empty string.
	UserClaim string `json:"userClaim,omitempty"`
	// AllowInsecureHTTP lets Issuer and JWKSURL be plain http:// URLs (a
	// test issuer); by default both must be https://.
	AllowInsecureHTTP bool `json:"allowInsecureHTTP,omitempty"`
}

// Clone returns a deep copy of p, sharing nothing with it; nil for nil.
func (p *Policy) Clone() *Policy {
	if p == nil {
		return nil
	}
	c := *p
	if p.Auth != nil {
		auth := *p.Auth
		c.Auth = &auth
	}
	c.Scopes = slices.Clone(p.Scopes)
	if p.Authorization != nil {
		a := p.Authorization.Clone()
		c.Authorization = &a
	}
	c.Global, c.PerUser = clone(p.Global), clone(p.PerUser)
	c.GlobalQuota, c.PerUserQuota = cloneQuota(p.GlobalQuota), cloneQuota(p.PerUserQuota)
	c.Tools, c.Prompts, c.Resources = cloneLimits(p.Tools), cloneLimits(p.Prompts), cloneLimits(p.Resources)
	c.Methods = cloneLimits(p.Methods)
	c.BackendAuth = p.BackendAuth.clone()
	return &c
}

func cloneLimits(m map[string]ToolLimits) map[string]ToolLimits {
	if m == nil {
		return nil
	}
	c := make(map[string]ToolLimits, len(m))
	for name, limits := range m {
		c[name] = limits.clone()
	}
	return c
}

// DefaultUserClaim is the claim that names the caller when the policy names
// none.
const DefaultUserClaim = "sub"

// Validate reports what in p the filter cannot enforce, saying what to
// change, as New does.
func (p Policy) Validate() error {
	_, _, err := p.validate()
	if err != nil {
		return fmt.Errorf("filter: %w", err)
	}
	return nil
}

// validate checks p and fills in its defaults. It returns the policy's
// namespace and name.
func (p *Policy) validate() (namespace, name string, err error) {
	namespace, name, ok := strings.Cut(p.Server, "/")
	if !ok || namespace == "" || name == "" || strings.Contains(name, "/") {
		return "", "", fmt.Errorf("server must be \"namespace/name\", got %q", p.Server)
	}
	var errs []error
	if p.Auth != nil {
		if err := p.Auth.validate(); err != nil {
			errs = append(errs, fmt.Errorf("auth: %w", err))
		}
	}
	if p.ResourceURL != "" {
		if u, err := url.Parse(p.ResourceURL); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" {
			errs = append(errs, fmt.Errorf("resourceURL %q must be an absolute https:// (or http://) URL without query or fragment", p.ResourceURL))
		}
		if p.Auth == nil {
			errs = append(errs, errors.New("resourceURL names a protected resource: it needs auth"))
		}
	}
	if p.BackendAuth != nil {
		errs = append(errs, p.BackendAuth.validate(p.Auth != nil, p.ForwardAuthorization)...)
	}
	if err := validateLimit("global", p.Global); err != nil {
		errs = append(errs, err)
	}
	if err := validateLimit("perUser", p.PerUser); err != nil {
		errs = append(errs, err)
	}
	if p.Authorization != nil {
		if _, err := authz.Compile(*p.Authorization); err != nil {
			errs = append(errs, err)
		}
		for _, r := range p.Authorization.Rules {
			if len(r.Scopes) > 0 && p.Auth == nil {
				errs = append(errs, fmt.Errorf("authorization.rules[%s].scopes need auth: scopes are read from the caller's token", r.Name))
			}
		}
	}
	if len(p.Scopes) > 0 && p.Auth == nil {
		errs = append(errs, errors.New("scopes are required of every call's token: they need auth"))
	}
	if p.PerUser != nil && p.Auth == nil {
		errs = append(errs, errors.New("perUser needs auth: without it every caller is anonymous; configure auth or use global"))
	}
	errs = append(errs, p.validateQuotas("", p.GlobalQuota, p.PerUserQuota)...)
	errs = append(errs, p.validateCaps("", p.GlobalMaxConcurrent, p.PerUserMaxConcurrent)...)
	if p.ConcurrencyLease != "" {
		if d, err := time.ParseDuration(p.ConcurrencyLease); err != nil || d <= 0 {
			errs = append(errs, fmt.Errorf("concurrencyLease %q must be a positive duration such as 5m", p.ConcurrencyLease))
		}
	}
	if _, err := time.LoadLocation(p.TimeZone); err != nil {
		errs = append(errs, fmt.Errorf("timeZone %q is not a time zone: use an IANA name such as Europe/Paris, or UTC", p.TimeZone))
	}
	errs = append(errs, p.validateEntries("tools", p.Tools)...)
	errs = append(errs, p.validateEntries("prompts", p.Prompts)...)
	errs = append(errs, p.validateEntries("resources", p.Resources)...)
	errs = append(errs, p.validateEntries("methods", p.Methods)...)
	for _, method := range slices.Sorted(maps.Keys(p.Methods)) {
		switch {
		case method == methodToolsCall || method == methodPromptsGet || method == methodResourcesRead:
			errs = append(errs, fmt.Errorf("methods[%s]: %s has entries of its own: use tools[], prompts[] or resources[] (or the server's limits for every tool call)", method, method))
		case strings.HasPrefix(method, "notifications/"):
			errs = append(errs, fmt.Errorf("methods[%s]: notifications are never limited: a client cannot be told it was refused", method))
		}
	}
	for _, uri := range slices.Sorted(maps.Keys(p.Resources)) {
		if _, err := compileURITemplate(uri); err != nil {
			errs = append(errs, fmt.Errorf("resources[%s]: %w", uri, err))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return "", "", fmt.Errorf("policy for %s: %w", p.Server, err)
	}
	return namespace, name, nil
}

// validateEntries checks the entries of tools, prompts or resources. A
// call's cost is taken from every bucket it is checked against: a cost
// above the smallest of them could never pass.
func (p *Policy) validateEntries(field string, entries map[string]ToolLimits) []error {
	var errs []error
	for _, name := range slices.Sorted(maps.Keys(entries)) {
		limits := entries[name]
		at := field + "[" + name + "]"
		if name == "" {
			errs = append(errs, fmt.Errorf("%s: an entry has an empty name", field))
			continue
		}
		switch {
		case limits.Cost < 0:
			errs = append(errs, fmt.Errorf("%s.cost must be at least 1, got %d", at, limits.Cost))
		case field == "tools" && limits.Global == nil && limits.PerUser == nil && limits.Cost == 0 && limits.GlobalQuota == nil && limits.PerUserQuota == nil &&
			limits.GlobalMaxConcurrent == 0 && limits.PerUserMaxConcurrent == 0:
			errs = append(errs, fmt.Errorf("%s: set global, perUser, a quota, a cap or cost", at))
		case field != "tools" && limits.Global == nil && limits.PerUser == nil && limits.GlobalQuota == nil && limits.PerUserQuota == nil &&
			limits.GlobalMaxConcurrent == 0 && limits.PerUserMaxConcurrent == 0:
			errs = append(errs, fmt.Errorf("%s: set global, perUser, a quota or a cap (the server's limits count tool calls only)", at))
		}
		if err := validateLimit(at+".global", limits.Global); err != nil {
			errs = append(errs, err)
		}
		if err := validateLimit(at+".perUser", limits.PerUser); err != nil {
			errs = append(errs, err)
		}
		if limits.PerUser != nil && p.Auth == nil {
			errs = append(errs, fmt.Errorf("%s.perUser needs auth: without it every caller is anonymous; configure auth or use global", at))
		}
		errs = append(errs, p.validateQuotas(at+".", limits.GlobalQuota, limits.PerUserQuota)...)
		errs = append(errs, p.validateCaps(at+".", limits.GlobalMaxConcurrent, limits.PerUserMaxConcurrent)...)
		// The most tokens each limit the call is checked against can give.
		most := map[string]int64{}
		add := func(name string, l *limiter.Limit) {
			if l != nil {
				most[name+".maxTokens"] = l.MaxTokens
			}
		}
		add(at+".global", limits.Global)
		add(at+".perUser", limits.PerUser)
		quotas := map[string]*Quota{at + ".globalQuota": limits.GlobalQuota, at + ".perUserQuota": limits.PerUserQuota}
		if field == "tools" {
			add("global", p.Global)
			add("perUser", p.PerUser)
			quotas["globalQuota"], quotas["perUserQuota"] = p.GlobalQuota, p.PerUserQuota
		}
		for name, q := range quotas {
			if q != nil {
				most[name+".max"] = q.Max
			}
		}
		for _, name := range slices.Sorted(maps.Keys(most)) {
			if limits.cost() > most[name] {
				errs = append(errs, fmt.Errorf("%s.cost %d is above %s %d: such a call could never pass; lower the cost or raise the limit", at, limits.cost(), name, most[name]))
			}
		}
	}
	return errs
}

// validateCaps checks a server's or a tool's in-flight caps.
func (p *Policy) validateCaps(prefix string, global, perUser int64) []error {
	var errs []error
	if global < 0 || perUser < 0 {
		errs = append(errs, fmt.Errorf("%smaxConcurrent must be at least 1 (0: no cap)", prefix))
	}
	if perUser > 0 && p.Auth == nil {
		errs = append(errs, fmt.Errorf("%sperUserMaxConcurrent needs auth: without it every caller is anonymous; configure auth or use globalMaxConcurrent", prefix))
	}
	return errs
}

// validateQuotas checks a server's or a tool's quotas; prefix names the
// tool's entry ("tools[t].").
func (p *Policy) validateQuotas(prefix string, global, perUser *Quota) []error {
	var errs []error
	if global != nil {
		if err := global.validate(); err != nil {
			errs = append(errs, fmt.Errorf("%sglobalQuota: %w", prefix, err))
		}
	}
	if perUser != nil {
		if err := perUser.validate(); err != nil {
			errs = append(errs, fmt.Errorf("%sperUserQuota: %w", prefix, err))
		}
		if p.Auth == nil {
			errs = append(errs, fmt.Errorf("%sperUserQuota needs auth: without it every caller is anonymous; configure auth or use globalQuota", prefix))
		}
	}
	return errs
}

func validateLimit(field string, l *limiter.Limit) error {
	if l == nil {
		return nil
	}
	if err := l.Validate(); err != nil {
		return fmt.Errorf("%s: %w", field, err)
	}
	return nil
}

func (c *OIDCConfig) validate() error {
	var errs []error
	if err := c.validateURL("issuer", c.Issuer); err != nil {
		errs = append(errs, err)
	}
	if c.Audience == "" {
		errs = append(errs, errors.New("audience is required: set it to the aud claim the issuer puts in tokens for this server"))
	}
	if c.JWKSURL != "" {
		if err := c.validateURL("jwksURL", c.JWKSURL); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func (c *OIDCConfig) validateURL(field, raw string) error {
	if raw == "" {
		return fmt.Errorf("%s is required", field)
	}
	u, err := url.Parse(raw)
	if err != nil {
		return fmt.Errorf("%s: %w", field, err)
	}
	switch {
	case (u.Scheme != "https" && u.Scheme != "http") || u.Host == "":
		return fmt.Errorf("%s must be an absolute http(s) URL, got %q", field, raw)
	case u.Scheme == "http" && !c.AllowInsecureHTTP:
		return fmt.Errorf("%s must be an https:// URL, got %q: signing keys fetched over plain HTTP can be replaced by anyone on the path (allowInsecureHTTP lets a test issuer use http)", field, raw)
	}
	return nil
}
