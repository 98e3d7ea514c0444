package filter

import (
	"fmt"
	"sync"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/toolgate/toolgate/filter/limiter"
)

// Metric names.
const (
	// MetricDecisions counts bucket decisions by namespace, server, scope and
	// result: one count per bucket a tools/call request demanded from; a
	// rejected request counts only against the buckets that refused it.
	MetricDecisions = "toolgate_ratelimit_decisions_total"
	// MetricToolRequests counts tools/call requests to the tools a
	// server's policy limits by name (tools[]: a bounded set, where the
	// names clients send are not), by namespace, server, tool and outcome:
	// allowed, rejected, shadow_rejected (passed; only shadow limits
	// refused) and shed (503: no decision in time). One count per request.
	MetricToolRequests = "toolgate_ratelimit_tool_requests_total"
	// MetricFailOpen counts tools/call requests, by namespace and server,
	// decided by the replica's local buckets because the shared store was
	// unavailable (fail-open: limits then hold per replica).
	MetricFailOpen = "toolgate_ratelimit_fail_open_total"
	// MetricStoreAvailable is 1 while the shared bucket store is available
	// and 0 while decisions fall back to each replica's local buckets.
	MetricStoreAvailable = "toolgate_ratelimit_store_available"
	// MetricStoreDuration is the bucket store's latency per decision, by
	// namespace, server and outcome (ok, error, timeout).
	MetricStoreDuration = "toolgate_ratelimit_store_duration_seconds"
	// MetricRejectedRequests counts requests the filter answered itself
	// instead of forwarding, by namespace, server and reason.
	MetricRejectedRequests = "toolgate_filter_rejected_requests_total"
	// MetricListItemsHidden counts the items that authorization took out
	// of list results (tools, prompts, resources, resource templates), by
	// namespace and server.
	MetricListItemsHidden = "toolgate_authz_list_items_hidden_total"
	// MetricShadowRefusals counts the requests that limits in shadow mode
	// would have refused, by namespace and server: they passed.
	MetricShadowRefusals = "toolgate_ratelimit_shadow_refusals_total"
)

// scope is the kind of a bucket. Its name is a label value of
// MetricDecisions and the policy name in the RateLimit response fields.
type scope uint8

const (
	scopeGlobal          scope = iota // every caller, every tool
	scopePerUser                      // one caller, every tool
	scopeToolGlobal                   // every caller, one tool
	scopeToolPerUser                  // one caller, one tool
	scopePromptGlobal                 // every caller, one prompt
	scopePromptPerUser                // one caller, one prompt
	scopeResourceGlobal               // every caller, one resource (or template)
	scopeResourcePerUser              // one caller, one resource (or template)
	scopeMethodGlobal                 // every caller, one other method
	scopeMethodPerUser                // one caller, one other method

	scopeQuotaGlobal          // a quota of every caller, every tool
	scopeQuotaPerUser         // a quota of one caller, every tool
	scopeToolQuotaGlobal      // a quota of every caller, one tool
	scopeToolQuotaPerUser     // a quota of one caller, one tool
	scopePromptQuotaGlobal    // a quota of every caller, one prompt
	scopePromptQuotaPerUser   // a quota of one caller, one prompt
	scopeResourceQuotaGlobal  // a quota of every caller, one resource
	scopeResourceQuotaPerUser // a quota of one caller, one resource
	scopeMethodQuotaGlobal    // a quota of every caller, one other method
	scopeMethodQuotaPerUser   // a quota of one caller, one other method

	scopeConcurrentGlobal          // calls in flight, every caller, every tool
	scopeConcurrentPerUser         // calls in flight, one caller, every tool
	scopeToolConcurrentGlobal      // calls in flight, every caller, one tool
	scopeToolConcurrentPerUser     // calls in flight, one caller, one tool
	scopePromptConcurrentGlobal    // gets in flight, every caller, one prompt
	scopePromptConcurrentPerUser   // gets in flight, one caller, one prompt
	scopeResourceConcurrentGlobal  // reads in flight, every caller, one resource
	scopeResourceConcurrentPerUser // reads in flight, one caller, one resource
	scopeMethodConcurrentGlobal    // requests in flight, every caller, one other method
	scopeMethodConcurrentPerUser   // requests in flight, one caller, one other method
	numScopes
)

