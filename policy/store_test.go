package policy

import (
	"context"
	"fmt"
	"net/netip"
	"testing"
)

// newStoreGuard is newTestGuard counting in m.
func newStoreGuard(m *MemoryStore, b Budgets) (*Guard, *clock) {
	g, c := newTestGuard(b)
	g.store = m
	return g, c
}

// lockUser spends user's budget with one wrong guess from each of
// b.PerUser networks of a botnet (10.i.0.1, one /24 each).
func lockUser(t *testing.T, g *Guard, b Budgets, user string, botnet int) {
	t.Helper()
	for i := range b.PerUser {
		if ok, d := try(g, fmt.Sprintf("10.%d.%d.1", botnet, i), user, "guess"); !ok {
			t.Fatalf("guess %d at %s refused before the budget was spent: %+v", i, user, d)
		}
	}
	if ok, d := try(g, "172.16.0.1", user, "guess"); ok || d.Reason != ReasonUserLocked {
		t.Fatalf("%s not locked after %d failures: %+v", user, b.PerUser, d)
	}
}

// TestSuccessfulLoginsOfOneAccountDoNotUnlockTheVictim is the review's
// scenario: with room for 100 counters, a victim is locked out by a spray;
// the attacker then logs in 200 times with its own account, from a new /64
// of its /48 each time. The victim must stay locked.
func TestSuccessfulLoginsOfOneAccountDoNotUnlockTheVictim(t *testing.T) {
	m := &MemoryStore{MaxEntries: 100}
	g, _ := newStoreGuard(m, testBudgets)
	lockUser(t, g, testBudgets, "victim", 0)
	before, _ := m.Len()
	for i := range 200 {
		if ok, d := try(g, fmt.Sprintf("2001:db8:7:%x::1", i), "mallory", "right"); !ok {
			t.Fatalf("the attacker's own login %d refused: %+v", i, d)
		}
	}
	if ok, d := try(g, "172.16.0.2", "victim", "guess"); ok {
		t.Fatalf("after 200 successful logins of another account the victim's lock was forgotten: a guess reached the upstream (%+v)", d)
	}
	if after, _ := m.Len(); after != before {
		t.Fatalf("successful logins changed the failure counters held from %d to %d", before, after)
	}
}

// TestOneAccountFromManyNetworksForgetsNobody is the review's default
// (100,000 entries, about 33,000 logins of one account reset everyone)
// scaled down by 100: 1,000 entries, 30 locked victims, 30 users with a
// known device, and 1,000 successful logins of one account, each from a
// new IPv6 /64.
func TestOneAccountFromManyNetworksForgetsNobody(t *testing.T) {
	b := Budgets{PerIP: 10, PerNetwork: 50, PerUser: 5, PerDevice: 5, Window: testBudgets.Window}
	m := &MemoryStore{MaxEntries: 1000}
	g, _ := newStoreGuard(m, b)
	for i := range 30 {
		lockUser(t, g, b, fmt.Sprint("victim", i), i)
		if ok, _ := try(g, fmt.Sprintf("192.168.%d.10", i), fmt.Sprint("user", i), "right"); !ok {
			t.Fatalf("user%d's first login refused", i)
		}
	}
	for i := range 1000 {
		if ok, d := try(g, fmt.Sprintf("2001:db8:%x:%x::1", 7+i>>16, i&0xffff), "mallory", "right"); !ok {
			t.Fatalf("the attacker's own login %d refused: %+v", i, d)
		}
	}
	for i := range 30 {
		if ok, _ := try(g, "172.16.0.2", fmt.Sprint("victim", i), "guess"); ok {
			t.Errorf("victim%d's lock was forgotten", i)
		}
		if ok, d := try(g, fmt.Sprintf("192.168.%d.11", i), fmt.Sprint("user", i), "right"); !ok || !d.Known {
			t.Errorf("user%d's known device was forgotten: %+v", i, d)
		}
	}
}

// TestKnownDevicesSurviveAnotherUsersSuccesses: a user's known device is
// not pushed out of the table by another account logging in from a new
// network 1,000 times.
func TestKnownDevicesSurviveAnotherUsersSuccesses(t *testing.T) {
	m := &MemoryStore{MaxEntries: 100}
	g, _ := newStoreGuard(m, testBudgets)
	try(g, "192.0.2.10", "alice", "right")
	for i := range 1000 {
		try(g, fmt.Sprintf("10.%d.%d.1", i>>8, i&255), "mallory", "right")
	}
	if ok, d := try(g, "192.0.2.11", "alice", "right"); !ok || !d.Known {
		t.Fatalf("alice's device was forgotten after another user's 1,000 logins: %+v", d)
	}
	if _, devices := m.Len(); devices != 1+DefaultMaxDevicesPerUser {
		t.Fatalf("%d known devices, want alice's and mallory's last %d", devices, DefaultMaxDevicesPerUser)
	}
	// Mallory's newest devices are the ones kept, its oldest replaced.
	if _, d := try(g, "10.3.231.1", "mallory", "right"); !d.Known {
		t.Fatal("mallory's last device was not kept")
	}
	if _, d := try(g, "10.0.0.1", "mallory", "right"); d.Known {
		t.Fatal("mallory's first device was kept over its newer ones")
	}
}

// TestRefundedAndSuccessfulAttemptsLeaveNoCounter: attempts that did not
// fail (successes, and attempts the upstream never judged) leave no
// failure counter behind.
func TestRefundedAndSuccessfulAttemptsLeaveNoCounter(t *testing.T) {
	m := &MemoryStore{}
	g, _ := newStoreGuard(m, testBudgets)
	ctx := context.Background()
	for i := range 1000 {
		a := Attempt{Addr: netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, byte(i >> 8), byte(i), 15: 1}), User: fmt.Sprint("u", i)}
		d := g.Check(ctx, a)
		if !d.Allowed {
			t.Fatalf("attempt %d refused: %+v", i, d)
		}
		if i%2 == 0 {
			g.Cancel(ctx, a, d)
		} else {
			g.Success(ctx, a, d)
		}
	}
	if counters, _ := m.Len(); counters != 0 {
		t.Fatalf("1,000 attempts that did not fail left %d failure counters", counters)
	}
	if n := m.Pending(); n != 0 {
		t.Fatalf("1,000 settled attempts left %d keys pending", n)
	}
}

// TestSprayFromManyNetworksKeepsTheLockedCounters: a botnet of 1,000 /24s
// spraying 1,000 users once each (4,000 fresh one-failure counters, 40
// times the table) does not push out a victim's spent budget.
func TestSprayFromManyNetworksKeepsTheLockedCounters(t *testing.T) {
	m := &MemoryStore{MaxEntries: 100}
	g, _ := newStoreGuard(m, testBudgets)
	lockUser(t, g, testBudgets, "victim", 0)
	for i := range 1000 {
		try(g, fmt.Sprintf("10.%d.%d.1", 1+i>>8, i&255), fmt.Sprint("user", i), "guess")
	}
	if ok, d := try(g, "172.16.0.2", "victim", "guess"); ok {
		t.Fatalf("a spray of one-failure counters pushed out the victim's lock: %+v", d)
	}
}
