package filter

import (
	"crypto/sha256"
	"encoding/hex"
	"net"
	"net/http"
	"time"

	"github.com/toolgate/toolgate/filter/audit"
)

// The audit trail (SharedOptions.Audit): every request the filter handles
// gives one record per JSON-RPC request or notification it carries, or one
// record when it carries none (an event stream, a DELETE, a refusal before
// the body was read), written when its answer ends. A request refused whole
// gives each of its messages the refusal's reason; in a batch refused by
// authorization, the messages that were not at fault say "batch".

// trail is the audit state of one request. It wraps the ResponseWriter to
// learn the status; the filter's refusals note their reason in it.
type trail struct {
	http.ResponseWriter
	f      *Filter
	r      *http.Request
	start  time.Time
	status int
	user   string

	refused  bool
	reason   reason
	culprit  int // the message an authorization refusal was about; -1 for none
	bucket   string
	degraded bool
	// shadowRefused says limits in shadow mode would have refused the
	// request, which passed.
	shadowRefused bool

	messages []trailMessage
}

type trailMessage struct {
	method, name, rule string
	id                 []byte
	arguments          *audit.Arguments
}

func (t *trail) Unwrap() http.ResponseWriter { return t.ResponseWriter }

func (t *trail) WriteHeader(code int) {
	if t.status == 0 && code >= 200 {
		t.status = code
	}
	t.ResponseWriter.WriteHeader(code)
}

func (t *trail) Write(p []byte) (int, error) {
	if t.status == 0 {
		t.status = http.StatusOK
	}
	return t.ResponseWriter.Write(p)
}

func (t *trail) FlushError() error {
	return http.NewResponseController(t.ResponseWriter).Flush()
}

func (t *trail) Flush() { _ = t.FlushError() }

// startTrail begins the audit record of a request, nil when the filter
// keeps no audit trail.
func (f *Filter) startTrail(w http.ResponseWriter, r *http.Request) *trail {
	if f.shared.audit == nil {
		return nil
	}
	return &trail{ResponseWriter: w, f: f, r: r, start: time.Now(), culprit: -1}
}

// noteRefusal records why the filter answered a request itself, when w is
// a request's trail.
func noteRefusal(w http.ResponseWriter, why reason) {
	if t, ok := w.(*trail); ok && !t.refused {
		t.refused, t.reason = true, why
	}
}

// finishAfterResponse writes the trail's records when the response ends:
// now, unless the response goes on after the handler returns (see
// afterResponse).
func (t *trail) finishAfterResponse() {
	if !afterResponse(t.ResponseWriter, t.finish) {
		t.finish()
	}
}

// responseContinuer is a ResponseWriter whose response may go on after its
// handler returned: the gateway hands a long event stream to a goroutine
// of its own. DeferUntilResponseEnds queues f for the response's end and
// reports true when it does go on, else reports false.
type responseContinuer interface {
	DeferUntilResponseEnds(f func()) bool
}

// afterResponse queues f for the end of w's response and reports true when
// a ResponseWriter under w says that response goes on after the handler
// returns; the caller runs f itself when it reports false.
func afterResponse(w http.ResponseWriter, f func()) bool {
	for w != nil {
		if c, ok := w.(responseContinuer); ok {
			return c.DeferUntilResponseEnds(f)
		}
		u, ok := w.(interface{ Unwrap() http.ResponseWriter })
		if !ok {
			return false
		}
		w = u.Unwrap()
	}
	return false
}

// trailOf returns the trail w is, or nil.
func trailOf(w http.ResponseWriter) *trail {
	t, _ := w.(*trail)
	return t
}

// capture copies what the records need of the request's messages before
// the body is let go.
func (t *trail) capture(in inspection, withArguments bool) {
	for i := range in.messages {
		m := &in.messages[i]
		if !m.hasMethod {
			continue
		}
		tm := trailMessage{method: string(m.method), name: string(m.name)}
		if m.id != nil {
			tm.id = []byte(string(m.id))
		}
		if len(m.arguments) > 0 {
			sum := sha256.Sum256(m.arguments)
			tm.arguments = &audit.Arguments{Bytes: len(m.arguments), SHA256: hex.EncodeToString(sum[:])}
			if withArguments {
				tm.arguments.Value = []byte(string(m.arguments))
			}
		}
		t.messages = append(t.messages, tm)
	}
}

// allowedBy notes the rule that allowed the message at index i of the
// request (counting every message, as inspection does).
func (t *trail) allowedBy(in inspection, i int, rule string) {
	if k := t.requestIndex(in, i); k >= 0 && k < len(t.messages) {
		t.messages[k].rule = rule
	}
}

// refusedAt notes the message an authorization refusal was about.
func (t *trail) refusedAt(in inspection, i int) {
	t.culprit = t.requestIndex(in, i)
}

// requestIndex maps a message index to its place among the messages with
// a method, which are the ones captured.
func (t *trail) requestIndex(in inspection, i int) int {
	k := -1
	for j := 0; j <= i && j < len(in.messages); j++ {
		if in.messages[j].hasMethod {
			k++
		}
	}
	return k
}

// finish writes the request's records.
func (t *trail) finish() {
	log := t.f.shared.audit
	var origin Origin
	if t.f.shared.origin != nil {
		origin = t.f.shared.origin(t.r)
	} else if host, _, err := net.SplitHostPort(t.r.RemoteAddr); err == nil {
		origin.Client = host
	}
	status := t.status
	if status == 0 {
		status = http.StatusOK // nothing written: net/http answers 200
	}
	rec := audit.Record{
		Time: t.start.UTC(), Gateway: origin.Gateway, Route: origin.Route, Server: t.f.server,
		User: t.user, Client: origin.Client, HTTPMethod: t.r.Method,
		Decision: audit.Allowed, Bucket: t.bucket, Degraded: t.degraded,
		Status: status, LatencyMs: float64(time.Since(t.start).Microseconds()) / 1000,
	}
	if t.refused {
		rec.Decision, rec.Reason = audit.Refused, reasonNames[t.reason]
	}
	if t.shadowRefused {
		rec.WouldRefuse = reasonNames[reasonRateLimited]
	}
	if len(t.messages) == 0 {
		log.Record(rec)
		return
	}
	for k, m := range t.messages {
		r := rec
		r.Method, r.Name, r.ID, r.Rule, r.Arguments = m.method, m.name, m.id, m.rule, m.arguments
		if t.refused && t.reason == reasonNotAllowed && t.culprit >= 0 && k != t.culprit {
			r.Reason = "batch"
		}
		if t.refused {
			r.Rule = ""
		}
		log.Record(r)
	}
}

// bucketName names a bucket in a record: its scope, and the tool, prompt
// or resource of an entry's bucket ("tool_per_user/search",
// "prompt_global/review").
func bucketName(s scope, entry string) string {
	if entry == "" {
		return s.String()
	}
	_, name := entryOf(entry)
	return s.String() + "/" + name
}
