package filter

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/toolgate/toolgate/filter/limiter"
)

// Response header names, in their canonical form.
const (
	headerRateLimitPolicy = "Ratelimit-Policy" // draft-ietf-httpapi-ratelimit-headers
	headerRateLimit       = "Ratelimit"
	headerRetryAfter      = "Retry-After"
	headerWWWAuthenticate = "Www-Authenticate"
	headerProtocolVersion = "Mcp-Protocol-Version"
)

// authRetryAfterSeconds is what a 503 for an unreachable issuer tells the
// client to wait; it matches how long a failed discovery is remembered.
var authRetryAfterSeconds = strconv.Itoa(int(discoveryRetryDelay / time.Second))

// refuse answers a request with a JSON-RPC error instead of forwarding it,
// and counts it.
func (f *Filter) refuse(w http.ResponseWriter, status int, why reason, id []byte, code int, message string) {
	f.metrics.rejected[why].Inc()
	noteRefusal(w, why)
	b := make([]byte, 0, 96+len(message))
	b = appendErrorObject(b, id, code, message)
	writeJSON(w, status, b)
}

// refuseIdentity answers a request whose caller could not be named: 401 with
// an RFC 6750 challenge, or 503 when the issuer cannot be reached.
func (f *Filter) refuseIdentity(w http.ResponseWriter, failure *authFailure, resource string) {
	if failure.status == http.StatusServiceUnavailable {
		w.Header().Set(headerRetryAfter, authRetryAfterSeconds)
		f.refuse(w, failure.status, reasonAuthUnavailable, nil, CodeInternalError,
			"Internal error: the token issuer cannot be reached, try again later")
		return
	}
	// RFC 9728 section 5.1: where a client finds which authorization server
	// issues tokens for this resource.
	challenge := `Bearer realm="toolgate", resource_metadata="` + quotable(metadataURL(resource)) + `"`
	if failure.errorCode != "" {
		challenge += `, error="` + failure.errorCode + `", error_description="` + failure.description + `"`
	}
	w.Header().Set(headerWWWAuthenticate, challenge)
	if f.shared.logger.Enabled(context.Background(), slog.LevelDebug) {
		f.shared.logger.Debug("refused a request without a valid bearer token",
			"server", f.server, "reason", failure.description, "error", failure.err)
	}
	f.refuse(w, failure.status, reasonUnauthenticated, nil, CodeUnauthenticated, "Unauthorized: "+failure.description)
}

// refuseScopes answers a request whose token lacks scopes: 403 with an RFC
// 6750 insufficient_scope challenge naming them, so that an MCP client can
// ask its authorization server for them (step-up authorization).
func (f *Filter) refuseScopes(w http.ResponseWriter, r *http.Request, missing []string, id []byte) {
	scope := quotable(strings.Join(missing, " "))
	w.Header().Set(headerWWWAuthenticate, `Bearer realm="toolgate", error="insufficient_scope", scope="`+scope+
		`", resource_metadata="`+quotable(metadataURL(f.resource(r)))+`", error_description="the token lacks scopes this call needs"`)
	f.refuse(w, http.StatusForbidden, reasonForbidden, id, CodeInsufficientScope, "Forbidden: the token lacks the scopes "+scope)
}

// appendErrorObject appends a JSON-RPC error response. A nil id is null.
func appendErrorObject(b, id []byte, code int, message string) []byte {
	b = append(b, `{"jsonrpc":"2.0","id":`...)
	b = appendID(b, id)
	b = append(b, `,"error":{"code":`...)
	b = strconv.AppendInt(b, int64(code), 10)
	b = append(b, `,"message":`...)
	quoted, _ := json.Marshal(message) // a string always marshals
	b = append(b, quoted...)
	return append(b, "}}"...)
}

func appendID(b, id []byte) []byte {
	if id == nil {
		return append(b, "null"...)
	}
	return append(b, id...)
}

// rateLimitedMessage is the error message of a rate-limited request.
const rateLimitedMessage = "Rate limit exceeded"

