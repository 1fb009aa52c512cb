package policy

import (
	"fmt"
	"net/netip"
	"strings"
)

// Reasons for a refusal (audit `reason` values).
const (
	ReasonDenied       = "denied_network"
	ReasonNotAllowed   = "not_allowed_network"
	ReasonTooManyConns = "too_many_connections"
	ReasonTooManyPerIP = "too_many_connections_per_ip"
)

// Access holds CIDR rules: Deny is checked first, then Allow. An empty Allow
// list allows everyone not denied. The zero value allows everyone.
type Access struct {
	Allow []netip.Prefix
	Deny  []netip.Prefix
}

// NewAccess parses CIDR lists; a bare address counts as a single host.
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

// ParsePrefixes parses "10.0.0.0/8", "2001:db8::/32" or a bare address.
func ParsePrefixes(list []string) ([]netip.Prefix, error) {
	out := make([]netip.Prefix, 0, len(list))
	for _, s := range list {
		s = strings.TrimSpace(s)
		if strings.Contains(s, "/") {
			p, err := netip.ParsePrefix(s)
			if err != nil {
				return nil, err
			}
			out = append(out, p.Masked())
			continue
		}
		a, err := netip.ParseAddr(s)
		if err != nil {
			return nil, err
		}
		out = append(out, netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen()))
	}
	return out, nil
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
