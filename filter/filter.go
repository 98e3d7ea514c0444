// Package filter is toolgate's MCP policy filter: an HTTP middleware that
// reads each JSON-RPC request, names its caller from a verified bearer token,
// and allows or refuses its tool calls with token buckets.
package filter

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"maps"
	"mime"
	"net/http"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/toolgate/toolgate/filter/authz"
	"github.com/toolgate/toolgate/filter/limiter"
)

// Filter enforces one MCP server's Policy. It is immutable; a new
// configuration builds a new Filter from the same Shared.
type Filter struct {
	shared  *Shared
	server  string // "namespace/name"
	auth    *authenticator
	global  *limiter.Limit
	perUser *limiter.Limit
	// globalQuota and perUserQuota are the server's quotas, their windows
	// in timeZone.
	globalQuota, perUserQuota *Quota
	timeZone                  *time.Location
	// globalMaxConcurrent and perUserMaxConcurrent cap the server's calls
	// in flight (0: none), each slot leased for lease; hasCaps says the
	// server or a tool has a cap.
	globalMaxConcurrent, perUserMaxConcurrent int64
	capShadow                                 bool
	lease                                     time.Duration
	hasCaps                                   bool
	tools                                     map[string]*toolPolicy
	prompts                                   map[string]*toolPolicy
	// methods are the limits of other requests, by method.
	methods map[string]*toolPolicy
	// resources are the exact URIs; resourceTemplates the templates, most
	// specific (longest) first.
	resources         map[string]*toolPolicy
	resourceTemplates []resourceTemplate
	metrics           *serverMetrics
	// forwardAuthorization keeps the checked Authorization header on the
	// way to the backend.
	forwardAuthorization bool
	// resourceURL is the policy's resource identifier; "" derives it from
	// each request.
	resourceURL string
	scopes      []string
	// authz decides which tools a caller may call; nil lets everyone call
	// every tool.
	authz *authz.Authorizer
	// auditArguments writes arguments' values into the audit trail.
	auditArguments bool
	// backend, when set, puts the gateway's credential on requests to the
	// backend (BackendAuth).
	backend *backendCredentials
	// shadow decides and counts the limits but never refuses.
	shadow bool
}

// toolPolicy is the limits of one tool, prompt or resource, with its
// bucket name kept as the policy spells it so bucket ids never hold a
// string from a request.
type toolPolicy struct {
	// bucket names the entry's buckets: the tool's name; for a prompt or
	// a resource, its name or URI after a prefix that no tool name can
	// take (the filter refuses control characters in names).
	bucket  string
	global  *limiter.Limit
	perUser *limiter.Limit
	cost    int64
	// globalQuota and perUserQuota are a tool's quotas.
	globalQuota, perUserQuota *Quota
	// globalMaxConcurrent and perUserMaxConcurrent are a tool's caps;
	// capShadow makes them shadow ones.
	globalMaxConcurrent, perUserMaxConcurrent int64
	capShadow                                 bool
}

// Bucket name prefixes of prompts' and resources' buckets.
const (
	promptBucketPrefix   = "\x00prompt:"
	resourceBucketPrefix = "\x00resource:"
	methodBucketPrefix   = "\x00method:"
)

// entryOf names the entry a bucket name stands for: its kind (tool,
// prompt, resource or method) and its name as the policy spells it.
func entryOf(bucket string) (kind, name string) {
	for _, e := range [...]struct{ prefix, kind string }{
		{promptBucketPrefix, "prompt"}, {resourceBucketPrefix, "resource"}, {methodBucketPrefix, "method"},
	} {
		if name, ok := strings.CutPrefix(bucket, e.prefix); ok {
			return e.kind, name
		}
	}
	return "tool", bucket
}

func newToolPolicy(bucket string, l ToolLimits) *toolPolicy {
	return &toolPolicy{bucket: bucket, global: clone(l.Global), perUser: clone(l.PerUser), cost: l.cost(),
		globalQuota: cloneQuota(l.GlobalQuota), perUserQuota: cloneQuota(l.PerUserQuota),
		globalMaxConcurrent: l.GlobalMaxConcurrent, perUserMaxConcurrent: l.PerUserMaxConcurrent, capShadow: l.MaxConcurrentShadow}
}

// resourceTemplate is a resources[] entry with expressions.
type resourceTemplate struct {
	template string
	match    *regexp.Regexp
	limits   *toolPolicy
}

// resourceLimits returns the limits of a resource URI: its exact entry, or
// the most specific template that matches it; nil when none.
func (f *Filter) resourceLimits(uri string) *toolPolicy {
	if t := f.resources[uri]; t != nil {
		return t
	}
	for _, rt := range f.resourceTemplates {
		if rt.match.MatchString(uri) {
			return rt.limits
		}
	}
	return nil
}

