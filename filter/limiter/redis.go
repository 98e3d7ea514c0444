package limiter

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/redis/go-redis/v9"
)

// RedisOptions configures a Redis store. The zero value is ready to use.
type RedisOptions struct {
	// Prefix starts every key; "" means "toolgate". It must not contain
	// '{' or '}', which would change the keys' Cluster hash tag.
	Prefix string
	// Timeout bounds one round trip to Redis; zero means
	// DefaultRedisTimeout. A decision also ends when its context does.
	Timeout time.Duration
	// Pipelines is how many pipelines may be in flight at once; zero means
	// DefaultPipelines().
	Pipelines int
	// MaxBatch is the most decisions one pipeline carries; zero means
	// DefaultMaxBatch. 1 sends each decision on its own.
	MaxBatch int
	// HealthWindow is how long the store may fail without one success before
	// it is judged unavailable; zero means DefaultHealthWindow.
	HealthWindow time.Duration
	// ProbeInterval is how often an unavailable store is tried again; zero
	// means DefaultProbeInterval.
	ProbeInterval time.Duration
	// Logger receives one line each time the store becomes unavailable or
	// available again; nil discards them.
	Logger *slog.Logger
}

// Defaults of RedisOptions.
const (
	// DefaultRedisPrefix starts every key when RedisOptions.Prefix is empty.
	DefaultRedisPrefix = "toolgate"
	// DefaultMaxBatch is the most decisions one pipeline carries.
	DefaultMaxBatch = 128
	// DefaultHealthWindow is how long failures without a success make the
	// store unavailable.
	DefaultHealthWindow = time.Second
	// DefaultProbeInterval is how often an unavailable store is tried.
	DefaultProbeInterval = 500 * time.Millisecond
	// minConfirmTimeout is the least time a probe waits for a suspect
	// store before judging it unavailable: far more than a request waits,
	// so that a gateway too busy to read answers in time is not taken for
	// a dead Redis.
	minConfirmTimeout = time.Second
	// minQueue is the least number of decisions that may wait for a
	// pipeline; past the queue's capacity a decision is refused at once
	// with ErrBusy.
	minQueue = 1024
)

// Errors of a Redis store's Take besides a failed round trip.
var (
	// ErrUnavailable means the store has been failing (errors or timeouts
	// for HealthWindow): decide elsewhere until Available says otherwise.
	ErrUnavailable = errors.New("limiter: redis is unavailable")
	// ErrBusy means the decision did not reach Redis in time: the gateway
	// is overloaded, not Redis. Refuse the request rather than allow it.
	ErrBusy = errors.New("limiter: too many decisions waiting for redis")
	// ErrClosed means Take was called after Close.
	ErrClosed = errors.New("limiter: redis store closed")
)

// Redis is the Store shared by the replicas of a gateway. Each decision is
// one EVALSHA of redisTakeScript, whatever the number of buckets; the clock
// is the Redis server's. Decisions waiting at the same moment share a
// pipeline (one round trip for all of them), so decisions per second grow
// with the number of callers instead of queueing for connections. No
// goroutine of the store's own carries them: a caller that finds a pipeline
// free sends whatever has queued, its own decision included, and answers
// the others. Release does not wait for Redis: the next decision on the
// same cap carries the slots it gives back, and one goroutine of the
// store's own sends them when no such decision comes along (see Release).
//
// The store follows its own health: a round trip that fails or times out
// is a failure; once it has failed and has not succeeded for HealthWindow,
// a probe (a real decision on a bucket of its own) gets a generous timeout
// to tell a dead Redis from a busy one. Only when the probe fails too is the
// store unavailable: Take then answers ErrUnavailable at once, without
// waiting on Redis, until the probe succeeds again. Close stops its
// goroutines. RoundTrips counts what the store sent.
//
// Each BucketID is one string key, its record,
//
//	<prefix>:{<server>}:<tool>:<user>
//
// where <server>, <tool> and <user> are the first 16 bytes of the SHA-256 of
// the BucketID's fields in unpadded base64url (22 characters), or "-" when
// empty (<tool> for a server-wide bucket, <user> for a global one). Keys are thus
// at most len(prefix)+71 bytes, carry no user id or tool name in clear, and
// all keys of one server's decision share the Cluster hash tag {<server>}.
// The record holds the scope's bucket, the counts of its quotas' windows
// and the slots its cap has in flight (redisscript.go), so that a quota or
// a cap beside a bucket of the same scope costs Redis no command of its
// own. The key expires when nothing in it counts any more (a full bucket,
// ended windows, slots given back or past their lease); a missing key is
// a full bucket, unused quotas and a free cap.
type Redis struct {
	client   redis.UniversalClient
	prefix   string
	timeout  time.Duration
	maxBatch int
	health   *health
	calls    chan *call
	stop     chan struct{}
	senders  chan struct{} // a slot per pipeline in flight
	closing  sync.Once
	caps     capBook
	// roundTrips counts the round trips sent or tried: pipelines and
	// script calls of their own.
	roundTrips atomic.Uint64
	// now, when set, is the clock the script decides by instead of the
	// server's TIME. Only tests set it (export_test.go), so that the
	// shared store suite is exact on Redis as on memory.
	now func() time.Time
}

