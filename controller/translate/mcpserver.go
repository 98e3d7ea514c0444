package translate

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"strings"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"

	"github.com/toolgate/toolgate/apis/v1alpha1"
	"github.com/toolgate/toolgate/filter"
	"github.com/toolgate/toolgate/filter/authz"
	"github.com/toolgate/toolgate/filter/limiter"
)

// Reasons of the MCPServer conditions.
const (
	ReasonAccepted        = "Accepted"
	ReasonInvalid         = "Invalid"
	ReasonValid           = "Valid"
	ReasonNotConfigured   = "NotConfigured"
	ReasonNoSharedStore   = "NoSharedStore"
	ReasonResolvedRefs    = "ResolvedRefs"
	ReasonBackendNotFound = "BackendNotFound"

	// ConditionResolvedRefs says whether spec.serviceRef names a Service.
	ConditionResolvedRefs = "ResolvedRefs"
)

func (t *translator) translateMCPServers() {
	live := map[types.UID]bool{}
	for _, m := range sortedByAge(t.res.MCPServers) {
		nn := key(m)
		gen := m.Generation
		live[m.UID] = true
		status := &v1alpha1.MCPServerStatus{ObservedGeneration: gen}
		t.out.Status.MCPServers[nn] = status

		if err := t.admit(m); err != nil {
			// The object breaks the CRD's rules (stored before a rule
			// existed, or written around admission): say which.
			status.Conditions = t.invalidMCPServer(m, err, nil)
			continue
		}
		policy := policyFor(m)
		backendAuth, err := t.backendAuth(m)
		if err != nil {
			status.Conditions = append(t.invalidMCPServer(m, err, nil),
				condition(v1alpha1.ConditionBackendAuthValid, false, ReasonSecretNotFound, err.Error()+": create it, or fix the reference", gen))
			continue
		}
		policy.BackendAuth = backendAuth
		if err := policy.Validate(); err != nil {
			var authzErr error
			if policy.Authorization != nil {
				_, authzErr = authz.Compile(*policy.Authorization)
			}
			status.Conditions = t.invalidMCPServer(m, err, authzErr)
			continue
		}
		t.opts.Memory.remember(m.UID, gen, policy)
		t.out.Policies[nn] = policy
		t.valid = append(t.valid, m)
	}
	t.opts.Memory.retain(live)
}

// invalidMCPServer returns the conditions of an MCPServer whose spec
// cannot be applied (err; authzErr when its authorization is at fault), and
// keeps its last valid policy serving when the memory holds one.
func (t *translator) invalidMCPServer(m *v1alpha1.MCPServer, err, authzErr error) []metav1.Condition {
	gen := m.Generation
	consequence := "until it is fixed the MCPServer serves nothing (its routes answer 500)"
	if prev, prevGen, ok := t.opts.Memory.last(m.UID); ok {
		t.out.Policies[key(m)] = prev
		consequence = "until it is fixed the last valid policy keeps serving"
		if prevGen > 0 {
			consequence = fmt.Sprintf("until it is fixed the policy of generation %d keeps serving", prevGen)
		}
	}
	message := err.Error() + "; " + consequence
	conditions := []metav1.Condition{
		condition(v1alpha1.ConditionAccepted, false, ReasonInvalid, message, gen),
		condition(v1alpha1.ConditionRateLimitingConfigValid, false, ReasonInvalid, message, gen),
	}
	if authzErr != nil {
		conditions = append(conditions, condition(v1alpha1.ConditionAuthorizationValid, false, ReasonInvalid,
			authzErr.Error()+": fix the expression; "+consequence, gen))
	}
	return conditions
}

