package policy

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"
)

func TestNetKeysAggregatePrefixes(t *testing.T) {
	tests := []struct {
		addr   string
		want   []string
		device string
	}{
		{"192.0.2.77", []string{"192.0.2.77/32", "192.0.2.0/24"}, "192.0.2.0/24"},
		{"::ffff:192.0.2.77", []string{"192.0.2.77/32", "192.0.2.0/24"}, "192.0.2.0/24"}, // IPv4-mapped is IPv4
		{"::ffff:c000:24d", []string{"192.0.2.77/32", "192.0.2.0/24"}, "192.0.2.0/24"},
		{"2001:db8:1:2:3:4:5:6", []string{"2001:db8:1:2:3:4:5:6/128", "2001:db8:1:2::/64", "2001:db8:1::/48"}, "2001:db8:1:2::/64"},
		{"fe80::1%eth0", []string{"fe80::1/128", "fe80::/64", "fe80::/48"}, "fe80::/64"}, // the zone is dropped
		{"127.1.200.9", []string{"127.1.200.9/32", "127.1.200.0/24"}, "127.1.200.0/24"},
	}
	for _, tt := range tests {
		var got []string
		for _, p := range NetKeys(netip.MustParseAddr(tt.addr)) {
			got = append(got, p.String())
		}
		if !slices.Equal(got, tt.want) {
			t.Errorf("NetKeys(%s) = %v, want %v", tt.addr, got, tt.want)
		}
		if d := DeviceNet(netip.MustParseAddr(tt.addr)).String(); d != tt.device {
			t.Errorf("DeviceNet(%s) = %s, want %s", tt.addr, d, tt.device)
		}
	}
	if n := NetKeys(netip.Addr{}); len(n) != 0 {
		t.Errorf("invalid address gives %v", n)
	}
	// Two addresses of one /64 share every IPv6 key but the /128.
	a, b := NetKeys(netip.MustParseAddr("2001:db8::1")), NetKeys(netip.MustParseAddr("2001:db8::ffff:1"))
	if a[0] == b[0] || a[1] != b[1] || a[2] != b[2] {
		t.Errorf("aggregation wrong: %v vs %v", a, b)
	}
}

func TestKeyString(t *testing.T) {
	p := netip.MustParsePrefix("192.0.2.0/24")
	for k, want := range map[Key]string{
		{Kind: KeyNet, Net: p}:                 "net:192.0.2.0/24",
		{Kind: KeyUser, User: "alice"}:         "user:alice",
		{Kind: KeyDevice, Net: p, User: "bob"}: "dev:192.0.2.0/24:bob",
		{}:                                     "invalid",
	} {
		if got := k.String(); got != want {
			t.Errorf("%v.String() = %q, want %q", k, got, want)
		}
	}
	if NormalizeUser(" Alice ") != "alice" {
		t.Error("user names are not folded")
	}
}

// clock is a manual time source.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func newTestGuard(b Budgets, rules ...Rule) (*Guard, *clock) {
	c := &clock{t: time.Date(2026, 11, 26, 0, 0, 0, 0, time.UTC)}
	g := NewGuard(nil, b, rules)
	g.Now = c.now
	return g, c
}

// try runs one attempt against an upstream that accepts only password
// "right" and reports whether the upstream was asked, and the decision.
func try(g *Guard, addr, user, password string) (reached bool, d Decision) {
	ctx := context.Background()
	a := Attempt{Addr: netip.MustParseAddr(addr), User: user, Listener: "l"}
	d = g.Check(ctx, a)
	if !d.Allowed {
		return false, d
	}
	if password == "right" {
		g.Success(ctx, a, d)
	} else {
		g.Failure(ctx, a, d)
	}
	return true, d
}

var testBudgets = Budgets{PerIP: 10, PerNetwork: 30, PerUser: 20, PerDevice: 5, Window: 15 * time.Minute, Delay: time.Second}

func TestOneAddressIsStoppedAtItsBudget(t *testing.T) {
	g, _ := newTestGuard(testBudgets)
	reached := 0
	var last Decision
	for i := range 10_000 {
		ok, d := try(g, "203.0.113.9", fmt.Sprintf("user%d", i%50), "guess")
		if ok {
			reached++
		}
		last = d
	}
	if reached != 10 {
		t.Fatalf("%d guesses reached the upstream, want 10", reached)
	}
	if last.Result != ResultRateLimited || last.Reason != ReasonIPRateLimited {
		t.Fatalf("refusal = %s/%s", last.Result, last.Reason)
	}
	if last.Delay != 8*time.Second {
		t.Fatalf("refusal delay = %v, want the 8x cap", last.Delay)
	}
	// A neighbour in the same /24 still has the network's budget left.
	if ok, _ := try(g, "203.0.113.10", "carol", "guess"); !ok {
		t.Fatal("a neighbour was refused while the /24 had budget")
	}
}

