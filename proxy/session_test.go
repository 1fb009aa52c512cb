package proxy

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/imapgate/imapgate/tlsconf"
)

func plainIR(user, pass string) string {
	return base64.StdEncoding.EncodeToString([]byte("\x00" + user + "\x00" + pass))
}

func TestAuthenticatePlainSASLIRThenRelay(t *testing.T) {
	tp := startProxy(t, nil)
	c := tp.dialImplicit(t)
	c.send("a1 CAPABILITY")
	caps := c.expect("* CAPABILITY")
	for _, want := range []string{"AUTH=PLAIN", "SASL-IR", "LOGINDISABLED", "ID"} {
		if !strings.Contains(caps, want) {
			t.Errorf("capabilities %q lack %s", caps, want)
		}
	}
	c.expect("a1 OK")
	c.send("a2 AUTHENTICATE PLAIN " + plainIR(testUser, testPass))
	ok := c.expect("a2 OK")
	if !strings.Contains(ok, "[CAPABILITY ") || strings.Contains(ok, "AUTH=") || strings.Contains(ok, "SASL-IR") {
		t.Fatalf("post-login capabilities not filtered: %q", ok)
	}
	if !strings.Contains(ok, "IDLE") {
		t.Fatalf("upstream capability IDLE missing: %q", ok)
	}
	c.send("a3 SELECT INBOX")
	c.expect("a3 OK")
	c.send("a4 LOGOUT")
	c.expect("* BYE")
	c.expect("a4 OK")
	c.expectClosed()

	waitFor(t, func() bool { return hasEvent(tp.audit.events(t), EventSessionEnd, "") })
	evs := tp.audit.events(t)
	auth := findEvent(evs, EventAuth)
	if auth == nil || auth.Result != ResultSuccess || auth.User != testUser || auth.Mechanism != "PLAIN" || auth.Upstream != tp.upstreamA {
		t.Fatalf("auth event = %+v", auth)
	}
	end := findEvent(evs, EventSessionEnd)
	if end.User != testUser || end.BytesIn == nil || *end.BytesIn == 0 || *end.BytesOut == 0 {
		t.Fatalf("session_end = %+v", end)
	}
	tlsEv := findEvent(evs, EventTLS)
	if tlsEv == nil || tlsEv.Result != "ok" || tlsEv.TLSVersion == "" || tlsEv.TLSCipher == "" {
		t.Fatalf("tls event = %+v", tlsEv)
	}
	if strings.Contains(tp.audit.String(), testPass) || strings.Contains(tp.audit.String(), plainIR(testUser, testPass)) {
		t.Fatal("audit log contains the password or the SASL payload")
	}
}

func TestAuthenticatePlainWithContinuation(t *testing.T) {
	tp := startProxy(t, nil)
	c := tp.dialImplicit(t)
	c.send("a1 AUTHENTICATE PLAIN")
	if line := c.expect("+"); line != "+ " {
		t.Fatalf("empty challenge must be %q, got %q", "+ ", line)
	}
	c.send(plainIR(testUser, testPass))
	c.expect("a1 OK [CAPABILITY")
	c.send("a2 NOOP")
	c.expect("a2 OK")
}

func TestAuthenticateCancelAndBadBase64(t *testing.T) {
	tp := startProxy(t, nil)
	c := tp.dialImplicit(t)
	c.send("a1 AUTHENTICATE PLAIN")
	c.expect("+ ")
	c.send("*")
	c.expect("a1 BAD")
	c.send("a2 AUTHENTICATE PLAIN")
	c.expect("+ ")
	c.send("!!!not-base64")
	c.expect("a2 BAD")
	c.send("a3 AUTHENTICATE PLAIN %%%")
	c.expect("a3 BAD")
	c.send("a4 AUTHENTICATE PLAIN =")
	c.expect("a4 NO [AUTHENTICATIONFAILED]")
	// Still usable.
	c.send("a5 AUTHENTICATE PLAIN " + plainIR(testUser, testPass))
	c.expect("a5 OK")
}

