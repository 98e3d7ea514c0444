package limiter

import (
	"context"
	"hash/maphash"
	"strconv"
	"sync"
	"time"
)

// MemoryOptions configures a Memory store. The zero value is ready to use.
type MemoryOptions struct {
	// Now is the store's clock; nil means time.Now. Only differences between
	// its readings matter.
	Now func() time.Time
	// Shards is the number of independently locked parts of the store,
	// rounded up to a power of two; 0 means 64.
	Shards int
	// SweepInterval is how often a shard, when it is used, drops the buckets
	// that are full again; 0 means one minute. A bucket is held at most
	// RefillPeriod + SweepInterval after its last decision.
	SweepInterval time.Duration
}

const (
	defaultShards        = 64
	maxShards            = 1 << 16
	defaultSweepInterval = time.Minute
	// A shard whose map shrank below a quarter of its peak (and that held
	// at least this many buckets) is rebuilt, since Go maps never shrink.
	minShrinkPeak = 1024
)

// Memory is the in-memory Store, for a gateway with one replica. It is safe
// for concurrent use. A bucket that is full again is indistinguishable from
// one never used, so the store forgets it: memory follows the number of
// buckets in use, not the number ever seen. It starts no goroutine and needs
// no closing.
type Memory struct {
	now        func() time.Time
	epoch      time.Time
	seed       maphash.Seed
	mask       uint64
	sweepEvery int64 // µs
	shards     []shard
}

type shard struct {
	mu        sync.Mutex
	buckets   map[BucketID]bucket
	quotas    map[quotaKey]quotaCount
	slots     map[BucketID]map[string]int64 // a cap's held slots: their leases' ends, µs
	nextSweep int64                         // µs
	peak      int
	_         [32]byte // keep neighbouring shards' mutexes on separate cache lines
}

var _ Store = (*Memory)(nil)

// NewMemory returns an empty Memory store.
func NewMemory(opts MemoryOptions) *Memory {
	now := opts.Now
	if now == nil {
		now = time.Now
	}
	n := opts.Shards
	if n <= 0 {
		n = defaultShards
	}
	n = min(n, maxShards)
	size := 1
	for size < n {
		size <<= 1
	}
	sweep := opts.SweepInterval
	if sweep <= 0 {
		sweep = defaultSweepInterval
	}
	m := &Memory{
		now:        now,
		epoch:      now(),
		seed:       maphash.MakeSeed(),
		mask:       uint64(size - 1),
		sweepEvery: int64(micros(sweep)),
		shards:     make([]shard, size),
	}
	for i := range m.shards {
		m.shards[i].buckets = make(map[BucketID]bucket)
		m.shards[i].quotas = make(map[quotaKey]quotaCount)
		m.shards[i].slots = make(map[BucketID]map[string]int64)
	}
	return m
}

