package main

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/imapgate/imapgate/policy"
	"github.com/imapgate/imapgate/proxy"
	"github.com/imapgate/imapgate/proxy/proxytest"
)

// TestPolicyRulesFromConfig: the README's worked example turns into these
// budgets, first match wins, and keys a rule leaves out come from [policy].
func TestPolicyRulesFromConfig(t *testing.T) {
	c := mustParse(t, "testdata/config/good-policy-rules.toml")
	g, slots := newAuthPolicy(&c.Policy)
	if slots == nil {
		t.Fatal("no upstream login cap")
	}
	def := policy.Budgets{PerIP: 10, PerNetwork: 50, PerUser: 20, PerDevice: 10, Window: 15 * time.Minute, Delay: 2 * time.Second}
	office := policy.Budgets{Window: 15 * time.Minute}
	public := policy.Budgets{PerIP: 5, PerNetwork: 20, PerUser: 20, PerDevice: 10, Window: time.Hour, Delay: 2 * time.Second}
	tests := []struct {
		addr, listener string
		want           policy.Budgets
	}{
		{"10.1.2.3", "0.0.0.0:993", office}, // the office rule comes first
		{"198.51.100.7", "10.0.0.5:9993", office},
		{"::ffff:198.51.100.7", "0.0.0.0:993", office},
		{"203.0.113.1", "0.0.0.0:993", public},
		{"203.0.113.1", "10.0.0.5:9993", def},
		{"2001:db8::1", "10.0.0.5:9993", def},
	}
	for _, tt := range tests {
		if got := g.BudgetsFor(netip.MustParseAddr(tt.addr), tt.listener); got != tt.want {
			t.Errorf("%s on %s: %+v, want %+v", tt.addr, tt.listener, got, tt.want)
		}
	}
	if g.KnownFor != 720*time.Hour {
		t.Errorf("KnownFor = %v", g.KnownFor)
	}
}

// TestReloadPolicyKeepsCounters: a reload changes budgets and the login
// cap, and keeps the failures counted so far and the logins in flight.
func TestReloadPolicyKeepsCounters(t *testing.T) {
	p := DefaultConfig().Policy
	p.AuthFailuresPerIP, p.MaxUpstreamLogins = 3, 1
	running := &proxy.Config{}
	running.Policy, running.UpstreamLogins = newAuthPolicy(&p)
	ctx := context.Background()
	fail := func(cfg *proxy.Config, i int) bool {
		a := policy.Attempt{Addr: netip.MustParseAddr("203.0.113.9"), User: fmt.Sprint("u", i)}
		d := cfg.Policy.Check(ctx, a)
		if d.Allowed {
			cfg.Policy.Failure(ctx, a, d)
		}
		return d.Allowed
	}
	for i := range 3 {
		if !fail(running, i) {
			t.Fatal("refused under the budget")
		}
	}
	release := running.UpstreamLogins.Acquire(ctx)

	p2 := p
	p2.AuthFailuresPerIP, p2.MaxUpstreamLogins = 5, 2
	next := &proxy.Config{}
	next.Policy, next.UpstreamLogins = newAuthPolicy(&p2)
	reloadPolicy(running, next, &p2)
	if next.Policy != running.Policy || next.UpstreamLogins != running.UpstreamLogins {
		t.Fatal("the reload replaced the running Guard or Slots")
	}
	allowed := 0
	for i := 3; i < 10; i++ {
		if fail(next, i) {
			allowed++
		}
	}
	if allowed != 2 {
		t.Fatalf("after raising the budget from 3 to 5, %d more allowed, want 2", allowed)
	}
	if in, _ := next.UpstreamLogins.InUse(); in != 1 {
		t.Fatalf("login in flight forgotten: %d", in)
	}
	r2 := next.UpstreamLogins.Acquire(ctx) // the raised cap has room for one more
	if r2 == nil {
		t.Fatal("raised login cap not applied")
	}
	release()
	r2()
}

