package limiter

import (
	"encoding/binary"

	"github.com/redis/go-redis/v9"
)

// The Redis store's scripts. Each key is one scope's record (see Redis): a
// bucket, the counts of its quotas' windows, and the in-flight slots of its
// cap, kept by replica and generation. A record is a MessagePack sequence
// of numbers and strings:
//
//	2, fullAt, frac, nq, nq × (start, end, used), then per generation: replica, start, taken, released, leaseEnd
//
// 2 is the format. fullAt and frac are the bucket's (bucket.go; 0, 0 for a
// full bucket). A quota's window is [start, end) in Unix µs and used its
// count there. A generation holds the slots one replica (a store's random
// id) took from its start until half a lease later: taken counts them,
// released those the replica gave back, and the slots still held count
// until leaseEnd, the latest lease's end among them. A slot that is never
// given back (its replica died) is thus freed at least a lease and at most
// a lease and a half after it was taken. A record keeps only what still
// counts (a bucket not yet full, a window not yet ended with a count, a
// generation whose slots are not all given back and whose lease has not
// ended), and expires when the last of it would.
//
// Each script's one argument is a MessagePack sequence of integers
// (appendInt): the clock, in Unix µs (0: the server's TIME), the store's
// replica id, then what each script says.

// luaCommon decodes the arguments and the clock, and defines the
// arithmetic and the records' loading and saving.
const luaCommon = `
local a = {cmsgpack.unpack(ARGV[1])}
local now = a[1]
if now == 0 then
  local clock = redis.call('TIME')
  now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
end
local rid = a[2]

local function divmod(x, y)
  local q = math.floor(x / y)
  local r = x - q * y
  if r < 0 then
    q, r = q - 1, r + y
  elseif r >= y then
    q, r = q + 1, r - y
  end
  return q, r
end

local function ceildiv(x, y)
  local q, r = divmod(x, y)
  if r > 0 then q = q + 1 end
  return q
end

-- load returns a key's record as a table of its values; a missing key, or
-- one in another format, is an empty record.
local function load(key)
  local v = redis.call('GET', key)
  local t
  if v then t = {cmsgpack.unpack(v)} end
  if t == nil or t[1] ~= 2 then t = {2, 0, 0, 0} end
  return t
end

-- held counts the slots a record's generations hold at now; those of
-- this replica are first given back as the carried releases say: from
-- a[from], k pairs of (generation start, slots released in all). It
-- reports whether the record changed.
local function held(t, from, k)
  local h, changed = 0, false
  for j = 5 + 3 * t[4], #t, 5 do
    if t[j + 4] > now then
      if t[j] == rid then
        for c = from, from + 2 * k - 2, 2 do
          if t[j + 1] == a[c] and a[c + 1] > t[j + 3] then
            t[j + 3] = math.min(a[c + 1], t[j + 2])
            changed = true
          end
        end
      end
      h = h + t[j + 2] - t[j + 3]
    end
  end
  return h, changed
end

-- save writes a record without what no longer counts, to expire when the
-- last of the rest would; an empty record is deleted.
local function save(key, t)
  local keep, dead = 0, false
  if t[2] > now or (t[2] == now and t[3] > 0) then
    keep = t[2]
    if t[3] > 0 then keep = keep + 1 end
  elseif t[2] ~= 0 then
    dead = true
  end
  for j = 5, 4 + 3 * t[4], 3 do
    if t[j + 1] <= now or t[j + 2] <= 0 then
      dead = true
    elseif t[j + 1] > keep then
      keep = t[j + 1]
    end
  end
  for j = 5 + 3 * t[4], #t, 5 do
    if t[j + 4] <= now or t[j + 2] <= t[j + 3] then
      dead = true
    elseif t[j + 4] > keep then
      keep = t[j + 4]
    end
  end
  if keep <= now then
    redis.call('DEL', key)
    return
  end
  if dead then
    local s, m = {2, 0, 0, 0}, 4
    if t[2] > now or (t[2] == now and t[3] > 0) then s[2], s[3] = t[2], t[3] end
    for j = 5, 4 + 3 * t[4], 3 do
      if t[j + 1] > now and t[j + 2] > 0 then
        s[m + 1], s[m + 2], s[m + 3] = t[j], t[j + 1], t[j + 2]
        m = m + 3
        s[4] = s[4] + 1
      end
    end
    for j = 5 + 3 * t[4], #t, 5 do
      if t[j + 4] > now and t[j + 2] > t[j + 3] then
        s[m + 1], s[m + 2], s[m + 3], s[m + 4], s[m + 5] = t[j], t[j + 1], t[j + 2], t[j + 3], t[j + 4]
        m = m + 5
      end
    end
    t = s
  end
  redis.call('SET', key, cmsgpack.pack(unpack(t)), 'PX', ceildiv(keep - now, 1000))
end
`

