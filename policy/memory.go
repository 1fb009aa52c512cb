package policy

import (
	"context"
	"hash/maphash"
	"sync"
	"time"
)

// DefaultMaxEntries is the number of failure counters, and separately of
// known devices, a MemoryStore keeps when MaxEntries is zero. Measured with
// BenchmarkMemoryPerKey: about 130 bytes of heap per tracked key, so at
// most about 13 MB for the counters and 13 MB for the known devices.
const DefaultMaxEntries = 100_000

// MemoryStore is the in-memory Store of a single node. Its memory is
// bounded: at most MaxEntries failure counters and MaxEntries known devices,
// each table evicting its least recently used entry first when full.
//
// Why an attacker cannot grow it: only an attempt let through to the
// upstream creates counters (a refused attempt creates none), and every failure is
// counted under its /24 or /48, whose budget is small. Rotating through the
// addresses of one IPv6 /48 therefore adds at most a budget's worth of
// entries per window, however many addresses it holds. Known devices are
// created only by successful logins. Beyond that the hard cap holds, and
// eviction takes the entries nobody has touched for longest: an attacker's
// busy counters are touched on every refused attempt and stay.
//
// The zero value is ready to use.
type MemoryStore struct {
	// MaxEntries caps each table; zero means DefaultMaxEntries. Set it
	// before first use.
	MaxEntries int

	once    sync.Once
	seed    maphash.Seed
	mu      sync.Mutex
	fails   lruTable
	devices lruTable
	longest time.Duration // the longest window seen, for expiring idle counters
}

// memKey is Key in fixed size: the address bytes, the prefix length, the
// kind, and a 64-bit hash of the user name (seeded per process).
type memKey struct {
	addr [16]byte
	user uint64
	kind KeyKind
	bits uint8
	is4  bool
}

func (m *MemoryStore) init() {
	m.once.Do(func() {
		m.seed = maphash.MakeSeed()
		n := m.MaxEntries
		if n <= 0 {
			n = DefaultMaxEntries
		}
		m.fails.init(n)
		m.devices.init(n)
	})
}

func (m *MemoryStore) key(k Key) memKey {
	mk := memKey{kind: k.Kind}
	if k.Net.IsValid() {
		mk.addr = k.Net.Addr().As16()
		mk.bits = uint8(k.Net.Bits())
		mk.is4 = k.Net.Addr().Is4()
	}
	if k.User != "" {
		mk.user = maphash.String(m.seed, k.User)
	}
	return mk
}

// Take implements Store.
func (m *MemoryStore) Take(_ context.Context, keys []Key, limits []int, window time.Duration, now time.Time, counts []int) (int, error) {
	m.init()
	t := now.UnixNano()
	m.mu.Lock()
	defer m.mu.Unlock()
	spent, busy := TakeHeld, false
	for i, k := range keys {
		counts[i] = 0
		pending := 0
		if e := m.fails.get(m.key(k)); e != nil {
			if t-e.start < int64(window) {
				counts[i] = int(e.n)
			}
			pending = int(e.pending)
		}
		if limits[i] > 0 {
			if spent < 0 && counts[i] >= limits[i] {
				spent = i
			}
			busy = busy || counts[i]+pending >= limits[i]
		}
	}
	if spent >= 0 {
		return spent, nil
	}
	if busy {
		return TakeBusy, nil
	}
	m.longest = max(m.longest, window)
	m.fails.expire(t, int64(m.longest))
	for i, k := range keys {
		e := m.fails.put(m.key(k))
		if e.n == 0 || t-e.start >= int64(window) {
			e.n, e.start = 0, t
		}
		if e.pending < ^uint32(0) {
			e.pending++
		}
		counts[i] = int(e.n) + 1
	}
	return TakeHeld, nil
}

// Commit implements Store.
func (m *MemoryStore) Commit(_ context.Context, keys []Key, window time.Duration, now time.Time) error {
	m.init()
	t := now.UnixNano()
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, k := range keys {
		e := m.fails.put(m.key(k)) // evicted meanwhile: the failure still counts
		if e.pending > 0 {
			e.pending--
		}
		if e.n == 0 || t-e.start >= int64(window) {
			e.n, e.start = 0, t
		}
		if e.n < ^uint32(0) {
			e.n++
		}
	}
	return nil
}