// TestServeEnforcesPolicyAgainstDovecot runs `serve` with budgets, a rule,
// deny/allow lists and connection limits, and counts what reaches Dovecot.
// Dovecot keeps its per-IP auth penalty, set up as the README's Dovecot
// recipe says (imapgate's address trusted, forward_client_ip = "id"), so
// it penalises the guessing addresses, each failure making that
// address's next login wait longer (4s, 8s, 15s): guesses go in pairs,
// one per connection, to keep the test short. The window opens at the
// first failure and must outlast Dovecot's answer to the second guess,
// which its penalty may hold for 4 s or more: 10 s leaves room.
func TestServeEnforcesPolicyAgainstDovecot(t *testing.T) {
	d := proxytest.StartDovecot(t, proxytest.DovecotOptions{AuthPenalty: true, TrustedNetworks: "127.0.0.1/32"})
	const wrong = "Wr0ng-Guess!"
	const window = 10 * time.Second
	g := startGate(t, gateOptions{
		upstream: dovecotUpstream(d, "none") + "\nforward_client_ip = \"id\"",
		policy: `auth_failures_per_ip = 2
failure_window = "10s"
max_connections_per_ip = 2
allow = ["127.0.0.0/16"]
deny = ["127.0.0.66"]

[[policy.rule]]
networks = ["127.0.0.9"]
auth_failures_per_ip = 0
auth_failures_per_network = 0
auth_failures_per_user = 0
auth_failures_per_device = 0`,
		secrets: append(secretsOf(d), wrong),
	})
	// guess sends one wrong guess on each of n new connections from
	// source, all before reading any answer, and returns the answers.
	guess := func(source string, n int) []string {
		var cs []*client
		for range n {
			cs = append(cs, g.dialTLSFrom(t, source))
		}
		for i, c := range cs {
			c.send("g AUTHENTICATE PLAIN " + plainIR(fmt.Sprint("nosuch", i), wrong))
		}
		ended := g.sessionsEnded(t, source)
		var answers []string
		for _, c := range cs {
			answers = append(answers, c.expect("g "))
			c.conn.Close()
		}
		// The connection slots come back when the sessions end, not when
		// the client closes: wait, or the next guess may be refused by
		// max_connections_per_ip instead of judged.
		waitFor(t, func() bool { return g.sessionsEnded(t, source) >= ended+n })
		return answers
	}

	// An attacker at 127.0.0.5: two guesses reach Dovecot, the third does not.
	guess("127.0.0.5", 2)
	if a := guess("127.0.0.5", 1)[0]; a != "g NO [AUTHENTICATIONFAILED] Authentication failed." {
		t.Fatalf("refused guess answered %q", a)
	}
	got := d.WaitAuthAttempts(t, func(a proxytest.AuthCounts) bool { return a.Failure >= 2 })
	if got.Failure != 2 {
		t.Fatalf("Dovecot saw %d failures, want 2", got.Failure)
	}
	// The window passes and the address may log in again (after
	// Dovecot's own penalty for its two failures).
	time.Sleep(window + 100*time.Millisecond)
	c := g.dialTLSFrom(t, "127.0.0.5")
	c.send("a AUTHENTICATE PLAIN " + plainIR("user1", d.Users["user1"]))
	c.expect("a OK")
	c.conn.Close()

	// The office (a rule without budgets) is never limited: three
	// failures where the budget is two.
	for _, a := range append(guess("127.0.0.9", 2), guess("127.0.0.9", 1)...) {
		if !strings.Contains(a, "NO [AUTHENTICATIONFAILED]") {
			t.Fatalf("office guess answered %q", a)
		}
	}
	got = d.WaitAuthAttempts(t, func(a proxytest.AuthCounts) bool { return a.Failure >= 5 })
	if got.Failure != 5 || got.ByIP["127.0.0.9"] != 3 {
		t.Fatalf("Dovecot saw %d failures (by IP %v), want 2 + 3 from the office", got.Failure, got.ByIP)
	}

	// Deny, then allow: refused before any byte is sent.
	for _, source := range []string{"127.0.0.66", "127.3.0.1"} {
		conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(source)}},
			"tcp", g.implicit, &tls.Config{RootCAs: g.roots, ServerName: "localhost"})
		if err == nil {
			conn.Close()
			t.Errorf("%s completed a TLS handshake", source)
		}
	}
	// Two connections per address, the third is refused.
	g.dialTLSFrom(t, "127.0.0.7")
	g.dialTLSFrom(t, "127.0.0.7")
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.7")}},
		"tcp", g.implicit, &tls.Config{RootCAs: g.roots, ServerName: "localhost"})
	if err == nil {
		conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := conn.Read(make([]byte, 1)); err == nil {
			t.Error("third connection from one address was served")
		}
		conn.Close()
	}

	time.Sleep(100 * time.Millisecond)
	var reasons []string
	for _, e := range g.events(t) {
		if e["result"] == "refused" || e["result"] == "ratelimited" || e["result"] == "locked" {
			reasons = append(reasons, fmt.Sprintf("%v/%v/%v", e["event"], e["result"], e["reason"]))
		}
	}
	want := "auth/ratelimited/ip_rate_limited connect/refused/denied_network connect/refused/not_allowed_network connect/refused/too_many_connections_per_ip"
	if got := strings.Join(reasons, " "); got != want {
		t.Fatalf("refusals\n got %s\nwant %s", got, want)
	}
}

