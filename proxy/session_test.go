package proxy

import (
	"strings"
	"testing"
	"time"
)

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
