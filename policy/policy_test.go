package policy

import (
	"net/netip"
	"testing"
)

func TestAccess(t *testing.T) {
	acc, err := NewAccess([]string{"10.0.0.0/8", "2001:db8::/32", "192.0.2.7"}, []string{"10.6.6.0/24"})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		addr   string
		ok     bool
		reason string
	}{
		{"10.1.2.3", true, ""},
		{"10.6.6.9", false, ReasonDenied},
		{"::ffff:10.6.6.9", false, ReasonDenied}, // IPv4-mapped is the same host
		{"::ffff:10.1.1.1", true, ""},
		{"192.0.2.7", true, ""},
		{"192.0.2.8", false, ReasonNotAllowed},
		{"2001:db8::1", true, ""},
		{"2001:db9::1", false, ReasonNotAllowed},
	}
	for _, tt := range tests {
		ok, reason := acc.Allowed(netip.MustParseAddr(tt.addr))
		if ok != tt.ok || reason != tt.reason {
			t.Errorf("Allowed(%s) = %v %q, want %v %q", tt.addr, ok, reason, tt.ok, tt.reason)
		}
	}
	var zero Access
	if ok, _ := zero.Allowed(netip.MustParseAddr("203.0.113.1")); !ok {
		t.Error("zero Access must allow everyone")
	}
	if _, err := NewAccess([]string{"10.0.0.0/33"}, nil); err == nil {
		t.Error("bad CIDR accepted")
	}
}

func TestConnLimiter(t *testing.T) {
	l := NewConnLimiter(3, 2, 0)
	a, b := netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("192.0.2.2")
	r1, _ := l.Acquire(a)
	r2, _ := l.Acquire(a)
	if r, why := l.Acquire(a); r != nil || why != ReasonTooManyPerIP {
		t.Fatalf("third from one IP: %v %q", r != nil, why)
	}
	r3, _ := l.Acquire(b)
	if r, why := l.Acquire(b); r != nil || why != ReasonTooManyConns {
		t.Fatalf("over total: %v %q", r != nil, why)
	}
	r1()
	r1() // idempotent
	if l.Open() != 2 {
		t.Fatalf("open = %d, want 2", l.Open())
	}
	if r, _ := l.Acquire(a); r == nil {
		t.Fatal("slot not released")
	}
	r2()
	r3()
}

func TestConnLimiterSetLimitsKeepsOpenConnections(t *testing.T) {
	l := NewConnLimiter(0, 2, 0)
	a := netip.MustParseAddr("192.0.2.1")
	r1, _ := l.Acquire(a)
	r2, _ := l.Acquire(a)
	l.SetLimits(0, 3, 0) // a reload raises the per-IP limit
	if r, _ := l.Acquire(a); r == nil {
		t.Fatal("new limit not applied")
	}
	if r, why := l.Acquire(a); r != nil || why != ReasonTooManyPerIP {
		t.Fatal("connections opened before the reload were forgotten")
	}
	r1()
	r2()
}
