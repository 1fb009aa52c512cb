package proxy

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

// ErrConnectFailed marks a login that failed while connecting: dial, PROXY
// header, TLS, greeting or STARTTLS. Nothing but the PROXY header has been
// sent, so an UpstreamGroup may try its next address. It comes with
// ErrUnavailable, never with ErrNoAnswer or ErrBadCredentials.
var ErrConnectFailed = errors.New("could not connect to the upstream")

// connectError is an error of Upstream.connect: the error itself, and
// ErrConnectFailed for errors.Is.
type connectError struct{ err error }

func (e *connectError) Error() string   { return e.err.Error() }
func (e *connectError) Unwrap() []error { return []error{e.err, ErrConnectFailed} }

// connectFailed marks err as a failure to connect (see ErrConnectFailed).
func connectFailed(err error) error { return &connectError{err} }

// Balance says how an UpstreamGroup spreads logins over its addresses.
type Balance string

// Balance modes.
const (
	// BalanceRoundRobin takes the healthy addresses in turn.
	BalanceRoundRobin Balance = "round-robin"
	// BalanceFailover takes the first healthy address in the order
	// written: a primary and its standbys.
	BalanceFailover Balance = "failover"
)

// UpstreamGroup is one named upstream: a server reachable at one or more
// addresses, each an Upstream with the same settings. A login goes to a
// healthy address (README "Routing"), and on to the next one only when
// the connection or the greeting failed (ErrConnectFailed): never after
// the upstream answered the credential, nor once the credential was on
// the wire.
//
// Health comes from Watch's probes and from logins: a login that cannot
// connect marks its address down until a probe succeeds again. An
// address not probed yet counts as healthy. Addresses marked down are
// still tried, last, when no healthy one is left: a probe's verdict is
// a few seconds old, the login's is fresh.
//
// The zero value has no address; Members must not change once the
// group is in use.
type UpstreamGroup struct {
	// Name is the upstream's name in the config, for audit events,
	// metrics and logs. Empty for the single unnamed [upstream].
	Name string
	// Members are the addresses, in the order written. Required.
	Members []*Upstream
	// Balance picks among healthy members. Empty means BalanceRoundRobin.
	Balance Balance
	// ProbeInterval is how often Watch probes each member. Zero means 10s.
	ProbeInterval time.Duration

	next      atomic.Uint64
	stateOnce sync.Once
	state     []memberState // parallel to Members
}

// memberState is what is known of one member's health.
type memberState struct {
	down      atomic.Bool  // the last probe or connect failed
	lastOK    atomic.Int64 // unix nanos of the last probe that succeeded; 0 = none
	lastProbe atomic.Int64 // unix nanos of the last probe, whatever its result
}

// DefaultProbeInterval is the ProbeInterval used when it is zero.
const DefaultProbeInterval = 10 * time.Second

func (g *UpstreamGroup) probeInterval() time.Duration {
	return orDefault(g.ProbeInterval, DefaultProbeInterval)
}

func (g *UpstreamGroup) states() []memberState {
	g.stateOnce.Do(func() { g.state = make([]memberState, len(g.Members)) })
	return g.state
}

// Single returns a group of the one upstream u, named name.
func Single(name string, u *Upstream) *UpstreamGroup {
	return &UpstreamGroup{Name: name, Members: []*Upstream{u}}
}

// only returns a group of member i of g alone (a lookup named that
// address), sharing g's name and settings but not its health.
func (g *UpstreamGroup) only(i int) *UpstreamGroup {
	return &UpstreamGroup{Name: g.Name, Members: []*Upstream{g.Members[i]}, ProbeInterval: g.ProbeInterval}
}

// Label names the group in audit events and logs: its name, or the
// address of its only member when it has none.
func (g *UpstreamGroup) Label() string {
	if g.Name == "" && len(g.Members) > 0 {
		return g.Members[0].Address
	}
	return g.Name
}

// order returns the indices of the members in the order a login should
// try them: the healthy ones (round robin or in order, as Balance says),
// then those marked down.
func (g *UpstreamGroup) order() []int {
	n := len(g.Members)
	st := g.states()
	start := 0
	if g.Balance != BalanceFailover && n > 1 {
		start = int(g.next.Add(1)-1) % n
	}
	healthy := make([]int, 0, n)
	var down []int
	for k := range n {
		i := (start + k) % n
		if st[i].down.Load() {
			down = append(down, i)
		} else {
			healthy = append(healthy, i)
		}
	}
	return append(healthy, down...)
}

// login runs try on each member in turn (see order) until one does not
// fail with ErrConnectFailed, and returns its result. A member that
// fails to connect is marked down.
func (g *UpstreamGroup) login(try func(*Upstream) (*UpstreamConn, error)) (*UpstreamConn, error) {
	if len(g.Members) == 0 {
		return nil, fmt.Errorf("%w: upstream %q has no address", ErrUnavailable, g.Name)
	}
	st := g.states()
	var err error
	for _, i := range g.order() {
		var uc *UpstreamConn
		uc, err = try(g.Members[i])
		if !errors.Is(err, ErrConnectFailed) {
			if err == nil {
				st[i].down.Store(false)
			}
			return uc, err
		}
		st[i].down.Store(true)
	}
	return nil, err
}

// Login logs user in with the client's own password at a healthy
// address (Upstream.Login), trying the next address only when one cannot
// be connected to.
func (g *UpstreamGroup) Login(ctx context.Context, user, password string, client ClientInfo) (*UpstreamConn, error) {
	return g.login(func(u *Upstream) (*UpstreamConn, error) { return u.Login(ctx, user, password, client) })
}

// LoginAs logs in through the master login for mailbox (Upstream.LoginAs),
// with the failover of Login.
func (g *UpstreamGroup) LoginAs(ctx context.Context, mailbox string, client ClientInfo) (*UpstreamConn, error) {
	return g.login(func(u *Upstream) (*UpstreamConn, error) { return u.LoginAs(ctx, mailbox, client) })
}