// finishMCPServers sets the conditions of valid MCPServers once routes are
// attached, since whether their limits hold depends on the Gateways that
// apply them.
func (t *translator) finishMCPServers() {
	for _, m := range t.valid {
		conditions := []metav1.Condition{
			condition(v1alpha1.ConditionAccepted, true, ReasonAccepted, "the MCPServer is valid; apply it to an HTTPRoute rule with an ExtensionRef filter", m.Generation),
			t.rateLimitingCondition(m),
			t.serviceRefCondition(m),
		}
		if c, ok := issuerCondition(m); ok {
			conditions = append(conditions, c)
		}
		if c, ok := backendAuthCondition(m); ok {
			conditions = append(conditions, c)
		}
		if a := m.Spec.Authorization; a != nil {
			conditions = append(conditions, condition(v1alpha1.ConditionAuthorizationValid, true, ReasonValid,
				fmt.Sprintf("%d rule(s) compiled: a tool call, prompt or resource that none allows is refused", len(a.Rules)), m.Generation))
		}
		t.out.Status.MCPServers[key(m)].Conditions = conditions
	}
}

// Reasons of the IssuerSecure condition.
const (
	ReasonHTTPS               = "HTTPS"
	ReasonInsecureHTTPAllowed = "InsecureHTTPAllowed"
)

// issuerCondition says how the signing keys of an MCPServer with auth are
// fetched; false when it has no auth.
func issuerCondition(m *v1alpha1.MCPServer) (metav1.Condition, bool) {
	a := m.Spec.Auth
	if a == nil || a.OIDC == nil {
		return metav1.Condition{}, false
	}
	var plain []string
	for _, u := range []string{a.OIDC.Issuer, a.OIDC.JWKSURL} {
		if strings.HasPrefix(strings.ToLower(u), "http://") {
			plain = append(plain, u)
		}
	}
	if len(plain) > 0 {
		return condition(v1alpha1.ConditionIssuerSecure, false, ReasonInsecureHTTPAllowed,
			fmt.Sprintf("allowInsecureHTTP: the signing keys come over plain HTTP (%s), so anyone on the network path can replace them and forge every token; use an https:// issuer outside tests", strings.Join(plain, ", ")), m.Generation), true
	}
	return condition(v1alpha1.ConditionIssuerSecure, true, ReasonHTTPS, "the issuer's signing keys are fetched over HTTPS", m.Generation), true
}

// use records that gw applies the MCPServer nn through an attached route.
func (t *translator) use(nn, gw types.NamespacedName) {
	if !slices.Contains(t.usedBy[nn], gw) {
		t.usedBy[nn] = append(t.usedBy[nn], gw)
	}
}

// admit re-checks m against the CRD's schema and CEL rules, once per
// generation when a Memory is given.
func (t *translator) admit(m *v1alpha1.MCPServer) error {
	if t.opts.Admission == nil {
		return nil
	}
	if err, ok := t.opts.Memory.admitted(m.UID, m.Generation); ok {
		return err
	}
	err := t.admitNow(m)
	t.opts.Memory.rememberAdmission(m.UID, m.Generation, err)
	return err
}

func (t *translator) admitNow(m *v1alpha1.MCPServer) error {
	raw, err := runtime.DefaultUnstructuredConverter.ToUnstructured(m)
	if err != nil {
		return fmt.Errorf("convert MCPServer %s: %w", key(m), err)
	}
	u := &unstructured.Unstructured{Object: raw}
	u.SetGroupVersionKind(v1alpha1.GroupVersion.WithKind("MCPServer"))
	delete(u.Object, "status")
	unstructured.RemoveNestedField(u.Object, "metadata", "creationTimestamp")
	err = t.opts.Admission.Admit(context.Background(), u)
	if statusErr, ok := err.(*apierrors.StatusError); ok && statusErr.ErrStatus.Details != nil {
		var causes []string
		for _, c := range statusErr.ErrStatus.Details.Causes {
			causes = append(causes, c.Field+": "+c.Message)
		}
		return fmt.Errorf("%s", strings.Join(causes, "; "))
	}
	return err
}