func TestBadPasswordThenRetry(t *testing.T) {
	tp := startProxy(t, nil)
	c := tp.dialImplicit(t)
	c.send("a1 AUTHENTICATE PLAIN " + plainIR(testUser, "wrong"))
	c.expect("a1 NO [AUTHENTICATIONFAILED]")
	c.send("a2 AUTHENTICATE PLAIN " + plainIR(testUser, testPass))
	c.expect("a2 OK")
	ev := findEvent(tp.audit.events(t), EventAuth)
	if ev.Result != ResultFailure || ev.Reason != "bad_credentials" || ev.User != testUser {
		t.Fatalf("first auth event = %+v", ev)
	}
}

func TestTooManyAuthFailuresGetsBYE(t *testing.T) {
	tp := startProxy(t, func(c *Config) { c.MaxAuthFailures = 2 })
	c := tp.dialImplicit(t)
	c.send("a1 AUTHENTICATE PLAIN " + plainIR(testUser, "wrong1"))
	c.expect("a1 NO")
	c.send("a2 AUTHENTICATE PLAIN " + plainIR(testUser, "wrong2"))
	c.expect("a2 NO")
	c.expect("* BYE")
	c.expectClosed()
}

func TestLoginRefusedBeforeAndAfterTLS(t *testing.T) {
	tp := startProxy(t, func(c *Config) { c.MaxAuthFailures = 10 })
	c := tp.dialPlain(t)
	c.send("a1 CAPABILITY")
	caps := c.expect("* CAPABILITY")
	if !strings.Contains(caps, "STARTTLS") || !strings.Contains(caps, "LOGINDISABLED") || strings.Contains(caps, "AUTH=") {
		t.Fatalf("pre-TLS capabilities = %q", caps)
	}
	c.expect("a1 OK")
	c.send(fmt.Sprintf("a2 LOGIN %s %s", testUser, testPass))
	c.expect("a2 NO [PRIVACYREQUIRED]")
	// A literal password is refused before the client sends it: no "+".
	c.send("a3 LOGIN {5}")
	c.expect("a3 NO [PRIVACYREQUIRED]")
	c.send("a4 AUTHENTICATE PLAIN " + plainIR(testUser, testPass))
	c.expect("a4 NO [PRIVACYREQUIRED]")
	c.startTLS(tp.roots)
	c.send("a5 CAPABILITY")
	caps = c.expect("* CAPABILITY")
	if strings.Contains(caps, "STARTTLS") || !strings.Contains(caps, "AUTH=PLAIN") {
		t.Fatalf("post-TLS capabilities = %q", caps)
	}
	c.send(fmt.Sprintf("a6 LOGIN %s %s", testUser, testPass))
	c.expect("a6 NO [CANNOT]")
	evs := tp.audit.events(t)
	var reasons []string
	for _, e := range evs {
		if e.Event == EventAuth {
			reasons = append(reasons, e.Result+"/"+e.Reason)
		}
	}
	want := "refused/plaintext_login_refused refused/plaintext_login_refused refused/tls_required refused/login_command_disabled"
	if strings.Join(reasons, " ") != want {
		t.Fatalf("auth events = %v, want %s", reasons, want)
	}
}

func TestLoginAllowedOverTLSWhenConfigured(t *testing.T) {
	tp := startProxy(t, func(c *Config) { c.AllowLoginOverTLS = true })
	c := tp.dialImplicit(t)
	c.send("a1 CAPABILITY")
	if caps := c.expect("* CAPABILITY"); strings.Contains(caps, "LOGINDISABLED") {
		t.Fatalf("LOGINDISABLED advertised although LOGIN is allowed: %q", caps)
	}
	c.send("a2 LOGIN {5}")
	c.expect("+ ")
	c.conn.Write([]byte(testUser + " \"" + testPass + "\"\r\n"))
	c.expect("a2 OK [CAPABILITY")
}

func TestStartTLSWithPipelinedCommandIsRefused(t *testing.T) {
	tp := startProxy(t, nil)
	c := tp.dialPlain(t)
	c.conn.Write([]byte("a1 STARTTLS\r\na2 AUTHENTICATE PLAIN " + plainIR(testUser, testPass) + "\r\n"))
	c.expect("a1 BAD")
	c.expect("* BYE")
	c.expectClosed()
}