func TestNetworkBudgetCatchesRotationInsideA24And48(t *testing.T) {
	for _, tt := range []struct {
		name string
		addr func(i int) string
	}{
		{"ipv4 /24", func(i int) string { return fmt.Sprintf("198.51.100.%d", i%256) }},
		{"ipv6 /48", func(i int) string { return fmt.Sprintf("2001:db8:7:%x::%x", i%65536, i+1) }},
	} {
		t.Run(tt.name, func(t *testing.T) {
			g, _ := newTestGuard(testBudgets)
			reached := 0
			var last Decision
			for i := range 5000 {
				ok, d := try(g, tt.addr(i), fmt.Sprintf("u%d", i), "guess")
				if ok {
					reached++
				}
				last = d
			}
			if reached != testBudgets.PerNetwork {
				t.Fatalf("%d reached, want %d", reached, testBudgets.PerNetwork)
			}
			if last.Reason != ReasonNetRateLimited {
				t.Fatalf("reason %q", last.Reason)
			}
			counters, _ := g.store.(*MemoryStore).Len()
			if counters > 5*testBudgets.PerNetwork {
				t.Fatalf("rotation grew the store to %d counters", counters)
			}
		})
	}
}

func TestSprayLocksTheUserButNotTheRealUsersDevice(t *testing.T) {
	g, _ := newTestGuard(testBudgets)
	if ok, _ := try(g, "192.0.2.10", "victim", "right"); !ok {
		t.Fatal("first login refused")
	}
	reached, realOK := 0, 0
	for i := range 2560 {
		attacker := fmt.Sprintf("10.%d.%d.1", i/256, i%256) // a different /24 each time
		if ok, _ := try(g, attacker, "Victim", "guess"); ok {
			reached++
		}
		if i%10 == 0 {
			// The real user, from home (another address in its /24).
			if ok, d := try(g, "192.0.2.11", "victim", "right"); ok && d.Known {
				realOK++
			}
		}
	}
	if reached != testBudgets.PerUser {
		t.Fatalf("%d spray guesses reached the upstream, want %d", reached, testBudgets.PerUser)
	}
	if realOK != 256 {
		t.Fatalf("the real user succeeded %d of 256 times during the spray", realOK)
	}
	// From a network it never used, the user is locked.
	_, d := try(g, "172.16.0.1", "victim", "right")
	if d.Allowed || d.Result != ResultLocked || d.Reason != ReasonUserLocked {
		t.Fatalf("unknown network during lock: %+v", d)
	}
}

func TestKnownDeviceHasItsOwnBudget(t *testing.T) {
	g, c := newTestGuard(testBudgets)
	try(g, "192.0.2.10", "alice", "right")
	for range testBudgets.PerDevice {
		if ok, _ := try(g, "192.0.2.10", "alice", "typo"); !ok {
			t.Fatal("typo refused before the device budget was spent")
		}
	}
	_, d := try(g, "192.0.2.10", "alice", "right")
	if d.Allowed || d.Reason != ReasonDeviceLocked {
		t.Fatalf("device budget not enforced: %+v", d)
	}
	// Typos from a known device do not count against the address.
	if ok, _ := try(g, "192.0.2.10", "bob", "right"); !ok {
		t.Fatal("another user from the same address was refused")
	}
	c.add(16 * time.Minute)
	if ok, _ := try(g, "192.0.2.10", "alice", "right"); !ok {
		t.Fatal("device lock did not expire with the window")
	}
	// A success forgets the device's failures.
	for range testBudgets.PerDevice - 1 {
		try(g, "192.0.2.10", "alice", "typo")
	}
	try(g, "192.0.2.10", "alice", "right")
	if ok, _ := try(g, "192.0.2.10", "alice", "typo"); !ok {
		t.Fatal("failures before a success still counted")
	}
	// A known device expires after KnownFor.
	c.add(DefaultKnownFor + time.Minute)
	if _, d := try(g, "192.0.2.10", "alice", "right"); d.Known {
		t.Fatal("device still known after KnownFor")
	}
}

