package policy

import (
	"context"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// Audit results and reasons of Check's refusals (Decision.Result and
// Decision.Reason).
const (
	ResultRateLimited = "ratelimited" // an address or network spent its budget
	ResultLocked      = "locked"      // a user, or a user's device, spent its budget

	ReasonIPRateLimited  = "ip_rate_limited"  // the client's IPv4 /32, IPv6 /128 or /64
	ReasonNetRateLimited = "net_rate_limited" // the client's IPv4 /24 or IPv6 /48
	ReasonUserLocked     = "user_locked"      // the user, from a network that is not a known device
	ReasonDeviceLocked   = "device_locked"    // the user from this network (known device or not)
)

// Decider is what the proxy asks before and after an upstream login.
// *Guard implements it; the proxy holds it as this interface so a test or a
// later backend can stand in.
type Decider interface {
	// Check decides whether the attempt may reach the upstream. An allowed
	// attempt is held against its budgets at once (so parallel attempts
	// cannot overshoot one); exactly one of Failure, Success or Cancel must
	// follow it. A Decision with Busy set refuses nothing yet: attempts in
	// flight fill a budget that failures have not spent, so the caller
	// should wait briefly and Check again.
	Check(ctx context.Context, a Attempt) Decision
	// Failure says the credentials may have been judged and were not
	// accepted: the upstream rejected them, or they were sent and no
	// answer came (a timeout or a dropped connection may hide a judgement).
	// It returns how long to wait before answering (the tarpit).
	Failure(ctx context.Context, a Attempt, d Decision) time.Duration
	// Success says the login succeeded: the attempt is given back and the
	// device becomes known.
	Success(ctx context.Context, a Attempt, d Decision)
	// Cancel says the credentials never reached the upstream (it was
	// unavailable or busy before they were sent): the attempt is given back.
	Cancel(ctx context.Context, a Attempt, d Decision)
}

// Attempt is one authentication attempt.
type Attempt struct {
	Addr     netip.Addr // the client's address; IPv4-mapped IPv6 counts as IPv4
	User     string     // as the client sent it; the Guard keys budgets by UserNames.Key of it
	Listener string     // the listener's name, for per-listener budgets
}

// Decision is the answer of Check.
type Decision struct {
	// Allowed means the credentials may go to the upstream.
	Allowed bool
	// Busy (with Allowed false) means no budget is spent but attempts in
	// flight fill one: Check again after they settle (a few milliseconds).
	// Result and Reason are empty then.
	Busy bool
	// Result and Reason explain a refusal for the audit event
	// (ResultRateLimited or ResultLocked, and a Reason... constant).
	Result, Reason string
	// Delay is how long to wait before answering a refusal.
	Delay time.Duration
	// Known means the user has logged in from this network recently: only
	// the device budget applied.
	Known bool
	// Err is a store error; the Guard then allows the attempt (fail open:
	// a broken shared store must not lock every user out) and the caller
	// should log it.
	Err error

	budgets Budgets
	user    string // the user's policy key, as Check made it
	counted bool   // Take counted the attempt: Success and Cancel refund it
	busiest int    // the highest count among the attempt's keys, after counting
}

// Budgets are the limits applied to an attempt. A zero limit means no limit.
type Budgets struct {
	PerIP      int           // failures per IPv4 /32, IPv6 /128 and IPv6 /64
	PerNetwork int           // failures per IPv4 /24 and IPv6 /48
	PerUser    int           // failures per user from networks that are not known devices
	PerDevice  int           // failures per (user, device network)
	Window     time.Duration // how long failures count; zero means 15m
	Delay      time.Duration // tarpit before a failed answer; doubles per failure of the busiest key, up to 8x
}

// MaxDelayFactor bounds the tarpit: a failure waits Delay × 2^(n-1) where n
// is the failure count of the busiest key counted for the attempt, at most
// Delay × MaxDelayFactor.
const MaxDelayFactor = 8

func (b Budgets) window() time.Duration {
	if b.Window > 0 {
		return b.Window
	}
	return 15 * time.Minute
}

// delay is the tarpit after the n-th failure of the busiest key.
func (b Budgets) delay(n int) time.Duration {
	if b.Delay <= 0 {
		return 0
	}
	f := 1
	for f < MaxDelayFactor && n > 1 {
		f *= 2
		n--
	}
	return b.Delay * time.Duration(f)
}

// Rule gives different budgets to some clients: those whose address is in
// one of Networks (any address when empty) connecting to one of Listeners
// (any listener when empty).
type Rule struct {
	Networks  []netip.Prefix
	Listeners []string
	Budgets   Budgets
}

func (r *Rule) matches(addr netip.Addr, listener string) bool {
	if len(r.Listeners) > 0 && !slices.Contains(r.Listeners, listener) {
		return false
	}
	if len(r.Networks) == 0 {
		return true
	}
	for _, p := range r.Networks {
		if p.Contains(addr) {
			return true
		}
	}
	return false
}

// DefaultKnownFor is how long a successful login keeps its device known
// when Guard.KnownFor is zero.
const DefaultKnownFor = 30 * 24 * time.Hour

// Guard is the brute-force and password-spraying defence. Before the
// upstream sees a credential, Check counts the failures of the client's
// address at several prefix lengths (IPv4 /32 and /24; IPv6 /128, /64 and
// /48), of the user, and of the (user, network) pair, against the budgets of
// the first matching Rule (or Default).
//
// The known-device rule: when the user logged in successfully from the same
// device network (IPv4 /24, IPv6 /64; see DeviceNet) within KnownFor, the
// attempt is judged by that (user, network) budget only, PerDevice
// failures per Window, and its failures count only there. Failures from
// anywhere else, however many, cannot lock the user out of a network they
// already use; a guessed-at user is locked only for unknown networks.
//
// Users are keyed by UserNames.Key, so the spellings of one mailbox share
// its budgets and known devices (see SetUserNames).
//
// Create one with NewGuard; change budgets with SetBudgets and the user
// name normalisation with SetUserNames (counters are kept).
type Guard struct {
	// KnownFor is how long a success keeps a device known. Zero means
	// DefaultKnownFor. Set before use.
	KnownFor time.Duration
	// Now returns the time; nil means time.Now (tests).
	Now func() time.Time

	store   Store
	rules   atomic.Pointer[ruleSet]
	users   atomic.Pointer[UserNames] // nil: fold case only
	keySets sync.Pool                 // of *keySet
}

type ruleSet struct {
	def   Budgets
	rules []Rule
}

// NewGuard returns a Guard counting in store (a new MemoryStore when nil)
// with the default budgets def and the rules, first match wins.
func NewGuard(store Store, def Budgets, rules []Rule) *Guard {
	if store == nil {
		store = &MemoryStore{}
	}
	g := &Guard{store: store}
	g.SetBudgets(def, rules)
	return g
}

// SetBudgets replaces the budgets (on a config reload) and keeps every
// counter and known device.
func (g *Guard) SetBudgets(def Budgets, rules []Rule) {
	g.rules.Store(&ruleSet{def: def, rules: slices.Clone(rules)})
}

// SetUserNames sets how user names become policy keys (nil: fold case and
// space only, the default). An attempt keeps the key Check gave it, so a
// change while attempts are in flight settles each under its own key.
func (g *Guard) SetUserNames(u *UserNames) {
	g.users.Store(u)
}

// UserKey returns the policy key of a user name as a client typed it.
func (g *Guard) UserKey(user string) string {
	return g.users.Load().Key(user)
}

// userOf is the user key of an attempt: the one Check made, if d came
// from Check.
func (g *Guard) userOf(a Attempt, d Decision) string {
	if d.counted {
		return d.user
	}
	return g.UserKey(a.User)
}

// Store returns the Guard's store.
func (g *Guard) Store() Store { return g.store }

// BudgetsFor returns the budgets that apply to a client address on a
// listener.
func (g *Guard) BudgetsFor(addr netip.Addr, listener string) Budgets {
	rs := g.rules.Load()
	addr = addr.Unmap()
	for i := range rs.rules {
		if rs.rules[i].matches(addr, listener) {
			return rs.rules[i].Budgets
		}
	}
	return rs.def
}

func (g *Guard) now() time.Time {
	if g.Now != nil {
		return g.Now()
	}
	return time.Now()
}

func (g *Guard) knownFor() time.Duration {
	if g.KnownFor > 0 {
		return g.KnownFor
	}
	return DefaultKnownFor
}

// keySet is the counters of one attempt. Store methods take slices
// through an interface, which would move arrays on the stack to the heap:
// keySets are pooled in the Guard instead, so a decision does not allocate.
type keySet struct {
	keys   [5]Key
	limits [5]int
	counts [5]int
	n      int
}

func (g *Guard) keySet() *keySet {
	if ks, ok := g.keySets.Get().(*keySet); ok {
		return ks
	}
	return new(keySet)
}

func (ks *keySet) add(k Key, limit int) {
	ks.keys[ks.n], ks.limits[ks.n] = k, limit
	ks.n++
}

// keysFor lists the counters of an attempt: for a known device, only the
// device; otherwise the address prefixes, the user and the device.
func keysFor(ks *keySet, addr netip.Addr, user string, known bool, b Budgets) {
	ks.n = 0
	dev := Key{Kind: KeyDevice, Net: DeviceNet(addr), User: user}
	if known {
		ks.add(dev, b.PerDevice)
		return
	}
	var nets [3]netip.Prefix
	n := appendNetKeys(nets[:0], addr)
	for _, p := range nets[:n] {
		limit := b.PerIP
		if p.Bits() == IPv4NetBits && p.Addr().Is4() || p.Bits() == IPv6SiteBits && p.Addr().Is6() {
			limit = b.PerNetwork
		}
		ks.add(Key{Kind: KeyNet, Net: p}, limit)
	}
	if user != "" {
		ks.add(Key{Kind: KeyUser, User: user}, b.PerUser)
		ks.add(dev, b.PerDevice)
	}
}

// reasonFor names the budget a key spent.
func reasonFor(k Key) (result, reason string) {
	switch k.Kind {
	case KeyUser:
		return ResultLocked, ReasonUserLocked
	case KeyDevice:
		return ResultLocked, ReasonDeviceLocked
	}
	if (k.Net.Addr().Is4() && k.Net.Bits() == IPv4NetBits) || (k.Net.Addr().Is6() && k.Net.Bits() == IPv6SiteBits) {
		return ResultRateLimited, ReasonNetRateLimited
	}
	return ResultRateLimited, ReasonIPRateLimited
}

// Check implements Decider.
func (g *Guard) Check(ctx context.Context, a Attempt) Decision {
	addr := a.Addr.Unmap()
	b := g.BudgetsFor(addr, a.Listener)
	user := g.UserKey(a.User)
	d := Decision{Allowed: true, budgets: b, user: user}
	now := g.now()
	if user != "" && addr.IsValid() {
		known, err := g.store.Known(ctx, Key{Kind: KeyDevice, Net: DeviceNet(addr), User: user}, g.knownFor(), now)
		if err != nil {
			d.Err = err
			return d
		}
		d.Known = known
	}
	ks := g.keySet()
	defer g.keySets.Put(ks)
	keysFor(ks, addr, user, d.Known, b)
	spent, err := g.store.Take(ctx, ks.keys[:ks.n], ks.limits[:ks.n], b.window(), now, ks.counts[:ks.n])
	if err != nil {
		d.Err = err
		return d
	}
	for i := range ks.n {
		d.busiest = max(d.busiest, ks.counts[i])
	}
	if spent == TakeBusy {
		d.Allowed, d.Busy = false, true
		return d
	}
	if spent >= 0 {
		d.Allowed = false
		d.Result, d.Reason = reasonFor(ks.keys[spent])
		d.Delay = b.delay(d.busiest + 1)
		return d
	}
	d.counted = true
	return d
}

// Failure implements Decider: the attempt becomes a failure of every key;
// the tarpit doubles with the count of the busiest key.
func (g *Guard) Failure(ctx context.Context, a Attempt, d Decision) time.Duration {
	if d.counted {
		ks := g.keySet()
		defer g.keySets.Put(ks)
		keysFor(ks, a.Addr.Unmap(), d.user, d.Known, d.budgets)
		g.store.Commit(ctx, ks.keys[:ks.n], d.budgets.window(), g.now())
	}
	return d.budgets.delay(max(d.busiest, 1))
}

// Cancel implements Decider.
func (g *Guard) Cancel(ctx context.Context, a Attempt, d Decision) {
	if !d.counted {
		return
	}
	ks := g.keySet()
	defer g.keySets.Put(ks)
	keysFor(ks, a.Addr.Unmap(), d.user, d.Known, d.budgets)
	g.store.Refund(ctx, ks.keys[:ks.n])
}

// Success implements Decider: the attempt is given back, the device
// becomes known (or stays known for another KnownFor) and its failures are
// forgotten. The user's own counter keeps its other failures: the real
// user logging in must not hand a sprayer a fresh budget.
func (g *Guard) Success(ctx context.Context, a Attempt, d Decision) {
	g.Cancel(ctx, a, d)
	user := g.userOf(a, d)
	addr := a.Addr.Unmap()
	if user == "" || !addr.IsValid() {
		return
	}
	ks := g.keySet()
	defer g.keySets.Put(ks)
	ks.keys[0] = Key{Kind: KeyDevice, Net: DeviceNet(addr), User: user}
	g.store.MarkKnown(ctx, ks.keys[0], g.now())
	g.store.Reset(ctx, ks.keys[:1])
}