var scopeNames = [numScopes]string{
	scopeGlobal:          "global",
	scopePerUser:         "per_user",
	scopeToolGlobal:      "tool_global",
	scopeToolPerUser:     "tool_per_user",
	scopePromptGlobal:    "prompt_global",
	scopePromptPerUser:   "prompt_per_user",
	scopeResourceGlobal:  "resource_global",
	scopeResourcePerUser: "resource_per_user",
	scopeMethodGlobal:    "method_global",
	scopeMethodPerUser:   "method_per_user",

	scopeQuotaGlobal:          "quota_global",
	scopeQuotaPerUser:         "quota_per_user",
	scopeToolQuotaGlobal:      "tool_quota_global",
	scopeToolQuotaPerUser:     "tool_quota_per_user",
	scopePromptQuotaGlobal:    "prompt_quota_global",
	scopePromptQuotaPerUser:   "prompt_quota_per_user",
	scopeResourceQuotaGlobal:  "resource_quota_global",
	scopeResourceQuotaPerUser: "resource_quota_per_user",
	scopeMethodQuotaGlobal:    "method_quota_global",
	scopeMethodQuotaPerUser:   "method_quota_per_user",

	scopeConcurrentGlobal:          "concurrent_global",
	scopeConcurrentPerUser:         "concurrent_per_user",
	scopeToolConcurrentGlobal:      "tool_concurrent_global",
	scopeToolConcurrentPerUser:     "tool_concurrent_per_user",
	scopePromptConcurrentGlobal:    "prompt_concurrent_global",
	scopePromptConcurrentPerUser:   "prompt_concurrent_per_user",
	scopeResourceConcurrentGlobal:  "resource_concurrent_global",
	scopeResourceConcurrentPerUser: "resource_concurrent_per_user",
	scopeMethodConcurrentGlobal:    "method_concurrent_global",
	scopeMethodConcurrentPerUser:   "method_concurrent_per_user",
}

// isQuota reports whether the scope is a quota's.
func (s scope) isQuota() bool { return s >= scopeQuotaGlobal && s <= scopeMethodQuotaPerUser }

// isCap reports whether the scope is an in-flight cap's.
func (s scope) isCap() bool { return s >= scopeConcurrentGlobal && s < numScopes }

// entryScopes are the scopes of one kind of entry's limits: its buckets,
// quotas and caps, each global and per user.
type entryScopes struct {
	kind                      string // tool, prompt, resource, method
	global, perUser           scope
	quotaGlobal, quotaPerUser scope
	capGlobal, capPerUser     scope
}

var (
	toolScopes = entryScopes{"tool", scopeToolGlobal, scopeToolPerUser, scopeToolQuotaGlobal, scopeToolQuotaPerUser,
		scopeToolConcurrentGlobal, scopeToolConcurrentPerUser}
	promptScopes = entryScopes{"prompt", scopePromptGlobal, scopePromptPerUser, scopePromptQuotaGlobal, scopePromptQuotaPerUser,
		scopePromptConcurrentGlobal, scopePromptConcurrentPerUser}
	resourceScopes = entryScopes{"resource", scopeResourceGlobal, scopeResourcePerUser, scopeResourceQuotaGlobal, scopeResourceQuotaPerUser,
		scopeResourceConcurrentGlobal, scopeResourceConcurrentPerUser}
	methodScopes = entryScopes{"method", scopeMethodGlobal, scopeMethodPerUser, scopeMethodQuotaGlobal, scopeMethodQuotaPerUser,
		scopeMethodConcurrentGlobal, scopeMethodConcurrentPerUser}
)

func (s scope) String() string { return scopeNames[s] }

// result is how a bucket decision ended.
type result uint8

const (
	resultAllowed result = iota
	resultRejected
	// resultShadowRejected is a refusal of limits in shadow mode: counted,
	// and the call passed.
	resultShadowRejected
	numResults
)

var resultNames = [numResults]string{
	resultAllowed:        "allowed",
	resultRejected:       "rejected",
	resultShadowRejected: "shadow_rejected",
}

// storeOutcome is how a call to the bucket store ended.
type storeOutcome uint8