var _ Store = (*Redis)(nil)

// NewRedis returns a Store keeping its buckets in Redis (standalone,
// Sentinel or Cluster; see NewRedisClient) and starts its pipelines. It
// panics when opts.Prefix contains '{' or '}'.
func NewRedis(client redis.UniversalClient, opts RedisOptions) *Redis {
	return newRedis(client, opts, nil)
}

// newRedis is NewRedis with the clock the script decides by: the server's
// TIME when now is nil.
func newRedis(client redis.UniversalClient, opts RedisOptions, now func() time.Time) *Redis {
	prefix := cmp.Or(opts.Prefix, DefaultRedisPrefix)
	if strings.ContainsAny(prefix, "{}") {
		panic(fmt.Sprintf("limiter: redis key prefix %q must not contain '{' or '}'", prefix))
	}
	pipelines := opts.Pipelines
	if pipelines <= 0 {
		pipelines = DefaultPipelines()
	}
	maxBatch := opts.MaxBatch
	if maxBatch <= 0 {
		maxBatch = DefaultMaxBatch
	}
	r := &Redis{
		client:   client,
		prefix:   prefix,
		timeout:  cmp.Or(max(opts.Timeout, 0), DefaultRedisTimeout),
		maxBatch: maxBatch,
		calls:    make(chan *call, max(2*pipelines*maxBatch, minQueue)),
		stop:     make(chan struct{}),
		senders:  make(chan struct{}, pipelines),
		caps:     capBook{replica: newReplicaID()},
		now:      now,
	}
	logger := opts.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	r.health = newHealth(healthOptions{
		window:   cmp.Or(max(opts.HealthWindow, 0), DefaultHealthWindow),
		interval: cmp.Or(max(opts.ProbeInterval, 0), DefaultProbeInterval),
		confirm:  max(20*r.timeout, minConfirmTimeout),
		probe:    r.probe,
		logger:   logger,
		stop:     r.stop,
	})
	return r
}

// Close stops the store's probe and its releaser; decisions waiting get
// ErrClosed. The releases no decision carried yet are sent in one last
// round trip, bounded by Timeout (given up when the store is unavailable:
// their lease frees the slots); a Release after Close is sent on its own.
// Close does not close the client.
func (r *Redis) Close() error {
	r.closing.Do(func() {
		close(r.stop)
		r.health.wait()
		r.stopReleaser()
		r.flushReleases()
		r.drain()
	})
	return nil
}

// RoundTrips reports how many round trips to Redis the store has sent or
// tried since NewRedis: one per pipeline (decisions and the releases riding
// with them), one per script call of its own (Peek, the health probe, a
// Release that could not be queued), and one more each time a script Redis
// lost is sent again in full. Compared with the number of decisions, it
// tells how well they share pipelines.
func (r *Redis) RoundTrips() uint64 { return r.roundTrips.Load() }

// Available reports whether the store is judged able to decide.
func (r *Redis) Available() bool { return r.health.available() }