func (t *translator) rateLimitingCondition(m *v1alpha1.MCPServer) metav1.Condition {
	gen := m.Generation
	rl := m.Spec.RateLimiting
	if rl == nil {
		return condition(v1alpha1.ConditionRateLimitingConfigValid, true, ReasonNotConfigured, "no rate limits are configured: every tools/call passes", gen)
	}
	gateways := t.usedBy[key(m)]
	slices.SortFunc(gateways, func(a, b types.NamespacedName) int { return strings.Compare(a.String(), b.String()) })
	for _, gw := range gateways {
		if dp := t.res.DataPlanes[gw]; dp.Replicas > 1 && !dp.SharedStore {
			return condition(v1alpha1.ConditionRateLimitingConfigValid, false, ReasonNoSharedStore,
				fmt.Sprintf("Gateway %s runs %d proxy replicas with in-memory buckets, so each replica would allow maxTokens on its own: configure Redis (the controller's --redis-url or the GatewayClass parameters) or run one replica", gw, dp.Replicas), gen)
		}
	}
	if rl.Mode == v1alpha1.RateLimitingShadow {
		return condition(v1alpha1.ConditionRateLimitingConfigValid, true, ReasonValid,
			"shadow: decided and counted, never refused (set mode: Enforce to enforce): "+describeLimits(rl), gen)
	}
	limits := describeLimits(rl)
	if strings.Contains(limits, shadowNote(v1alpha1.RateLimitingShadow)) {
		return condition(v1alpha1.ConditionRateLimitingConfigValid, true, ReasonValid,
			"enforced, but those marked shadow are decided and counted, never refused (set their mode: Enforce to enforce them): "+limits, gen)
	}
	return condition(v1alpha1.ConditionRateLimitingConfigValid, true, ReasonValid, "enforced: "+limits, gen)
}

func (t *translator) serviceRefCondition(m *v1alpha1.MCPServer) metav1.Condition {
	svc := types.NamespacedName{Namespace: m.Namespace, Name: m.Spec.ServiceRef.Name}
	if _, ok := t.idx.services.get(svc); !ok {
		return condition(ConditionResolvedRefs, false, ReasonBackendNotFound, fmt.Sprintf("spec.serviceRef: Service %s not found", svc), m.Generation)
	}
	return condition(ConditionResolvedRefs, true, ReasonResolvedRefs, "spec.serviceRef resolved", m.Generation)
}

// describeLimits summarizes the buckets and costs, for example
// "global 1000/1m0s, perUser 100/1m0s, report.perUser 10/1m0s, report costs 5".
func describeLimits(rl *v1alpha1.RateLimiting) string {
	var parts []string
	bucket := func(name string, b *v1alpha1.Bucket) {
		if b != nil {
			parts = append(parts, fmt.Sprintf("%s %d/%s", name, b.MaxTokens, b.RefillPeriod.Duration)+shadowNote(b.Mode))
		}
	}
	costs := func(name string, c *int64) {
		if c != nil && *c != 1 {
			parts = append(parts, fmt.Sprintf("%s costs %d", name, *c))
		}
	}
	quota := func(name string, q *v1alpha1.QuotaLimits) {
		if q == nil {
			return
		}
		for _, e := range []struct {
			scope string
			q     *v1alpha1.Quota
		}{{"global", q.Global}, {"perUser", q.PerUser}} {
			if e.q != nil {
				parts = append(parts, fmt.Sprintf("%squota.%s %d a %s", name, e.scope, e.q.Max, strings.ToLower(string(e.q.Window)))+shadowNote(e.q.Mode))
			}
		}
	}
	bucket("global", rl.Global)
	bucket("perUser", rl.PerUser)
	quota("", rl.Quota)
	inFlight := func(name string, c *v1alpha1.ConcurrencyLimits) {
		global, perUser := caps(c)
		note := ""
		if capsShadow(c) {
			note = shadowNote(v1alpha1.RateLimitingShadow)
		}
		if global > 0 {
			parts = append(parts, fmt.Sprintf("%smaxConcurrent.global %d", name, global)+note)
		}
		if perUser > 0 {
			parts = append(parts, fmt.Sprintf("%smaxConcurrent.perUser %d", name, perUser)+note)
		}
	}
	entry := func(name string, global, perUser *v1alpha1.Bucket, q *v1alpha1.QuotaLimits, c *int64) {
		bucket(name+".global", global)
		bucket(name+".perUser", perUser)
		quota(name+".", q)
		costs(name, c)
	}
	inFlight("", rl.MaxConcurrent)
	for _, e := range rl.Tools {
		entry(e.Name, e.Global, e.PerUser, e.Quota, e.Cost)
		inFlight(e.Name+".", e.MaxConcurrent)
	}
	for _, e := range rl.Prompts {
		entry("prompt "+e.Name, e.Global, e.PerUser, e.Quota, e.Cost)
		inFlight("prompt "+e.Name+".", e.MaxConcurrent)
	}
	for _, e := range rl.Resources {
		entry("resource "+e.URI, e.Global, e.PerUser, e.Quota, e.Cost)
		inFlight("resource "+e.URI+".", e.MaxConcurrent)
	}
	for _, e := range rl.Methods {
		entry("method "+e.Method, e.Global, e.PerUser, e.Quota, e.Cost)
		inFlight("method "+e.Method+".", e.MaxConcurrent)
	}
	if rl.Quota != nil || slices.ContainsFunc(rl.Tools, func(e v1alpha1.ToolRateLimit) bool { return e.Quota != nil }) ||
		slices.ContainsFunc(rl.Prompts, func(e v1alpha1.PromptRateLimit) bool { return e.Quota != nil }) ||
		slices.ContainsFunc(rl.Resources, func(e v1alpha1.ResourceRateLimit) bool { return e.Quota != nil }) ||
		slices.ContainsFunc(rl.Methods, func(e v1alpha1.MethodRateLimit) bool { return e.Quota != nil }) {
		parts = append(parts, "quota windows in "+cmp.Or(rl.TimeZone, "UTC"))
	}
	return strings.Join(parts, ", ")
}

