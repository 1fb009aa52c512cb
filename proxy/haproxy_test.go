package proxy

import (
	"strings"
	"testing"
	"time"

	"github.com/imapgate/imapgate/proxy/proxytest"
)

// TestClientAddressReachesDovecotThroughHAProxy: the README's recipe for
// a server behind HAProxy (forward_client_ip = "proxy-v2"), with the real
// parts: imapgate sends a PROXY v2 header to a real HAProxy 2.6
// (bind ... accept-proxy), which forwards with send-proxy-v2 to a real
// Dovecot listener with haproxy = yes that trusts HAProxy
// (haproxy_trusted_networks). A user logging in from 127.0.0.77 and a
// guesser trying a wrong password from 127.0.0.78 are seen by their own
// addresses all the way: HAProxy's log names them, Dovecot logs them as
// rip, and Dovecot's auth penalty is held against the guesser's address
// alone, never against 127.0.0.1 (where imapgate and HAProxy connect
// from), so the user's next login is not delayed.
func TestClientAddressReachesDovecotThroughHAProxy(t *testing.T) {
	const user, guesser = "127.0.0.77", "127.0.0.78"
	d := proxytest.StartDovecot(t, proxytest.DovecotOptions{AuthPenalty: true, HAProxyTrustedNetworks: "127.0.0.1/32"})
	h := proxytest.StartHAProxy(t, proxytest.HAProxyOptions{Backend: d.HAProxyAddr, AcceptProxy: true, SendProxyV2: true})
	tp := startProxyTo(t, h.Addr, UpstreamSTARTTLS, dovecotTLS(d), func(c *Config) {
		c.Upstream.Forward = ForwardProxyV2
	}, nil)

	if got, _, err := tp.loginOnce(t, user, "user1", d.Users["user1"]); err != nil || !strings.HasPrefix(got, "a OK") {
		t.Fatalf("user1 from %s: %q %v", user, got, err)
	}
	d.WaitLog(t, "Login: user=<user1>, method=PLAIN, rip="+user+", lip=127.0.0.1")
	h.WaitLog(t, "\n"+user+":")

	if got, _, err := tp.loginOnce(t, guesser, "user2", "Wrong-Pass-2"); err != nil || !strings.HasPrefix(got, "a NO [AUTHENTICATIONFAILED]") {
		t.Fatalf("a wrong password from %s: %q %v", guesser, got, err)
	}
	seen := d.WaitAuthAttempts(t, func(a proxytest.AuthCounts) bool { return a.Failure == 1 })
	if seen.ByIP[user] != 1 || seen.ByIP[guesser] != 1 || len(seen.ByIP) != 2 {
		t.Errorf("Dovecot's log has attempts by address %v, want one from %s and one from %s", seen.ByIP, user, guesser)
	}
	penalties, err := d.Penalties()
	if err != nil {
		t.Fatal(err)
	}
	if penalties[guesser] != 1 || len(penalties) != 1 {
		t.Errorf("Dovecot's auth penalties %v, want 1 for %s alone", penalties, guesser)
	}

	got, took, err := tp.loginOnce(t, user, "user1", d.Users["user1"])
	if err != nil || !strings.HasPrefix(got, "a OK") {
		t.Fatalf("user1 again from %s: %q %v", user, got, err)
	}
	t.Logf("after a wrong guess from %s, user1's next login from %s took %v", guesser, user, took.Round(time.Millisecond))
	if took > time.Second {
		t.Errorf("user1's next login took %v: Dovecot penalised more than the guesser's address", took)
	}
	h.WaitLog(t, "\n"+guesser+":")
}