// Take implements Store. It never fails on valid demands; ctx is not used.
func (m *Memory) Take(_ context.Context, demands []Demand) (Decision, error) {
	if err := validate(demands); err != nil {
		return Decision{}, err
	}
	n := len(demands)

	// Which shard holds each bucket, and the shards to lock, in increasing
	// order so that concurrent Takes over the same shards cannot deadlock.
	var idxBuf, lockBuf [8]uint32
	idx, locks := idxBuf[:0], lockBuf[:0]
	if n > len(idxBuf) {
		idx, locks = make([]uint32, 0, n), make([]uint32, 0, n)
	}
	for _, d := range demands {
		i := m.shardOf(d.Bucket)
		idx = append(idx, i)
		locks = insertSorted(locks, i)
	}
	for _, i := range locks {
		m.shards[i].mu.Lock()
	}
	now := m.clock()
	wall := m.now().UnixMicro() // quotas' windows are on the caller's calendar

	// Decide every demand on a scratch copy; demands on a bucket (or a
	// quota's window) already seen in this Take start from that demand's
	// outcome.
	var nextBuf [8]bucket
	var usedBuf [8]int64
	next, used := nextBuf[:0], usedBuf[:0]
	if n > len(nextBuf) {
		next, used = make([]bucket, 0, n), make([]int64, 0, n)
	}
	dec := Decision{Allowed: true, Buckets: make([]BucketState, n)}
	for i, d := range demands {
		var st BucketState
		if d.Slot != "" {
			h, seen := int64(0), false
			for j := i - 1; j >= 0; j-- {
				if demands[j].Slot != "" && demands[j].Bucket == d.Bucket {
					h, seen = used[j], true
					break
				}
			}
			if !seen {
				h = m.shards[idx[i]].held(d.Bucket, now)
			}
			var after int64
			after, st = takeSlots(h, d)
			next, used = append(next, bucket{}), append(used, after)
		} else if !d.Window.IsZero() {
			u, seen := int64(0), false
			for j := i - 1; j >= 0; j-- {
				if sameQuota(demands[j], d) {
					u, seen = used[j], true
					break
				}
			}
			if !seen {
				u = m.shards[idx[i]].quotaUsed(d, wall)
			}
			var after int64
			after, st = takeQuota(u, wall, d)
			next, used = append(next, bucket{}), append(used, after)
		} else {
			b, seen := bucket{}, false
			for j := i - 1; j >= 0; j-- {
				if demands[j].Bucket == d.Bucket && demands[j].Window.IsZero() && demands[j].Slot == "" {
					b, seen = next[j], true
					break
				}
			}
			if !seen {
				b = m.shards[idx[i]].buckets[d.Bucket]
			}
			var after bucket
			after, st = take(b, now, d)
			next, used = append(next, after), append(used, 0)
		}
		dec.Buckets[i] = st
	}

	taking := dec.settle(demands)
	if taking != takeNone {
		// In order, so that the last demand on a bucket leaves its state.
		for i, d := range demands {
			if !taking.takes(d) {
				// A shadow demand of a Take only its enforced demands
				// allowed: nothing taken, reported as it is.
				dec.Buckets[i].Remaining, dec.Buckets[i].ResetAfter = m.shards[idx[i]].stateOf(d, now, wall)
				continue
			}
			if d.Slot != "" {
				m.shards[idx[i]].hold(d, now)
				continue
			}
			if !d.Window.IsZero() {
				m.shards[idx[i]].quotas[quotaKeyOf(d)] = quotaCount{used: used[i], end: d.Window.End.UnixMicro()}
				continue
			}
			m.shards[idx[i]].buckets[d.Bucket] = next[i]
		}
	} else {
		// Nothing was taken: report every bucket and quota as it is.
		for i, d := range demands {
			dec.Buckets[i].Remaining, dec.Buckets[i].ResetAfter = m.shards[idx[i]].stateOf(d, now, wall)
		}
	}

	for _, i := range locks {
		s := &m.shards[i]
		s.peak = max(s.peak, len(s.buckets))
		if now >= s.nextSweep {
			s.sweep(now, wall)
			s.nextSweep = now + m.sweepEvery
		}
		s.mu.Unlock()
	}
	return dec, nil
}

// stateOf reports a demand's bucket, quota or cap as it is at now (wall
// for quotas): what remains, and the time until it is full again.
func (s *shard) stateOf(d Demand, now, wall int64) (remaining int64, resetAfter time.Duration) {
	var st BucketState
	switch {
	case d.Slot != "":
		st = slotState(s.held(d.Bucket, now), d)
	case !d.Window.IsZero():
		st = quotaState(s.quotaUsed(d, wall), wall, d)
	default:
		capacity, period := uint64(d.Limit.MaxTokens), micros(d.Limit.RefillPeriod)
		st = state(s.buckets[d.Bucket].debt(now, capacity, period), capacity, period)
	}
	return st.Remaining, st.ResetAfter
}

// held counts a cap's slots whose lease has not ended at now.
func (s *shard) held(id BucketID, now int64) int64 {
	var n int64
	for _, end := range s.slots[id] {
		if end > now {
			n++
		}
	}
	return n
}

// hold records the slots of an allowed cap demand, leased until now plus
// the demand's lease.
func (s *shard) hold(d Demand, now int64) {
	held := s.slots[d.Bucket]
	if held == nil {
		held = make(map[string]int64)
		s.slots[d.Bucket] = held
	}
	for k := range d.Tokens {
		held[slotMember(d.Slot, k)] = now + int64(micros(d.Limit.RefillPeriod))
	}
}

// slotMember names the k-th slot a demand holds.
func slotMember(slot string, k int64) string {
	return slot + "#" + strconv.FormatInt(k, 10)
}

