package tlsconf

import (
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"
)

// OnDemandPolicy decides which names not configured in advance may get a
// certificate during a handshake (On-Demand TLS). Without a policy no such
// name gets one: a client choosing SNI names must not be able to make the
// proxy ask a CA for anything it likes.
type OnDemandPolicy struct {
	// Allow lists the names allowed: "mail.example.com" allows exactly
	// that name, ".example.com" (or "*.example.com") every name below
	// example.com. Required: an empty list is an error.
	Allow []string

	// MaxPerHour caps how many certificates are requested in any hour.
	// Zero: 10.
	MaxPerHour int

	mu     sync.Mutex
	issued map[string]time.Time // name -> when it was first allowed, within the last hour
	now    func() time.Time
}

// DefaultOnDemandPerHour is the hourly cap when MaxPerHour is zero.
const DefaultOnDemandPerHour = 10

// ErrOnDemandNotAllowed and ErrOnDemandCap are the reasons Decide refuses
// a name.
var (
	ErrOnDemandNotAllowed = errors.New("name not in the on-demand allow-list")
	ErrOnDemandCap        = errors.New("on-demand issuance cap for this hour reached")
)

func (p *OnDemandPolicy) check() error {
	if len(p.Allow) == 0 {
		return errors.New("tlsconf: on-demand TLS needs an allow-list of names or suffixes")
	}
	if p.MaxPerHour < 0 {
		return fmt.Errorf("tlsconf: on-demand cap %d is negative", p.MaxPerHour)
	}
	return nil
}

// Allowed reports whether name matches the allow-list.
func (p *OnDemandPolicy) Allowed(name string) bool {
	name = strings.TrimSuffix(strings.ToLower(name), ".")
	if name == "" || strings.ContainsAny(name, "*/ ") {
		return false
	}
	for _, a := range p.Allow {
		a = strings.TrimSuffix(strings.ToLower(a), ".")
		if suffix, ok := strings.CutPrefix(a, "*"); ok {
			a = suffix
		}
		if strings.HasPrefix(a, ".") {
			if strings.HasSuffix(name, a) && len(name) > len(a) {
				return true
			}
		} else if name == a {
			return true
		}
	}
	return false
}

// Decide allows name if it is on the allow-list and the hourly cap is not
// reached. Each allowed name counts once per hour against the cap, however
// many handshakes ask for it while its certificate is being obtained.
func (p *OnDemandPolicy) Decide(name string) error {
	if !p.Allowed(name) {
		return fmt.Errorf("%q: %w", name, ErrOnDemandNotAllowed)
	}
	name = strings.TrimSuffix(strings.ToLower(name), ".")
	limit := p.MaxPerHour
	if limit == 0 {
		limit = DefaultOnDemandPerHour
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	now := time.Now()
	if p.now != nil {
		now = p.now()
	}
	for n, t := range p.issued {
		if now.Sub(t) >= time.Hour {
			delete(p.issued, n)
		}
	}
	if _, ok := p.issued[name]; ok {
		return nil
	}
	if len(p.issued) >= limit {
		return fmt.Errorf("%q: %w (%d)", name, ErrOnDemandCap, limit)
	}
	if p.issued == nil {
		p.issued = map[string]time.Time{}
	}
	p.issued[name] = now
	return nil
}
