package policy

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"unicode"
	"unicode/utf8"
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
// share one budget. It is UserNames.Key with no domain set.
func NormalizeUser(user string) string {
	return foldUser(user)
}

// UserNames turns the user name a client typed into the name its budgets
// and known devices are kept under; what is sent to the upstream is not
// changed. Names are always case-folded (Unicode simple case folding, the
// equivalence of strings.EqualFold: "JDoe", "jdoe" and "JDOE" are one
// name) and stripped of surrounding space. With a mail domain set, the
// spellings of one mailbox in that domain become one key,
// "local@domain", the way Dovecot's auth_default_realm appends the domain
// to bare names and Exchange accepts DOMAIN\user and a UPN for one
// mailbox:
//
//	jdoe                 bare name: the mail domain's
//	jdoe@example.com     the mail domain itself
//	jdoe@example.local   a realm listed as the mail domain's (a UPN suffix)
//	EXAMPLE\jdoe         a realm in Windows form (a NetBIOS domain)
//	EXAMPLE\jdoe\shared  Exchange's DOMAIN\user\mailbox: the credential is jdoe's
//
// all give "jdoe@example.com". An empty part counts as no part (\jdoe,
// EXAMPLE\\jdoe and jdoe@ are jdoe's too), and space around a part is
// dropped. A name with any other domain (OTHER\jdoe, jdoe@other.org), or
// with no user part (@example.com, EXAMPLE\), stays as typed, case-folded.
// Folding more spellings into one key never gives a guesser more guesses
// (it only shares a budget the guesser could spend anyway by typing the
// canonical name), while a spelling the upstream accepts for the mailbox
// but the proxy keeps apart would be a fresh budget.
//
// The zero value and a nil *UserNames fold case and space only.
type UserNames struct {
	domain string   // folded; "" when only folding
	realms []string // folded, the domain among them
}

// NewUserNames returns the normalisation for the mail domain bare names
// belong to and the realms (NetBIOS domains, UPN suffixes, other DNS names)
// that mean the same mailbox domain. An empty domain with no realms folds
// only; realms need a domain; each must pass CheckUserRealm.
func NewUserNames(domain string, realms []string) (*UserNames, error) {
	u := &UserNames{}
	if domain == "" {
		if len(realms) > 0 {
			return nil, errRealmsNeedDomain
		}
		return u, nil
	}
	if err := CheckUserRealm(domain); err != nil {
		return nil, err
	}
	u.domain = foldUser(domain)
	u.realms = append(u.realms, u.domain)
	for _, r := range realms {
		if err := CheckUserRealm(r); err != nil {
			return nil, err
		}
		u.realms = append(u.realms, foldUser(r))
	}
	return u, nil
}

var errRealmsNeedDomain = errors.New("realms need a mail domain to stand for")

// CheckUserRealm reports whether name can be a mail domain or realm of
// UserNames: not empty, and without "@", "\\", spaces or control
// characters.
func CheckUserRealm(name string) error {
	switch {
	case strings.TrimSpace(name) == "":
		return errors.New("is empty")
	case strings.ContainsAny(name, `@\`):
		return fmt.Errorf("%q holds %c: write the domain alone, like \"example.com\" or \"EXAMPLE\"", name, name[strings.IndexAny(name, `@\`)])
	case strings.IndexFunc(name, func(r rune) bool { return unicode.IsSpace(r) || unicode.IsControl(r) }) >= 0:
		return fmt.Errorf("%q holds a space or control character", name)
	case !utf8.ValidString(name):
		return fmt.Errorf("%q is not valid UTF-8", name)
	}
	return nil
}

// Domain returns the folded mail domain, or "" when u only folds.
func (u *UserNames) Domain() string {
	if u == nil {
		return ""
	}
	return u.domain
}

// Key returns the policy key of the user name a client typed.
func (u *UserNames) Key(name string) string {
	s := foldUser(name)
	if u == nil || u.domain == "" {
		return s
	}
	user := s
	if i := strings.IndexByte(user, '\\'); i >= 0 {
		if d := strings.TrimSpace(user[:i]); d != "" && !u.isRealm(d) {
			return s
		}
		user = strings.TrimLeft(user[i+1:], `\`)
		user, _, _ = strings.Cut(user, `\`) // DOMAIN\user\mailbox
	}
	if i := strings.LastIndexByte(user, '@'); i >= 0 {
		if d := strings.TrimSpace(user[i+1:]); d != "" && !u.isRealm(d) {
			return s
		}
		user = user[:i]
	}
	if user = strings.TrimSpace(user); user == "" {
		return s
	}
	return user + "@" + u.domain
}

func (u *UserNames) isRealm(d string) bool {
	return slices.Contains(u.realms, d)
}

// foldUser trims surrounding space and case-folds s. Bytes that are not
// UTF-8 are kept as they are, so distinct names stay distinct.
func foldUser(s string) string {
	s = strings.TrimSpace(s)
	for i := 0; i < len(s); i++ {
		if c := s[i]; c >= utf8.RuneSelf || 'A' <= c && c <= 'Z' {
			return foldSlow(s, i)
		}
	}
	return s // the common case: ASCII already in lower case, no allocation
}

func foldSlow(s string, from int) string {
	var b strings.Builder
	b.Grow(len(s))
	b.WriteString(s[:from])
	for i := from; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b.WriteByte(s[i])
		} else {
			b.WriteRune(foldRune(r))
		}
		i += size
	}
	return b.String()
}

// foldRune maps r to one representative of its simple case-folding orbit
// (the runes strings.EqualFold treats as equal to r: k, K and the Kelvin
// sign; s, S and long s), in lower case where it has one.
func foldRune(r rune) rune {
	if r < utf8.RuneSelf {
		if 'A' <= r && r <= 'Z' {
			r += 'a' - 'A'
		}
		return r
	}
	least := r
	for f := unicode.SimpleFold(r); f != r; f = unicode.SimpleFold(f) {
		least = min(least, f)
	}
	return unicode.ToLower(least)
}
