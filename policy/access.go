package policy

import (
	"fmt"
	"net/netip"
)

// Reasons Allowed refuses an address (audit `reason` values).
const (
	ReasonDenied     = "denied_network"      // in a Deny prefix
	ReasonNotAllowed = "not_allowed_network" // in no Allow prefix
)

// Access holds CIDR rules: Deny is checked first, then Allow. An empty Allow
// list allows everyone not denied. The zero value allows everyone.
type Access struct {
	Allow []netip.Prefix
	Deny  []netip.Prefix
}

// NewAccess parses CIDR lists with ParsePrefix: a bare address counts as a
// single host, an IPv4-mapped entry as the IPv4 network it names.
func NewAccess(allow, deny []string) (*Access, error) {
	a := &Access{}
	var err error
	if a.Allow, err = ParsePrefixes(allow); err != nil {
		return nil, fmt.Errorf("allow: %w", err)
	}
	if a.Deny, err = ParsePrefixes(deny); err != nil {
		return nil, fmt.Errorf("deny: %w", err)
	}
	return a, nil
}

// Allowed reports whether addr may connect, and if not, why.
func (a *Access) Allowed(addr netip.Addr) (bool, string) {
	if a == nil {
		return true, ""
	}
	addr = addr.Unmap()
	for _, p := range a.Deny {
		if p.Contains(addr) {
			return false, ReasonDenied
		}
	}
	if len(a.Allow) == 0 {
		return true, ""
	}
	for _, p := range a.Allow {
		if p.Contains(addr) {
			return true, ""
		}
	}
	return false, ReasonNotAllowed
}