// shadowNote marks a limit in shadow mode in describeLimits.
func shadowNote(mode v1alpha1.RateLimitingMode) string {
	if mode == v1alpha1.RateLimitingShadow {
		return " (shadow)"
	}
	return ""
}

// policyFor converts an MCPServer into the filter's plain policy.
func policyFor(m *v1alpha1.MCPServer) *filter.Policy {
	p := &filter.Policy{Server: m.Namespace + "/" + m.Name}
	if a := m.Spec.Auth; a != nil && a.OIDC != nil {
		p.Auth = &filter.OIDCConfig{
			Issuer:    a.OIDC.Issuer,
			Audience:  a.OIDC.Audience,
			JWKSURL:   a.OIDC.JWKSURL,
			UserClaim: a.OIDC.UserClaim,

			AllowInsecureHTTP: a.OIDC.AllowInsecureHTTP,
		}
		p.ForwardAuthorization = a.ForwardAuthorization
		p.ResourceURL = a.ResourceURL
		p.Scopes = a.Scopes
	}
	if a := m.Spec.Authorization; a != nil {
		p.Authorization = &authz.Policy{Rules: make([]authz.Rule, len(a.Rules))}
		for i, r := range a.Rules {
			p.Authorization.Rules[i] = authz.Rule{
				Name: r.Name, When: r.When, Scopes: slices.Clone(r.Scopes),
				Tools: slices.Clone(r.Tools), Prompts: slices.Clone(r.Prompts), Resources: slices.Clone(r.Resources),
			}
		}
	}
	if a := m.Spec.Audit; a != nil {
		p.AuditArguments = a.IncludeArguments
	}
	if rl := m.Spec.RateLimiting; rl != nil {
		p.Shadow = rl.Mode == v1alpha1.RateLimitingShadow
		p.Global = limit(rl.Global)
		p.PerUser = limit(rl.PerUser)
		p.GlobalQuota, p.PerUserQuota = quotas(rl.Quota)
		p.TimeZone = rl.TimeZone
		p.GlobalMaxConcurrent, p.PerUserMaxConcurrent = caps(rl.MaxConcurrent)
		p.MaxConcurrentShadow = capsShadow(rl.MaxConcurrent)
		if rl.ConcurrencyLease != nil {
			p.ConcurrencyLease = rl.ConcurrencyLease.Duration.String()
		}
		p.Tools = entriesOf(rl.Tools, func(e v1alpha1.ToolRateLimit) (string, filter.ToolLimits) {
			return e.Name, entryLimits(e.Global, e.PerUser, e.Cost, e.Quota, e.MaxConcurrent)
		})
		p.Prompts = entriesOf(rl.Prompts, func(e v1alpha1.PromptRateLimit) (string, filter.ToolLimits) {
			return e.Name, entryLimits(e.Global, e.PerUser, e.Cost, e.Quota, e.MaxConcurrent)
		})
		p.Resources = entriesOf(rl.Resources, func(e v1alpha1.ResourceRateLimit) (string, filter.ToolLimits) {
			return e.URI, entryLimits(e.Global, e.PerUser, e.Cost, e.Quota, e.MaxConcurrent)
		})
		p.Methods = entriesOf(rl.Methods, func(e v1alpha1.MethodRateLimit) (string, filter.ToolLimits) {
			return e.Method, entryLimits(e.Global, e.PerUser, e.Cost, e.Quota, e.MaxConcurrent)
		})
	}
	return p
}