// New builds the filter of one MCP server. It refuses a policy it cannot
// enforce, saying what to change.
func New(policy Policy, shared *Shared) (*Filter, error) {
	if shared == nil {
		return nil, errors.New("filter: New needs a Shared (see NewShared)")
	}
	namespace, name, err := policy.validate()
	if err != nil {
		return nil, fmt.Errorf("filter: %w", err)
	}
	f := &Filter{
		shared:  shared,
		server:  policy.Server,
		global:  clone(policy.Global),
		perUser: clone(policy.PerUser),
		tools:   make(map[string]*toolPolicy, len(policy.Tools)),
		metrics: shared.metrics.forServer(namespace, name, slices.Sorted(maps.Keys(policy.Tools))),

		forwardAuthorization: policy.ForwardAuthorization,
		resourceURL:          policy.ResourceURL,
		scopes:               slices.Clone(policy.Scopes),
		auditArguments:       policy.AuditArguments,
		globalQuota:          cloneQuota(policy.GlobalQuota),
		perUserQuota:         cloneQuota(policy.PerUserQuota),
		globalMaxConcurrent:  policy.GlobalMaxConcurrent,
		perUserMaxConcurrent: policy.PerUserMaxConcurrent,
		capShadow:            policy.MaxConcurrentShadow,
		lease:                policy.concurrencyLease(),
		shadow:               policy.Shadow,
	}
	if policy.Auth != nil {
		f.auth = newAuthenticator(shared, *policy.Auth)
	}
	if policy.BackendAuth != nil {
		f.backend = newBackendCredentials(policy.BackendAuth, shared.backendTokens)
	}
	if f.timeZone, err = time.LoadLocation(policy.TimeZone); err != nil {
		return nil, fmt.Errorf("filter: timeZone: %w", err) // validate checked it already
	}
	if policy.Authorization != nil {
		if f.authz, err = authz.Compile(*policy.Authorization); err != nil {
			return nil, fmt.Errorf("filter: %w", err) // validate compiled it already
		}
	}
	f.hasCaps = f.globalMaxConcurrent > 0 || f.perUserMaxConcurrent > 0
	for tool, limits := range policy.Tools {
		f.tools[tool] = newToolPolicy(tool, limits)
		f.hasCaps = f.hasCaps || limits.GlobalMaxConcurrent > 0 || limits.PerUserMaxConcurrent > 0
	}
	if len(policy.Prompts) > 0 {
		f.prompts = make(map[string]*toolPolicy, len(policy.Prompts))
		for name, limits := range policy.Prompts {
			f.prompts[name] = newToolPolicy(promptBucketPrefix+name, limits)
			f.hasCaps = f.hasCaps || limits.GlobalMaxConcurrent > 0 || limits.PerUserMaxConcurrent > 0
		}
	}
	if len(policy.Methods) > 0 {
		f.methods = make(map[string]*toolPolicy, len(policy.Methods))
		for method, limits := range policy.Methods {
			f.methods[method] = newToolPolicy(methodBucketPrefix+method, limits)
			f.hasCaps = f.hasCaps || limits.GlobalMaxConcurrent > 0 || limits.PerUserMaxConcurrent > 0
		}
	}
	for uri, limits := range policy.Resources {
		tp := newToolPolicy(resourceBucketPrefix+uri, limits)
		f.hasCaps = f.hasCaps || limits.GlobalMaxConcurrent > 0 || limits.PerUserMaxConcurrent > 0
		if !strings.ContainsAny(uri, "{}") {
			if f.resources == nil {
				f.resources = map[string]*toolPolicy{}
			}
			f.resources[uri] = tp
			continue
		}
		re, err := compileURITemplate(uri)
		if err != nil {
			return nil, fmt.Errorf("filter: resources[%s]: %w", uri, err) // validate checked it already
		}
		f.resourceTemplates = append(f.resourceTemplates, resourceTemplate{uri, re, tp})
	}
	slices.SortFunc(f.resourceTemplates, func(a, b resourceTemplate) int {
		if c := len(b.template) - len(a.template); c != 0 {
			return c
		}
		return strings.Compare(a.template, b.template)
	})
	return f, nil
}

func clone(l *limiter.Limit) *limiter.Limit {
	if l == nil {
		return nil
	}
	c := *l
	return &c
}

// Wrap returns next behind the filter. Only MCP's methods pass: POST,
// inspected; GET and DELETE, which carry no body; and a browser's CORS
// preflight (OPTIONS with Access-Control-Request-Method), which passes
// without a token. Anything else gets 405. Every request but a preflight
// first needs a valid bearer token when the policy has auth (401 otherwise).
// A POST must then carry a JSON body (415 otherwise; 413 past the size
// bound; 408 when it does not arrive within the body timeout) holding one
// JSON-RPC message or a batch (400 otherwise, past the batch bound, and when
// Mcp-Method or Mcp-Name disagree with it); its tools/call requests take a
// token from each of the policy's buckets, all or none (429 when one is
// empty; 503 when the store cannot decide in time). A request that passes
// reaches next with its body unchanged, byte for byte, and without the
// Authorization header the filter checked unless the policy forwards it;
// the others are answered here with a JSON-RPC error.
func (f *Filter) Wrap(next http.Handler) http.Handler {
	return &handler{filter: f, next: next}
}

type handler struct {
	filter *Filter
	next   http.Handler
}

// scratch is per-request working memory, reused across requests.
type scratch struct {
	messages []message
	demands  []limiter.Demand
	scopes   []scope
	// held are the cap demands of an allowed request, and heldIn the
	// store that holds their slots, to give back when it is answered.
	held   []limiter.Demand
	heldIn limiter.Store
}

