package policy

import (
	"context"
	"hash/maphash"
	"math/bits"
	"sync"
	"time"
)

// DefaultMaxEntries is the number of failure counters, and separately of
// known devices, a MemoryStore keeps when MaxEntries is zero. Measured with
// BenchmarkMemoryPerKey: about 130 bytes of heap per tracked key, so at
// most about 13 MB for the counters and 13 MB for the known devices.
const DefaultMaxEntries = 100_000

// DefaultMaxDevicesPerUser is the number of known devices a MemoryStore
// keeps for one user when MaxDevicesPerUser is zero: a phone on a few
// carrier networks, a laptop at home, at work and on the road.
const DefaultMaxDevicesPerUser = 16

// MemoryStore is the in-memory Store of a single node. Its memory is
// bounded, and what one user or one network can add to it is bounded too,
// so that nobody can flush the state that protects everyone else:
//
//   - Failure counters, at most MaxEntries. Only a failure creates one
//     (Commit): a refused attempt, a success and an attempt the upstream
//     never judged create none. What one network can add per window is
//     bounded by its budget (every failure also counts under its IPv4 /24
//     or IPv6 /48), however many addresses it rotates through.
//   - Attempts in flight, in a table of their own: one count per key an
//     attempt is held on, removed when its last attempt commits or is
//     refunded. Its size is at most five keys per attempt in flight, and
//     the proxy has at most one attempt in flight per open connection.
//   - Known devices, at most MaxEntries, and at most MaxDevicesPerUser per
//     user: a user's new device replaces that user's device with the
//     oldest success. One account logging in from a thousand networks
//     holds only its last few.
//
// Which failure counter goes when the table is full: one whose window has
// passed, if there is one; else one with the fewest failures, counted in
// powers of two (1, 2-3, 4-7, ... 128 and more), the one whose last
// failure is oldest among those. A counter with n failures cost whoever
// made it n failures, each within the budgets of its networks, so a flood
// of fresh one-failure counters (a botnet of many /24s spraying many users)
// replaces other one-failure counters, and a locked user's or a spent
// network's counter goes only when every counter in the table has about as
// many failures. When the known-device table is full, the device whose
// last success is oldest goes; pushing out other users' devices takes
// MaxEntries / MaxDevicesPerUser accounts that log in successfully.
//
// The zero value is ready to use.
type MemoryStore struct {
	// MaxEntries caps the failure counters and, separately, the known
	// devices; zero means DefaultMaxEntries. Set it before first use.
	MaxEntries int
	// MaxDevicesPerUser caps the known devices of one user; zero means
	// DefaultMaxDevicesPerUser. Set it before first use.
	MaxDevicesPerUser int

	once        sync.Once
	seed        maphash.Seed
	mu          sync.Mutex
	fails       failTable
	pending     map[memKey]uint32 // attempts held by Take, not yet committed or refunded
	pendingPeak int               // the most keys pending since pending was made
	devices     deviceTable
	longest     time.Duration // the longest window seen, for expiring idle counters
	longestTTL  time.Duration // the longest known-device ttl seen, for expiring old devices
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
		perUser := m.MaxDevicesPerUser
		if perUser <= 0 {
			perUser = DefaultMaxDevicesPerUser
		}
		m.fails.init(n)
		m.devices.init(n, perUser)
		m.pending = make(map[memKey]uint32)
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

// Take implements Store. It reads the failure counters without creating
// any, and holds the attempt in the pending table.
func (m *MemoryStore) Take(_ context.Context, keys []Key, limits []int, window time.Duration, now time.Time, counts []int) (int, error) {
	m.init()
	var buf [8]memKey
	mks := buf[:0]
	for _, k := range keys {
		mks = append(mks, m.key(k))
	}
	t := now.UnixNano()
	m.mu.Lock()
	defer m.mu.Unlock()
	spent, busy := TakeHeld, false
	for i, mk := range mks {
		counts[i] = 0
		if e := m.fails.get(mk); e != nil && t-e.start < int64(window) {
			counts[i] = int(e.n)
		}
		if limits[i] > 0 {
			if spent < 0 && counts[i] >= limits[i] {
				spent = i
			}
			busy = busy || counts[i]+int(m.pending[mk]) >= limits[i]
		}
	}
	if spent >= 0 {
		return spent, nil
	}
	if busy {
		return TakeBusy, nil
	}
	for i, mk := range mks {
		if p := m.pending[mk]; p < ^uint32(0) {
			m.pending[mk] = p + 1
		}
		counts[i]++
	}
	m.pendingPeak = max(m.pendingPeak, len(m.pending))
	return TakeHeld, nil
}

// release gives back one pending attempt of mk, dropping the key from the
// pending table with its last one. A map keeps the room it once grew to:
// once empty after a storm, it is made anew.
func (m *MemoryStore) release(mk memKey) {
	switch p := m.pending[mk]; {
	case p > 1:
		m.pending[mk] = p - 1
	case p == 1:
		delete(m.pending, mk)
		if len(m.pending) == 0 && m.pendingPeak > 1024 {
			m.pending, m.pendingPeak = make(map[memKey]uint32), 0
		}
	}
}

// Commit implements Store: the only place a failure counter is created.
func (m *MemoryStore) Commit(_ context.Context, keys []Key, window time.Duration, now time.Time) error {
	m.init()
	t := now.UnixNano()
	m.mu.Lock()
	defer m.mu.Unlock()
	m.longest = max(m.longest, window)
	m.fails.expire(t, int64(m.longest))
	for _, k := range keys {
		mk := m.key(k)
		m.release(mk)
		m.fails.fail(mk, t, int64(window), int64(m.longest))
	}
	return nil
}

// Refund implements Store.
func (m *MemoryStore) Refund(_ context.Context, keys []Key) error {
	m.init()
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, k := range keys {
		m.release(m.key(k))
	}
	return nil
}

// Reset implements Store. Attempts still pending on keys keep their hold.
func (m *MemoryStore) Reset(_ context.Context, keys []Key) error {
	m.init()
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, k := range keys {
		m.fails.remove(m.key(k))
	}
	return nil
}

// Known implements Store.
func (m *MemoryStore) Known(_ context.Context, device Key, ttl time.Duration, now time.Time) (bool, error) {
	m.init()
	mk := m.key(device)
	m.mu.Lock()
	defer m.mu.Unlock()
	m.longestTTL = max(m.longestTTL, ttl)
	i, ok := m.devices.index[mk]
	return ok && now.UnixNano()-m.devices.ents[i].last < int64(ttl), nil
}

// MarkKnown implements Store.
func (m *MemoryStore) MarkKnown(_ context.Context, device Key, now time.Time) error {
	m.init()
	mk := m.key(device)
	m.mu.Lock()
	defer m.mu.Unlock()
	t := now.UnixNano()
	if m.longestTTL > 0 {
		m.devices.expire(t, int64(m.longestTTL))
	}
	m.devices.mark(mk, t)
	return nil
}

// Len returns the number of failure counters and known devices held.
func (m *MemoryStore) Len() (counters, devices int) {
	m.init()
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.fails.index), len(m.devices.index)
}

