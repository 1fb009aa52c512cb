package policy

import (
	"net/netip"
	"strings"
	"testing"
)

func TestParsePrefix(t *testing.T) {
	for _, tt := range []struct {
		in   string
		want string // the canonical prefix, or "" for an error
		err  string // part of the error
	}{
		{"10.0.0.0/8", "10.0.0.0/8", ""},
		{"192.0.2.7", "192.0.2.7/32", ""},
		{" 192.0.2.7 ", "192.0.2.7/32", ""},
		{"2001:db8::/32", "2001:db8::/32", ""},
		{"2001:db8::1", "2001:db8::1/128", ""},
		{"0.0.0.0/0", "0.0.0.0/0", ""},
		{"::/0", "::/0", ""},

		// IPv4-mapped entries name the IPv4 network a client is compared with.
		{"::ffff:192.0.2.7", "192.0.2.7/32", ""},
		{"::ffff:c000:207", "192.0.2.7/32", ""},
		{"::FFFF:192.0.2.7/128", "192.0.2.7/32", ""},
		{"::ffff:198.51.100.0/120", "198.51.100.0/24", ""},
		{"::ffff:0.0.0.0/96", "0.0.0.0/0", ""},
		{"::ffff:0:0/95", "", `"::ffff:0:0/95" is an IPv4-mapped prefix shorter than /96`},
		{"::ffff:0:0/64", "", "shorter than /96"},
		{"::ffff:198.51.100.7/120", "", `"::ffff:198.51.100.7/120" has bits set after /120: write "198.51.100.0/24", or "198.51.100.7/32" for the one address`},
		// Not mapped: an IPv6 prefix that merely contains the mapped range.
		{"::/80", "::/80", ""},

		// Host bits are refused, with the spellings that were meant.
		{"10.1.2.3/8", "", `"10.1.2.3/8" has bits set after /8: write "10.0.0.0/8", or "10.1.2.3/32" for the one address`},
		{"2001:db8::1/64", "", `write "2001:db8::/64", or "2001:db8::1/128"`},

		{"10.0.0.0/33", "", "is not an IP address or CIDR prefix"},
		{"2001:db8::/129", "", "is not an IP address or CIDR prefix"},
		{"fe80::1%eth0", "", "is not an IP address or CIDR prefix"},
		{"fe80::1%eth0/64", "", "is not an IP address or CIDR prefix"},
		{"example.com", "", "is not an IP address or CIDR prefix"},
		{"", "", "is not an IP address or CIDR prefix"},
		{"10.0.0.0/8/8", "", "is not an IP address or CIDR prefix"},
	} {
		p, err := ParsePrefix(tt.in)
		switch {
		case tt.want != "" && (err != nil || p.String() != tt.want):
			t.Errorf("ParsePrefix(%q) = %v, %v; want %s", tt.in, p, err, tt.want)
		case tt.want == "" && (err == nil || !strings.Contains(err.Error(), tt.err)):
			t.Errorf("ParsePrefix(%q) = %v, %v; want an error with %q", tt.in, p, err, tt.err)
		}
	}
}

// TestMappedDenyEntriesRefuseTheirIPv4Clients: a deny list written with
// IPv4-mapped addresses refuses the IPv4 clients it names, whichever way
// the client address arrives (an IPv4 socket, or an IPv6 socket that sees
// ::ffff:a.b.c.d); before, such entries matched nobody and the deny list
// failed open.
func TestMappedDenyEntriesRefuseTheirIPv4Clients(t *testing.T) {
	acc, err := NewAccess(nil, []string{"::ffff:192.0.2.7", "::ffff:198.51.100.0/120"})
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		client string
		denied bool
	}{
		{"192.0.2.7", true},
		{"::ffff:192.0.2.7", true},
		{"192.0.2.8", false},
		{"198.51.100.200", true},
		{"::ffff:198.51.100.1", true},
		{"198.51.101.1", false},
		{"2001:db8::1", false},
	} {
		ok, reason := acc.Allowed(netip.MustParseAddr(tt.client))
		if ok == tt.denied || (tt.denied && reason != ReasonDenied) {
			t.Errorf("client %s: allowed %v (%q), want denied %v", tt.client, ok, reason, tt.denied)
		}
	}
	if _, err := NewAccess([]string{"10.1.2.3/8"}, nil); err == nil || !strings.Contains(err.Error(), `allow: "10.1.2.3/8" has bits set`) {
		t.Errorf("host bits in allow: %v", err)
	}
}

// FuzzParsePrefix: whatever ParsePrefix accepts is valid, masked, never
// IPv4-mapped, and canonical (its String form parses back to itself);
// and an accepted IPv4 network accepts its mapped spelling as the same.
func FuzzParsePrefix(f *testing.F) {
	for _, s := range []string{"10.0.0.0/8", "192.0.2.7", "::ffff:192.0.2.7", "::ffff:198.51.100.0/120",
		"::ffff:0:0/95", "2001:db8::/32", "fe80::1%eth0", "10.1.2.3/8", "::/0", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		p, err := ParsePrefix(s)
		if err != nil {
			return
		}
		if !p.IsValid() || p != p.Masked() || p.Addr().Is4In6() || p.Addr().Zone() != "" {
			t.Fatalf("ParsePrefix(%q) = %v: not valid, masked and unmapped", s, p)
		}
		again, err := ParsePrefix(p.String())
		if err != nil || again != p {
			t.Fatalf("ParsePrefix(%q) = %v, which parses back as %v, %v", s, p, again, err)
		}
		if p.Addr().Is4() {
			mapped := netip.PrefixFrom(netip.AddrFrom16(p.Addr().As16()), p.Bits()+96)
			if m, err := ParsePrefix(mapped.String()); err != nil || m != p {
				t.Fatalf("%v spelled mapped as %v parses as %v, %v", p, mapped, m, err)
			}
		}
	})
}