var scratchPool = sync.Pool{New: func() any { return new(scratch) }}

// allowedMethods is the Allow field of a 405.
const allowedMethods = "GET, POST, DELETE, OPTIONS"

func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f := h.filter
	if t := f.startTrail(w, r); t != nil {
		w = t
		defer t.finishAfterResponse()
	}
	if wantsUpgrade(r.Header) {
		// An upgraded connection carries bytes the filter never reads: MCP's
		// transports never upgrade.
		f.refuse(w, http.StatusBadRequest, reasonUpgrade, nil, CodeInvalidRequest,
			"Invalid Request: an MCP endpoint does not upgrade connections")
		return
	}
	// What the backend will get is what the filter inspects: the headers
	// that Connection names stop at this hop, so they go before anything
	// reads them.
	removeConnectionHeaders(r.Header)
	switch r.Method {
	case http.MethodPost, http.MethodGet, http.MethodDelete:
	case http.MethodOptions:
		if IsCORSPreflight(r) {
			// Browsers send preflights without credentials and act on
			// nothing but the answer's CORS headers; the backend gives
			// those, unless the route's CORS filter answered before the
			// request got here. A token sent anyway is not the backend's.
			if f.auth != nil && !f.forwardAuthorization {
				r.Header.Del("Authorization")
			}
			h.next.ServeHTTP(w, r)
			return
		}
		fallthrough
	default:
		w.Header().Set("Allow", allowedMethods)
		f.refuse(w, http.StatusMethodNotAllowed, reasonMethodNotAllowed, nil, CodeInvalidRequest,
			"Method Not Allowed: an MCP endpoint takes POST, GET and DELETE")
		return
	}
	var who caller
	next := h.next
	if f.backend != nil {
		// The caller's own credential stays here (it is removed below);
		// the backend gets the gateway's, once the request has passed.
		subject := ""
		if f.backend.exchange {
			subject = bearerToken(r)
		}
		next = f.withBackendCredentials(h.next, subject)
	}
	if f.auth != nil {
		c, failure := f.auth.identify(r.Context(), r, f.resourceURL)
		if failure != nil {
			// The challenge may point at the URL the client used: it only
			// says where the metadata is, and accepts nothing.
			f.refuseIdentity(w, failure, f.resource(r))
			return
		}
		who = c
		if t := trailOf(w); t != nil {
			t.user = who.user
		}
		if missing := authz.MissingScopes(f.scopes, who.claims); len(missing) > 0 {
			// spec.auth.scopes are required of every request.
			f.refuseScopes(w, r, missing, nil)
			return
		}
		// The gateway binds MCP sessions to their user (Caller).
		r = r.WithContext(WithCaller(r.Context(), who.user))
		if !f.forwardAuthorization {
			// The token was issued to the gateway (the MCP authorization
			// spec forbids passing it through); the backend gets no
			// credential of the caller's.
			r.Header.Del("Authorization")
		}
	}
	if f.backend != nil {
		r.Header.Del("Authorization") // even an unverified caller's
	}
	if r.Method != http.MethodPost {
		if hasBody(r) {
			// A lenient backend could read a tool call from it that the
			// filter never saw.
			f.refuse(w, http.StatusBadRequest, reasonInvalidRequest, nil, CodeInvalidRequest,
				"Invalid Request: "+r.Method+" carries no body in MCP")
			return
		}
		// The GET event stream and DELETE carry no JSON-RPC to inspect.
		if f.authz != nil && r.Method == http.MethodGet {
			// A resumed stream replays responses, and the legacy SSE
			// transport sends them all here: lists among them.
			f.serveFilteringLists(w, r, who, next)
			return
		}
		next.ServeHTTP(w, r)
		return
	}
	if problem := unreadableBody(r.Header); problem != "" {
		// An MCP message is always JSON in UTF-8, sent as it is; forwarding
		// anything else would let a lenient backend read a tool call the
		// filter never saw.
		f.refuse(w, http.StatusUnsupportedMediaType, reasonUnsupportedMediaType, nil, CodeInvalidRequest,
			"Invalid Request: "+problem)
		return
	}
	if r.ContentLength > f.shared.maxBodyBytes {
		f.refuseBody(w, r, errBodyTooLarge)
		return
	}
	// The reader that hands the body on holds its reservation: one
	// allocation for both.
	br := new(bodyReader)
	if !f.shared.reserveBody(r, &br.reservation) {
		// Before a byte is read: a client cannot make the proxy hold more
		// body bytes than its budget, however many it sends at once.
		w.Header().Set(headerRetryAfter, "1")
		f.refuse(w, http.StatusServiceUnavailable, reasonBodyBudget, nil, CodeInternalError,
			"Service Unavailable: too many request bodies are being received; retry shortly")
		return
	}
	defer br.reservation.release()
	body, err := f.shared.readBody(w, r)
	if err != nil {
		f.refuseBody(w, r, err)
		return
	}

	sc := scratchPool.Get().(*scratch)
	in, rerr := inspect(body, sc.messages[:0], f.shared.maxBatch)
	allowed := false
	switch {
	case rerr.code == CodeParseError:
		f.refuse(w, http.StatusBadRequest, reasonParseError, nil, rerr.code, rerr.message)
	case rerr.failed():
		f.refuse(w, http.StatusBadRequest, reasonInvalidRequest, nil, rerr.code, rerr.message)
	default:
		if t := trailOf(w); t != nil {
			t.capture(in, f.auditArguments)
		}
		allowed = f.check(w, r, in, who, sc)
	}
	filterLists := allowed && f.authz != nil && hasListRequest(in)
	clear(in.messages) // drop the references into the body
	if cap(in.messages) <= f.shared.maxBatch {
		sc.messages = in.messages[:0]
	} else {
		sc.messages = nil
	}
	var held []limiter.Demand
	heldIn := sc.heldIn
	if len(sc.held) > 0 {
		held = slices.Clone(sc.held)
		clear(sc.held)
		sc.held, sc.heldIn = sc.held[:0], nil
	}
	scratchPool.Put(sc)
	if !allowed {
		return
	}
	if held != nil {
		// The slots are the call's until its answer ends: a JSON body
		// written, an event stream closed, the client gone, the backend
		// failed.
		defer f.release(r, heldIn, held)
	}

	br.Reset(body)
	r.Body = br
	r.ContentLength = int64(len(body))
	r.TransferEncoding = nil
	if filterLists {
		f.serveFilteringLists(w, r, who, next)
		return
	}
	next.ServeHTTP(w, r)
}