// redisTakeScript decides Takes of one server, one after the other, each
// all or nothing, in one call: a record several of them use is read and
// written once.
//
// After the clock and the replica, ARGV[1] holds the number of Takes, then
// for each its number of demands n, and for each demand its kind, its
// MaxTokens (minus for a shadow limit) and its Tokens, then for a bucket
// (1) its RefillPeriod in µs (rounded up); for a quota (2) its window's
// start and end; for a cap (3) its lease in µs and the releases the store
// carries for its key: a count k, then k pairs of (generation start, slots
// of this replica given back in all), which are applied first and written
// even when the Take is refused (see Release). KEYS are the demands'
// records, Take after Take. The reply holds one array per Take: {outcome
// (1 all taken, 0 nothing taken, 2 only the enforced demands taken), then
// for each demand: remaining, resetAfter µs, retryAfter µs (0 when this
// demand held its tokens), then for each cap's demand in order the start
// of the generation its slots went to (0 when not taken)}.
//
// The arithmetic is bucket.go's, in doubles: see there. A record is written
// once, when a demand on it is taken or a carried release changed it.
const redisTakeScript = luaCommon + `
-- recs[key] is the key's record; while a decision is made, its hash part
-- keeps what the decision has taken from it so far: f and r (the
-- bucket), h (the cap's slots held), h0 (held before), qs (the quotas'
-- counts, by place in the record or by window), and d, the decision that
-- last touched it; c says that it changed.
local recs = {}
local replies = {}
local p = 4
local k0 = 0
for dno = 1, a[3] do
  local n = a[p]
  p = p + 1
  local touched = {}
  -- pl[3i-2] is where demand i's arguments start in a; pl[3i-1] and pl[3i]
  -- what it takes when taken: a bucket's fullAt and frac, a quota's place
  -- in the record (0: new) and count.
  local pl = {}
  local out = {1}
  local refused, shadowRefused = false, false
  for i = 1, n do
    local key = KEYS[k0 + i]
    local t = recs[key]
    if t == nil then
      t = load(key)
      recs[key] = t
    end
    if t.d ~= dno then
      t.d = dno
      touched[#touched + 1] = t
    end
    local kind, capacity, tokens = a[p], a[p + 1], a[p + 2]
    local shadow = capacity < 0
    if shadow then capacity = -capacity end
    pl[3 * i - 2] = p
    local ok
    local o = 3 * i - 1
    if kind == 1 then
      local period = a[p + 3]
      p = p + 4
      local fullAt, frac = t.f or t[2], t.r or t[3]
      if frac >= capacity then frac = capacity - 1 end
      local empty = capacity * period
      local d = (fullAt - now) * capacity + frac
      if d < 0 then d = 0 elseif d > empty then d = empty end
      local taken = d + tokens * period
      ok = tokens <= capacity and taken <= empty
      if ok then
        local q, r = divmod(taken, capacity)
        t.f, t.r = now + q, r
        pl[3 * i - 1], pl[3 * i] = now + q, r
        out[o], out[o + 1], out[o + 2] = capacity - ceildiv(taken, period), ceildiv(taken, capacity), 0
      elseif tokens <= capacity then
        out[o], out[o + 1], out[o + 2] = 0, 0, ceildiv(taken - empty, capacity)
      else
        out[o], out[o + 1], out[o + 2] = 0, 0, period
      end
    elseif kind == 2 then
      local start, ending = a[p + 3], a[p + 4]
      p = p + 5
      local at = 0
      for j = 5, 4 + 3 * t[4], 3 do
        if t[j] == start and t[j + 1] == ending then at = j end
      end
      -- Its count so far in this call: by its place, or for a window the
      -- record does not hold yet, by its bounds.
      local id = -at
      if at == 0 then id = string.format('%d:%d', start, ending) end
      local qs = t.qs
      if qs == nil then
        qs = {}
        t.qs = qs
      end
      local u = qs[id]
      if u == nil then
        u = 0
        if at > 0 then u = t[at + 2] end
      end
      local left = ending - now
      if left < 0 then left = 0 end
      pl[3 * i - 1] = at
      ok = tokens <= capacity - u
      if ok then
        qs[id] = u + tokens
        pl[3 * i] = u + tokens
        out[o], out[o + 1], out[o + 2] = capacity - u - tokens, left, 0
      else
        out[o], out[o + 1], out[o + 2] = math.max(capacity - u, 0), left, math.max(left, 1)
      end
    else
      local k = a[p + 4]
      local h = t.h
      if h == nil then
        local changed
        h, changed = held(t, p + 5, k)
        t.h0 = h
        if changed then t.c = true end
      end
      p = p + 5 + 2 * k
      ok = tokens <= capacity - h
      if ok then
        t.h = h + tokens
        out[o], out[o + 1], out[o + 2] = capacity - h - tokens, 0, 0
      else
        t.h = h
        out[o], out[o + 1], out[o + 2] = math.max(capacity - h, 0), 0, 1000000
      end
    end
    if not ok then
      if shadow then shadowRefused = true else refused = true end
    end
  end
  if refused then out[1] = 0 elseif shadowRefused then out[1] = 2 end
  -- taken reports whether demand i is taken.
  local function taken(i)
    return out[1] == 1 or (out[1] == 2 and a[pl[3 * i - 2] + 1] > 0)
  end
  if out[1] ~= 1 then
    -- What is not taken is reported as it is.
    for i = 1, n do
      if not taken(i) then
        local t = recs[KEYS[k0 + i]]
        local q, o = pl[3 * i - 2], 3 * i - 1
        local kind, capacity = a[q], math.abs(a[q + 1])
        if kind == 1 then
          local period = a[q + 3]
          local frac = t[3]
          if frac >= capacity then frac = capacity - 1 end
          local d = (t[2] - now) * capacity + frac
          if d < 0 then d = 0 elseif d > capacity * period then d = capacity * period end
          out[o], out[o + 1] = capacity - ceildiv(d, period), ceildiv(d, capacity)
        elseif kind == 2 then
          local u = 0
          if pl[3 * i - 1] > 0 then u = t[pl[3 * i - 1] + 2] end
          out[o] = math.max(capacity - u, 0)
        else
          out[o] = math.max(capacity - t.h0, 0)
        end
      end
    end
  end
  local m = 3 * n + 1
  for i = 1, n do
    local t = recs[KEYS[k0 + i]]
    local q = pl[3 * i - 2]
    local kind = a[q]
    if kind == 3 then
      m = m + 1
      out[m] = 0
    end
    if out[1] ~= 0 and taken(i) then
      t.c = true
      if kind == 1 then
        t[2], t[3] = pl[3 * i - 1], pl[3 * i]
      elseif kind == 2 then
        local at, start, ending = pl[3 * i - 1], a[q + 3], a[q + 4]
        if at == 0 then
          -- A window the record does not hold yet: another demand of this
          -- call may have added it.
          for j = 5, 4 + 3 * t[4], 3 do
            if t[j] == start and t[j + 1] == ending then at = j end
          end
        end
        if at == 0 then
          at = 5 + 3 * t[4]
          table.insert(t, at, 0)
          table.insert(t, at, ending)
          table.insert(t, at, start)
          t[4] = t[4] + 1
        end
        t[at + 2] = pl[3 * i]
      else
        local lease = a[q + 3]
        local at = 0
        for j = 5 + 3 * t[4], #t, 5 do
          if t[j] == rid and t[j + 4] > now and (at == 0 or t[j + 1] > t[at + 1]) then at = j end
        end
        if at == 0 or 2 * (now - t[at + 1]) >= lease then
          at = #t + 1
          t[at], t[at + 1], t[at + 2], t[at + 3], t[at + 4] = rid, now, 0, 0, 0
        end
        t[at + 2] = t[at + 2] + a[q + 2]
        if now + lease > t[at + 4] then t[at + 4] = now + lease end
        out[m] = t[at + 1]
      end
    end
  end
  for _, t in ipairs(touched) do
    t.f, t.r, t.h, t.h0, t.qs = nil, nil, nil, nil, nil
  end
  replies[dno] = out
  k0 = k0 + n
end
for key, t in pairs(recs) do
  if t.c then save(key, t) end
end
return replies
`

