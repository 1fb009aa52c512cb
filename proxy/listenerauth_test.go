package proxy

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/imapgate/imapgate/auth/credstore"
	"github.com/imapgate/imapgate/proxy/proxytest"
)

// TestEachListenerOffersItsOwnMechanisms: the implicit listener takes the
// server-wide list (PLAIN); the STARTTLS one is configured with a list
// without PLAIN, so it advertises no AUTH=PLAIN and refuses AUTHENTICATE
// PLAIN as mechanism_not_allowed before any credential is read.
func TestEachListenerOffersItsOwnMechanisms(t *testing.T) {
	tp := startProxy(t, func(c *Config) {
		c.Mechanisms = []string{"PLAIN"}
		c.Listeners = map[string]ListenerAuth{string(TLSStartTLS): {Mechanisms: []string{"SCRAM-SHA-256"}}}
	})

	c := tp.dialImplicit(t)
	c.send("a CAPABILITY")
	if line := c.expect("* CAPABILITY"); !strings.Contains(line, "AUTH=PLAIN") {
		t.Errorf("implicit listener: %q, want AUTH=PLAIN", line)
	}
	c.send("b AUTHENTICATE PLAIN " + saslPlain(testUser, testPass))
	c.expect("b OK")

	s := tp.dialPlain(t)
	s.startTLS(tp.roots)
	s.send("a CAPABILITY")
	if line := s.expect("* CAPABILITY"); strings.Contains(line, "AUTH=PLAIN") {
		t.Errorf("STARTTLS listener: %q offers PLAIN, which it is not configured with", line)
	}
	s.send("b AUTHENTICATE PLAIN " + saslPlain(testUser, testPass))
	s.expect("b NO Unsupported")
	if ev := lastAuth(t, tp); ev.Listener != string(TLSStartTLS) || ev.Reason != ReasonMechanismNotAllowed {
		t.Errorf("auth event %+v, want mechanism_not_allowed on the STARTTLS listener", ev)
	}
}

// TestPassthroughOffOnOneListenerOnly: the implicit listener (the one on
// the internet) has pass-through off, the STARTTLS one (the office's)
// keeps it. user1's real password is refused on the first with
// passthrough_disabled and never reaches Dovecot, and logs in on the
// second; the app password works on both.
func TestPassthroughOffOnOneListenerOnly(t *testing.T) {
	d := masterDovecot(t, proxytest.DovecotOptions{})
	store := openTestStore(t, &testClock{now: time.Now()})
	tp := startAppPasswordProxy(t, d, store, testMasterSecret, func(c *Config) {
		c.Listeners = map[string]ListenerAuth{string(TLSImplicit): {RefusePassThrough: true}}
	})
	_, pass := addAppPassword(t, store, credstore.NewAppPassword{User: "user1", Label: "phone"})
	real := proxytest.DefaultUsers()["user1"]

	c := tp.dialImplicit(t)
	c.send("a AUTHENTICATE PLAIN " + saslPlain("user1", real))
	c.expect("a NO [AUTHENTICATIONFAILED]")
	if ev := lastAuth(t, tp); ev.Reason != ReasonPassthroughDisabled || ev.Listener != string(TLSImplicit) {
		t.Errorf("real password on the internet listener: auth event %+v, want passthrough_disabled", ev)
	}
	c.send("b AUTHENTICATE PLAIN " + saslPlain("user1", pass))
	c.expect("b OK")

	s := tp.dialPlain(t)
	s.startTLS(tp.roots)
	s.send("a AUTHENTICATE PLAIN " + saslPlain("user1", real))
	s.expect("a OK")
	got := d.WaitAuthAttempts(t, func(c proxytest.AuthCounts) bool { return c.Success == 2 })
	if got.Failure != 0 || got.MasterLogins[proxytest.MasterUse{Master: testMasterUser, User: "user1"}] != 1 {
		t.Errorf("Dovecot saw %+v; want the master login and one pass-through, no failure", got)
	}
}

// TestPassthroughRulesByNetwork: the first rule that matches the client
// decides; a rule that leaves passthrough out hands it to the listener,
// and shadows the rules after it, as every [[policy.rule]] does.
func TestPassthroughRulesByNetwork(t *testing.T) {
	off, on := false, true
	loopback := []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}
	elsewhere := []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24")}
	tests := []struct {
		name        string
		rules       []PassThroughRule
		listenerOff bool
		wantRefused bool
	}{
		{"no rule: the listener's", nil, false, false},
		{"the client's network has it off", []PassThroughRule{{Networks: loopback, PassThrough: &off}}, false, true},
		{"the client's network has it on where the listener has it off", []PassThroughRule{{Networks: loopback, PassThrough: &on}}, true, false},
		{"a rule for another network does not apply", []PassThroughRule{{Networks: elsewhere, PassThrough: &off}}, false, false},
		{"a rule for another listener does not apply", []PassThroughRule{{Listeners: []string{"elsewhere"}, PassThrough: &off}}, false, false},
		{"the first match wins", []PassThroughRule{{Networks: loopback, PassThrough: &on}, {PassThrough: &off}}, false, false},
		{"a matching rule without passthrough leaves it to the listener", []PassThroughRule{{Networks: loopback}, {PassThrough: &off}}, false, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tp := startProxy(t, func(c *Config) {
				c.PassThroughRules = tt.rules
				c.Listeners = map[string]ListenerAuth{string(TLSImplicit): {RefusePassThrough: tt.listenerOff}}
			})
			c := tp.dialImplicit(t)
			c.send("a AUTHENTICATE PLAIN " + saslPlain(testUser, testPass))
			line := c.expect("a ")
			ev := lastAuth(t, tp)
			if refused := ev.Reason == ReasonPassthroughDisabled; refused != tt.wantRefused || strings.HasPrefix(line, "a OK") == tt.wantRefused {
				t.Errorf("answer %q, auth event %+v; want refused %v", line, ev, tt.wantRefused)
			}
		})
	}
}
