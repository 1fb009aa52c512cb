package credstore

import (
	"net/netip"
	"sync"
	"time"
)

// use is the latest successful use of a credential.
type use struct {
	At   time.Time
	Addr netip.Addr
}

// pendingUses keeps the latest use of each credential until a backend
// writes them: one entry per credential, at most max entries, so a burst
// of logins costs memory bounded by the number of credentials in use, and
// one write per interval rather than one per login.
type pendingUses struct {
	max  int
	full chan struct{} // a send asks the writer to write now

	mu      sync.Mutex
	m       map[string]use
	dropped int // uses not kept because the map was full
}

func newPendingUses(max int) *pendingUses {
	return &pendingUses{max: max, full: make(chan struct{}, 1), m: make(map[string]use)}
}

// record keeps u as id's latest use. When the map is full, a use of a
// credential not yet in it is dropped (its last use stays as last
// written) and the writer is asked to write now.
func (p *pendingUses) record(id string, u use) {
	p.mu.Lock()
	old, ok := p.m[id]
	switch {
	case ok && old.At.After(u.At):
	case ok || len(p.m) < p.max:
		p.m[id] = u
	default:
		p.dropped++
	}
	full := len(p.m) >= p.max
	p.mu.Unlock()
	if full {
		select {
		case p.full <- struct{}{}:
		default:
		}
	}
}

// take returns the pending uses and forgets them.
func (p *pendingUses) take() map[string]use {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.m) == 0 {
		return nil
	}
	m := p.m
	p.m = make(map[string]use, len(m))
	return m
}

// putBack returns uses whose write failed, unless newer ones came since.
func (p *pendingUses) putBack(m map[string]use) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for id, u := range m {
		old, ok := p.m[id]
		switch {
		case ok && old.At.After(u.At):
		case ok || len(p.m) < p.max:
			p.m[id] = u
		default:
			p.dropped++
		}
	}
}

// get returns id's pending use, if any.
func (p *pendingUses) get(id string) (use, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	u, ok := p.m[id]
	return u, ok
}

// forget drops id's pending use (its credential was revoked).
func (p *pendingUses) forget(id string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.m, id)
}