// Peek implements Peeker with one read-only script call, outside the
// pipelines; it answers ErrUnavailable while the store is unavailable. It
// reports what Redis holds: a cap's slots given back count as free once
// their release has run there.
func (r *Redis) Peek(ctx context.Context, demands []Demand) ([]BucketState, error) {
	if err := validate(demands); err != nil {
		return nil, err
	}
	if !r.health.available() {
		return nil, ErrUnavailable
	}
	ctx, cancel := context.WithTimeout(ctx, r.timeout)
	defer cancel()
	keys := r.keys(demands)
	b := appendInt(nil, r.clock())
	b = appendInt(b, r.caps.replica)
	for _, d := range demands {
		switch {
		case d.Slot != "":
			b = appendInt(b, argCap)
			b = appendInt(b, 0) // no release carried
		case !d.Window.IsZero():
			b = appendInt(b, argQuota)
			b = appendInt(b, d.Window.Start.UnixMicro())
			b = appendInt(b, d.Window.End.UnixMicro())
		default:
			b = appendInt(b, argBucket)
		}
	}
	reply, err := r.run(ctx, peekScript, keys, string(b)).Slice()
	if err != nil {
		return nil, fmt.Errorf("limiter: peek in redis: %w", err)
	}
	if len(reply) != 1+2*len(demands) {
		return nil, fmt.Errorf("limiter: peek in redis: unexpected reply %v", reply)
	}
	vals := make([]int64, len(reply))
	for i, v := range reply {
		n, ok := v.(int64)
		if !ok {
			return nil, fmt.Errorf("limiter: peek in redis: unexpected reply %v", reply)
		}
		vals[i] = n
	}
	now := vals[0]
	out := make([]BucketState, len(demands))
	for i, d := range demands {
		v1, v2 := vals[1+2*i], vals[2+2*i]
		switch {
		case d.Slot != "":
			out[i] = slotState(v1, d)
		case !d.Window.IsZero():
			out[i] = quotaState(v1, now, d)
		default:
			out[i] = peekState(bucket{fullAt: v1, frac: uint64(max(v2, 0))}, now, d)
		}
	}
	return out, nil
}

// clock is the time the scripts decide by: 0 for the server's TIME, or
// the test's clock in Unix µs.
func (r *Redis) clock() int64 {
	if r.now != nil {
		return r.now().UnixMicro()
	}
	return 0
}

// Take implements Store with one EVALSHA (EVAL when Redis lost the script),
// sent in a pipeline with the decisions of other callers waiting at the same
// moment (see Redis). It answers ErrUnavailable at once while the store is
// unavailable,
// and ErrBusy when the decision could not be sent before ctx ended. A
// decision that was sent is waited for even past ctx's end, for at most the
// round trip's Timeout: an answer Redis gives is never thrown away, so a
// late caller does not lose tokens to a decision it did not hear.
func (r *Redis) Take(ctx context.Context, demands []Demand) (Decision, error) {
	if err := validate(demands); err != nil {
		return Decision{}, err
	}
	if !r.health.available() {
		return Decision{}, ErrUnavailable
	}
	if err := ctx.Err(); err != nil {
		return Decision{}, fmt.Errorf("limiter: take from redis: %w", err)
	}
	keys := r.keys(demands)
	c := &call{demands: demands, keys: keys, done: make(chan struct{})}
	c.args = r.scriptArgs(c)
	select {
	case <-r.stop:
		r.caps.failed(c.carried)
		return Decision{}, ErrClosed
	default:
	}
	select {
	case r.calls <- c:
	default:
		r.caps.failed(c.carried)
		return Decision{}, ErrBusy
	}
	// The caller waits for its answer, and while its decision is still
	// queued it takes its turn sending the queue when a pipeline is free:
	// a lone decision leaves at once from its own goroutine, and decisions
	// that queue up while every pipeline is in flight leave together.
	for {
		if c.state.Load() != callQueued {
			// A pipeline carries it (or it was answered at Close).
			select {
			case <-c.done:
				return c.decision, c.err
			case <-r.stop:
				return Decision{}, ErrClosed
			}
		}
		select {
		case <-c.done:
			return c.decision, c.err
		case r.senders <- struct{}{}:
			r.sendQueued()
			<-r.senders
		case <-ctx.Done():
			if c.state.CompareAndSwap(callQueued, callAbandoned) {
				r.caps.failed(c.carried)
				return Decision{}, fmt.Errorf("%w: %w", ErrBusy, ctx.Err())
			}
			// Sent: Redis may take the tokens, so the answer is worth
			// waiting for. The round trip's own deadline (Timeout) bounds
			// the wait.
		case <-r.stop:
			return Decision{}, ErrClosed
		}
	}
}

// scriptArgs are c's part of redisTakeScript's arguments: its number of
// demands, then theirs. A cap's demand carries the releases of its key
// that Redis has not been seen to apply; c remembers them, to learn from
// its answer that they were.
func (r *Redis) scriptArgs(c *call) []byte {
	b := make([]byte, 0, 1+len(c.demands)*24)
	b = appendInt(b, int64(len(c.demands)))
	for i, d := range c.demands {
		b = appendInt(b, kindArg(d))
		b = appendInt(b, capacityArg(d.Limit))
		b = appendInt(b, d.Tokens)
		switch {
		case d.Slot != "":
			b = appendInt(b, int64(micros(d.Limit.RefillPeriod)))
			b = r.caps.appendCarried(b, c.keys[i], &c.carried)
		case !d.Window.IsZero():
			b = appendInt(b, d.Window.Start.UnixMicro())
			b = appendInt(b, d.Window.End.UnixMicro())
		default:
			b = appendInt(b, int64(micros(d.Limit.RefillPeriod)))
		}
	}
	return b
}

