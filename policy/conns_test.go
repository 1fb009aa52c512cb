package policy

import (
	"fmt"
	"net/netip"
	"testing"
)

// addrs returns n addresses: format filled with 1..n.
func addrs(format string, n int) []netip.Addr {
	out := make([]netip.Addr, n)
	for i := range out {
		out[i] = netip.MustParseAddr(fmt.Sprintf(format, i+1))
	}
	return out
}

// TestConnLimiterCountsAddressesAndNetworks: each client opens connections
// in turn from the addresses given; the test counts who got in and why the
// others were refused.
func TestConnLimiterCountsAddressesAndNetworks(t *testing.T) {
	type client struct {
		name  string
		from  []netip.Addr // one connection from each
		admit int          // how many of them get in
		why   string       // the reason the rest are refused
	}
	for _, tc := range []struct {
		name    string
		limiter *ConnLimiter
		clients []client
	}{{
		name:    "100 addresses of one IPv6 /64 are one address",
		limiter: &ConnLimiter{MaxPerIP: 2},
		clients: []client{
			{"attacker", addrs("2001:db8:1:2::%x", 100), 2, ReasonTooManyPerIP},
			{"neighbour /64 of the same /48", addrs("2001:db8:1:3::%x", 1), 1, ""},
		},
	}, {
		name:    "IPv4 addresses count one by one",
		limiter: &ConnLimiter{MaxPerIP: 2},
		clients: []client{{"one /24", addrs("192.0.2.%d", 100), 100, ""}},
	}, {
		name:    "IPv4-mapped IPv6 counts as its IPv4 address",
		limiter: &ConnLimiter{MaxPerIP: 2},
		clients: []client{
			{"plain", addrs("192.0.2.%d", 1), 1, ""},
			{"mapped", []netip.Addr{netip.MustParseAddr("::ffff:192.0.2.1"), netip.MustParseAddr("::ffff:192.0.2.1")}, 1, ReasonTooManyPerIP},
		},
	}, {
		name:    "a /48 fills its network cap; another network still gets in",
		limiter: &ConnLimiter{Max: 100, MaxPerIP: 2, MaxPerNetwork: 10},
		clients: []client{
			{"one /64 per connection, one /48", addrs("2001:db8:7:%x::1", 30), 10, ReasonTooManyPerNetwork},
			{"bystander in another /48", addrs("2001:db8:8::%x", 2), 2, ""},
		},
	}, {
		name:    "a /24 at its cap leaves the rest of the proxy to others",
		limiter: &ConnLimiter{Max: 20, MaxPerIP: 2, MaxPerNetwork: 5},
		clients: []client{
			{"carrier NAT /24", addrs("198.51.100.%d", 50), 5, ReasonTooManyPerNetwork},
			{"office in another /24", addrs("203.0.113.%d", 5), 5, ""},
			{"home user", addrs("192.0.2.%d", 1), 1, ""},
		},
	}, {
		name:    "the address limit is checked before the network cap",
		limiter: &ConnLimiter{MaxPerIP: 1, MaxPerNetwork: 1},
		clients: []client{
			{"first", addrs("192.0.2.%d", 1), 1, ""},
			{"same address", addrs("192.0.2.%d", 1), 0, ReasonTooManyPerIP},
			{"same /24", addrs("192.0.2.%d", 2)[1:], 0, ReasonTooManyPerNetwork},
		},
	}, {
		name:    "the total comes first",
		limiter: &ConnLimiter{Max: 3, MaxPerIP: 2, MaxPerNetwork: 2},
		clients: []client{
			{"fills it", addrs("10.%d.0.1", 3), 3, ""},
			{"anyone", addrs("192.0.2.%d", 1), 0, ReasonTooManyConns},
		},
	}} {
		t.Run(tc.name, func(t *testing.T) {
			l := tc.limiter
			var releases []func()
			for _, c := range tc.clients {
				admitted, refusedWhy := 0, map[string]int{}
				for _, a := range c.from {
					release, why := l.Acquire(a)
					if release != nil {
						admitted++
						releases = append(releases, release)
						continue
					}
					refusedWhy[why]++
				}
				if admitted != c.admit {
					t.Errorf("%s: %d of %d admitted, want %d (refused: %v)", c.name, admitted, len(c.from), c.admit, refusedWhy)
				}
				if refused := len(c.from) - c.admit; refused > 0 && refusedWhy[c.why] != refused {
					t.Errorf("%s: refused %v, want %d × %q", c.name, refusedWhy, refused, c.why)
				}
			}
			for _, r := range releases {
				r()
				r() // idempotent
			}
			if n := l.Open(); n != 0 {
				t.Errorf("%d open after every release", n)
			}
			if a, n := l.tracked(); a != 0 || n != 0 {
				t.Errorf("after every release %d addresses and %d networks are still tracked", a, n)
			}
		})
	}
}

// TestConnLimiterTracksOnlyOpenConnections: an attacker cycling through the
// addresses of a /32 leaves no state behind; what is tracked never exceeds
// what is open.
func TestConnLimiterTracksOnlyOpenConnections(t *testing.T) {
	l := NewConnLimiter(0, 2, 10)
	var open []func()
	for i := range 10_000 {
		a := netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, byte(i >> 8), byte(i), 15: 1})
		release, _ := l.Acquire(a)
		if release == nil {
			t.Fatalf("connection %d refused with nothing open in its network", i)
		}
		if i%100 == 0 {
			open = append(open, release) // a few stay open
		} else {
			release()
		}
	}
	if a, n := l.tracked(); a != len(open) || n != len(open) || l.Open() != len(open) {
		t.Errorf("%d open, %d addresses and %d networks tracked; want %d of each", l.Open(), a, n, len(open))
	}
}

// TestConnLimiterSetLimitsKeepsNetworkCounts: a reload that lowers the
// network cap applies to the connections already open.
func TestConnLimiterSetLimitsKeepsNetworkCounts(t *testing.T) {
	l := NewConnLimiter(0, 0, 0)
	net := addrs("192.0.2.%d", 3)
	for _, a := range net {
		if r, why := l.Acquire(a); r == nil {
			t.Fatalf("refused before any limit: %s", why)
		}
	}
	l.SetLimits(0, 0, 3)
	if r, why := l.Acquire(netip.MustParseAddr("192.0.2.200")); r != nil || why != ReasonTooManyPerNetwork {
		t.Fatalf("after the reload a 4th connection of the /24: admitted=%v %q, want %q", r != nil, why, ReasonTooManyPerNetwork)
	}
	if r, _ := l.Acquire(netip.MustParseAddr("192.0.3.1")); r == nil {
		t.Fatal("another /24 refused")
	}
}