// Refund implements Store.
func (m *MemoryStore) Refund(_ context.Context, keys []Key) error {
	m.init()
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, k := range keys {
		if e := m.fails.get(m.key(k)); e != nil && e.pending > 0 {
			e.pending--
		}
	}
	return nil
}

// Reset implements Store.
func (m *MemoryStore) Reset(_ context.Context, keys []Key) error {
	m.init()
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, k := range keys {
		mk := m.key(k)
		if e := m.fails.get(mk); e != nil && e.pending > 0 {
			e.n = 0 // attempts still pending keep their hold
			continue
		}
		m.fails.remove(mk)
	}
	return nil
}

// Known implements Store.
func (m *MemoryStore) Known(_ context.Context, device Key, ttl time.Duration, now time.Time) (bool, error) {
	m.init()
	m.mu.Lock()
	defer m.mu.Unlock()
	e := m.devices.get(m.key(device))
	return e != nil && now.UnixNano()-e.start < int64(ttl), nil
}

// MarkKnown implements Store.
func (m *MemoryStore) MarkKnown(_ context.Context, device Key, now time.Time) error {
	m.init()
	m.mu.Lock()
	defer m.mu.Unlock()
	m.devices.put(m.key(device)).start = now.UnixNano()
	return nil
}

// Len returns the number of failure counters and known devices held.
func (m *MemoryStore) Len() (counters, devices int) {
	m.init()
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.fails.index), len(m.devices.index)
}

// lruTable is a bounded map with an intrusive recency list over a slice,
// so entries cost no separate allocation and no pointer for the GC.
type lruTable struct {
	max        int
	index      map[memKey]int32
	ents       []lruEntry
	free       []int32
	head, tail int32 // most and least recently used; -1 when empty
}

type lruEntry struct {
	k          memKey
	start      int64  // window start (counters) or last success (devices), Unix ns
	n          uint32 // failures in the window
	pending    uint32 // attempts held by Take, not yet committed or refunded
	prev, next int32
}

func (l *lruTable) init(max int) {
	l.max = max
	l.index = make(map[memKey]int32)
	l.head, l.tail = -1, -1
}

// get returns the entry of k, marking it used, or nil.
func (l *lruTable) get(k memKey) *lruEntry {
	i, ok := l.index[k]
	if !ok {
		return nil
	}
	l.toFront(i)
	return &l.ents[i]
}

// put returns the entry of k, creating a zero one (and evicting the least
// recently used entry when full) if there is none.
func (l *lruTable) put(k memKey) *lruEntry {
	if e := l.get(k); e != nil {
		return e
	}
	if len(l.index) >= l.max {
		l.removeAt(l.tail)
	}
	var i int32
	if n := len(l.free); n > 0 {
		i, l.free = l.free[n-1], l.free[:n-1]
	} else {
		l.ents = append(l.ents, lruEntry{})
		i = int32(len(l.ents) - 1)
	}
	l.ents[i] = lruEntry{k: k, prev: -1, next: l.head}
	if l.head >= 0 {
		l.ents[l.head].prev = i
	}
	l.head = i
	if l.tail < 0 {
		l.tail = i
	}
	l.index[k] = i
	return &l.ents[i]
}

// expire drops up to two least recently used entries whose window ended
// longer than longest ago: idle counters leave without a sweeper goroutine.
func (l *lruTable) expire(now, longest int64) {
	for range 2 {
		if l.tail < 0 || now-l.ents[l.tail].start < longest {
			return
		}
		l.removeAt(l.tail)
	}
}

func (l *lruTable) remove(k memKey) {
	if i, ok := l.index[k]; ok {
		l.removeAt(i)
	}
}

func (l *lruTable) removeAt(i int32) {
	e := &l.ents[i]
	l.unlink(i)
	delete(l.index, e.k)
	*e = lruEntry{}
	l.free = append(l.free, i)
}

func (l *lruTable) unlink(i int32) {
	e := &l.ents[i]
	if e.prev >= 0 {
		l.ents[e.prev].next = e.next
	} else {
		l.head = e.next
	}
	if e.next >= 0 {
		l.ents[e.next].prev = e.prev
	} else {
		l.tail = e.prev
	}
	e.prev, e.next = -1, -1
}

func (l *lruTable) toFront(i int32) {
	if l.head == i {
		return
	}
	l.unlink(i)
	e := &l.ents[i]
	e.next = l.head
	if l.head >= 0 {
		l.ents[l.head].prev = i
	}
	l.head = i
	if l.tail < 0 {
		l.tail = i
	}
}