// serveFilteringLists serves a request whose response may carry list
// results, filtering them for the caller (lists.go).
func (f *Filter) serveFilteringLists(w http.ResponseWriter, r *http.Request, who caller, next http.Handler) {
	// The filter reads the response: it must not come compressed.
	r.Header.Del("Accept-Encoding")
	lw := &listWriter{ResponseWriter: w, lf: listFilter{f: f, who: who}}
	next.ServeHTTP(lw, r)
	lw.Finish()
}

// callerKey is the context key of the verified caller.
type callerKey struct{}

// WithCaller returns ctx carrying user as the verified caller of its
// request, as the filter passes it on.
func WithCaller(ctx context.Context, user string) context.Context {
	return context.WithValue(ctx, callerKey{}, user)
}

// Caller returns the user the filter verified for the request of ctx: the
// verified token's user claim, and true; "", false when no filter with
// authentication passed it on.
func Caller(ctx context.Context) (string, bool) {
	user, ok := ctx.Value(callerKey{}).(string)
	return user, ok
}

// refuseBody answers a request whose body could not be read.
func (f *Filter) refuseBody(w http.ResponseWriter, r *http.Request, err error) {
	limit := f.shared.maxBodyBytes
	if maxBytes, ok := errors.AsType[*http.MaxBytesError](err); ok {
		limit, err = maxBytes.Limit, errBodyTooLarge // a bound set before the filter
	}
	switch {
	case errors.Is(err, errBodyTooLarge):
		f.refuse(w, http.StatusRequestEntityTooLarge, reasonBodyTooLarge, nil, CodeInvalidRequest,
			fmt.Sprintf("Invalid Request: the body exceeds %d bytes", limit))
	case errors.Is(err, os.ErrDeadlineExceeded):
		// The rest of the body may still come: the connection cannot carry
		// another request.
		w.Header().Set("Connection", "close")
		f.refuse(w, http.StatusRequestTimeout, reasonBodyTimeout, nil, CodeInvalidRequest,
			fmt.Sprintf("Request Timeout: the body did not arrive within %s", f.shared.bodyTimeout))
	case r.Context().Err() != nil:
		// The client went away: there is no one to answer.
	default:
		f.refuse(w, http.StatusBadRequest, reasonParseError, nil, CodeParseError, "Parse error: the body could not be read")
	}
}