// redisPeekScript reads records and writes nothing. After the clock and
// the replica, ARGV[1] holds per demand its kind, then for a quota (2) its window's
// start and end, for a cap (3) a count of releases carried, 0. The reply
// is the
// clock (Unix µs), then two numbers per demand: a bucket's fullAt and frac;
// a quota's count in the window, 0; a cap's slots held, 0.
const redisPeekScript = luaCommon + `
local out = {now}
local p = 3
for i = 1, #KEYS do
  local t = load(KEYS[i])
  local kind = a[p]
  if kind == 1 then
    out[2 * i], out[2 * i + 1] = t[2], t[3]
    p = p + 1
  elseif kind == 2 then
    local u = 0
    for j = 5, 4 + 3 * t[4], 3 do
      if t[j] == a[p + 1] and t[j + 1] == a[p + 2] then u = t[j + 2] end
    end
    out[2 * i], out[2 * i + 1] = u, 0
    p = p + 3
  else
    local k = a[p + 1]
    out[2 * i], out[2 * i + 1] = held(t, p + 2, k), 0
    p = p + 2 + 2 * k
  end
end
return out
`

// redisReleaseScript gives back slots: after the clock and the replica,
// ARGV[1] holds per
// key the releases the store carries for it, as redisTakeScript takes
// them. One call may give back the slots of several caps of one server.
const redisReleaseScript = luaCommon + `
local p = 3
for i = 1, #KEYS do
  local k = a[p]
  local t = load(KEYS[i])
  local _, changed = held(t, p + 1, k)
  if changed then save(KEYS[i], t) end
  p = p + 1 + 2 * k
end
return 0
`

var (
	takeScript    = redis.NewScript(redisTakeScript)
	peekScript    = redis.NewScript(redisPeekScript)
	releaseScript = redis.NewScript(redisReleaseScript)
)

// Kinds of demand in the scripts' arguments.
const (
	argBucket = 1
	argQuota  = 2
	argCap    = 3
)

// appendInt appends v to a MessagePack sequence, in its shortest form
// among fixint and int64.
func appendInt(b []byte, v int64) []byte {
	if v >= -32 && v <= 127 {
		return append(b, byte(v)) //nolint:gosec // fixint: the byte is v in two's complement
	}
	b = append(b, 0xd3)
	return binary.BigEndian.AppendUint64(b, uint64(v)) //nolint:gosec // int64: big-endian two's complement

}