// appendRateLimited appends the error response to one rate-limited request,
// in the words of its protocol generation: CodeRateLimited with
// data.retryAfterSeconds for the session-based protocol;
// CodeRateLimitedStateless with data.retryAfterSeconds and
// data.retryAfterMs for the stateless one.
func appendRateLimited(b, id []byte, stateless bool, retryAfter time.Duration, limit []byte) []byte {
	code := int64(CodeRateLimited)
	if stateless {
		code = CodeRateLimitedStateless
	}
	b = append(b, `{"jsonrpc":"2.0","id":`...)
	b = appendID(b, id)
	b = append(b, `,"error":{"code":`...)
	b = strconv.AppendInt(b, code, 10)
	b = append(b, `,"message":"`+rateLimitedMessage+`","data":{"retryAfterSeconds":`...)
	b = strconv.AppendInt(b, wholeSeconds(retryAfter), 10)
	if stateless {
		b = append(b, `,"retryAfterMs":`...)
		b = strconv.AppendInt(b, ceilMillis(retryAfter), 10)
	}
	b = append(b, `,"limit":`...)
	b = append(b, limit...)
	return append(b, "}}}"...)
}

// limitObject describes the limit that refused a call, for error.data.limit:
// its kind (bucket), its scope (global, per_user, tool_per_user, ...) and,
// for an entry's bucket, the tool, prompt or resource it limits.
func limitObject(s scope, entry string) []byte {
	b := make([]byte, 0, 64+len(entry))
	kind := "bucket"
	switch {
	case s.isQuota():
		kind = "quota"
	case s.isCap():
		kind = "concurrency"
	}
	b = append(b, `{"kind":"`+kind+`","scope":"`...)
	b = append(b, s.String()...)
	b = append(b, '"')
	if entry != "" {
		field, entry := entryOf(entry)
		quoted, _ := json.Marshal(entry) // a string always marshals
		b = append(b, `,"`+field+`":`...)
		b = append(b, quoted...)
	}
	return append(b, '}')
}

// writeRateLimited answers a refused request with 429 and Retry-After
// (error.data says when to retry, and which limit refused: limitObject): one
// error for a single message, an array of one error per request with an id
// for a batch. A notification, or a batch of nothing but notifications, gets
// one error with a null id: HTTP still needs a body to say why. A message is
// of the stateless protocol when the MCP-Protocol-Version header, or else
// its own params._meta, names 2026-07-28 or later.
func writeRateLimited(w http.ResponseWriter, r *http.Request, in inspection, retryAfter time.Duration, limit []byte) {
	w.Header().Set(headerRetryAfter, strconv.FormatInt(wholeSeconds(retryAfter), 10))
	stateless := func(m *message) bool { return speaksStateless(r, m) }
	b := make([]byte, 0, 128)
	requests := 0
	if in.batch {
		for i := range in.messages {
			if m := &in.messages[i]; m.hasMethod && m.id != nil {
				requests++
			}
		}
	}
	if requests == 0 {
		var m *message
		if !in.batch {
			m = &in.messages[0]
		} else {
			m = firstToolCall(in)
		}
		var id []byte
		if !in.batch {
			id = m.id
		}
		b = appendRateLimited(b, id, stateless(m), retryAfter, limit)
	} else {
		b = append(b, '[')
		for i := range in.messages {
			if m := &in.messages[i]; m.hasMethod && m.id != nil {
				if len(b) > 1 {
					b = append(b, ',')
				}
				b = appendRateLimited(b, m.id, stateless(m), retryAfter, limit)
			}
		}
		b = append(b, ']')
	}
	writeJSON(w, http.StatusTooManyRequests, b)
}

// speaksStateless reports whether a message is of the stateless protocol:
// the MCP-Protocol-Version header, or else its own params._meta, names
// 2026-07-28 or later.
func speaksStateless(r *http.Request, m *message) bool {
	if header := r.Header.Get(headerProtocolVersion); header != "" {
		return isStatelessVersion([]byte(header))
	}
	return m != nil && isStatelessVersion(m.version)
}

// refuseResource answers a request for a resource the caller may not use
// as a server answers one for a resource it does not have: on the
// stateless protocol CodeInvalidParams (SEP-2164), before it
// CodeResourceNotFound; both with data.uri.
func (f *Filter) refuseResource(w http.ResponseWriter, r *http.Request, m *message, status int) {
	code := CodeResourceNotFound
	if speaksStateless(r, m) {
		code = CodeInvalidParams
	}
	f.metrics.rejected[reasonNotAllowed].Inc()
	noteRefusal(w, reasonNotAllowed)
	uri, _ := json.Marshal(string(m.name)) // a string always marshals
	b := make([]byte, 0, 128+2*len(uri))
	b = appendErrorObject(b, m.id, code, "Resource not found")
	b = append(b[:len(b)-2], `,"data":{"uri":`...) // before the closing "}}"
	b = append(b, uri...)
	writeJSON(w, status, append(b, "}}}"...))
}

