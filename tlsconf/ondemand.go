package tlsconf

import (
	"context"
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
	issued []time.Time // times of requests in the last hour
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
// reached; an allowed name counts against the cap.
func (p *OnDemandPolicy) Decide(name string) error {
	if !p.Allowed(name) {
		return fmt.Errorf("%q: %w", name, ErrOnDemandNotAllowed)
	}
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
	kept := p.issued[:0]
	for _, t := range p.issued {
		if now.Sub(t) < time.Hour {
			kept = append(kept, t)
		}
	}
	p.issued = kept
	if len(p.issued) >= limit {
		return fmt.Errorf("%q: %w (%d)", name, ErrOnDemandCap, limit)
	}
	p.issued = append(p.issued, now)
	return nil
}

func (p *OnDemandPolicy) decide(_ context.Context, name string) error { return p.Decide(name) }