func TestStartTLSOnImplicitListenerIsBad(t *testing.T) {
	tp := startProxy(t, nil)
	c := tp.dialImplicit(t)
	c.send("a1 STARTTLS")
	c.expect("a1 BAD")
}

func TestPipelinedCommandsAfterAuthenticateReachUpstream(t *testing.T) {
	tp := startProxy(t, nil)
	c := tp.dialImplicit(t)
	// One write: the proxy reads all of it into its buffer before the
	// upstream login finishes; none of it may be lost.
	c.conn.Write([]byte("a1 AUTHENTICATE PLAIN " + plainIR(testUser, testPass) + "\r\na2 SELECT INBOX\r\na3 NOOP\r\na4 LOGOUT\r\n"))
	c.expect("a1 OK")
	c.expect("a2 OK")
	c.expect("a3 OK")
	c.expect("a4 OK")
}

func TestUnknownAndMalformedCommands(t *testing.T) {
	tp := startProxy(t, func(c *Config) { c.MaxBadCommands = 4 })
	c := tp.dialImplicit(t)
	c.send("a1 SELECT INBOX")
	c.expect("a1 BAD")
	c.send("")
	c.expect("* BAD")
	c.send("a3 ID (\"unterminated)")
	c.expect("a3 BAD")
	c.send("+tag NOOP")
	c.expect("* BAD")
	c.expect("* BYE")
	c.expectClosed()
}

func TestIDIsAnsweredAndAudited(t *testing.T) {
	tp := startProxy(t, nil)
	c := tp.dialImplicit(t)
	c.send(`a1 ID ("name" "Mail" "version" {4}`)
	c.expect("+ ")
	c.conn.Write([]byte("16.0)\r\n"))
	c.expect(`* ID ("name" "imapgate")`)
	c.expect("a1 OK")
	c.send("a2 AUTHENTICATE PLAIN " + plainIR(testUser, testPass))
	c.expect("a2 OK")
	ev := findEvent(tp.audit.events(t), EventAuth)
	if ev.ClientID["name"] != "Mail" || ev.ClientID["version"] != "16.0" {
		t.Fatalf("client_id = %v", ev.ClientID)
	}
}

func TestOversizeLineGetsBYE(t *testing.T) {
	tp := startProxy(t, nil)
	c := tp.dialImplicit(t)
	// The proxy stops reading after its limit, so this write may fail.
	go c.conn.Write([]byte("a1 NOOP " + strings.Repeat("x", 100<<10) + "\r\n"))
	lines := c.expectClosed()
	if len(lines) == 0 || !strings.HasPrefix(lines[len(lines)-1], "* BYE") {
		t.Fatalf("want BYE, got %q", lines)
	}
}

func TestOversizeLiteral(t *testing.T) {
	tp := startProxy(t, nil)
	c := tp.dialImplicit(t)
	c.send("a1 ID ({999999999}")
	c.expect("a1 BAD")
	c.send("a2 NOOP")
	c.expect("a2 OK")
	c.send("a3 ID ({999999+}")
	lines := c.expectClosed()
	if len(lines) == 0 || !strings.HasPrefix(lines[len(lines)-1], "* BYE") {
		t.Fatalf("want BYE, got %q", lines)
	}
}

func TestPreauthTimeout(t *testing.T) {
	tp := startProxy(t, func(c *Config) { c.PreauthTimeout = 300 * time.Millisecond })
	c := tp.dialImplicit(t)
	lines := c.expectClosed()
	if len(lines) != 1 || !strings.HasPrefix(lines[0], "* BYE") {
		t.Fatalf("want one BYE, got %q", lines)
	}
	waitFor(t, func() bool { return hasEvent(tp.audit.events(t), EventSessionEnd, "preauth_timeout") })
}

func TestUpstreamDownGivesUnavailable(t *testing.T) {
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	addr := ln.Addr().String()
	ln.Close()
	tp := startProxyTo(t, addr, UpstreamPlaintext, nil, nil, nil)
	c := tp.dialImplicit(t)
	c.send("a1 AUTHENTICATE PLAIN " + plainIR(testUser, testPass))
	c.expect("a1 NO [UNAVAILABLE]")
	ev := findEvent(tp.audit.events(t), EventAuth)
	if ev.Result != ResultError || ev.Reason != "upstream_unavailable" {
		t.Fatalf("auth event = %+v", ev)
	}
}

