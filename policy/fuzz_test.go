package policy

import (
	"context"
	"net/netip"
	"testing"
	"time"
)

// FuzzGuardBudgetsHold drives a Guard with any sequence of attempts (a few
// addresses in a few networks, a few users, successes and failures, all in
// one window) and checks it against a model: no budget ever lets more
// failures through than its limit, a device counts as known only after a
// success from its network, and a known device is refused only for its
// own budget.
func FuzzGuardBudgetsHold(f *testing.F) {
	f.Add([]byte{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15})
	f.Add([]byte{0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0x81, 1, 1, 1, 1})
	f.Fuzz(func(t *testing.T, data []byte) {
		b := Budgets{PerIP: 3, PerNetwork: 5, PerUser: 4, PerDevice: 2, Window: time.Hour}
		g := NewGuard(&MemoryStore{MaxEntries: 1000}, b, nil)
		now := time.Unix(1e9, 0)
		g.Now = func() time.Time { return now }
		ctx := context.Background()
		failures := map[Key]int{}
		known := map[Key]bool{}
		for _, c := range data {
			// bits: 7 success, 6-5 user, 4-3 network, 2-0 host
			addr := netip.AddrFrom4([4]byte{10, 0, c >> 3 & 3, c & 7})
			if c&4 != 0 {
				addr = netip.AddrFrom16([16]byte{0x20, 0x01, 0xd, 0xb8, 0, c >> 3 & 3, 14: 0, 15: c & 3}) // /48s and /64s
			}
			user := string(rune('a' + c>>5&3))
			a := Attempt{Addr: addr, User: user}
			dev := Key{Kind: KeyDevice, Net: DeviceNet(addr), User: user}
			d := g.Check(ctx, a)
			if d.Known != known[dev] {
				t.Fatalf("attempt %08b: known = %v, model says %v", c, d.Known, known[dev])
			}
			if !d.Allowed {
				if d.Known && d.Reason != ReasonDeviceLocked {
					t.Fatalf("known device refused for %s", d.Reason)
				}
				continue
			}
			if c&0x80 != 0 {
				g.Success(ctx, a, d)
				known[dev] = true
				failures[dev] = 0
				continue
			}
			g.Failure(ctx, a, d)
			var ks keySet
			keysFor(&ks, addr, user, d.Known, b)
			for i := range ks.n {
				failures[ks.keys[i]]++
				if ks.limits[i] > 0 && failures[ks.keys[i]] > ks.limits[i] {
					t.Fatalf("%s let %d failures through, limit %d", ks.keys[i], failures[ks.keys[i]], ks.limits[i])
				}
			}
		}
	})
}
