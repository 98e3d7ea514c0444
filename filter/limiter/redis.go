package limiter

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
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
// the others. Release does not wait for Redis: the slots it gives back ride
// in the next pipeline, ahead of its decisions, and one goroutine of the
// store's own sends them when no decision comes along (see Release).
//
// The store follows its own health: a round trip that fails or times out
// is a failure; once it has failed and has not succeeded for HealthWindow,
// a probe (a real decision on a bucket of its own) gets a generous timeout
// to tell a dead Redis from a busy one. Only when the probe fails too is the
// store unavailable: Take then answers ErrUnavailable at once, without
// waiting on Redis, until the probe succeeds again. Close stops its
// goroutines. RoundTrips counts what the store sent.
//
// Each bucket is one string key,
//
//	<prefix>:{<server>}:<tool>:<user>
//
// where <server>, <tool> and <user> are the first 16 bytes of the SHA-256 of
// the BucketID's fields in unpadded base64url (22 characters), or "-" when
// empty (<tool> for a server-wide bucket, <user> for a global one). Keys are thus
// at most len(prefix)+71 bytes, carry no user id or tool name in clear, and
// all keys of one server's decision share the Cluster hash tag {<server>}.
// The value is "<fullAt>:<frac>": the Unix time in µs at which the bucket is
// full again, plus frac/MaxTokens µs. The key expires when the bucket is full
// again; a missing key is a full bucket.
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
	releases releaseQueue
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
		releases: releaseQueue{max: max(2*pipelines*maxBatch, minQueue)},
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
// ErrClosed. The releases still queued are sent in one last round trip,
// bounded by Timeout (dropped when the store is unavailable: their lease
// frees the slots); a Release after Close is sent on its own. Close does
// not close the client.
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