const (
	storeOK storeOutcome = iota
	storeError
	storeTimeout
	storeBusy        // the decision did not reach the store in time
	storeUnavailable // decided by the local fallback
	numStoreOutcomes
)

var storeOutcomeNames = [numStoreOutcomes]string{
	storeOK:          "ok",
	storeError:       "error",
	storeTimeout:     "timeout",
	storeBusy:        "busy",
	storeUnavailable: "unavailable",
}

// reason is why the filter answered a request itself.
type reason uint8

const (
	reasonParseError reason = iota
	reasonInvalidRequest
	reasonHeaderMismatch
	reasonBodyTooLarge
	reasonBodyTimeout
	reasonUnsupportedMediaType
	reasonUnauthenticated
	reasonAuthUnavailable
	reasonRateLimited
	reasonOverloaded
	reasonMethodNotAllowed
	reasonUpgrade
	reasonBodyBudget
	reasonForbidden
	reasonNotAllowed
	reasonListUnreadable
	reasonBackendCredentials
	numReasons
)

var reasonNames = [numReasons]string{ //nolint:gosec // metric label values, not credentials
	reasonParseError:           "parse_error",
	reasonInvalidRequest:       "invalid_request",
	reasonHeaderMismatch:       "header_mismatch",
	reasonBodyTooLarge:         "body_too_large",
	reasonBodyTimeout:          "body_timeout",
	reasonUnsupportedMediaType: "unsupported_media_type",
	reasonUnauthenticated:      "unauthenticated",
	reasonAuthUnavailable:      "auth_unavailable",
	reasonRateLimited:          "rate_limited",
	reasonOverloaded:           "overloaded",
	reasonMethodNotAllowed:     "method_not_allowed",
	reasonUpgrade:              "upgrade",
	reasonBodyBudget:           "body_budget",
	reasonForbidden:            "insufficient_scope",
	reasonNotAllowed:           "not_allowed",
	reasonListUnreadable:       "list_unreadable",
	reasonBackendCredentials:   "backend_credentials",
}

// metrics are the filter's collectors, shared by every server.
type metrics struct {
	decisions     *prometheus.CounterVec
	failOpen      *prometheus.CounterVec
	storeDuration *prometheus.HistogramVec
	rejected      *prometheus.CounterVec
	hidden        *prometheus.CounterVec
	shadow        *prometheus.CounterVec
	toolRequests  *prometheus.CounterVec

	mu      sync.Mutex
	servers map[serverLabels]bool // the servers that have series
}

// serverLabels are the namespace and server labels of one server's series.
type serverLabels struct{ namespace, server string }

// availability is a store that can say whether it is available, as the
// Redis store does.
type availability interface{ Available() bool }

func newMetrics(reg prometheus.Registerer, store limiter.Store) (*metrics, error) {
	m := &metrics{
		decisions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: MetricDecisions,
			Help: "Token bucket decisions for tools/call requests, one per bucket demanded from; a rejected request counts against the buckets that refused it.",
		}, []string{"namespace", "server", "scope", "result"}),
		failOpen: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: MetricFailOpen,
			Help: "Tools/call requests decided by this replica's local buckets because the shared bucket store was unavailable.",
		}, []string{"namespace", "server"}),
		storeDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    MetricStoreDuration,
			Help:    "Time the bucket store took to decide, by outcome (ok, error, timeout, busy, unavailable).",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2, 12), // 100µs to about 200ms
		}, []string{"namespace", "server", "outcome"}),
		rejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: MetricRejectedRequests,
			Help: "Requests the MCP filter answered itself instead of forwarding them, by reason.",
		}, []string{"namespace", "server", "reason"}),
		hidden: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: MetricListItemsHidden,
			Help: "Items that authorization took out of list results (tools, prompts, resources, resource templates).",
		}, []string{"namespace", "server"}),
		toolRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: MetricToolRequests,
			Help: "tools/call requests to the tools a server's policy limits by name, by outcome: allowed, rejected, shadow_rejected (passed; only shadow limits refused) or shed (no decision in time).",
		}, []string{"namespace", "server", "tool", "outcome"}),
		shadow: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: MetricShadowRefusals,
			Help: "Requests that rate limits in shadow mode would have refused; they passed.",
		}, []string{"namespace", "server"}),
	}
	collectors := []prometheus.Collector{m.decisions, m.toolRequests, m.failOpen, m.storeDuration, m.rejected, m.hidden, m.shadow}
	if a, ok := store.(availability); ok {
		collectors = append(collectors, prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: MetricStoreAvailable,
			Help: "1 while the shared bucket store is available, 0 while each replica decides with its local buckets.",
		}, func() float64 {
			if a.Available() {
				return 1
			}
			return 0
		}))
	}
	if reg != nil {
		for _, c := range collectors {
			if err := reg.Register(c); err != nil {
				return nil, fmt.Errorf("register filter metrics: %w", err)
			}
		}
	}
	return m, nil
}