// firstToolCall is the batch's first tools/call, or nil.
func firstToolCall(in inspection) *message {
	for i := range in.messages {
		if in.messages[i].isToolCall() {
			return &in.messages[i]
		}
	}
	return nil
}

func writeJSON(w http.ResponseWriter, status int, body []byte) {
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(status)
	_, _ = w.Write(body) //nolint:gosec // JSON the filter encoded, served as application/json
}

// setRateLimitFields describes the limits a request was checked against in
// the RateLimit-Policy and RateLimit fields of
// draft-ietf-httpapi-ratelimit-headers, one item per limit, named by its
// scope: a bucket's quota (q) per window (w, its refill period) and what
// remains (r) until it is full again (t); a quota's max per calendar
// window and what remains until the window ends; an in-flight cap's slots
// (q, with qu="concurrent-requests") and those free (r). Item lead, the
// limit that refused the request or else constrains it most, comes first;
// of the limits of one scope (a batch calling two tools) only the most
// constrained is listed. Limits in shadow mode carry the boolean parameter
// shadow (an extension parameter, which clients that do not know it
// ignore): they were decided and counted, but refuse nothing.
func setRateLimitFields(h http.Header, demands []limiter.Demand, scopes []scope, buckets []limiter.BucketState, lead int) {
	// Both fields are written into one buffer, and made one string: the
	// policy items, then the state items, each in the same order.
	b := make([]byte, 0, 88*len(demands))
	each := func(item func(i int)) {
		item(lead)
		for i := range demands {
			if i != lead && !outranked(scopes, buckets, lead, i) {
				b = append(b, ", "...)
				item(i)
			}
		}
	}
	each(func(i int) {
		b = append(b, '"')
		b = append(b, scopes[i].String()...)
		b = append(b, `";q=`...)
		b = strconv.AppendInt(b, demands[i].Limit.MaxTokens, 10)
		if scopes[i].isCap() {
			b = append(b, `;qu="concurrent-requests"`...)
		} else {
			b = append(b, ";w="...)
			b = strconv.AppendInt(b, max(ceilSeconds(demands[i].Limit.RefillPeriod), 1), 10)
		}
		if demands[i].Limit.Shadow {
			b = append(b, ";shadow"...)
		}
	})
	policy := len(b)
	each(func(i int) {
		b = append(b, '"')
		b = append(b, scopes[i].String()...)
		b = append(b, `";r=`...)
		b = strconv.AppendInt(b, max(buckets[i].Remaining, 0), 10)
		if !scopes[i].isCap() {
			b = append(b, ";t="...)
			b = strconv.AppendInt(b, ceilSeconds(buckets[i].ResetAfter), 10)
		}
	})
	fields := string(b)
	values := []string{fields[:policy], fields[policy:]} // one allocation for both
	h[headerRateLimitPolicy] = values[0:1:1]
	h[headerRateLimit] = values[1:2:2]
}

// outranked reports whether limit i has the scope of another that is
// listed in its place: lead, or one more constrained (the first of equals).
func outranked(scopes []scope, buckets []limiter.BucketState, lead, i int) bool {
	for j := range scopes {
		if j == i || scopes[j] != scopes[i] {
			continue
		}
		if j == lead {
			return true
		}
		b, c := buckets[j], buckets[i]
		if b.Remaining < c.Remaining || b.Remaining == c.Remaining && (b.ResetAfter > c.ResetAfter || b.ResetAfter == c.ResetAfter && j < i) {
			return true
		}
	}
	return false
}

// ceilSeconds rounds d up to whole seconds, 0 for no time.
func ceilSeconds(d time.Duration) int64 {
	if d <= 0 {
		return 0
	}
	return int64((d + time.Second - 1) / time.Second)
}

// ceilMillis rounds d up to whole milliseconds, at least 1.
func ceilMillis(d time.Duration) int64 {
	return max(int64((d+time.Millisecond-1)/time.Millisecond), 1)
}

// wholeSeconds is a Retry-After: d rounded up to whole seconds, at least 1.
func wholeSeconds(d time.Duration) int64 {
	return max(ceilSeconds(d), 1)
}