// TestPolicyUserNamesFromConfig: user_domain and user_realms make the
// spellings of one mailbox one policy key, and a reload changes them on
// the running Guard.
func TestPolicyUserNamesFromConfig(t *testing.T) {
	c := mustParse(t, "testdata/config/good-every-key.toml")
	g, _ := newAuthPolicy(&c.Policy)
	for _, user := range []string{"jdoe", "JDoe@Example.COM", `EXAMPLE\jdoe`, "jdoe@example.local"} {
		if got := g.UserKey(user); got != "jdoe@example.com" {
			t.Errorf("UserKey(%q) = %q, want jdoe@example.com", user, got)
		}
	}
	if got := g.UserKey(`OTHER\jdoe`); got != `other\jdoe` {
		t.Errorf("another domain became %q", got)
	}

	p := DefaultConfig().Policy
	running := &proxy.Config{}
	running.Policy, running.UpstreamLogins = newAuthPolicy(&p)
	if got := running.Policy.(*policy.Guard).UserKey(`EXAMPLE\JDoe`); got != `example\jdoe` {
		t.Fatalf("without user_domain: %q, want the name as typed, folded", got)
	}
	next := &proxy.Config{}
	next.Policy, next.UpstreamLogins = newAuthPolicy(&c.Policy)
	reloadPolicy(running, next, &c.Policy)
	if got := next.Policy.(*policy.Guard).UserKey(`EXAMPLE\JDoe`); got != "jdoe@example.com" {
		t.Fatalf("after a reload setting user_domain: %q", got)
	}
}

// TestUpstreamTimeoutsReachTheProxy: connect_timeout and login_timeout
// bound different phases of the upstream login; both reach it, and a
// config without them gets 10s and 30s.
func TestUpstreamTimeoutsReachTheProxy(t *testing.T) {
	for _, tt := range []struct {
		file             string
		connect, loginTO time.Duration
	}{
		{"testdata/config/good-every-key.toml", 3 * time.Second, 45 * time.Second},
		{"testdata/config/good-minimal.toml", 10 * time.Second, 30 * time.Second},
	} {
		c := mustParse(t, tt.file)
		c.Upstream.CAFile = "" // every-key sets both a CA and a pin, which a real upstream may not
		up, err := newUpstream(&c.Upstream)
		if err != nil {
			t.Fatalf("%s: %v", tt.file, err)
		}
		if up.ConnectTimeout != tt.connect || up.LoginTimeout != tt.loginTO {
			t.Errorf("%s: connect %v login %v, want %v and %v", tt.file, up.ConnectTimeout, up.LoginTimeout, tt.connect, tt.loginTO)
		}
	}
}