// redisTakeScript decides one Take, all or nothing, in one call.
//
// KEYS[i] is the key of demand i; ARGV[3i-2], ARGV[3i-1] and ARGV[3i] are its
// MaxTokens, its RefillPeriod in µs (rounded up) and its Tokens. A quota's
// demand gives minus its window's end (Unix µs) for the period: its key holds
// the count used in the window, and expires when the window ends. A cap's
// demand gives its lease in µs for the period and minus its slots for the
// tokens, and the slot's name follows the demands' arguments: its key is a
// sorted set of the slots held, scored by their lease's end. After the
// slot's name, each cap's demand gives the number of slots given back
// whose release the store has not yet seen run, then their members: they
// are given back again first (see Release); that is written even when
// the Take is refused. The clock
// is the server's TIME; a test's clock may be given as one more argument,
// the Unix time in µs (Redis.now). The reply is
// {allowed (1 or 0), then for each demand: remaining, resetAfter µs,
// retryAfter µs (0 when this demand's bucket held its tokens)}.
//
// The arithmetic is bucket.go's, in doubles: see there. Nothing is written
// unless every demand is allowed; then each bucket is written once, with a
// TTL of the time until it is full again.
const redisTakeScript = `
local n = #KEYS
-- Caps' demands give minus their slots for tokens; then the slot's name
-- follows the demands' arguments, and for each cap's demand, in order, the
-- number of slots given back that the store has not seen freed, and their
-- members.
local pos = 3 * n + 1
local slot
local givenBack = {}
for i = 1, n do
  if tonumber(ARGV[3 * i]) < 0 then
    if slot == nil then
      slot = ARGV[pos]
      pos = pos + 1
    end
    local k = tonumber(ARGV[pos]) or -1
    if k < 0 then
      return redis.error_reply('toolgate limiter: want the slots given back after the slot name')
    end
    givenBack[i] = {pos + 1, pos + k}
    pos = pos + k + 1
  end
end
local now
if #ARGV == pos then
  now = tonumber(ARGV[#ARGV])
elseif #ARGV == pos - 1 then
  local clock = redis.call('TIME')
  now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
else
  return redis.error_reply('toolgate limiter: want 3 arguments per key')
end

local function divmod(a, b)
  local q = math.floor(a / b)
  local r = a - q * b
  if r < 0 then
    q, r = q - 1, r + b
  elseif r >= b then
    q, r = q + 1, r - b
  end
  return q, r
end

local function ceildiv(a, b)
  local q, r = divmod(a, b)
  if r > 0 then q = q + 1 end
  return q
end

-- debt: how far a bucket is from full, in 1/capacity microseconds.
local function debt(s, capacity, period)
  local frac = s[2]
  if frac >= capacity then frac = capacity - 1 end
  local d = (s[1] - now) * capacity + frac
  if d <= 0 then return 0 end
  if d > capacity * period then return capacity * period end
  return d
end

local before, after, out = {}, {}, {1}
local used, usedBefore, ending = {}, {}, {}
local held, heldBefore, holds = {}, {}, {}
-- shadow: the keys of shadow limits; refusedBy: 'enforced' or 'shadow'
-- once a demand of that kind is not allowed.
local shadow, refusedBy = {}, {}
for i = 1, n do
  local key = KEYS[i]
  local capacity = tonumber(ARGV[3 * i - 2])
  local period = tonumber(ARGV[3 * i - 1])
  local tokens = tonumber(ARGV[3 * i])
  local kind = 'enforced'
  if capacity < 0 then
    capacity = -capacity
    shadow[key] = true
    kind = 'shadow'
  end
  if tokens < 0 then
    -- A cap: a sorted set of the slots held, scored by their lease's end.
    local want = -tokens
    local h = held[key]
    if h == nil then
      for j = givenBack[i][1], givenBack[i][2] do
        redis.call('ZREM', key, ARGV[j])
      end
      -- Slots past their lease count until the set looks full: only
      -- then are they dropped, and the rest counted again.
      h = redis.call('ZCARD', key)
      if want > capacity - h then
        redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
        h = redis.call('ZCARD', key)
      end
      held[key], heldBefore[key] = h, h
    end
    if want <= capacity - h then
      held[key] = h + want
      holds[#holds + 1] = {key, want, period}
      out[3 * i - 1] = capacity - h - want
      out[3 * i] = 0
      out[3 * i + 1] = 0
    else
      refusedBy[kind] = true
      out[3 * i - 1] = math.max(capacity - h, 0)
      out[3 * i] = 0
      out[3 * i + 1] = 1000000
    end
  elseif period < 0 then
    -- A quota: a count that holds until its window ends, at -period.
    local u = used[key]
    if u == nil then
      u = tonumber(redis.call('GET', key) or '0') or 0
      used[key], usedBefore[key] = u, u
    end
    ending[key] = -period
    local left = -period - now
    if left < 0 then left = 0 end
    if tokens <= capacity - u then
      used[key] = u + tokens
      out[3 * i - 1] = capacity - u - tokens
      out[3 * i] = left
      out[3 * i + 1] = 0
    else
      refusedBy[kind] = true
      out[3 * i - 1] = math.max(capacity - u, 0)
      out[3 * i] = left
      out[3 * i + 1] = math.max(left, 1)
    end
  else
  local s = after[key]
  if s == nil then
    s = {0, 0}
    local v = redis.call('GET', key)
    if v then
      local sep = string.find(v, ':', 1, true)
      if sep then
        s = {tonumber(string.sub(v, 1, sep - 1)) or 0, tonumber(string.sub(v, sep + 1)) or 0}
      end
    end
    before[key], after[key] = s, s
  end
  local d = debt(s, capacity, period)
  local empty = capacity * period
  local taken = d + tokens * period
  if tokens <= capacity and taken <= empty then
    local q, r = divmod(taken, capacity)
    after[key] = {now + q, r}
    out[3 * i - 1] = capacity - ceildiv(taken, period)
    out[3 * i] = ceildiv(taken, capacity)
    out[3 * i + 1] = 0
  else
    refusedBy[kind] = true
    out[3 * i - 1] = 0
    out[3 * i] = 0
    if tokens <= capacity then
      out[3 * i + 1] = ceildiv(taken - empty, capacity)
    else
      out[3 * i + 1] = period
    end
  end
  end
end

if refusedBy.enforced then
  out[1] = 0
elseif refusedBy.shadow then
  out[1] = 2
end
-- taken: whether a key's demands are taken.
local function taken(key)
  return out[1] == 1 or (out[1] == 2 and not shadow[key])
end

if out[1] ~= 0 then
  for key, s in pairs(after) do
    if taken(key) then
      local ttl = s[1] - now
      if s[2] > 0 then ttl = ttl + 1 end
      redis.call('SET', key, string.format('%d:%d', s[1], s[2]), 'PX', ceildiv(ttl, 1000))
    end
  end
  for key, u in pairs(used) do
    if u ~= usedBefore[key] and taken(key) then
      local ttl = ending[key] - now
      if ttl < 1000 then ttl = 1000 end
      redis.call('SET', key, string.format('%d', u), 'PX', ceildiv(ttl, 1000))
    end
  end
  local count = {}
  for _, h in ipairs(holds) do
    local key, want, lease = h[1], h[2], h[3]
    if taken(key) then
      local k = count[key] or 0
      for j = 1, want do
        redis.call('ZADD', key, now + lease, slot .. '#' .. (k + j - 1))
      end
      count[key] = k + want
      redis.call('PEXPIRE', key, ceildiv(lease, 1000))
    end
  end
end
-- What was not taken is reported as it is.
for i = 1, n do
  if not taken(KEYS[i]) then
    local capacity = math.abs(tonumber(ARGV[3 * i - 2]))
    local period = tonumber(ARGV[3 * i - 1])
    if tonumber(ARGV[3 * i]) < 0 then
      out[3 * i - 1] = math.max(capacity - heldBefore[KEYS[i]], 0)
    elseif period < 0 then
      out[3 * i - 1] = math.max(capacity - usedBefore[KEYS[i]], 0)
    else
      local d = debt(before[KEYS[i]], capacity, period)
      out[3 * i - 1] = capacity - ceildiv(d, period)
      out[3 * i] = ceildiv(d, capacity)
    end
  end
end
return out
`