func TestWindowsExpire(t *testing.T) {
	g, c := newTestGuard(testBudgets)
	for i := range 20 {
		try(g, "203.0.113.1", fmt.Sprint("x", i), "guess")
	}
	if ok, _ := try(g, "203.0.113.1", "y", "guess"); ok {
		t.Fatal("not limited")
	}
	c.add(14 * time.Minute)
	if ok, _ := try(g, "203.0.113.1", "y", "guess"); ok {
		t.Fatal("limit lifted before the window passed")
	}
	c.add(time.Minute)
	if ok, _ := try(g, "203.0.113.1", "y", "guess"); !ok {
		t.Fatal("limit not lifted after the window")
	}
}

func TestTarpitGrowsPerKey(t *testing.T) {
	g, _ := newTestGuard(Budgets{Delay: 100 * time.Millisecond})
	ctx := context.Background()
	a := Attempt{Addr: netip.MustParseAddr("192.0.2.1"), User: "u"}
	var got []time.Duration
	for range 6 {
		got = append(got, g.Failure(ctx, a, g.Check(ctx, a)))
	}
	want := []time.Duration{100, 200, 400, 800, 800, 800}
	for i := range want {
		want[i] *= time.Millisecond
	}
	if !slices.Equal(got, want) {
		t.Fatalf("delays %v, want %v", got, want)
	}
	// Another address and user start again at the base delay.
	b := Attempt{Addr: netip.MustParseAddr("198.51.100.1"), User: "v"}
	if d := g.Failure(ctx, b, g.Check(ctx, b)); d != 100*time.Millisecond {
		t.Fatalf("fresh key delay %v", d)
	}
}

func TestRulesFirstMatchWinsAndReloadKeepsCounters(t *testing.T) {
	office := Rule{Networks: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}} // no limits
	strict := Rule{Listeners: []string{"public"}, Budgets: Budgets{PerIP: 2}}
	g, _ := newTestGuard(testBudgets, office, strict)
	ctx := context.Background()
	users := 0
	fail := func(addr, listener string) bool {
		users++
		a := Attempt{Addr: netip.MustParseAddr(addr), User: fmt.Sprint("u", users), Listener: listener}
		d := g.Check(ctx, a)
		if d.Allowed {
			g.Failure(ctx, a, d)
		}
		return d.Allowed
	}
	for i := range 100 {
		if !fail("10.1.1.1", "public") {
			t.Fatalf("office address refused after %d", i)
		}
	}
	n := 0
	for fail("203.0.113.5", "public") {
		n++
	}
	if n != 2 {
		t.Fatalf("public listener allowed %d, want 2", n)
	}
	n = 0
	for fail("203.0.113.6", "private") && n < 100 {
		n++
	}
	if n != 10 {
		t.Fatalf("default budgets allowed %d, want 10", n)
	}
	// A reload raising the public budget keeps the two failures counted.
	g.SetBudgets(testBudgets, []Rule{{Listeners: []string{"public"}, Budgets: Budgets{PerIP: 3}}})
	if !fail("203.0.113.5", "public") || fail("203.0.113.5", "public") {
		t.Fatal("counters were not kept across SetBudgets")
	}
}

// TestMemoryStoreIsBoundedAndEvictsTheCheapestFirst: when the failure
// table is full, the counter that goes is the one with the fewest failures
// (by powers of two) whose last failure is oldest; counters whose window
// has passed go first of all.
func TestMemoryStoreIsBoundedAndEvictsTheCheapestFirst(t *testing.T) {
	m := &MemoryStore{MaxEntries: 100}
	ctx := context.Background()
	now := time.Unix(1e9, 0)
	key := func(i int) Key {
		return Key{Kind: KeyNet, Net: netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}), 32)}
	}
	counts := make([]int, 1)
	fail := func(k Key, now time.Time) { // an attempt let through that failed
		m.Take(ctx, []Key{k}, []int{0}, time.Hour, now, counts)
		m.Commit(ctx, []Key{k}, time.Hour, now)
	}
	for range 3 {
		fail(key(0), now) // a spent budget, made first
	}
	fail(key(1), now)
	fail(key(1), now)
	for i := 2; i < 1000; i++ {
		fail(key(i), now)
	}
	if n, _ := m.Len(); n != 100 {
		t.Fatalf("%d entries, want the cap of 100", n)
	}
	if m.Pending() != 0 {
		t.Fatalf("%d keys still pending after every attempt failed", m.Pending())
	}
	for _, tt := range []struct {
		key, want int
		why       string
	}{
		{0, 3, "the oldest counter, with 3 failures, was pushed out by one-failure counters"},
		{1, 2, "a counter with 2 failures was pushed out by one-failure counters"},
		{901, 0, "the one-failure counter that failed longest ago was kept"},
		{902, 1, "a one-failure counter was evicted before older ones"},
		{999, 1, "the newest counter was evicted"},
	} {
		if got := peek(m, key(tt.key), time.Hour, now); got != tt.want {
			t.Errorf("key %d counts %d, want %d: %s", tt.key, got, tt.want, tt.why)
		}
	}
	// Idle counters past the longest window leave as new ones arrive,
	// whatever their failures.
	later := now.Add(2 * time.Hour)
	for i := range 60 {
		fail(key(5000+i), later)
	}
	if n, _ := m.Len(); n != 60 {
		t.Fatalf("%d entries: expired counters were not dropped", n)
	}
	m.Reset(ctx, []Key{key(5000)})
	if peek(m, key(5000), time.Hour, later) != 0 {
		t.Fatal("Reset kept the counter")
	}
}