// check applies the headers rule and the buckets to a well-formed request.
// It answers the request itself and returns false when it may not pass.
func (f *Filter) check(w http.ResponseWriter, r *http.Request, in inspection, who caller, sc *scratch) bool {
	if mismatch, id := headersDisagree(r.Header, in); mismatch != "" {
		f.refuse(w, http.StatusBadRequest, reasonHeaderMismatch, id, CodeHeaderMismatch, "Header mismatch: "+mismatch)
		return false
	}
	if f.authz != nil && !f.authorize(w, r, in, who) {
		return false
	}
	user := who.user
	demands, scopes := sc.demands[:0], sc.scopes[:0]
	slot := ""
	if f.hasCaps {
		slot = slotName()
	}
	var tools []string // the calls' tools that tools[] names
	for i := range in.messages {
		m := &in.messages[i]
		if !m.hasMethod {
			continue
		}
		var entry *toolPolicy
		var kind entryScopes
		switch string(m.method) {
		case methodToolsCall:
			entry, kind = f.tools[string(m.name)], toolScopes
			cost := int64(1)
			if entry != nil {
				cost = entry.cost
				tools = append(tools, string(m.name))
			}
			if f.global != nil {
				demands, scopes = demand(demands, scopes, scopeGlobal, limiter.BucketID{Server: f.server}, *f.global, cost)
			}
			if f.perUser != nil {
				demands, scopes = demand(demands, scopes, scopePerUser, limiter.BucketID{Server: f.server, User: user}, *f.perUser, cost)
			}
			demands, scopes = f.quotaDemands(demands, scopes, "", cost, user, f.globalQuota, f.perUserQuota, scopeQuotaGlobal, scopeQuotaPerUser)
			demands, scopes = f.capDemands(demands, scopes, "", slot, user, f.globalMaxConcurrent, f.perUserMaxConcurrent, f.capShadow, scopeConcurrentGlobal, scopeConcurrentPerUser)
		case methodPromptsGet:
			if m.id == nil || f.prompts == nil {
				continue // notifications are never limited
			}
			entry, kind = f.prompts[string(m.name)], promptScopes
		case methodResourcesRead:
			if m.id == nil || f.resources == nil && f.resourceTemplates == nil {
				continue
			}
			entry, kind = f.resourceLimits(string(m.name)), resourceScopes
		default:
			if m.id == nil || f.methods == nil {
				continue
			}
			entry, kind = f.methods[string(m.method)], methodScopes
		}
		if entry == nil {
			continue
		}
		if entry.global != nil {
			demands, scopes = demand(demands, scopes, kind.global, limiter.BucketID{Server: f.server, Tool: entry.bucket}, *entry.global, entry.cost)
		}
		if entry.perUser != nil {
			demands, scopes = demand(demands, scopes, kind.perUser, limiter.BucketID{Server: f.server, Tool: entry.bucket, User: user}, *entry.perUser, entry.cost)
		}
		demands, scopes = f.quotaDemands(demands, scopes, entry.bucket, entry.cost, user, entry.globalQuota, entry.perUserQuota, kind.quotaGlobal, kind.quotaPerUser)
		demands, scopes = f.capDemands(demands, scopes, entry.bucket, slot, user, entry.globalMaxConcurrent, entry.perUserMaxConcurrent, entry.capShadow, kind.capGlobal, kind.capPerUser)
	}
	if f.shadow {
		for i := range demands {
			demands[i].Limit.Shadow = true
		}
	}
	defer func() {
		clear(demands) // drop the strings
		sc.demands, sc.scopes = demands[:0], scopes[:0]
	}()
	if len(demands) == 0 {
		return true
	}
	allowed, store, shadowRefused := f.decide(w, r, in, demands, scopes, tools)
	if allowed && store != nil {
		for _, d := range demands {
			// Of a request only shadow limits refused, no shadow slot
			// was taken.
			if d.Slot != "" && !(shadowRefused && d.Limit.Shadow) {
				sc.held = append(sc.held, d)
			}
		}
		sc.heldIn = store
	}
	return allowed
}

// release gives back the slots of an answered call, whether or not its
// client is still there; what cannot be given back is freed by its lease.
// The stores bound what they wait for themselves (the Redis store waits
// only after it was closed, for at most its round trip's timeout), so
// that a release costs no timer of its own.
func (f *Filter) release(r *http.Request, store limiter.Store, held []limiter.Demand) {
	rel, ok := store.(limiter.Releaser)
	if !ok {
		return
	}
	if err := rel.Release(context.WithoutCancel(r.Context()), held); err != nil {
		f.shared.logger.Debug("in-flight slots not given back: their lease frees them", "server", f.server, "error", err)
	}
}

// slots counts the slots named in this process.
var slots atomic.Uint64

// slotName names the slots one request holds: unique in the process,
// which is all a store needs (slots are held and given back by the
// replica that took them).
func slotName() string {
	return strconv.FormatUint(slots.Add(1), 36)
}

// authorize applies the authorization rules to every tools/call,
// prompts/get, resources/read and resources/subscribe of the request,
// before any token is taken: a batch with one refused is refused whole. A
// request no rule allows gets the answer a server gives for a tool, prompt
// or resource it does not have; one that a rule would allow with more
// scopes gets 403 insufficient_scope, for the client to step up.
func (f *Filter) authorize(w http.ResponseWriter, r *http.Request, in inspection, who caller) bool {
	for i := range in.messages {
		m := &in.messages[i]
		if !m.hasMethod || !authz.Governs(string(m.method)) {
			continue
		}
		// Arguments that are not an object leave the variable empty; the
		// backend refuses such a call itself.
		d := f.authz.DecideCall(who.decisions, who.user, who.claims, m.method, m.name, m.arguments)
		for _, err := range d.Errors {
			f.shared.logger.Warn("an authorization condition could not be evaluated; it counts as false",
				"server", f.server, "user", who.user, "name", string(m.name), "error", err)
		}
		t := trailOf(w)
		if d.Allowed {
			if t != nil {
				t.allowedBy(in, i, d.Rule)
			}
			continue
		}
		if t != nil {
			t.refusedAt(in, i)
		}
		status := http.StatusOK
		if legacySSEMessage(r) {
			// The legacy transport's client reads answers from its event
			// stream only and takes a 2xx as accepted: an HTTP error is
			// what it can see.
			status = http.StatusForbidden
		}
		switch {
		case len(d.MissingScopes) > 0:
			f.refuseScopes(w, r, d.MissingScopes, m.id)
		case string(m.method) == methodPromptsGet:
			f.refuse(w, status, reasonNotAllowed, m.id, CodeInvalidParams, "Unknown prompt: "+string(m.name))
		case string(m.method) == methodToolsCall:
			f.refuse(w, status, reasonNotAllowed, m.id, CodeInvalidParams, "Unknown tool: "+string(m.name))
		default:
			f.refuseResource(w, r, m, status)
		}
		return false
	}
	return true
}