// kindArg is a demand's kind as the scripts read it.
func kindArg(d Demand) int64 {
	switch {
	case d.Slot != "":
		return argCap
	case !d.Window.IsZero():
		return argQuota
	}
	return argBucket
}

// capacityArg is a limit's MaxTokens as redisTakeScript reads it: negative
// for a shadow limit.
func capacityArg(l Limit) int64 {
	if l.Shadow {
		return -l.MaxTokens
	}
	return l.MaxTokens
}

// decision reads redisTakeScript's reply to demands, and the start of the
// generation each cap's demand took its slots in (0 when it took none).
func decision(reply any, demands []Demand) (Decision, []int64, error) {
	n := len(demands)
	caps := 0
	for _, d := range demands {
		if d.Slot != "" {
			caps++
		}
	}
	vals, ok := reply.([]any)
	if !ok || len(vals) != 1+3*n+caps {
		return Decision{}, nil, fmt.Errorf("limiter: take from redis: unexpected reply %v", reply)
	}
	for _, v := range vals {
		if _, ok := v.(int64); !ok {
			return Decision{}, nil, fmt.Errorf("limiter: take from redis: unexpected reply %v", reply)
		}
	}
	dec := Decision{Buckets: make([]BucketState, n)}
	for i, d := range demands {
		remaining, reset, retry := vals[1+3*i].(int64), vals[2+3*i].(int64), vals[3+3*i].(int64)
		st := BucketState{Allowed: retry == 0, Remaining: remaining, ResetAfter: duration(uint64(max(reset, 0)))}
		if !st.Allowed {
			st.RetryAfter = duration(uint64(retry))
			if d.Tokens > d.Limit.MaxTokens && d.Window.IsZero() && d.Slot == "" {
				st.RetryAfter = d.Limit.RefillPeriod
			}
		}
		dec.Buckets[i] = st
	}
	// The script took what the states say (see Decision): all, the
	// enforced demands', or nothing.
	want := int64(0)
	switch dec.settle(demands) {
	case takeAll:
		want = 1
	case takeEnforced:
		want = 2
	}
	if vals[0].(int64) != want {
		return Decision{}, nil, fmt.Errorf("limiter: take from redis: reply %v: outcome %d disagrees with the demands' states", reply, vals[0])
	}
	var gens []int64
	for _, v := range vals[1+3*n:] {
		gens = append(gens, v.(int64))
	}
	return dec, gens, nil
}

// hashChars is the length of a hashed key part: 16 bytes in base64url.
const hashChars = 22

// keyPart is one hashed field of a key, remembered so that fields repeated
// across the demands of a Take are hashed once.
type keyPart struct {
	field string
	sum   [hashChars]byte
	set   bool
}

var emptyPart = []byte("-")

func (p *keyPart) of(field string) []byte {
	if field == "" {
		return emptyPart
	}
	if !p.set || p.field != field {
		// sha256 only reads its input: hash the string's bytes in place
		// rather than copy them.
		full := sha256.Sum256(unsafe.Slice(unsafe.StringData(field), len(field))) //nolint:gosec // read only, as said
		base64.RawURLEncoding.Encode(p.sum[:], full[:16])
		p.field, p.set = field, true
	}
	return p.sum[:]
}

// keys returns the demands' keys, built in one allocation.
func (r *Redis) keys(demands []Demand) []string {
	var server, tool, user keyPart
	tag := server.of(demands[0].Bucket.Server) // validate: one server per Take
	var b strings.Builder
	b.Grow(len(demands) * (len(r.prefix) + 5 + len(tag) + 2*hashChars))
	for _, d := range demands {
		b.WriteString(r.prefix)
		b.WriteString(":{")
		b.Write(tag)
		b.WriteString("}:")
		b.Write(tool.of(d.Bucket.Tool))
		b.WriteByte(':')
		b.Write(user.of(d.Bucket.User))
	}
	all := b.String()
	keys := make([]string, len(demands))
	for i, d := range demands {
		size := len(r.prefix) + 5 + len(tag) + 2*hashChars
		if d.Bucket.Tool == "" {
			size -= hashChars - 1
		}
		if d.Bucket.User == "" {
			size -= hashChars - 1
		}
		keys[i], all = all[:size], all[size:]
	}
	return keys
}
