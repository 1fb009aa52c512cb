package policy

import (
	"net/netip"
	"sync"
)

// ConnLimiter counts open connections, in total and per client address.
// A zero limit means no limit. The zero value limits nothing.
type ConnLimiter struct {
	Max      int // total connections; 0 = unlimited. Change with SetLimits once in use.
	MaxPerIP int // per client address; 0 = unlimited

	mu    sync.Mutex
	total int
	perIP map[netip.Addr]int // only addresses with open connections: bounded by Max
}

// NewConnLimiter returns a limiter with the given limits.
func NewConnLimiter(max, perIP int) *ConnLimiter {
	return &ConnLimiter{Max: max, MaxPerIP: perIP}
}

// Acquire takes a slot for addr. It returns a release function, or nil and
// the reason when a limit is reached. release may be called more than once.
func (l *ConnLimiter) Acquire(addr netip.Addr) (release func(), reason string) {
	if l == nil {
		return func() {}, ""
	}
	addr = addr.Unmap()
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.Max > 0 && l.total >= l.Max {
		return nil, ReasonTooManyConns
	}
	if l.perIP == nil {
		l.perIP = make(map[netip.Addr]int)
	}
	if l.MaxPerIP > 0 && l.perIP[addr] >= l.MaxPerIP {
		return nil, ReasonTooManyPerIP
	}
	l.total++
	l.perIP[addr]++
	var once sync.Once
	return func() { once.Do(func() { l.release(addr) }) }, ""
}

func (l *ConnLimiter) release(addr netip.Addr) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.total--
	if n := l.perIP[addr] - 1; n > 0 {
		l.perIP[addr] = n
	} else {
		delete(l.perIP, addr)
	}
}

// SetLimits changes the limits (on a config reload) without forgetting the
// connections already open.
func (l *ConnLimiter) SetLimits(max, perIP int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.Max, l.MaxPerIP = max, perIP
}

// Open returns the number of open connections.
func (l *ConnLimiter) Open() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.total
}
