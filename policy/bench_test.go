package policy

import (
	"context"
	"fmt"
	"net/netip"
	"runtime"
	"testing"
	"time"
)

// BenchmarkCheck is the cost of one decision before an upstream login,
// for a client that is not a known device (the most keys) and for one
// that is: Check, then Cancel giving the counted attempt back (so the
// budgets never run out during the loop; a real login ends with Failure,
// which costs nothing more, or Success).
func BenchmarkCheck(b *testing.B) {
	for _, known := range []bool{false, true} {
		b.Run(fmt.Sprintf("known=%v", known), func(b *testing.B) {
			g := NewGuard(nil, Budgets{PerIP: 10, PerNetwork: 50, PerUser: 20, PerDevice: 10}, nil)
			ctx := context.Background()
			addrs := make([]Attempt, 1024)
			for i := range addrs {
				addrs[i] = Attempt{Addr: netip.AddrFrom4([4]byte{10, byte(i >> 8), byte(i), 1}), User: fmt.Sprint("user", i)}
				g.Failure(ctx, addrs[i], g.Check(ctx, addrs[i]))
				if known {
					g.Success(ctx, addrs[i], Decision{})
				}
			}
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; b.Loop(); i++ {
				a := addrs[i&1023]
				d := g.Check(ctx, a)
				if !d.Allowed || d.Known != known {
					b.Fatalf("unexpected decision %+v", d)
				}
				g.Cancel(ctx, a, d)
			}
		})
	}
}

// BenchmarkCheckIPv6Failure is a full failed attempt from IPv6: Check,
// then Failure (five counters written).
func BenchmarkCheckIPv6Failure(b *testing.B) {
	g := NewGuard(nil, Budgets{}, nil)
	ctx := context.Background()
	a := Attempt{User: "alice"}
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		a.Addr = netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, byte(i >> 16), byte(i >> 8), 14: byte(i >> 8), 15: byte(i)})
		g.Failure(ctx, a, g.Check(ctx, a))
	}
}

// BenchmarkMemoryPerKey fills a MemoryStore with 100,000 distinct
// failure counters (an attempt held by Take, then failed by Commit) and
// reports the heap they hold per key.
func BenchmarkMemoryPerKey(b *testing.B) {
	const n = 100_000
	for range b.N {
		runtime.GC()
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		m := &MemoryStore{MaxEntries: n}
		ctx := context.Background()
		now := time.Now()
		keys := make([]Key, 1)
		counts := make([]int, 1)
		for i := range n {
			keys[0] = Key{Kind: KeyNet, Net: netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}), 32)}
			m.Take(ctx, keys, []int{0}, time.Hour, now, counts)
			m.Commit(ctx, keys, time.Hour, now)
		}
		runtime.GC()
		runtime.ReadMemStats(&after)
		if c, _ := m.Len(); c != n {
			b.Fatalf("%d counters", c)
		}
		b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/n, "bytes/key")
		runtime.KeepAlive(m)
	}
}

// BenchmarkAttackReach simulates the two attacks of the integration tests
// on the Guard alone, with the default budgets: how many of 10,000 guesses
// would reach the upstream, and how often the real user, logging in from
// its usual network every tenth attempt, succeeds during the spray.
func BenchmarkAttackReach(b *testing.B) {
	def := Budgets{PerIP: 10, PerNetwork: 50, PerUser: 20, PerDevice: 10}
	for range b.N {
		g := NewGuard(nil, def, nil)
		single := 0
		for i := range 10_000 {
			if ok, _ := try(g, "203.0.113.9", fmt.Sprint("user", i%100), "guess"); ok {
				single++
			}
		}
		g = NewGuard(nil, def, nil)
		try(g, "192.0.2.10", "victim", "right")
		spray, realOK, realTries := 0, 0, 0
		for i := range 10_000 {
			if ok, _ := try(g, fmt.Sprintf("10.%d.%d.%d", i>>16&255, i>>8&255, i&255), "victim", "guess"); ok {
				spray++
			}
			if i%10 == 0 {
				realTries++
				if ok, _ := try(g, "192.0.2.10", "victim", "right"); ok {
					realOK++
				}
			}
		}
		b.ReportMetric(float64(single), "reached/10k-single")
		b.ReportMetric(float64(spray), "reached/10k-spray")
		b.ReportMetric(100*float64(realOK)/float64(realTries), "real-user-%")
	}
}

// BenchmarkUserNamesKey is the cost of making a policy key from a user
// name: a name already folded (no allocation), and spellings that are
// rewritten into the mail domain (one allocation each).
func BenchmarkUserNamesKey(b *testing.B) {
	u := exampleUserNames(b)
	for _, name := range []string{"jdoe@other.org", "jdoe", `EXAMPLE\JDoe`, "JDoe@Example.local"} {
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				u.Key(name)
			}
		})
	}
}