// legacySSEMessage reports whether r is a message POSTed on the legacy
// HTTP+SSE transport (2024-11-05), which names its session in the query.
func legacySSEMessage(r *http.Request) bool {
	if !strings.Contains(r.URL.RawQuery, "ession") {
		return false
	}
	for name := range r.URL.Query() {
		if IsLegacySessionParam(name) {
			return true
		}
	}
	return false
}

// IsLegacySessionParam reports whether a query parameter name is the one
// by which the legacy HTTP+SSE transport names its session, as MCP SDKs
// spell it.
func IsLegacySessionParam(name string) bool {
	switch name {
	case "sessionId", "sessionid", "session_id":
		return true
	}
	return false
}

// demand adds a call's cost to the bucket id, merging the demands of a
// batch on the same bucket so that one Take decides them all together.
func demand(demands []limiter.Demand, scopes []scope, s scope, id limiter.BucketID, limit limiter.Limit, cost int64) ([]limiter.Demand, []scope) {
	return addDemand(demands, scopes, s, limiter.Demand{Bucket: id, Limit: limit, Tokens: cost})
}

// quotaDemands adds the demands of a server's quotas (entry "") or an
// entry's, for one call of cost tokens.
func (f *Filter) quotaDemands(demands []limiter.Demand, scopes []scope, tool string, cost int64, user string, global, perUser *Quota, globalScope, perUserScope scope) ([]limiter.Demand, []scope) {
	if global == nil && perUser == nil {
		return demands, scopes
	}
	now := f.shared.now()
	if global != nil {
		demands, scopes = addDemand(demands, scopes, globalScope, quotaDemand(limiter.BucketID{Server: f.server, Tool: tool}, global, cost, now, f.timeZone))
	}
	if perUser != nil {
		demands, scopes = addDemand(demands, scopes, perUserScope, quotaDemand(limiter.BucketID{Server: f.server, Tool: tool, User: user}, perUser, cost, now, f.timeZone))
	}
	return demands, scopes
}

// capDemands adds a slot of the server's caps (tool "") or a tool's, for
// one call.
func (f *Filter) capDemands(demands []limiter.Demand, scopes []scope, tool, slot, user string, global, perUser int64, shadow bool, globalScope, perUserScope scope) ([]limiter.Demand, []scope) {
	if global > 0 {
		demands, scopes = addDemand(demands, scopes, globalScope, limiter.Demand{
			Bucket: limiter.BucketID{Server: f.server, Tool: tool}, Limit: limiter.Limit{MaxTokens: global, RefillPeriod: f.lease, Shadow: shadow}, Tokens: 1, Slot: slot})
	}
	if perUser > 0 {
		demands, scopes = addDemand(demands, scopes, perUserScope, limiter.Demand{
			Bucket: limiter.BucketID{Server: f.server, Tool: tool, User: user}, Limit: limiter.Limit{MaxTokens: perUser, RefillPeriod: f.lease, Shadow: shadow}, Tokens: 1, Slot: slot})
	}
	return demands, scopes
}

// addDemand adds d, merged with a demand on the same bucket (or the same
// quota's window).
func addDemand(demands []limiter.Demand, scopes []scope, s scope, d limiter.Demand) ([]limiter.Demand, []scope) {
	for i := range demands {
		if demands[i].Bucket == d.Bucket && demands[i].Window == d.Window && demands[i].Slot == d.Slot {
			demands[i].Tokens += d.Tokens
			return demands, scopes
		}
	}
	return append(demands, d), append(scopes, s)
}

