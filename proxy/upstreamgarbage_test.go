package proxy

import (
	"crypto/tls"
	"crypto/x509"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/imapgate/imapgate/tlsconf"
)

// Faults a real Dovecot cannot be made to commit, from a scripted server
// (README "When the mail server fails"): garbage where IMAP should be,
// bytes injected after a STARTTLS OK, a certificate that changes to one
// that is not pinned. The brute-force budgets spend on none of them but
// where the credential was already on the wire.

// sentCredential reports whether the scripted server received the test
// password, in a LOGIN or as AUTHENTICATE PLAIN's response.
func (su *scriptedUpstream) sentCredential() bool {
	ir := plainIR(testUser, testPass)
	for _, l := range su.lines() {
		if strings.Contains(l, ir) || strings.Contains(l, testPass) {
			return true
		}
	}
	return false
}

// startScriptedFaultProxy is a proxy in front of su with the fault
// timeouts and a watched policy.
func startScriptedFaultProxy(t *testing.T, su *scriptedUpstream, mode UpstreamTLS, upTLS *tls.Config) (*testProxy, *countingDecider) {
	t.Helper()
	pol := newCountingDecider()
	tp := startProxyTo(t, su.addr, mode, upTLS, func(c *Config) {
		c.Upstream.ConnectTimeout, c.Upstream.LoginTimeout = faultConnectTimeout, faultLoginTimeout
		c.Policy = pol
	}, nil)
	return tp, pol
}

func TestUpstreamGarbageIsUnavailableAndSpendsNothingUnlessTheCredentialWasSent(t *testing.T) {
	const caps = "* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN SASL-IR] hi"
	answer := func(reply func(tag string) string) func(c *scriptedConn, line string) bool {
		return func(c *scriptedConn, line string) bool {
			if r := reply(tagOf(line)); r != "" {
				c.Conn.Write([]byte(r))
			}
			return true
		}
	}
	tests := []struct {
		name     string
		greeting string
		handle   func(c *scriptedConn, line string) bool
		reason   string
		// spent: the credential was on the wire when the garbage came,
		// so the attempt counts (README "Brute force and password
		// spraying": an answer that never came, or one the proxy cannot
		// read, is a failure; a guess the upstream answers BAD would
		// otherwise be free).
		spent bool
	}{
		{"greeting is HTTP", "HTTP/1.1 400 Bad Request", answer(func(string) string { return "" }), ReasonUpstreamProtocolError, false},
		{"greeting is binary", "\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03", answer(func(string) string { return "" }), ReasonUpstreamProtocolError, false},
		{"greeting without end", strings.Repeat("* OK ", 14<<10), answer(func(string) string { return "" }), ReasonUpstreamUnavailable, false},
		{"greeting literal too big", "* OK {999999999}", answer(func(string) string { return "" }), ReasonUpstreamUnavailable, false},
		{"CAPABILITY answer lists nothing", "* OK hi", answer(func(tag string) string { return "* NONSENSE\r\n" + tag + " OK done\r\n" }), ReasonUpstreamProtocolError, false},
		{"CAPABILITY answered BYE and closed", "* OK hi", func(c *scriptedConn, line string) bool { c.write("* BYE \x00\xff"); return false }, ReasonUpstreamUnavailable, false},
		{"AUTHENTICATE answered NO before the password", "* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN] hi", answer(func(tag string) string { return tag + " NO not now\r\n" }), ReasonUpstreamProtocolError, false},
		{"AUTHENTICATE answered OK before the password", "* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN] hi", answer(func(tag string) string { return tag + " OK come in\r\n" }), ReasonUpstreamProtocolError, false},
		{"login answered BAD", caps, answer(func(tag string) string { return tag + " BAD \x00\xffgarbage\r\n" }), ReasonUpstreamProtocolError, true},
		{"login answered with an unknown status", caps, answer(func(tag string) string { return tag + " MAYBE [ALERT] internal.host.example\r\n" }), ReasonUpstreamProtocolError, true},
		{"login answered with noise, never tagged", caps, answer(func(string) string { return "\x00\x01\x02 garbage\r\n" }), ReasonUpstreamNoAnswer, true},
		{"login answered with an endless line", caps, answer(func(string) string { return strings.Repeat("x", 70<<10) + "\r\n" }), ReasonUpstreamNoAnswer, true},
		{"login answered by closing", caps, func(c *scriptedConn, line string) bool { return false }, ReasonUpstreamNoAnswer, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			su := startScripted(t, tt.greeting, tt.handle)
			tp, pol := startScriptedFaultProxy(t, su, UpstreamPlaintext, nil)
			c := tp.dialImplicit(t)
			line, took := c.login("a", testUser, testPass)
			if !strings.HasPrefix(line, "a NO [UNAVAILABLE]") {
				t.Fatalf("answer %q, want NO [UNAVAILABLE]", line)
			}
			for _, leak := range []string{"garbage", "internal.host", "Bad Request", "NONSENSE"} {
				if strings.Contains(line, leak) {
					t.Fatalf("the upstream's text reached the client: %q", line)
				}
			}
			bound := faultConnectTimeout
			result := ResultError
			if tt.spent {
				bound += faultLoginTimeout
				result = ResultFailure
			}
			if took > bound+500*time.Millisecond {
				t.Errorf("answered after %v, want within %v", took, bound)
			}
			requireAuthReasons(t, tp, result, tt.reason, 1)
			if got := su.sentCredential(); got != tt.spent {
				t.Fatalf("credential sent = %v, want %v (server received %q)", got, tt.spent, su.lines())
			}
			if tt.spent {
				if n := pol.failures.Load(); n != 1 {
					t.Fatalf("failures counted = %d, want 1: the credential was on the wire", n)
				}
				return
			}
			pol.requireNothingSpent(t)
		})
	}
}

