package tlsconf

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// zone is a Resolver from a map of names to addresses; it counts lookups.
type zone struct {
	mu      sync.Mutex
	names   map[string][]string // name (no trailing dot) -> addresses
	any     []string            // a wildcard record: every other name has these
	lookups []string
}

func (z *zone) LookupNetIP(_ context.Context, network, host string) ([]netip.Addr, error) {
	z.mu.Lock()
	defer z.mu.Unlock()
	z.lookups = append(z.lookups, host)
	if network != "ip" || !strings.HasSuffix(host, ".") {
		return nil, fmt.Errorf("lookup %s %s: want network ip and a rooted name", network, host)
	}
	list, ok := z.names[strings.TrimSuffix(host, ".")]
	if !ok {
		list = z.any
	}
	if len(list) == 0 {
		return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
	}
	var out []netip.Addr
	for _, a := range list {
		out = append(out, netip.MustParseAddr(a))
	}
	return out, nil
}

func (z *zone) asked() []string {
	z.mu.Lock()
	defer z.mu.Unlock()
	return append([]string(nil), z.lookups...)
}

// wildcard is a zone where every name resolves to the proxy.
func wildcard() *zone { return &zone{any: []string{"192.0.2.10"}} }

func TestOnDemandAllowList(t *testing.T) {
	p := &OnDemandPolicy{Allow: []string{"mail.example.org", ".customers.example.net", "*.example.com"}}
	tests := []struct {
		name string
		want bool
	}{
		{"mail.example.org", true},
		{"MAIL.example.org.", true},
		{"x.mail.example.org", false},
		{"example.org", false},
		{"a.customers.example.net", true},
		{"a.b.customers.example.net", true},
		{"customers.example.net", false},
		{"evilcustomers.example.net", false},
		{"imap.example.com", true},
		{"example.com", false},
		{"", false},
		{"*.example.com", false},
		{"a.example.com.evil.org", false},
	}
	for _, tt := range tests {
		if got := p.Allowed(tt.name); got != tt.want {
			t.Errorf("Allowed(%q) = %v, want %v", tt.name, got, tt.want)
		}
	}
}

func TestOnDemandCapCountsEachNameOncePerHour(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	p := &OnDemandPolicy{Allow: []string{".example.com"}, MaxPerHour: 2, Resolver: wildcard(), now: func() time.Time { return now }}
	for i, step := range []struct {
		name string
		want error
	}{
		{"a.example.com", nil},
		{"a.example.com", nil}, // the same name again: no new count
		{"b.example.com", nil},
		{"c.example.com", ErrOnDemandCap},
		{"evil.org", ErrOnDemandNotAllowed},
	} {
		if err := p.Decide(context.Background(), step.name); !errors.Is(err, step.want) {
			t.Fatalf("step %d: Decide(%q) = %v, want %v", i, step.name, err, step.want)
		}
	}
	now = now.Add(time.Hour)
	if err := p.Decide(context.Background(), "c.example.com"); err != nil {
		t.Fatalf("an hour later: %v", err)
	}
}

func TestOnDemandDefaultCap(t *testing.T) {
	p := &OnDemandPolicy{Allow: []string{".example.com"}, Resolver: wildcard()}
	for i := range DefaultOnDemandPerHour {
		if err := p.Decide(context.Background(), fmt.Sprintf("n%d.example.com", i)); err != nil {
			t.Fatal(err)
		}
	}
	if err := p.Decide(context.Background(), "one-more.example.com"); !errors.Is(err, ErrOnDemandCap) {
		t.Fatalf("past the default cap: %v", err)
	}
}

// TestOnDemandExactNamesNeverSpendTheCap: an attacker spends the hour's
// cap with names of its choosing under an allowed suffix (the zone has a
// wildcard record, so they all resolve); the names the admin listed
// exactly still get their certificates, and are never even looked up.
func TestOnDemandExactNamesNeverSpendTheCap(t *testing.T) {
	z := wildcard()
	p := &OnDemandPolicy{Allow: []string{"mail.example.org", "imap.example.org", ".customers.example.com"}, MaxPerHour: 2, Resolver: z}
	ctx := context.Background()
	for i := range 5 {
		p.Decide(ctx, fmt.Sprintf("attacker%d.customers.example.com", i))
	}
	if err := p.Decide(ctx, "new-tenant.customers.example.com"); !errors.Is(err, ErrOnDemandCap) {
		t.Fatalf("the attacker did not spend the suffix's cap: %v", err)
	}
	for _, name := range []string{"mail.example.org", "IMAP.example.org.", "mail.example.org"} {
		if err := p.Decide(ctx, name); err != nil {
			t.Errorf("listed name %s refused after the cap was spent: %v", name, err)
		}
	}
	for _, host := range z.asked() {
		if strings.HasSuffix(host, ".example.org.") {
			t.Errorf("a listed name was looked up: %s", host)
		}
	}
}