// Pending returns the number of keys with attempts held by Take that have
// not been committed or refunded yet: at most five per attempt in flight,
// and zero when no attempt is.
func (m *MemoryStore) Pending() int {
	m.init()
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.pending)
}

// Both tables below are bounded maps whose entries live in one slice and
// are chained by index (no allocation per entry, no pointer for the GC).

// failLevels is the number of eviction classes of failure counters: a
// counter with n failures is in class floor(log2 n), the last class
// holding everything from 2^(failLevels-1) failures up.
const failLevels = 8

func failLevel(n uint32) uint8 {
	return uint8(min(bits.Len32(n)-1, failLevels-1))
}

// failTable holds failure counters, one recency list per class: a counter
// moves to the front of its class's list at each failure.
type failTable struct {
	max          int
	index        map[memKey]int32
	ents         []failEntry
	free         []int32
	heads, tails [failLevels]int32 // per class: last and first to fail; -1 when empty
}

type failEntry struct {
	k          memKey
	start      int64  // window start, Unix ns
	n          uint32 // failures in the window, at least 1
	level      uint8  // failLevel(n)
	prev, next int32  // in the list of level
}

func (l *failTable) init(max int) {
	l.max = max
	l.index = make(map[memKey]int32)
	for i := range l.heads {
		l.heads[i], l.tails[i] = -1, -1
	}
}

// get returns the counter of k, or nil.
func (l *failTable) get(k memKey) *failEntry {
	if i, ok := l.index[k]; ok {
		return &l.ents[i]
	}
	return nil
}

// fail counts one failure of k at t in a window, creating the counter (and
// evicting one, see MemoryStore) when it has none.
func (l *failTable) fail(k memKey, t, window, longest int64) {
	i, ok := l.index[k]
	if ok {
		l.unlink(i)
	} else {
		if len(l.index) >= l.max {
			l.evict(t, longest)
		}
		i = l.alloc()
		l.ents[i] = failEntry{k: k}
		l.index[k] = i
	}
	e := &l.ents[i]
	if e.n == 0 || t-e.start >= window {
		e.n, e.start = 0, t
	}
	if e.n < ^uint32(0) {
		e.n++
	}
	e.level = failLevel(e.n)
	l.pushFront(i)
}

// evict drops one counter: the first to fail of a class if its window has
// passed, else the first to fail of the lowest class.
func (l *failTable) evict(t, longest int64) {
	if l.dropExpired(t, longest) {
		return
	}
	for _, i := range l.tails {
		if i >= 0 {
			l.removeAt(i)
			return
		}
	}
}

// expire drops up to two counters whose window ended longer than longest
// ago, looking at the first to fail of each class: idle counters leave as
// new failures arrive, without a sweeper goroutine.
func (l *failTable) expire(t, longest int64) {
	for range 2 {
		if !l.dropExpired(t, longest) {
			return
		}
	}
}