var takeScript = redis.NewScript(redisTakeScript)

// redisPeekScript reads buckets and writes nothing: its reply is the
// server's TIME (seconds, microseconds), then each key's value ("" when the
// key is missing: a full bucket), or for a cap's sorted set "slots:" and
// the slots whose lease ends after now (ARGV[1] in µs, or TIME).
const redisPeekScript = `
local clock = redis.call('TIME')
local out = {clock[1], clock[2]}
local now = tonumber(ARGV[1]) or (tonumber(clock[1]) * 1000000 + tonumber(clock[2]))
for i = 1, #KEYS do
  if redis.call('TYPE', KEYS[i]).ok == 'zset' then
    out[i + 2] = 'slots:' .. redis.call('ZCOUNT', KEYS[i], '(' .. now, '+inf')
  else
    out[i + 2] = redis.call('GET', KEYS[i]) or ''
  end
end
return out
`

var peekScript = redis.NewScript(redisPeekScript)

// redisReleaseScript gives back slots: ARGV[2i-1] is the name of the slots
// KEYS[i] holds, ARGV[2i] how many it holds. One call may give back the
// slots of several Takes of one server.
const redisReleaseScript = `
for i = 1, #KEYS do
  for k = 0, tonumber(ARGV[2 * i]) - 1 do
    redis.call('ZREM', KEYS[i], ARGV[2 * i - 1] .. '#' .. k)
  end
end
return 0
`

var releaseScript = redis.NewScript(redisReleaseScript)