// TestSTARTTLSResponseInjectionThroughTheProxy: the upstream (or a man in
// the middle before TLS) sends a forged CAPABILITY in the same plaintext
// segment as its STARTTLS OK (CVE-2011-0411 class). The proxy refuses the
// connection before TLS, sends no credential, and the client gets NO
// [UNAVAILABLE], audited as upstream_protocol_error, nothing spent.
func TestSTARTTLSResponseInjectionThroughTheProxy(t *testing.T) {
	su := startScripted(t, "* OK [CAPABILITY IMAP4rev1 STARTTLS] hi", func(c *scriptedConn, line string) bool {
		if strings.HasSuffix(line, "STARTTLS") {
			c.Conn.Write([]byte(tagOf(line) + " OK begin TLS\r\n* CAPABILITY IMAP4rev1 AUTH=PLAIN SASL-IR\r\n"))
		}
		return true
	})
	tp, pol := startScriptedFaultProxy(t, su, UpstreamSTARTTLS, &tls.Config{InsecureSkipVerify: true})
	c := tp.dialImplicit(t)
	line, _ := c.login("a", testUser, testPass)
	if !strings.HasPrefix(line, "a NO [UNAVAILABLE]") {
		t.Fatalf("answer %q, want NO [UNAVAILABLE]", line)
	}
	requireAuthReasons(t, tp, ResultError, ReasonUpstreamProtocolError, 1)
	if got := su.lines(); len(got) != 1 || !strings.HasSuffix(got[0], " STARTTLS") {
		t.Fatalf("server received %q, want only STARTTLS", got)
	}
	pol.requireNothingSpent(t)
}

// TestUpstreamCertificateChangeToAnUnpinnedOne: the upstream's
// certificate is pinned; it changes to another key (a rebuilt server, or
// someone in between). Sessions relayed already go on; every new login
// fails its TLS handshake before the credential: NO [UNAVAILABLE],
// upstream_unavailable, nothing spent.
func TestUpstreamCertificateChangeToAnUnpinnedOne(t *testing.T) {
	pinned, _, err := tlsconf.SelfSigned(time.Hour, "legacy.internal")
	if err != nil {
		t.Fatal(err)
	}
	other, _, err := tlsconf.SelfSigned(time.Hour, "legacy.internal")
	if err != nil {
		t.Fatal(err)
	}
	var current atomic.Pointer[tls.Certificate]
	current.Store(&pinned)
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
		return current.Load(), nil
	}})
	if err != nil {
		t.Fatal(err)
	}
	su := serveScripted(t, ln, "* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN SASL-IR] hi", func(c *scriptedConn, line string) bool {
		c.write(tagOf(line) + " OK [CAPABILITY IMAP4rev1 IDLE] done")
		return true
	})
	leaf, _ := x509.ParseCertificate(pinned.Certificate[0])
	upTLS, err := tlsconf.UpstreamConfig(tlsconf.UpstreamOptions{ServerName: "legacy.internal", PinSHA256: tlsconf.SPKIPin(leaf)})
	if err != nil {
		t.Fatal(err)
	}
	tp, pol := startScriptedFaultProxy(t, su, UpstreamImplicit, upTLS)

	before := tp.dialImplicit(t)
	if line, _ := before.login("a", testUser, testPass); !strings.HasPrefix(line, "a OK") {
		t.Fatalf("login to the pinned upstream: %q", line)
	}
	current.Store(&other)
	received := len(su.lines())

	c := tp.dialImplicit(t)
	line, took := c.login("b", testUser, testPass)
	if !strings.HasPrefix(line, "b NO [UNAVAILABLE]") {
		t.Fatalf("login after the certificate changed: %q", line)
	}
	if took > faultConnectTimeout {
		t.Errorf("answered after %v, want within connect_timeout (%v)", took, faultConnectTimeout)
	}
	if got := su.lines()[received:]; len(got) != 0 {
		t.Fatalf("the unpinned server received %q", got)
	}
	var reasons []string
	for _, e := range tp.audit.events(t) {
		if e.Event == EventAuth {
			reasons = append(reasons, e.Result+"/"+e.Reason)
		}
	}
	if want := []string{ResultSuccess + "/", ResultError + "/" + ReasonUpstreamUnavailable}; strings.Join(reasons, " ") != strings.Join(want, " ") {
		t.Fatalf("auth events %q, want %q", reasons, want)
	}
	pol.requireNothingSpent(t)

	// The session relayed before the change is untouched.
	before.send("c NOOP")
	before.expect("c OK")
}