// TestOnDemandNamesThatDoNotResolveNeverSpendTheCap: without a wildcard
// record, the names an attacker invents under the suffix do not exist;
// they are refused before the CA is asked and spend nothing, so the next
// real customer, whose name points at the proxy, gets its certificate.
func TestOnDemandNamesThatDoNotResolveNeverSpendTheCap(t *testing.T) {
	z := &zone{names: map[string][]string{
		"shop.customers.example.com":  {"192.0.2.10"},
		"forum.customers.example.com": {"2001:db8::10"},
	}}
	p := &OnDemandPolicy{Allow: []string{".customers.example.com"}, MaxPerHour: 2, Resolver: z}
	ctx := context.Background()
	for i := range 100 {
		name := fmt.Sprintf("x%d.customers.example.com", i)
		if err := p.Decide(ctx, name); !errors.Is(err, ErrOnDemandNoAddress) {
			t.Fatalf("%s, which does not exist: %v", name, err)
		}
	}
	for _, name := range []string{"shop.customers.example.com", "forum.customers.example.com"} {
		if err := p.Decide(ctx, name); err != nil {
			t.Fatalf("real customer %s refused: %v", name, err)
		}
	}
}

// TestOnDemandNamesServedElsewhereAreRefused: with Addresses, a name under
// the suffix must point at the proxy; www, which the web host serves, is
// refused, and a name with one address of the proxy among others passes
// (IPv4-mapped answers count as IPv4).
func TestOnDemandNamesServedElsewhereAreRefused(t *testing.T) {
	z := &zone{names: map[string][]string{
		"www.example.com":    {"203.0.113.80"},
		"mail.example.com":   {"203.0.113.80", "2001:db8::10"},
		"mapped.example.com": {"::ffff:192.0.2.10"},
	}}
	p := &OnDemandPolicy{Allow: []string{".example.com"}, Resolver: z,
		Addresses: []netip.Prefix{netip.MustParsePrefix("192.0.2.10/32"), netip.MustParsePrefix("2001:db8::/64")}}
	ctx := context.Background()
	if err := p.Decide(ctx, "www.example.com"); !errors.Is(err, ErrOnDemandElsewhere) || !strings.Contains(err.Error(), "203.0.113.80") {
		t.Errorf("www, served elsewhere: %v", err)
	}
	for _, name := range []string{"mail.example.com", "mapped.example.com"} {
		if err := p.Decide(ctx, name); err != nil {
			t.Errorf("%s points at the proxy: %v", name, err)
		}
	}
}

// TestOnDemandCapReachedCostsNoLookup: once the hour's cap is spent, new
// names are refused without a DNS query each.
func TestOnDemandCapReachedCostsNoLookup(t *testing.T) {
	z := wildcard()
	p := &OnDemandPolicy{Allow: []string{".example.com"}, MaxPerHour: 1, Resolver: z}
	ctx := context.Background()
	if err := p.Decide(ctx, "a.example.com"); err != nil {
		t.Fatal(err)
	}
	for i := range 50 {
		if err := p.Decide(ctx, fmt.Sprintf("n%d.example.com", i)); !errors.Is(err, ErrOnDemandCap) {
			t.Fatal(err)
		}
	}
	if err := p.Decide(ctx, "a.example.com"); err != nil {
		t.Fatalf("the name already counted: %v", err)
	}
	if got := z.asked(); len(got) != 1 {
		t.Fatalf("%d lookups, want only the one for a.example.com: %v", len(got), got)
	}
}

// TestOnDemandAsksTheConfiguredResolvers: ACMEOptions.DNSResolvers answer
// the On-Demand lookups, with the name rooted (no search domain of the
// host's resolv.conf is tried). The server is a real DNS server on
// loopback that knows one name.
func TestOnDemandAsksTheConfiguredResolvers(t *testing.T) {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var questions []string
	srv := &dns.Server{PacketConn: pc, Handler: dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(r)
		q := r.Question[0]
		mu.Lock()
		questions = append(questions, q.Name)
		mu.Unlock()
		switch {
		case q.Name != "shop.customers.example.com.":
			m.Rcode = dns.RcodeNameError
		case q.Qtype == dns.TypeA:
			m.Answer = append(m.Answer, &dns.A{Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 60}, A: net.IPv4(127, 0, 0, 1)})
		}
		w.WriteMsg(m)
	})}
	started := make(chan struct{})
	srv.NotifyStartedFunc = func() { close(started) }
	go srv.ActivateAndServe()
	<-started
	t.Cleanup(func() { srv.Shutdown() })

	p := &OnDemandPolicy{Allow: []string{".customers.example.com"}, Resolver: resolverOf([]string{pc.LocalAddr().String()})}
	ctx := context.Background()
	if err := p.Decide(ctx, "shop.customers.example.com"); err != nil {
		t.Fatalf("a name the server knows: %v", err)
	}
	if err := p.Decide(ctx, "nosuch.customers.example.com"); !errors.Is(err, ErrOnDemandNoAddress) {
		t.Fatalf("a name the server does not know: %v", err)
	}
	mu.Lock()
	defer mu.Unlock()
	for _, q := range questions {
		if q != "shop.customers.example.com." && q != "nosuch.customers.example.com." {
			t.Errorf("asked for %s: a search domain was tried", q)
		}
	}
}
