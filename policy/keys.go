package policy

import (
	"net/netip"
	"strings"
)

// KeyKind says what a Key counts.
type KeyKind uint8

// Key kinds.
const (
	// KeyNet counts failures from an address prefix (Key.Net).
	KeyNet KeyKind = iota + 1
	// KeyUser counts failures for a user name (Key.User), from networks
	// that are not the user's known devices.
	KeyUser
	// KeyDevice counts failures of a user (Key.User) from one network
	// (Key.Net); a success makes it a known device.
	KeyDevice
)

// Key names one failure counter. Backends store it in their own form: the
// memory store in a fixed 32-byte key, a Redis store under Key.String().
type Key struct {
	Kind KeyKind
	Net  netip.Prefix // KeyNet and KeyDevice
	User string       // KeyUser and KeyDevice: normalised with NormalizeUser
}

// String is the key's stable text form, for shared stores and debugging:
// "net:192.0.2.0/24", "user:alice", "dev:192.0.2.0/24:alice".
func (k Key) String() string {
	switch k.Kind {
	case KeyNet:
		return "net:" + k.Net.String()
	case KeyUser:
		return "user:" + k.User
	case KeyDevice:
		return "dev:" + k.Net.String() + ":" + k.User
	}
	return "invalid"
}

// Prefix lengths at which failures from a client address are counted.
const (
	IPv4HostBits = 32 // one IPv4 address
	IPv4NetBits  = 24 // an IPv4 network: a customer's or provider's block
	IPv6HostBits = 128
	IPv6LANBits  = 64 // one IPv6 subscriber LAN: 2^64 addresses for free, so costed like one address
	IPv6SiteBits = 48 // an IPv6 site allocation
)

// NetKeys returns the prefixes failures from addr are counted under,
// narrowest first: an IPv4 address (IPv4-mapped IPv6 included) gives its /32
// and /24; an IPv6 address its /128, /64 and /48. An invalid address gives
// none.
func NetKeys(addr netip.Addr) []netip.Prefix {
	var out [3]netip.Prefix
	return out[:appendNetKeys(out[:0], addr)]
}

func appendNetKeys(dst []netip.Prefix, addr netip.Addr) int {
	if !addr.IsValid() {
		return 0
	}
	addr = addr.Unmap().WithZone("")
	if addr.Is4() {
		dst = append(dst, netip.PrefixFrom(addr, IPv4HostBits), mustPrefix(addr, IPv4NetBits))
		return 2
	}
	dst = append(dst, netip.PrefixFrom(addr, IPv6HostBits), mustPrefix(addr, IPv6LANBits), mustPrefix(addr, IPv6SiteBits))
	return 3
}

func mustPrefix(addr netip.Addr, bits int) netip.Prefix {
	p, _ := addr.Prefix(bits) // bits is always valid for the family here
	return p
}

// DeviceNet returns the network that identifies a user's device for the
// known-device rule: the IPv4 /24 or the IPv6 /64 of addr. A phone that
// moves within its provider's block, or a laptop whose IPv6 privacy address
// changes daily, stays the same device.
func DeviceNet(addr netip.Addr) netip.Prefix {
	if !addr.IsValid() {
		return netip.Prefix{}
	}
	addr = addr.Unmap().WithZone("")
	if addr.Is4() {
		return mustPrefix(addr, IPv4NetBits)
	}
	return mustPrefix(addr, IPv6LANBits)
}

// NormalizeUser folds a user name the way most IMAP servers compare them
// (case-insensitively, surrounding space ignored), so "Alice" and "alice"
// share one budget.
func NormalizeUser(user string) string {
	return strings.ToLower(strings.TrimSpace(user))
}