// decide takes the demanded tokens, all or none. While the shared store is
// unavailable the replica's local buckets decide, with the same limits. A
// decision the store cannot make in time refuses the request with 503: a
// caller's own load never lets him through.
func (f *Filter) decide(w http.ResponseWriter, r *http.Request, in inspection, demands []limiter.Demand, scopes []scope, tools []string) (allowed bool, store limiter.Store, shadowRefused bool) {
	ctx, cancel := context.WithTimeout(r.Context(), f.shared.storeTimeout)
	start := time.Now()
	store = f.shared.store
	decision, err := store.Take(ctx, demands)
	m := f.metrics
	if errors.Is(err, limiter.ErrUnavailable) {
		m.storeDuration[storeUnavailable].Observe(time.Since(start).Seconds())
		m.failOpen.Inc()
		if t := trailOf(w); t != nil {
			t.degraded = true
		}
		store = f.shared.fallback
		decision, err = store.Take(ctx, demands)
	} else {
		outcome := storeOK
		switch {
		case errors.Is(err, limiter.ErrBusy):
			outcome = storeBusy
		case errors.Is(err, context.DeadlineExceeded):
			outcome = storeTimeout
		case err != nil:
			outcome = storeError
		}
		m.storeDuration[outcome].Observe(time.Since(start).Seconds())
	}
	cancel()
	if err == nil && len(decision.Buckets) != len(demands) {
		err = fmt.Errorf("the store answered %d bucket states for %d demands", len(decision.Buckets), len(demands))
	}
	if err != nil {
		if r.Context().Err() != nil {
			return false, nil, false // the client went away; there is no one to answer
		}
		if allShadow(demands) {
			// Limits in shadow mode never refuse: not for want of a
			// decision either.
			f.shared.logger.Debug("rate-limit decision not made in time; shadow limits let the request pass", "server", f.server, "error", err)
			m.countTools(tools, toolAllowed)
			return true, nil, false
		}
		m.countTools(tools, toolShed)
		f.shared.logger.Debug("rate-limit decision not made in time; the request is refused", "server", f.server, "error", err)
		w.Header().Set(headerRetryAfter, "1")
		f.refuse(w, http.StatusServiceUnavailable, reasonOverloaded, firstID(in), CodeInternalError,
			"Service Unavailable: the rate limit could not be checked in time; retry shortly")
		return false, nil, false
	}

	if decision.Allowed && !decision.ShadowRefused {
		for _, s := range scopes {
			m.decisions[s][resultAllowed].Inc()
		}
		m.countTools(tools, toolAllowed)
		setRateLimitFields(w.Header(), demands, scopes, decision.Buckets, mostConstrained(decision.Buckets))
		return true, store, false
	}
	// Refused, by enforced limits, or only by shadow ones (Allowed). Each
	// refusing limit is counted; the one named is, of the refusers of the
	// decisive kind, the slowest to allow.
	decisiveShadow := decision.Allowed
	refusing := -1
	for i, b := range decision.Buckets {
		shadow := demands[i].Limit.Shadow
		switch {
		case b.Allowed && decision.Allowed && !shadow:
			m.decisions[scopes[i]][resultAllowed].Inc() // taken
		case b.Allowed:
			// Nothing taken: as if enforced, the request is refused.
		case shadow:
			m.decisions[scopes[i]][resultShadowRejected].Inc()
		default:
			m.decisions[scopes[i]][resultRejected].Inc()
		}
		if b.Allowed || shadow != decisiveShadow {
			continue
		}
		if refusing < 0 || b.RetryAfter > decision.Buckets[refusing].RetryAfter {
			refusing = i
		}
	}
	if refusing < 0 {
		refusing = mostConstrained(decision.Buckets)
	}
	t := trailOf(w)
	if t != nil {
		t.bucket = bucketName(scopes[refusing], demands[refusing].Bucket.Tool)
	}
	setRateLimitFields(w.Header(), demands, scopes, decision.Buckets, refusing)
	if decision.Allowed {
		// Only shadow limits would have refused: counted, and the call
		// passes; what its enforced limits took is held.
		m.shadowRefusals.Inc()
		m.countTools(tools, toolShadowRejected)
		if t != nil {
			t.shadowRefused = true
		}
		return true, store, true
	}
	m.rejected[reasonRateLimited].Inc()
	m.countTools(tools, toolRejected)
	noteRefusal(w, reasonRateLimited)
	writeRateLimited(w, r, in, decision.RetryAfter, limitObject(scopes[refusing], demands[refusing].Bucket.Tool))
	return false, nil, false
}

// allShadow reports whether every demand is a shadow limit's.
func allShadow(demands []limiter.Demand) bool {
	for _, d := range demands {
		if !d.Limit.Shadow {
			return false
		}
	}
	return true
}

// firstID is the id to answer a request with when one error answers it
// all: the message's own id, or null for a batch.
func firstID(in inspection) []byte {
	if in.batch {
		return nil
	}
	return in.messages[0].id
}

// mostConstrained returns the bucket with the fewest tokens left, the one
// slowest to refill among equals.
func mostConstrained(buckets []limiter.BucketState) int {
	best := 0
	for i, b := range buckets[1:] {
		if c := buckets[best]; b.Remaining < c.Remaining || b.Remaining == c.Remaining && b.ResetAfter > c.ResetAfter {
			best = i + 1
		}
	}
	return best
}

// headersDisagree checks the Mcp-Method and Mcp-Name headers of the
// stateless protocol against the body, which alone decides. It returns why
// they disagree and the id to answer with, or "" when they agree or are
// absent.
func headersDisagree(h http.Header, in inspection) (string, []byte) {
	methods, names := h["Mcp-Method"], h["Mcp-Name"]
	if len(methods) == 0 && len(names) == 0 {
		return "", nil
	}
	if len(methods) > 1 || len(names) > 1 {
		return "Mcp-Method and Mcp-Name may appear once each", nil
	}
	if in.batch {
		return "Mcp-Method and Mcp-Name describe one request, not a batch", nil
	}
	m := &in.messages[0]
	if !m.hasMethod {
		return "Mcp-Method and Mcp-Name describe a request, not a response", m.id
	}
	if len(methods) == 1 && methods[0] != string(m.method) {
		return "the Mcp-Method header does not match the method in the body", m.id
	}
	if len(names) == 1 && m.name != nil && !headerNameMatches(names[0], m.name) {
		// m.name is params.name of tools/call and prompts/get, params.uri
		// of resources/read and resources/subscribe.
		return "the Mcp-Name header does not match the name (or uri) in the body", m.id
	}
	return "", nil
}

