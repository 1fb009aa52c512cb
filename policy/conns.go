package policy

import (
	"net/netip"
	"sync"
)

// Reasons Acquire refuses a connection (audit `reason` values).
const (
	// ReasonTooManyConns: Max connections are open.
	ReasonTooManyConns = "too_many_connections"
	// ReasonTooManyPerIP: the client's address (IPv4 address, IPv6 /64)
	// holds MaxPerIP connections already.
	ReasonTooManyPerIP = "too_many_connections_per_ip"
	// ReasonTooManyPerNetwork: the client's network (IPv4 /24, IPv6 /48)
	// holds MaxPerNetwork connections already.
	ReasonTooManyPerNetwork = "too_many_connections_per_network"
)

// ConnLimiter counts open connections: in total, per client address and per
// client network. An address is an IPv4 address or an IPv6 /64 (one
// subscriber's LAN: its 2^64 addresses are free to whoever has one, so they
// count as one address, as for the failure budgets); a network is an IPv4 /24
// or an IPv6 /48. IPv4-mapped IPv6 addresses count as IPv4.
// A zero limit means no limit. The zero value limits nothing.
type ConnLimiter struct {
	// Change the limits with SetLimits once the limiter is in use.
	Max           int // total connections; 0 = unlimited
	MaxPerIP      int // per client address (IPv4 address, IPv6 /64); 0 = unlimited
	MaxPerNetwork int // per client network (IPv4 /24, IPv6 /48); 0 = unlimited

	mu    sync.Mutex
	total int
	// Only prefixes with open connections are kept: each map holds at most
	// as many entries as there are open connections.
	perIP  map[netip.Prefix]int
	perNet map[netip.Prefix]int
}

// NewConnLimiter returns a limiter with the given limits.
func NewConnLimiter(max, perIP, perNetwork int) *ConnLimiter {
	return &ConnLimiter{Max: max, MaxPerIP: perIP, MaxPerNetwork: perNetwork}
}

// connKeys returns what a connection from addr is counted under: its address
// (IPv4 /32, IPv6 /64) and its network (IPv4 /24, IPv6 /48), the two widest
// of the prefixes failures are counted under (NetKeys). Every invalid
// address shares the zero prefixes.
func connKeys(addr netip.Addr) (address, network netip.Prefix) {
	keys := NetKeys(addr)
	if len(keys) < 2 {
		return netip.Prefix{}, netip.Prefix{}
	}
	return keys[len(keys)-2], keys[len(keys)-1]
}

// Acquire takes a slot for addr. It returns a release function, or nil and
// the reason when a limit is reached: ReasonTooManyConns, ReasonTooManyPerIP
// or ReasonTooManyPerNetwork, checked in that order. release may be called
// more than once.
func (l *ConnLimiter) Acquire(addr netip.Addr) (release func(), reason string) {
	if l == nil {
		return func() {}, ""
	}
	host, network := connKeys(addr)
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.Max > 0 && l.total >= l.Max {
		return nil, ReasonTooManyConns
	}
	if l.perIP == nil {
		l.perIP = make(map[netip.Prefix]int)
		l.perNet = make(map[netip.Prefix]int)
	}
	if l.MaxPerIP > 0 && l.perIP[host] >= l.MaxPerIP {
		return nil, ReasonTooManyPerIP
	}
	if l.MaxPerNetwork > 0 && l.perNet[network] >= l.MaxPerNetwork {
		return nil, ReasonTooManyPerNetwork
	}
	l.total++
	l.perIP[host]++
	l.perNet[network]++
	var once sync.Once
	return func() { once.Do(func() { l.release(host, network) }) }, ""
}

func (l *ConnLimiter) release(host, network netip.Prefix) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.total--
	decrement(l.perIP, host)
	decrement(l.perNet, network)
}

// decrement counts one connection of key less, and forgets key at zero.
func decrement(m map[netip.Prefix]int, key netip.Prefix) {
	if n := m[key] - 1; n > 0 {
		m[key] = n
	} else {
		delete(m, key)
	}
}

// SetLimits changes the limits (on a config reload) without forgetting the
// connections already open.
func (l *ConnLimiter) SetLimits(max, perIP, perNetwork int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.Max, l.MaxPerIP, l.MaxPerNetwork = max, perIP, perNetwork
}

// Open returns the number of open connections.
func (l *ConnLimiter) Open() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.total
}

// tracked returns how many addresses and networks have open connections
// (tests: the state stays bounded).
func (l *ConnLimiter) tracked() (addresses, networks int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.perIP), len(l.perNet)
}