// Release implements Releaser.
func (m *Memory) Release(_ context.Context, demands []Demand) error {
	for _, d := range demands {
		if d.Slot == "" {
			continue
		}
		s := &m.shards[m.shardOf(d.Bucket)]
		s.mu.Lock()
		if held := s.slots[d.Bucket]; held != nil {
			for k := range d.Tokens {
				delete(held, slotMember(d.Slot, k))
			}
			if len(held) == 0 {
				delete(s.slots, d.Bucket)
			}
		}
		s.mu.Unlock()
	}
	return nil
}

// quotaKey names one quota's count in one window.
type quotaKey struct {
	id    BucketID
	start int64 // the window's start, Unix µs
}

// quotaCount is what a quota's window has used, until it ends.
type quotaCount struct {
	used int64
	end  int64 // Unix µs
}

func quotaKeyOf(d Demand) quotaKey {
	return quotaKey{d.Bucket, d.Window.Start.UnixMicro()}
}

func sameQuota(a, b Demand) bool {
	return !a.Window.IsZero() && a.Bucket == b.Bucket && a.Window.Start.Equal(b.Window.Start)
}

// quotaUsed is what the demand's quota has used in its window at wall.
func (s *shard) quotaUsed(d Demand, wall int64) int64 {
	if q, ok := s.quotas[quotaKeyOf(d)]; ok && q.end > wall {
		return q.used
	}
	return 0
}

// Len reports how many buckets the store holds, for tests and metrics.
func (m *Memory) Len() int {
	total := 0
	for i := range m.shards {
		s := &m.shards[i]
		s.mu.Lock()
		total += len(s.buckets)
		s.mu.Unlock()
	}
	return total
}

// clock reads the store's clock in µs since the store was made, on the
// monotonic clock when Now provides one.
func (m *Memory) clock() int64 {
	return m.now().Sub(m.epoch).Microseconds()
}

func (m *Memory) shardOf(id BucketID) uint32 {
	var h maphash.Hash
	h.SetSeed(m.seed)
	h.WriteString(id.Server)
	h.WriteByte(0)
	h.WriteString(id.Tool)
	h.WriteByte(0)
	h.WriteString(id.User)
	return uint32(h.Sum64() & m.mask)
}

// sweep drops the buckets that are full at now, and gives the memory of a
// map much smaller than it was back to the runtime.
func (s *shard) sweep(now, wall int64) {
	for id, b := range s.buckets {
		if b.full(now) {
			delete(s.buckets, id)
		}
	}
	for k, q := range s.quotas {
		if q.end <= wall {
			delete(s.quotas, k)
		}
	}
	for id, held := range s.slots {
		for member, end := range held {
			if end <= now {
				delete(held, member)
			}
		}
		if len(held) == 0 {
			delete(s.slots, id)
		}
	}
	if s.peak >= minShrinkPeak && len(s.buckets) < s.peak/4 {
		fresh := make(map[BucketID]bucket, 2*len(s.buckets))
		for id, b := range s.buckets {
			fresh[id] = b
		}
		s.buckets = fresh
		s.peak = len(fresh)
	}
}

// insertSorted adds v to the sorted set s.
func insertSorted(s []uint32, v uint32) []uint32 {
	i := len(s)
	for i > 0 && s[i-1] > v {
		i--
	}
	if i > 0 && s[i-1] == v {
		return s
	}
	s = append(s, 0)
	copy(s[i+1:], s[i:])
	s[i] = v
	return s
}

// Peek implements Peeker.
func (m *Memory) Peek(_ context.Context, demands []Demand) ([]BucketState, error) {
	if err := validate(demands); err != nil {
		return nil, err
	}
	out := make([]BucketState, len(demands))
	for i, d := range demands {
		s := &m.shards[m.shardOf(d.Bucket)]
		s.mu.Lock()
		if d.Slot != "" {
			out[i] = slotState(s.held(d.Bucket, m.clock()), d)
		} else if !d.Window.IsZero() {
			wall := m.now().UnixMicro()
			out[i] = quotaState(s.quotaUsed(d, wall), wall, d)
		} else {
			out[i] = peekState(s.buckets[d.Bucket], m.clock(), d)
		}
		s.mu.Unlock()
	}
	return out, nil
}