// Peek implements Peeker with one read-only script call, outside the
// pipelines; it answers ErrUnavailable while the store is unavailable.
func (r *Redis) Peek(ctx context.Context, demands []Demand) ([]BucketState, error) {
	if err := validate(demands); err != nil {
		return nil, err
	}
	if !r.health.available() {
		return nil, ErrUnavailable
	}
	ctx, cancel := context.WithTimeout(ctx, r.timeout)
	defer cancel()
	var args []any
	if r.now != nil {
		args = append(args, r.now().UnixMicro())
	}
	reply, err := r.run(ctx, peekScript, r.keys(demands), args...).Slice()
	if err != nil {
		return nil, fmt.Errorf("limiter: peek in redis: %w", err)
	}
	if len(reply) != 2+len(demands) {
		return nil, fmt.Errorf("limiter: peek in redis: unexpected reply %v", reply)
	}
	secs, _ := strconv.ParseInt(fmt.Sprint(reply[0]), 10, 64)
	us, _ := strconv.ParseInt(fmt.Sprint(reply[1]), 10, 64)
	now := secs*1_000_000 + us
	if r.now != nil {
		now = r.now().UnixMicro()
	}
	out := make([]BucketState, len(demands))
	for i, d := range demands {
		if d.Slot != "" {
			v, _ := reply[2+i].(string)
			h, _ := strconv.ParseInt(strings.TrimPrefix(v, "slots:"), 10, 64)
			out[i] = slotState(h, d)
			continue
		}
		if !d.Window.IsZero() {
			v, _ := reply[2+i].(string)
			u, _ := strconv.ParseInt(cmp.Or(v, "0"), 10, 64)
			out[i] = quotaState(u, now, d)
			continue
		}
		var b bucket
		if v, _ := reply[2+i].(string); v != "" {
			fullAt, frac, ok := strings.Cut(v, ":")
			if !ok {
				return nil, fmt.Errorf("limiter: peek in redis: bucket value %q", v)
			}
			b.fullAt, _ = strconv.ParseInt(fullAt, 10, 64)
			b.frac, _ = strconv.ParseUint(frac, 10, 64)
		}
		out[i] = peekState(b, now, d)
	}
	return out, nil
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
	c := &call{demands: demands, keys: keys, args: r.scriptArgs(demands, keys), done: make(chan struct{})}
	select {
	case <-r.stop:
		return Decision{}, ErrClosed
	default:
	}
	select {
	case r.calls <- c:
	default:
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

// scriptArgs are redisTakeScript's arguments for demands.
func (r *Redis) scriptArgs(demands []Demand, keys []string) []any {
	args := make([]any, 0, 3*len(demands)+1)
	slot := ""
	for i, d := range demands {
		if d.Slot != "" {
			args = append(args, capacityArg(d.Limit), int64(micros(d.Limit.RefillPeriod)), -d.Tokens)
			slot = d.Slot
			continue
		}
		if !d.Window.IsZero() {
			args = append(args, capacityArg(d.Limit), -d.Window.End.UnixMicro(), d.Tokens)
			continue
		}
		if i > 0 && d.Limit == demands[i-1].Limit && demands[i-1].Window.IsZero() && demands[i-1].Slot == "" {
			// Boxing an int64 allocates: share the previous demand's.
			args = append(args, args[3*i-3], args[3*i-2], d.Tokens)
			continue
		}
		args = append(args, capacityArg(d.Limit), int64(micros(d.Limit.RefillPeriod)), d.Tokens)
	}
	if slot != "" {
		args = append(args, slot)
		for i, d := range demands {
			if d.Slot != "" {
				args = r.pendingOf(args, keys[i])
			}
		}
	}
	if r.now != nil {
		args = append(args, r.now().UnixMicro())
	}
	return args
}

// capacityArg is a limit's MaxTokens as redisTakeScript reads it: negative
// for a shadow limit.
func capacityArg(l Limit) int64 {
	if l.Shadow {
		return -l.MaxTokens
	}
	return l.MaxTokens
}

// decision reads redisTakeScript's reply to demands.
func decision(reply any, demands []Demand) (Decision, error) {
	n := len(demands)
	vals, ok := reply.([]any)
	if !ok || len(vals) != 1+3*n {
		return Decision{}, fmt.Errorf("limiter: take from redis: unexpected reply %v", reply)
	}
	for _, v := range vals {
		if _, ok := v.(int64); !ok {
			return Decision{}, fmt.Errorf("limiter: take from redis: unexpected reply %v", reply)
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
		return Decision{}, fmt.Errorf("limiter: take from redis: reply %v: outcome %d disagrees with the demands' states", reply, vals[0])
	}
	return dec, nil
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
		switch {
		case d.Slot != "":
			keys[i] += ":c" // a cap's slots: a key of its own
		case !d.Window.IsZero():
			// A quota's count in one window: a key of its own, which the
			// next window does not read.
			keys[i] += ":q" + strconv.FormatInt(d.Window.Start.UnixMicro(), 10)
		}
	}
	return keys
}