// entriesOf converts the entries of tools[], prompts[], resources[] or
// methods[] into the policy's map, by the key each names; nil for none.
func entriesOf[E any](entries []E, convert func(E) (string, filter.ToolLimits)) map[string]filter.ToolLimits {
	if len(entries) == 0 {
		return nil
	}
	out := make(map[string]filter.ToolLimits, len(entries))
	for _, e := range entries {
		k, l := convert(e)
		out[k] = l
	}
	return out
}

// entryLimits converts the limits of a tools[], prompts[], resources[] or
// methods[] entry.
func entryLimits(global, perUser *v1alpha1.Bucket, c *int64, q *v1alpha1.QuotaLimits, inFlight *v1alpha1.ConcurrencyLimits) filter.ToolLimits {
	l := filter.ToolLimits{Global: limit(global), PerUser: limit(perUser), Cost: cost(c)}
	l.GlobalQuota, l.PerUserQuota = quotas(q)
	l.GlobalMaxConcurrent, l.PerUserMaxConcurrent = caps(inFlight)
	l.MaxConcurrentShadow = capsShadow(inFlight)
	return l
}

// capsShadow says whether a server's or an entry's caps are in shadow
// mode.
func capsShadow(c *v1alpha1.ConcurrencyLimits) bool {
	return c != nil && c.Mode == v1alpha1.RateLimitingShadow
}

// caps converts a server's or a tool's in-flight caps; 0 is no cap.
func caps(c *v1alpha1.ConcurrencyLimits) (global, perUser int64) {
	if c == nil {
		return 0, 0
	}
	if c.Global != nil {
		global = *c.Global
	}
	if c.PerUser != nil {
		perUser = *c.PerUser
	}
	return global, perUser
}

// quotas converts a server's or an entry's quotas.
func quotas(q *v1alpha1.QuotaLimits) (global, perUser *filter.Quota) {
	if q == nil {
		return nil, nil
	}
	convert := func(q *v1alpha1.Quota) *filter.Quota {
		if q == nil {
			return nil
		}
		return &filter.Quota{Max: q.Max, Window: strings.ToLower(string(q.Window)), Shadow: q.Mode == v1alpha1.RateLimitingShadow}
	}
	return convert(q.Global), convert(q.PerUser)
}

// cost is an entry's cost; 0 (the default, 1) when unset.
func cost(c *int64) int64 {
	if c == nil {
		return 0
	}
	return *c
}

func limit(b *v1alpha1.Bucket) *limiter.Limit {
	if b == nil {
		return nil
	}
	return &limiter.Limit{MaxTokens: b.MaxTokens, RefillPeriod: b.RefillPeriod.Duration, Shadow: b.Mode == v1alpha1.RateLimitingShadow}
}
