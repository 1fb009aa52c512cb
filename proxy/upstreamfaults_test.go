//go:build linux

package proxy

import (
	"fmt"
	"io"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/imapgate/imapgate/policy"
	"github.com/imapgate/imapgate/proxy/proxytest"
)

// These tests break a real Dovecot behind the proxy (README "When the mail
// server fails"): they kill, stop (SIGSTOP) or starve a part of it and
// watch what the client, the audit log and the brute-force budgets see.

// startFaultProxy is a proxy in front of d's plaintext listener with the
// short fault timeouts, the client's address sent by ID, and a watched
// policy.
func startFaultProxy(t testing.TB, d *proxytest.Dovecot, mod func(*Config)) (*testProxy, *countingDecider) {
	t.Helper()
	pol := newCountingDecider()
	tp := startProxyTo(t, d.Addr, UpstreamPlaintext, nil, func(c *Config) {
		c.Upstream.ConnectTimeout, c.Upstream.LoginTimeout = faultConnectTimeout, faultLoginTimeout
		c.Upstream.Forward = ForwardID
		c.Policy = pol
		if mod != nil {
			mod(c)
		}
	}, nil)
	return tp, pol
}

// TestDovecotCrashMidFetchClosesTheClientPromptly: the imap process
// serving a FETCH of a 24 MB message (more than the loopback socket
// buffers of both hops hold) is killed (SIGKILL) after the first
// bytes; the client sees the connection end within a second, and the
// session ends with reason upstream_closed.
func TestDovecotCrashMidFetchClosesTheClientPromptly(t *testing.T) {
	d := proxytest.StartDovecot(t, proxytest.DovecotOptions{Messages: 1, MessageSize: 24 << 20})
	tp, pol := startFaultProxy(t, d, nil)
	c := tp.dialImplicit(t)
	if line, _ := c.login("a", "user1", d.Users["user1"]); !strings.HasPrefix(line, "a OK") {
		t.Fatalf("login: %q", line)
	}
	c.send("b SELECT INBOX")
	c.expect("b OK")
	c.send("c FETCH 1 BODY[]")
	c.expect("* 1 FETCH")
	if _, err := io.ReadFull(c.r, make([]byte, 64<<10)); err != nil {
		t.Fatalf("reading the first 64 KiB of the message: %v", err)
	}
	d.Signal(t, syscall.SIGKILL, proxytest.ProcIMAP)
	killed := time.Now()

	// The client reads what was already on its way, then the end.
	c.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	n, err := io.Copy(io.Discard, c.r)
	took := time.Since(killed)
	if ne, ok := err.(interface{ Timeout() bool }); ok && ne.Timeout() {
		t.Fatalf("connection still open 10s after the upstream died (%d bytes read)", n)
	}
	if took > time.Second {
		t.Errorf("the client saw the end %v after the upstream died, want under 1s", took)
	}
	if n >= 24<<20 {
		t.Errorf("the client read %d bytes: the whole message, so the kill came too late to test anything", n)
	}
	end := tp.waitEvent(t, "session_end", sessionEnd)
	if end.Reason != endUpstreamClosed {
		t.Errorf("session_end reason %q, want %q", end.Reason, endUpstreamClosed)
	}
	t.Logf("upstream killed mid-FETCH: client saw the close after %v (%d more bytes)", took.Round(time.Millisecond), n)
	if pol.successes.Load() != 1 {
		t.Errorf("successes = %d, want 1", pol.successes.Load())
	}
	pol.requireNothingSpent(t)
}

// TestDovecotStoppedMidSessionIdlesOutAndResumes: while a logged-in
// session's imap process is stopped, the client's command gets no answer
// (the proxy invents none) and the session stays; when the process goes
// on, the answer arrives. A session whose upstream stays stopped ends
// at idle_timeout with reason idle_timeout, nothing held.
func TestDovecotStoppedMidSessionIdlesOutAndResumes(t *testing.T) {
	d := proxytest.StartDovecot(t, proxytest.DovecotOptions{Messages: 3})
	const idle = 2 * time.Second
	tp, pol := startFaultProxy(t, d, func(c *Config) { c.IdleTimeout = idle })

	c := tp.dialImplicit(t)
	if line, _ := c.login("a", "user1", d.Users["user1"]); !strings.HasPrefix(line, "a OK") {
		t.Fatalf("login: %q", line)
	}
	c.send("b SELECT INBOX")
	c.expect("b OK")
	pids := d.Signal(t, syscall.SIGSTOP, proxytest.ProcIMAP)
	c.send("c NOOP")
	c.conn.SetReadDeadline(time.Now().Add(idle / 2))
	if line, err := c.r.ReadString('\n'); err == nil {
		t.Fatalf("a stopped upstream answered %q", line)
	}
	for _, pid := range pids {
		syscall.Kill(pid, syscall.SIGCONT)
	}
	c.expect("c OK")

	// Stopped again, for good: the relay's idle timer ends it.
	d.Signal(t, syscall.SIGSTOP, proxytest.ProcIMAP)
	c.send("d NOOP")
	sent := time.Now()
	c.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.Copy(io.Discard, c.r); err != nil {
		t.Fatalf("waiting for the idle close: %v", err)
	}
	took := time.Since(sent)
	if took < idle-100*time.Millisecond || took > idle+time.Second {
		t.Errorf("closed %v after the last byte, want about idle_timeout (%v)", took, idle)
	}
	end := tp.waitEvent(t, "session_end", sessionEnd)
	if end.Reason != endIdleTimeout {
		t.Errorf("session_end reason %q, want %q", end.Reason, endIdleTimeout)
	}
	t.Logf("upstream stopped mid-session: closed %v after the last byte (idle_timeout %v)", took.Round(time.Millisecond), idle)
	pol.requireNothingSpent(t)
}