// dropExpired drops the first counter to fail of a class whose window
// ended longer than longest ago, if there is one.
func (l *failTable) dropExpired(t, longest int64) bool {
	for _, i := range l.tails {
		if i >= 0 && t-l.ents[i].start >= longest {
			l.removeAt(i)
			return true
		}
	}
	return false
}

func (l *failTable) alloc() int32 {
	if n := len(l.free); n > 0 {
		i := l.free[n-1]
		l.free = l.free[:n-1]
		return i
	}
	l.ents = append(l.ents, failEntry{})
	return int32(len(l.ents) - 1)
}

func (l *failTable) remove(k memKey) {
	if i, ok := l.index[k]; ok {
		l.removeAt(i)
	}
}

func (l *failTable) removeAt(i int32) {
	l.unlink(i)
	delete(l.index, l.ents[i].k)
	l.ents[i] = failEntry{}
	l.free = append(l.free, i)
}

func (l *failTable) unlink(i int32) {
	e := &l.ents[i]
	if e.prev >= 0 {
		l.ents[e.prev].next = e.next
	} else {
		l.heads[e.level] = e.next
	}
	if e.next >= 0 {
		l.ents[e.next].prev = e.prev
	} else {
		l.tails[e.level] = e.prev
	}
	e.prev, e.next = -1, -1
}

func (l *failTable) pushFront(i int32) {
	e := &l.ents[i]
	e.prev, e.next = -1, l.heads[e.level]
	if e.next >= 0 {
		l.ents[e.next].prev = i
	} else {
		l.tails[e.level] = i
	}
	l.heads[e.level] = i
}

// deviceTable holds known devices on two lists: all devices, and each
// user's, both by last success, most recent first.
type deviceTable struct {
	max, perUser int
	index        map[memKey]int32
	users        map[uint64]userDevices // by memKey.user
	ents         []deviceEntry
	free         []int32
	head, tail   int32 // most and least recently successful; -1 when empty
}

type deviceEntry struct {
	k            memKey
	last         int64 // last success, Unix ns
	prev, next   int32 // all devices
	uprev, unext int32 // this user's devices
}

type userDevices struct {
	head, tail int32 // most and least recently successful of the user
	n          int32
}

func (l *deviceTable) init(max, perUser int) {
	l.max, l.perUser = max, perUser
	l.index = make(map[memKey]int32)
	l.users = make(map[uint64]userDevices)
	l.head, l.tail = -1, -1
}

// mark records a success of k at t, making it the most recent device of
// all and of its user. A new device first replaces its user's oldest when
// the user has perUser, else the oldest of all when the table is full.
func (l *deviceTable) mark(k memKey, t int64) {
	i, ok := l.index[k]
	if ok {
		l.unlink(i)
	} else {
		if u := l.users[k.user]; int(u.n) >= l.perUser {
			l.removeAt(u.tail)
		} else if len(l.index) >= l.max {
			l.removeAt(l.tail)
		}
		if n := len(l.free); n > 0 {
			i, l.free = l.free[n-1], l.free[:n-1]
		} else {
			l.ents = append(l.ents, deviceEntry{})
			i = int32(len(l.ents) - 1)
		}
		l.ents[i] = deviceEntry{k: k}
		l.index[k] = i
	}
	l.ents[i].last = t
	l.pushFront(i)
}

// expire drops up to two devices whose last success is ttl or more before
// t.
func (l *deviceTable) expire(t, ttl int64) {
	for range 2 {
		if l.tail < 0 || t-l.ents[l.tail].last < ttl {
			return
		}
		l.removeAt(l.tail)
	}
}

func (l *deviceTable) removeAt(i int32) {
	l.unlink(i)
	delete(l.index, l.ents[i].k)
	l.ents[i] = deviceEntry{}
	l.free = append(l.free, i)
}

func (l *deviceTable) unlink(i int32) {
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
	u := l.users[e.k.user]
	if e.uprev >= 0 {
		l.ents[e.uprev].unext = e.unext
	} else {
		u.head = e.unext
	}
	if e.unext >= 0 {
		l.ents[e.unext].uprev = e.uprev
	} else {
		u.tail = e.uprev
	}
	if u.n--; u.n > 0 {
		l.users[e.k.user] = u
	} else {
		delete(l.users, e.k.user)
	}
	e.prev, e.next, e.uprev, e.unext = -1, -1, -1, -1
}

func (l *deviceTable) pushFront(i int32) {
	e := &l.ents[i]
	e.prev, e.next = -1, l.head
	if e.next >= 0 {
		l.ents[e.next].prev = i
	} else {
		l.tail = i
	}
	l.head = i
	u, ok := l.users[e.k.user]
	if !ok {
		u = userDevices{head: -1, tail: -1}
	}
	e.uprev, e.unext = -1, u.head
	if e.unext >= 0 {
		l.ents[e.unext].uprev = i
	} else {
		u.tail = i
	}
	u.head = i
	u.n++
	l.users[e.k.user] = u
}
