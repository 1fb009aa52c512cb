package policy

import (
	"fmt"
	"net/netip"
	"strings"
)

// ParsePrefix parses one entry of an allow, deny, trusted-proxy or rule
// network list: a CIDR prefix ("192.0.2.0/24", "2001:db8::/32") or a bare
// address, which is a /32 or /128. The result is what a client address is
// compared with, so the rules are those of the comparison:
//
//   - Client addresses are compared unmapped (an IPv4 client reaching an
//     IPv6 socket is ::ffff:a.b.c.d on the wire and a.b.c.d here), so an
//     IPv4-mapped entry becomes the IPv4 network it names:
//     "::ffff:192.0.2.7" is 192.0.2.7/32, "::ffff:198.51.100.0/120" is
//     198.51.100.0/24. Left mapped, it would match no client, and a deny
//     entry would fail open. A mapped prefix shorter than /96 reaches past
//     the mapped range (::ffff:0:0/96) and is refused.
//   - Bits set after the prefix length are refused ("10.1.2.3/8"): such an
//     entry is more likely a typing mistake than a way to write
//     10.0.0.0/8, and on a deny list either reading may be the wrong one.
//     The error names the masked spelling and the one-address spelling.
//   - A zone ("fe80::1%eth0") is refused: client addresses carry none.
//
// Surrounding spaces are ignored. The returned prefix is valid, masked and
// never IPv4-mapped, and its String form parses back to itself.
func ParsePrefix(s string) (netip.Prefix, error) {
	s = strings.TrimSpace(s)
	bad := fmt.Errorf("%q is not an IP address or CIDR prefix like \"192.0.2.0/24\" or \"2001:db8::/32\"", s)
	var p netip.Prefix
	if strings.Contains(s, "/") {
		var err error
		if p, err = netip.ParsePrefix(s); err != nil {
			return netip.Prefix{}, bad
		}
	} else {
		a, err := netip.ParseAddr(s)
		if err != nil || a.Zone() != "" {
			return netip.Prefix{}, bad
		}
		p = netip.PrefixFrom(a, a.BitLen())
	}
	written := p.Bits()
	if p.Addr().Is4In6() {
		if p.Bits() < 96 {
			err := fmt.Errorf("%q is an IPv4-mapped prefix shorter than /96, which reaches past the IPv4 addresses (a mapped length counts from 96: \"::ffff:198.51.100.0/120\" is \"198.51.100.0/24\")", s)
			if p.Bits() <= 32 {
				// Most likely an IPv4 length written after a mapped address.
				v4 := netip.PrefixFrom(p.Addr().Unmap(), p.Bits()).Masked()
				err = fmt.Errorf("%w: for the IPv4 network write %q", err, v4.String())
			}
			return netip.Prefix{}, err
		}
		p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96)
	}
	if p != p.Masked() {
		return netip.Prefix{}, fmt.Errorf("%q has bits set after /%d: write %q, or %q for the one address",
			s, written, p.Masked().String(), netip.PrefixFrom(p.Addr(), p.Addr().BitLen()).String())
	}
	return p, nil
}

// ParsePrefixes parses a list with ParsePrefix; the first bad entry is the
// error.
func ParsePrefixes(list []string) ([]netip.Prefix, error) {
	out := make([]netip.Prefix, 0, len(list))
	for _, s := range list {
		p, err := ParsePrefix(s)
		if err != nil {
			return nil, err
		}
		out = append(out, p)
	}
	return out, nil
}