func TestSlotsCapAndQueue(t *testing.T) {
	s := NewSlots(2, 1, 200*time.Millisecond)
	ctx := context.Background()
	r1, r2 := s.Acquire(ctx), s.Acquire(ctx)
	if r1 == nil || r2 == nil {
		t.Fatal("slots under the cap refused")
	}
	got := make(chan func(), 1)
	go func() { got <- s.Acquire(ctx) }()
	waitSlots(t, s, 2, 1)
	start := time.Now()
	if r := s.Acquire(ctx); r != nil {
		t.Fatal("queue over its length accepted a waiter")
	}
	if time.Since(start) > 50*time.Millisecond {
		t.Fatal("a full queue did not refuse at once")
	}
	r1()
	r3 := <-got
	if r3 == nil {
		t.Fatal("the waiter did not get the released slot")
	}
	if in, _ := s.InUse(); in != 2 {
		t.Fatalf("in use %d", in)
	}
	// A waiter whose wait runs out is refused and leaves the queue.
	start = time.Now()
	if r := s.Acquire(ctx); r != nil {
		t.Fatal("waited past Wait")
	}
	if d := time.Since(start); d < 150*time.Millisecond {
		t.Fatalf("refused after %v, before the wait", d)
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if r := s.Acquire(cctx); r != nil {
		t.Fatal("a cancelled waiter got a slot")
	}
	r2()
	r3()
	if in, w := s.InUse(); in != 0 || w != 0 {
		t.Fatalf("after release: %d in use, %d waiting", in, w)
	}
	// Raising the limit frees waiters at once.
	s = NewSlots(1, 5, time.Minute)
	r := s.Acquire(ctx)
	go func() { got <- s.Acquire(ctx) }()
	waitSlots(t, s, 1, 1)
	s.SetLimits(2, 5, time.Minute)
	if w := <-got; w == nil {
		t.Fatal("raised limit did not free the waiter")
	}
	r()
	var zero *Slots
	zero.Acquire(ctx)()
}

func waitSlots(t *testing.T, s *Slots, inUse, waiting int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		in, w := s.InUse()
		if in == inUse && w == waiting {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("slots: %d in use, %d waiting; want %d, %d", in, w, inUse, waiting)
		}
		time.Sleep(time.Millisecond)
	}
}

func TestSlotsUnderConcurrency(t *testing.T) {
	s := NewSlots(8, 16, time.Second)
	var mu sync.Mutex
	cur, peak, ok, refused := 0, 0, 0, 0
	var wg sync.WaitGroup
	for range 500 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := s.Acquire(context.Background())
			mu.Lock()
			if r == nil {
				refused++
				mu.Unlock()
				return
			}
			ok++
			cur++
			peak = max(peak, cur)
			mu.Unlock()
			time.Sleep(time.Millisecond)
			mu.Lock()
			cur--
			mu.Unlock()
			r()
		}()
	}
	wg.Wait()
	if peak > 8 || ok+refused != 500 || ok < 8 {
		t.Fatalf("peak %d, ok %d, refused %d", peak, ok, refused)
	}
}

// peek reads a counter as Take would, without counting.
func peek(m *MemoryStore, k Key, window time.Duration, now time.Time) int {
	m.mu.Lock()
	defer m.mu.Unlock()
	if e := m.fails.get(m.key(k)); e != nil && now.UnixNano()-e.start < int64(window) {
		return int(e.n)
	}
	return 0
}