// TestClientLeavingAStoppedUpstreamEndsTheSession: a client that closes
// while its upstream is stopped (a phone walking away from a hung
// server) must not leave its session, its slot and its upstream
// connection held until idle_timeout: the session ends within
// clientGoneDrain, reason client_closed.
func TestClientLeavingAStoppedUpstreamEndsTheSession(t *testing.T) {
	d := proxytest.StartDovecot(t, proxytest.DovecotOptions{Messages: 3})
	tp, pol := startFaultProxy(t, d, func(c *Config) { c.IdleTimeout = time.Hour })

	c := tp.dialImplicit(t)
	if line, _ := c.login("a", "user1", d.Users["user1"]); !strings.HasPrefix(line, "a OK") {
		t.Fatalf("login: %q", line)
	}
	c.send("b SELECT INBOX")
	c.expect("b OK")
	d.Signal(t, syscall.SIGSTOP, proxytest.ProcIMAP)
	c.send("c NOOP")
	c.conn.Close()
	closed := time.Now()
	end := tp.waitEvent(t, "session_end", sessionEnd)
	took := time.Since(closed)
	if end.Reason != endClientClosed {
		t.Errorf("session_end reason %q, want %q", end.Reason, endClientClosed)
	}
	if took > clientGoneDrain+time.Second {
		t.Errorf("session ended %v after the client left, want within %v", took, clientGoneDrain)
	}
	t.Logf("client left a stopped upstream: session ended after %v", took.Round(time.Millisecond))
	pol.requireNothingSpent(t)
}

// TestDovecotThatNeverGreetsIsUnavailableWithinConnectTimeout: the whole
// of Dovecot is stopped, so the kernel still completes the TCP handshake
// but no greeting comes. The login is answered NO [UNAVAILABLE] at
// connect_timeout, audited as upstream_unavailable, and given back: the
// credential never left the proxy. Once Dovecot goes on, the real user
// logs in with a budget of one guess.
func TestDovecotThatNeverGreetsIsUnavailableWithinConnectTimeout(t *testing.T) {
	d := proxytest.StartDovecot(t, proxytest.DovecotOptions{})
	tp, pol := startFaultProxy(t, d, nil)
	pol.SetBudgets(policy.Budgets{PerIP: 1, PerNetwork: 1, PerUser: 1, PerDevice: 1, Window: time.Hour, Delay: time.Millisecond}, nil)
	pids := d.Signal(t, syscall.SIGSTOP, proxytest.ProcAll)

	c := tp.dialImplicit(t)
	for i := range 3 {
		tag := fmt.Sprintf("a%d", i)
		line, took := c.login(tag, "user1", d.Users["user1"])
		if !strings.HasPrefix(line, tag+" NO [UNAVAILABLE]") {
			t.Fatalf("login %d to a Dovecot that never greets: %q", i, line)
		}
		if took < faultConnectTimeout-50*time.Millisecond || took > faultConnectTimeout+time.Second {
			t.Errorf("answered after %v, want about connect_timeout (%v)", took, faultConnectTimeout)
		}
		t.Logf("greeting never sent: NO [UNAVAILABLE] after %v (connect_timeout %v)", took.Round(time.Millisecond), faultConnectTimeout)
	}
	requireAuthReasons(t, tp, ResultError, ReasonUpstreamUnavailable, 3)
	pol.requireNothingSpent(t)

	for _, pid := range pids {
		syscall.Kill(pid, syscall.SIGCONT)
	}
	if line, _ := c.login("b", "user1", d.Users["user1"]); !strings.HasPrefix(line, "b OK") {
		t.Fatalf("the real user after Dovecot came back: %q", line)
	}
}

// TestDovecotLoginThatNeverAnswersIsNoAnswer: Dovecot's auth processes
// are stopped, so imap-login greets and takes the credential but never
// answers it. The client gets NO [UNAVAILABLE] at login_timeout (the
// credential was on the wire, so connect_timeout no longer bounds it:
// README "Upstream timeouts"), audited as failure, reason
// upstream_no_answer, and, alone of these faults, it is counted: the
// upstream may well have judged the guess (README "Brute force and
// password spraying").
func TestDovecotLoginThatNeverAnswersIsNoAnswer(t *testing.T) {
	d := proxytest.StartDovecot(t, proxytest.DovecotOptions{})
	tp, pol := startFaultProxy(t, d, nil)
	d.Signal(t, syscall.SIGSTOP, proxytest.ProcAuth)

	c := tp.dialImplicit(t)
	line, took := c.login("a", "user1", d.Users["user1"])
	if !strings.HasPrefix(line, "a NO [UNAVAILABLE]") {
		t.Fatalf("login Dovecot never answers: %q", line)
	}
	if took < faultLoginTimeout-50*time.Millisecond || took > faultConnectTimeout+faultLoginTimeout+time.Second {
		t.Errorf("answered after %v, want about login_timeout (%v)", took, faultLoginTimeout)
	}
	t.Logf("login never answered: NO [UNAVAILABLE] after %v (login_timeout %v)", took.Round(time.Millisecond), faultLoginTimeout)
	requireAuthReasons(t, tp, ResultFailure, ReasonUpstreamNoAnswer, 1)
	if n := pol.failures.Load(); n != 1 {
		t.Errorf("failures counted = %d, want 1: the credential was on the wire", n)
	}
}