// serverMetrics are one server's series, looked up once when its filter is
// built so that a request touches no label maps.
type serverMetrics struct {
	decisions [numScopes][numResults]prometheus.Counter
	// tools holds, by the name tools[] gives it, each limited tool's
	// request counts.
	tools          map[string]*[numToolOutcomes]prometheus.Counter
	failOpen       prometheus.Counter
	storeDuration  [numStoreOutcomes]prometheus.Observer
	rejected       [numReasons]prometheus.Counter
	hidden         prometheus.Counter
	shadowRefusals prometheus.Counter
}

// countTools counts a request's calls of the limited tools with outcome.
func (sm *serverMetrics) countTools(tools []string, outcome toolOutcome) {
	for _, tool := range tools {
		if c := sm.tools[tool]; c != nil {
			c[outcome].Inc()
		}
	}
}

// toolOutcome is how a tools/call request to a limited tool ended.
type toolOutcome uint8

const (
	toolAllowed toolOutcome = iota
	toolRejected
	toolShadowRejected
	toolShed
	numToolOutcomes
)

var toolOutcomeNames = [numToolOutcomes]string{
	toolAllowed: "allowed", toolRejected: "rejected", toolShadowRejected: "shadow_rejected", toolShed: "shed",
}

// forServer returns a server's series, those of the tools its policy
// limits by name included.
func (m *metrics) forServer(namespace, server string, tools []string) *serverMetrics {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.servers == nil {
		m.servers = map[serverLabels]bool{}
	}
	m.servers[serverLabels{namespace, server}] = true
	sm := &serverMetrics{
		failOpen: m.failOpen.WithLabelValues(namespace, server), hidden: m.hidden.WithLabelValues(namespace, server),
		shadowRefusals: m.shadow.WithLabelValues(namespace, server),
	}
	for s := range numScopes {
		for r := range numResults {
			sm.decisions[s][r] = m.decisions.WithLabelValues(namespace, server, scopeNames[s], resultNames[r])
		}
	}
	sm.tools = make(map[string]*[numToolOutcomes]prometheus.Counter, len(tools))
	for _, tool := range tools {
		var c [numToolOutcomes]prometheus.Counter
		for o := range numToolOutcomes {
			c[o] = m.toolRequests.WithLabelValues(namespace, server, tool, toolOutcomeNames[o])
		}
		sm.tools[tool] = &c
	}
	for o := range numStoreOutcomes {
		sm.storeDuration[o] = m.storeDuration.WithLabelValues(namespace, server, storeOutcomeNames[o])
	}
	for r := range numReasons {
		sm.rejected[r] = m.rejected.WithLabelValues(namespace, server, reasonNames[r])
	}
	return sm
}

// retain deletes the series of every server not in keep. The handles of a
// Filter built earlier for such a server stay valid but are detached: what
// its in-flight requests count is no longer exported.
func (m *metrics) retain(keep map[serverLabels]bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for s := range m.servers {
		if keep[s] {
			continue
		}
		labels := prometheus.Labels{"namespace": s.namespace, "server": s.server}
		m.decisions.DeletePartialMatch(labels)
		m.toolRequests.DeletePartialMatch(labels)
		m.failOpen.DeletePartialMatch(labels)
		m.storeDuration.DeletePartialMatch(labels)
		m.rejected.DeletePartialMatch(labels)
		m.hidden.DeletePartialMatch(labels)
		m.shadow.DeletePartialMatch(labels)
		delete(m.servers, s)
	}
}
