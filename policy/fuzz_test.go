package policy

import (
	"context"
	"net/netip"
	"slices"
	"testing"
	"time"
)

// FuzzGuardBudgetsHold drives a Guard with any sequence of attempts (a few
// addresses in a few networks, a few users, successes, failures and
// attempts the upstream never judged, all in one window) and checks it
// against a model: no budget ever lets more failures through than its
// limit, a device counts as known only after a success from its network
// and only while it is among its user's last MaxDevicesPerUser, a known
// device is refused only for its own budget, and the store holds a
// failure counter for exactly the keys that have failures and no pending
// attempt once every attempt has settled.
func FuzzGuardBudgetsHold(f *testing.F) {
	f.Add([]byte{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15}, uint64(0))
	f.Add([]byte{0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0x81, 1, 1, 1, 1}, uint64(0b1010))
	f.Add([]byte{0x80, 0x88, 0x90, 0x98, 0x84, 0x80, 0, 0x8c, 0x88}, uint64(0))
	f.Fuzz(func(t *testing.T, data []byte, cancels uint64) {
		const perUser = 3
		b := Budgets{PerIP: 3, PerNetwork: 5, PerUser: 4, PerDevice: 2, Window: time.Hour}
		m := &MemoryStore{MaxEntries: 1000, MaxDevicesPerUser: perUser}
		g := NewGuard(m, b, nil)
		now := time.Unix(1e9, 0)
		g.Now = func() time.Time { return now }
		ctx := context.Background()
		failures := map[Key]int{}
		devices := map[string][]Key{} // per user, most recent success first
		for i, c := range data {
			// bits: 7 success, 6-5 user, 4-3 network, 2-0 host;
			// bit i of cancels: a failure is instead never judged
			addr := netip.AddrFrom4([4]byte{10, 0, c >> 3 & 3, c & 7})
			if c&4 != 0 {
				addr = netip.AddrFrom16([16]byte{0x20, 0x01, 0xd, 0xb8, 0, c >> 3 & 3, 14: 0, 15: c & 3}) // /48s and /64s
			}
			user := string(rune('a' + c>>5&3))
			a := Attempt{Addr: addr, User: user}
			dev := Key{Kind: KeyDevice, Net: DeviceNet(addr), User: user}
			d := g.Check(ctx, a)
			if known := slices.Contains(devices[user], dev); d.Known != known {
				t.Fatalf("attempt %08b: known = %v, model says %v", c, d.Known, known)
			}
			switch {
			case !d.Allowed:
				if d.Known && d.Reason != ReasonDeviceLocked {
					t.Fatalf("known device refused for %s", d.Reason)
				}
			case c&0x80 != 0:
				g.Success(ctx, a, d)
				list := slices.DeleteFunc(devices[user], func(k Key) bool { return k == dev })
				devices[user] = append([]Key{dev}, list[:min(len(list), perUser-1)]...)
				delete(failures, dev)
			case i < 64 && cancels>>i&1 != 0:
				g.Cancel(ctx, a, d)
			default:
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
			counters, _ := m.Len()
			if counters != len(failures) || m.Pending() != 0 {
				t.Fatalf("after attempt %d: %d counters and %d keys pending, model has %d keys with failures and none pending", i, counters, m.Pending(), len(failures))
			}
		}
	})
}