func TestUpstreamSilentGivesUnavailableWithinTimeout(t *testing.T) {
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			defer c.Close() // accept and say nothing
		}
	}()
	tp := startProxyTo(t, ln.Addr().String(), UpstreamPlaintext, nil, func(c *Config) {
		c.Upstream.ConnectTimeout = 300 * time.Millisecond
	}, nil)
	c := tp.dialImplicit(t)
	start := time.Now()
	c.send("a1 AUTHENTICATE PLAIN " + plainIR(testUser, testPass))
	c.expect("a1 NO [UNAVAILABLE]")
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("took %v", d)
	}
}

func TestIdleTimeoutEndsRelayedSession(t *testing.T) {
	tp := startProxy(t, func(c *Config) { c.IdleTimeout = 300 * time.Millisecond })
	c := tp.dialImplicit(t)
	c.send("a1 AUTHENTICATE PLAIN " + plainIR(testUser, testPass))
	c.expect("a1 OK")
	c.expectClosed()
	waitFor(t, func() bool { return hasEvent(tp.audit.events(t), EventSessionEnd, endIdleTimeout) })
}

func findEvent(evs []Event, name string) *Event {
	for i := range evs {
		if evs[i].Event == name {
			return &evs[i]
		}
	}
	return nil
}

func hasEvent(evs []Event, name, reason string) bool {
	for _, e := range evs {
		if e.Event == name && (reason == "" || e.Reason == reason) {
			return true
		}
	}
	return false
}

func waitFor(t testing.TB, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met in 5s")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestRefusedLiteralLoginsCountTowardsTheLimit(t *testing.T) {
	tp := startProxy(t, func(c *Config) { c.MaxAuthFailures = 2 })
	c := tp.dialPlain(t)
	c.send("a1 LOGIN {5}")
	c.expect("a1 NO [PRIVACYREQUIRED]")
	c.send("a2 LOGIN {5}")
	c.expect("a2 NO [PRIVACYREQUIRED]")
	c.expect("* BYE")
	c.expectClosed()
}

// TestACMEChallengeHandshakeGetsNoGreeting: a listener whose certificates
// come from ACME also offers acme-tls/1; a CA validating TLS-ALPN-01 there
// completes the handshake and must then be closed, not greeted as an IMAP
// client (RFC 8737 section 3).
func TestACMEChallengeHandshakeGetsNoGreeting(t *testing.T) {
	cert, certPEM, err := tlsconf.SelfSigned(time.Hour, "localhost")
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(certPEM)
	audit := &syncBuffer{}
	srv := NewServer(&Config{Upstream: &Upstream{Address: "127.0.0.1:1"}, Audit: NewAuditor(audit, nil)})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	tc := &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{"imap", "acme-tls/1"}}
	go srv.Serve(ln, Listener{Name: "acme", Mode: TLSImplicit, TLSConfig: tc})
	defer srv.Shutdown(context.Background())
	for _, proto := range []string{"acme-tls/1", "imap"} {
		c, err := tls.Dial("tcp", ln.Addr().String(), &tls.Config{RootCAs: roots, ServerName: "localhost", NextProtos: []string{proto}})
		if err != nil {
			t.Fatalf("%s: %v", proto, err)
		}
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		line, err := bufio.NewReader(c).ReadString('\n')
		c.Close()
		switch proto {
		case "acme-tls/1":
			if err == nil || line != "" {
				t.Errorf("acme-tls/1 connection got %q, %v; want it closed without a greeting", line, err)
			}
		default:
			if !strings.HasPrefix(line, "* OK") {
				t.Errorf("imap connection got %q, %v; want the greeting", line, err)
			}
		}
	}
	if !strings.Contains(audit.String(), `"reason":"acme_challenge"`) {
		t.Errorf("no tls event with reason acme_challenge:\n%s", audit.String())
	}
}