// headerNameMatches compares an Mcp-Name header with a name, decoding the
// header when SEP-2243's =?base64?...?= form carries it.
func headerNameMatches(header string, name []byte) bool {
	if header == string(name) {
		return true
	}
	encoded, ok := strings.CutPrefix(header, "=?base64?")
	if !ok {
		return false
	}
	encoded, ok = strings.CutSuffix(encoded, "?=")
	if !ok {
		return false
	}
	decoded, err := base64.StdEncoding.DecodeString(encoded)
	return err == nil && bytes.Equal(decoded, name)
}

// IsCORSPreflight reports whether r is a browser's CORS preflight: an
// OPTIONS request with Origin and Access-Control-Request-Method, and no
// body. The filter lets such requests pass without a token; the gateway's
// CORS filter, which runs before it, answers the same requests itself.
func IsCORSPreflight(r *http.Request) bool {
	return r.Method == http.MethodOptions && r.Header.Get("Origin") != "" &&
		r.Header.Get("Access-Control-Request-Method") != "" && !hasBody(r)
}

// unreadableBody says why a POST's body is not one the filter reads as the
// backend would, "" when it is: JSON (application/json, whatever its case)
// in UTF-8 (RFC 8259 section 8.1: no other charset), with no
// Content-Encoding but identity. The filter decodes neither charsets nor
// compression, and a body it checked as one thing must not reach the
// backend labelled as another.
func unreadableBody(h http.Header) string {
	if types := h["Content-Type"]; len(types) == 1 && types[0] == "application/json" && len(h["Content-Encoding"]) == 0 {
		return "" // what MCP clients send: nothing to parse
	}
	if c := codingOf(h); c != "" {
		return fmt.Sprintf("Content-Encoding %q is not accepted: send the body uncompressed", c)
	}
	types := h.Values("Content-Type")
	if len(types) != 1 {
		return "Content-Type must be application/json, once"
	}
	mediaType, params, err := mime.ParseMediaType(types[0])
	if err != nil || mediaType != "application/json" {
		return "Content-Type must be application/json"
	}
	for name, value := range params {
		if name == "charset" && !strings.EqualFold(value, "utf-8") {
			return fmt.Sprintf("charset %q is not accepted: MCP messages are UTF-8", value)
		}
	}
	return ""
}

// wantsUpgrade reports whether a request asks to switch protocols
// (RFC 9110 section 7.8).
func wantsUpgrade(h http.Header) bool {
	if len(h.Values("Upgrade")) > 0 {
		return true
	}
	for _, v := range h.Values("Connection") {
		for token := range strings.SplitSeq(v, ",") {
			if strings.EqualFold(strings.TrimSpace(token), "upgrade") {
				return true
			}
		}
	}
	return false
}

// removeConnectionHeaders deletes the header fields that the Connection
// field names (RFC 9110 section 7.6.1), as a proxy does before forwarding.
func removeConnectionHeaders(h http.Header) {
	for _, v := range h.Values("Connection") {
		for token := range strings.SplitSeq(v, ",") {
			if name := strings.TrimSpace(token); name != "" && !strings.EqualFold(name, "Connection") {
				h.Del(name)
			}
		}
	}
}

var errBodyTooLarge = errors.New("request body too large")

// readBody reads the whole body, at most maxBodyBytes, within bodyTimeout;
// the caller has refused a Content-Length past maxBodyBytes already.
// Memory grows with the bytes that arrive, never with what Content-Length
// announces.
func (s *Shared) readBody(w http.ResponseWriter, r *http.Request) ([]byte, error) {
	if r.Body == nil || r.Body == http.NoBody {
		return nil, nil
	}
	rc := http.NewResponseController(w)
	if err := rc.SetReadDeadline(time.Now().Add(s.bodyTimeout)); err == nil {
		// The proxied exchange that follows may stream for as long as it
		// likes.
		defer func() { _ = rc.SetReadDeadline(time.Time{}) }()
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, s.maxBodyBytes+1))
	if err != nil {
		return nil, err
	}
	if int64(len(body)) > s.maxBodyBytes {
		return nil, errBodyTooLarge
	}
	return body, nil
}

// hasBody reports whether r announces a body.
func hasBody(r *http.Request) bool {
	return r.ContentLength != 0 || len(r.TransferEncoding) > 0
}

// bodyReader hands the body that was read on to the next handler. Once it
// has been read to its end it lets go of the bytes and gives them back to
// the budget, while the response may go on.
type bodyReader struct {
	bytes.Reader
	reservation bodyReservation
}

func (b *bodyReader) Read(p []byte) (int, error) {
	n, err := b.Reader.Read(p)
	if err == io.EOF {
		b.Reset(nil)
		b.reservation.release()
	}
	return n, err
}

// WriteTo serves io.Copy, which would otherwise use the embedded reader's
// and never give the bytes back before the request ends.
func (b *bodyReader) WriteTo(w io.Writer) (int64, error) {
	n, err := b.Reader.WriteTo(w)
	if err == nil {
		b.Reset(nil)
		b.reservation.release()
	}
	return n, err
}

func (*bodyReader) Close() error { return nil }
