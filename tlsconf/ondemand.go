package tlsconf

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"
)

// OnDemandPolicy decides which names not configured in advance may get a
// certificate during a handshake (On-Demand TLS). Without a policy no such
// name gets one: a client choosing SNI names must not be able to make the
// proxy ask a CA for anything it likes.
//
// Names listed exactly are the admin's own choice: they are allowed
// without further checks and never count against MaxPerHour. A name
// matched only by a suffix is one a client picked: before it counts, it
// must resolve (A or AAAA) to an address of Addresses, or to any address
// when Addresses is empty, so names that do not exist, or that are served
// elsewhere, never reach the CA and never spend the cap. The cap is then
// what bounds a client that picks names the DNS does answer for (a
// wildcard record under the suffix).
type OnDemandPolicy struct {
	// Allow lists the names allowed: "mail.example.com" allows exactly
	// that name, ".example.com" (or "*.example.com") every name below
	// example.com. Required: an empty list is an error.
	Allow []string

	// MaxPerHour caps how many names matched by a suffix are requested in
	// any hour. Zero: 10.
	MaxPerHour int

	// Addresses are where a name matched by a suffix must point: one of
	// its addresses must be in one of these prefixes (the proxy's public
	// addresses). Empty: any address will do, so only names that do not
	// resolve are refused.
	Addresses []netip.Prefix

	// Resolver looks up a name matched by a suffix. Nil: net.DefaultResolver
	// (ACME gives the resolvers of ACMEOptions.DNSResolvers when set).
	Resolver Resolver

	mu     sync.Mutex
	issued map[string]time.Time // name -> when it was first allowed, within the last hour
	now    func() time.Time
}

// Resolver looks up the addresses of a host; *net.Resolver is one.
type Resolver interface {
	LookupNetIP(ctx context.Context, network, host string) ([]netip.Addr, error)
}

// DefaultOnDemandPerHour is the hourly cap when MaxPerHour is zero.
const DefaultOnDemandPerHour = 10

// onDemandLookupTimeout bounds the lookup of one name matched by a suffix.
const onDemandLookupTimeout = 5 * time.Second

// The reasons Decide refuses a name.
var (
	ErrOnDemandNotAllowed = errors.New("name not in the on-demand allow-list")
	ErrOnDemandCap        = errors.New("on-demand issuance cap for this hour reached")
	ErrOnDemandNoAddress  = errors.New("name does not resolve")
	ErrOnDemandElsewhere  = errors.New("name resolves to none of the on-demand addresses")
)

// onDemandReasons are the refusals of OnDemandPolicy.Decide, each logged
// at most once per interval.
var onDemandReasons = []error{ErrOnDemandNotAllowed, ErrOnDemandCap, ErrOnDemandNoAddress, ErrOnDemandElsewhere}

// refusedLog is the log of On-Demand refusals for err's reason.
func refusedLog(logs map[error]*repeatLog, err error) *repeatLog {
	for _, reason := range onDemandReasons {
		if errors.Is(err, reason) {
			return logs[reason]
		}
	}
	return logs[ErrOnDemandNotAllowed]
}

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
	exact, suffix := p.match(name)
	return exact || suffix
}

// match reports whether name is listed exactly, or else whether a suffix
// matches it.
func (p *OnDemandPolicy) match(name string) (exact, suffix bool) {
	name = strings.TrimSuffix(strings.ToLower(name), ".")
	if name == "" || strings.ContainsAny(name, "*/ ") {
		return false, false
	}
	for _, a := range p.Allow {
		a = strings.TrimSuffix(strings.ToLower(a), ".")
		if s, ok := strings.CutPrefix(a, "*"); ok {
			a = s
		}
		if strings.HasPrefix(a, ".") {
			suffix = suffix || (strings.HasSuffix(name, a) && len(name) > len(a))
		} else if name == a {
			return true, false
		}
	}
	return false, suffix
}

// Decide allows name if it is listed exactly, or if a suffix matches it,
// it resolves to an allowed address, and the hourly cap is not reached.
// Each name matched by a suffix counts once per hour against the cap,
// however many handshakes ask for it while its certificate is being
// obtained. ctx bounds the lookup.
func (p *OnDemandPolicy) Decide(ctx context.Context, name string) error {
	exact, suffix := p.match(name)
	if exact {
		return nil
	}
	if !suffix {
		return fmt.Errorf("%q: %w", name, ErrOnDemandNotAllowed)
	}
	name = strings.TrimSuffix(strings.ToLower(name), ".")
	// The cap first, so that names past it cost no lookup; then again
	// after the lookup, which ran unlocked.
	if done, err := p.take(name, false); done {
		return err
	}
	if err := p.pointsHere(ctx, name); err != nil {
		return err
	}
	_, err := p.take(name, true)
	return err
}

// take decides name against the cap: done is true when the answer is
// final (name already counted this hour, or the cap reached); with count,
// a name that fits is counted.
func (p *OnDemandPolicy) take(name string, count bool) (done bool, err error) {
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
		return true, nil
	}
	if len(p.issued) >= limit {
		return true, fmt.Errorf("%q: %w (%d)", name, ErrOnDemandCap, limit)
	}
	if !count {
		return false, nil
	}
	if p.issued == nil {
		p.issued = map[string]time.Time{}
	}
	p.issued[name] = now
	return true, nil
}

// pointsHere looks name up and checks its addresses against Addresses.
func (p *OnDemandPolicy) pointsHere(ctx context.Context, name string) error {
	r := p.Resolver
	if r == nil {
		r = net.DefaultResolver
	}
	ctx, cancel := context.WithTimeout(ctx, onDemandLookupTimeout)
	defer cancel()
	// Rooted, so that no search domain of resolv.conf is tried.
	addrs, err := r.LookupNetIP(ctx, "ip", name+".")
	if err != nil || len(addrs) == 0 {
		if err == nil {
			err = errors.New("no A or AAAA record")
		}
		return fmt.Errorf("%q: %w: %v", name, ErrOnDemandNoAddress, err)
	}
	if len(p.Addresses) == 0 {
		return nil
	}
	for _, a := range addrs {
		a = a.Unmap()
		if slices.ContainsFunc(p.Addresses, func(pr netip.Prefix) bool { return pr.Contains(a) }) {
			return nil
		}
	}
	return fmt.Errorf("%q: %w (it resolves to %v)", name, ErrOnDemandElsewhere, addrs)
}

// resolverOf returns a Resolver asking the given "host:port" DNS servers
// in turn; nil for none.
func resolverOf(servers []string) Resolver {
	if len(servers) == 0 {
		return nil
	}
	var mu sync.Mutex
	next := 0
	var d net.Dialer
	return &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
		mu.Lock()
		server := servers[next%len(servers)]
		next++
		mu.Unlock()
		return d.DialContext(ctx, network, server)
	}}
}