func TestTakeIsAtomicUnderParallelAttempts(t *testing.T) {
	g := NewGuard(nil, Budgets{PerIP: 10}, nil)
	ctx := context.Background()
	var wg sync.WaitGroup
	var mu sync.Mutex
	allowed := 0
	for i := range 200 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			a := Attempt{Addr: netip.MustParseAddr("192.0.2.1"), User: fmt.Sprint("u", i)}
			if d := g.Check(ctx, a); d.Allowed {
				mu.Lock()
				allowed++
				mu.Unlock()
				time.Sleep(time.Millisecond) // the upstream thinking
				g.Failure(ctx, a, d)
			}
		}()
	}
	wg.Wait()
	if allowed != 10 {
		t.Fatalf("%d parallel attempts allowed, want 10", allowed)
	}
}

func TestSuccessAndCancelGiveTheAttemptBack(t *testing.T) {
	g, _ := newTestGuard(Budgets{PerIP: 3})
	ctx := context.Background()
	for i := range 50 { // a NAT with many users logging in fine
		a := Attempt{Addr: netip.MustParseAddr("192.0.2.1"), User: fmt.Sprint("u", i)}
		d := g.Check(ctx, a)
		if !d.Allowed {
			t.Fatalf("success %d refused", i)
		}
		if i%2 == 0 {
			g.Success(ctx, a, d)
		} else {
			g.Cancel(ctx, a, d)
		}
	}
}

// TestAttemptsInFlightWaitNotRefused: attempts in flight hold a budget
// that failures have not spent: a further attempt is told Busy (wait),
// never refused, and at most the budget's worth are in flight at once.
func TestAttemptsInFlightWaitNotRefused(t *testing.T) {
	g := NewGuard(nil, Budgets{PerIP: 3}, nil)
	ctx := context.Background()
	addr := netip.MustParseAddr("192.0.2.7")
	var held []Decision
	for i := range 3 {
		d := g.Check(ctx, Attempt{Addr: addr, User: fmt.Sprint("u", i)})
		if !d.Allowed {
			t.Fatalf("attempt %d not allowed: %+v", i, d)
		}
		held = append(held, d)
	}
	d := g.Check(ctx, Attempt{Addr: addr, User: "u3"})
	if d.Allowed || !d.Busy || d.Result != "" {
		t.Fatalf("fourth attempt in flight: %+v, want Busy", d)
	}
	// One settles with a success: room for one more.
	g.Success(ctx, Attempt{Addr: addr, User: "u0"}, held[0])
	if d := g.Check(ctx, Attempt{Addr: addr, User: "u3"}); !d.Allowed {
		t.Fatalf("after a success: %+v", d)
	} else {
		held[0] = d
	}
	// All three fail: the budget is spent, and now it is a refusal.
	for i, d := range held {
		g.Failure(ctx, Attempt{Addr: addr, User: fmt.Sprint("u", []int{3, 1, 2}[i])}, d)
	}
	d = g.Check(ctx, Attempt{Addr: addr, User: "u9"})
	if d.Allowed || d.Busy || d.Reason != ReasonIPRateLimited {
		t.Fatalf("after three failures: %+v, want ip_rate_limited", d)
	}
}

// TestSlotsWaitersKeepTheirPlaceWhileLoginsFinish: a storm of right
// passwords after a blip queues far more logins than there are slots and
// waits far longer in all than the wait; as long as logins keep
// finishing (the upstream answers), none is refused. Once none finishes,
// the rest are refused within the wait.
func TestSlotsWaitersKeepTheirPlaceWhileLoginsFinish(t *testing.T) {
	const waiters, hold, wait = 30, 15 * time.Millisecond, 60 * time.Millisecond
	s := NewSlots(1, 0, wait) // queue 0: no bound of its own
	ctx := context.Background()
	first := s.Acquire(ctx)
	results := make(chan bool, waiters)
	for range waiters {
		go func() {
			r := s.Acquire(ctx)
			if r != nil {
				time.Sleep(hold) // the login's round trips
				r()
			}
			results <- r != nil
		}()
	}
	waitSlots(t, s, 1, waiters) // every one queued, whatever the number
	start := time.Now()
	first()
	got := 0
	for range waiters {
		if <-results {
			got++
		}
	}
	if got != waiters {
		t.Fatalf("%d of %d waiters got a slot while logins kept finishing every %v (wait %v)", got, waiters, hold, wait)
	}
	if d := time.Since(start); d < waiters*hold {
		t.Fatalf("all done in %v: the logins did not wait their turn", d)
	}

	// A hung upstream: the one slot never comes back.
	stuck := s.Acquire(ctx)
	begin := time.Now()
	if r := s.Acquire(ctx); r != nil {
		t.Fatal("a waiter got a slot no login gave back")
	}
	if d := time.Since(begin); d < wait*3/4 || d > wait+time.Second {
		t.Fatalf("refused after %v with no login finishing; want about %v", d, wait)
	}
	stuck()
}
