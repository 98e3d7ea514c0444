// Package audit writes the MCP filter's audit trail: one JSON record per
// decision, as a line of its own, to a stream apart from the logs (a file
// or stdout). Records go through a bounded queue to one writer goroutine:
// recording never blocks a request, and a record that finds the queue full,
// or cannot be written, is counted, never lost silently.
package audit

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// MetricRecords counts audit records by result: written, dropped (the
// queue was full) and failed (the stream refused them).
const MetricRecords = "toolgate_audit_records_total"

// DefaultQueueSize is how many records may wait for the writer.
const DefaultQueueSize = 8192

// Decisions.
const (
	Allowed = "allowed"
	Refused = "refused"
)

// Record is one decision of the filter. It never holds a token; a tool
// call's arguments appear as their size and hash unless the MCP server
// opts in to their value.
type Record struct {
	Time time.Time `json:"time"`
	// Gateway ("namespace/name"), Route ("namespace/name") and Server (the
	// MCPServer, "namespace/name") say where the request was served.
	Gateway string `json:"gateway,omitempty"`
	Route   string `json:"route,omitempty"`
	Server  string `json:"server"`
	// User is the verified caller; "" when the request had none.
	User string `json:"user,omitempty"`
	// Client is the client's address as the gateway trusts it.
	Client string `json:"client,omitempty"`
	// HTTPMethod is the request's; Method, Name and ID are the JSON-RPC
	// message's (Name: a tool or prompt name, a resource URI), empty for
	// a request that carries none (an event stream, a refusal before the
	// body was read).
	HTTPMethod string          `json:"httpMethod"`
	Method     string          `json:"method,omitempty"`
	Name       string          `json:"name,omitempty"`
	ID         json.RawMessage `json:"id,omitempty"`
	// Decision is Allowed or Refused; Reason says why a request was
	// refused (the filter's reasons: not_allowed, insufficient_scope,
	// rate_limited, overloaded, unauthenticated, ...).
	Decision string `json:"decision"`
	Reason   string `json:"reason,omitempty"`
	// Rule is the authorization rule that allowed the message; Bucket the
	// rate-limit bucket that refused it (scope, and the tool for a tool's
	// bucket: "tool_per_user/search").
	Rule   string `json:"rule,omitempty"`
	Bucket string `json:"bucket,omitempty"`
	// WouldRefuse, on an allowed request, is why limits in shadow mode
	// would have refused it (rate_limited); Bucket names the bucket.
	WouldRefuse string `json:"wouldRefuse,omitempty"`
	// Degraded says the rate limits were decided by this replica's local
	// buckets because the shared store was unavailable.
	Degraded bool `json:"degraded,omitempty"`
	// Status is the HTTP status of the answer; LatencyMs the time from
	// the filter's first look at the request to the end of its answer
	// (for an event stream, its whole life).
	Status    int     `json:"status"`
	LatencyMs float64 `json:"latencyMs"`
	// Arguments describe a tools/call's or prompts/get's arguments.
	Arguments *Arguments `json:"arguments,omitempty"`
}

// Arguments are a message's params.arguments: their size and SHA-256
// always, their value only when the MCP server opts in.
type Arguments struct {
	Bytes  int             `json:"bytes"`
	SHA256 string          `json:"sha256"`
	Value  json.RawMessage `json:"value,omitempty"`
}

// Options configure New.
type Options struct {
	// QueueSize bounds the records waiting for the writer
	// (DefaultQueueSize).
	QueueSize int
	// Registerer receives MetricRecords; nil registers it nowhere.
	Registerer prometheus.Registerer
}

// Log is an audit trail being written. It is safe for concurrent use.
type Log struct {
	queue                    chan Record
	w                        io.Writer
	out                      *bufio.Writer // buffers w
	written, dropped, failed prometheus.Counter

	closeOnce sync.Once
	done      chan struct{}
	mu        sync.RWMutex // guards closed against the queue's close
	closed    bool
}

// New starts writing records to w, one JSON object per line.
func New(w io.Writer, opts Options) (*Log, error) {
	if w == nil {
		return nil, errors.New("audit: New needs a writer")
	}
	size := opts.QueueSize
	if size <= 0 {
		size = DefaultQueueSize
	}
	records := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: MetricRecords,
		Help: "Audit records by result: written, dropped (the queue was full) or failed (the audit stream refused them).",
	}, []string{"result"})
	if opts.Registerer != nil {
		if err := opts.Registerer.Register(records); err != nil {
			return nil, fmt.Errorf("audit: register metrics: %w", err)
		}
	}
	l := &Log{
		queue:   make(chan Record, size),
		w:       w,
		out:     bufio.NewWriterSize(w, 64<<10),
		written: records.WithLabelValues("written"),
		dropped: records.WithLabelValues("dropped"),
		failed:  records.WithLabelValues("failed"),
		done:    make(chan struct{}),
	}
	go l.run()
	return l, nil
}

// Record queues r for writing; when the queue is full it drops r and
// counts it. It never blocks.
func (l *Log) Record(r Record) {
	l.mu.RLock()
	defer l.mu.RUnlock()
	if l.closed {
		l.dropped.Inc()
		return
	}
	select {
	case l.queue <- r:
	default:
		l.dropped.Inc()
	}
}

// Close writes what is queued and stops the writer. Records after Close
// are dropped (and counted).
func (l *Log) Close() error {
	l.closeOnce.Do(func() {
		l.mu.Lock()
		l.closed = true
		close(l.queue)
		l.mu.Unlock()
	})
	<-l.done
	return nil
}

// run writes the queued records, flushing whenever the queue is empty.
func (l *Log) run() {
	defer close(l.done)
	enc := json.NewEncoder(l.out)
	enc.SetEscapeHTML(false)
	pending := 0 // records in the buffer, not yet flushed
	fail := func() {
		l.failed.Add(float64(pending))
		pending = 0
		l.out.Reset(l.w) // drop what could not be written
	}
	for r := range l.queue {
		pending++
		if err := enc.Encode(&r); err != nil {
			fail()
			continue
		}
		if len(l.queue) > 0 {
			continue
		}
		if err := l.out.Flush(); err != nil {
			fail()
			continue
		}
		l.written.Add(float64(pending))
		pending = 0
	}
}
