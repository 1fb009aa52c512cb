package proxy

import (
	"bufio"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/imapgate/imapgate/proxy/proxytest"
)

// plainLogin sends AUTHENTICATE PLAIN with an initial response and returns
// the tagged answer.
func (c *textClient) plainLogin(tag, user, pass string) string {
	c.t.Helper()
	c.send(tag + " AUTHENTICATE PLAIN " + base64.StdEncoding.EncodeToString([]byte("\x00"+user+"\x00"+pass)))
	return c.expect(tag + " ")
}

// inboxSize selects INBOX and returns its EXISTS count: the two Dovecots
// of a test hold different numbers of messages, so it tells which one a
// session is on.
func (c *textClient) inboxSize(tag string) int {
	c.t.Helper()
	c.send(tag + " SELECT INBOX")
	n := -1
	for {
		line, err := c.readLine()
		if err != nil {
			c.t.Fatalf("SELECT: %v", err)
		}
		var exists int
		if _, err := fmt.Sscanf(line, "* %d EXISTS", &exists); err == nil {
			n = exists
			continue
		}
		if strings.HasPrefix(line, tag+" ") {
			if !strings.HasPrefix(line, tag+" OK") {
				c.t.Fatalf("SELECT: %q", line)
			}
			return n
		}
	}
}

// probeWatch runs g.Watch for the test and returns a channel of its
// results.
func probeWatch(t *testing.T, g *UpstreamGroup) <-chan ProbeResult {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	results := make(chan ProbeResult, 64)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		g.Watch(ctx, func(r ProbeResult) {
			select {
			case results <- r:
			default: // the test reads only what it waits for
			}
		})
	}()
	t.Cleanup(func() { cancel(); wg.Wait() })
	return results
}

// awaitProbe waits for a probe result of addr that matches down.
func awaitProbe(t *testing.T, results <-chan ProbeResult, addr string, down bool, within time.Duration) {
	t.Helper()
	deadline := time.After(within)
	for {
		select {
		case r := <-results:
			if r.Address == addr && (r.Err != nil) == down {
				return
			}
		case <-deadline:
			t.Fatalf("no probe found %s down=%v within %s", addr, down, within)
		}
	}
}

func routedGroup(name string, probe time.Duration, addrs ...string) *UpstreamGroup {
	g := &UpstreamGroup{Name: name, ProbeInterval: probe}
	for _, a := range addrs {
		g.Members = append(g.Members, &Upstream{Address: a, TLS: UpstreamPlaintext, ConnectTimeout: 3 * time.Second})
	}
	return g
}

// TestKilledDovecotInAGroupLeavesTheSurvivorServing: two real Dovecots
// behind one upstream name. Logins take them in turn; then one is
// killed mid-test (SIGKILL to all its processes). Its sessions end with a clean close and a
// session_end of upstream_closed, the sessions on the survivor go on,
// the next probe marks the dead one down within one interval, and every
// new login lands on the survivor, none of them failing.
func TestKilledDovecotInAGroupLeavesTheSurvivorServing(t *testing.T) {
	doomed := proxytest.StartDovecot(t, proxytest.DovecotOptions{Messages: 1})
	survivor := proxytest.StartDovecot(t, proxytest.DovecotOptions{Messages: 2})
	const probeEvery = 300 * time.Millisecond
	g := routedGroup("pair", probeEvery, doomed.Addr, survivor.Addr)
	results := probeWatch(t, g)
	awaitProbe(t, results, doomed.Addr, false, 5*time.Second)
	tp := startProxyTo(t, doomed.Addr, UpstreamPlaintext, nil, func(c *Config) {
		c.Router = &Router{Upstreams: []*UpstreamGroup{g}, Default: g}
	}, nil)
	pass := proxytest.DefaultUsers()["user1"]

	on := map[int][]*textClient{} // INBOX size (1: doomed, 2: survivor) -> sessions
	for i := range 4 {
		c := tp.dialImplicit(t)
		if got := c.plainLogin("a", "user1", pass); !strings.HasPrefix(got, "a OK") {
			t.Fatalf("login %d: %q", i, got)
		}
		n := c.inboxSize("s")
		on[n] = append(on[n], c)
	}
	if len(on[1]) != 2 || len(on[2]) != 2 {
		t.Fatalf("sessions by server: doomed %d, survivor %d; want 2 and 2 (round robin)", len(on[1]), len(on[2]))
	}

	doomed.Kill()
	for _, c := range on[1] {
		c.expectClosed() // EOF, not a hang
	}
	for i, c := range on[2] {
		c.send("n NOOP")
		if got := c.expect("n "); !strings.HasPrefix(got, "n OK") {
			t.Errorf("survivor session %d after the kill: %q", i, got)
		}
	}
	awaitProbe(t, results, doomed.Addr, true, probeEvery+3*time.Second)
	if g.Up(0) || !g.Up(1) {
		t.Fatalf("after the probe: doomed up=%v, survivor up=%v", g.Up(0), g.Up(1))
	}
	for i := range 4 {
		c := tp.dialImplicit(t)
		if got := c.plainLogin("b", "user1", pass); !strings.HasPrefix(got, "b OK") {
			t.Fatalf("login %d after the kill: %q", i, got)
		}
		if n := c.inboxSize("s"); n != 2 {
			t.Fatalf("login %d after the kill went to the server with %d messages", i, n)
		}
	}

	waitFor(t, func() bool {
		n := 0
		for _, e := range tp.audit.events(t) {
			if e.Event == EventSessionEnd && e.Reason == endUpstreamClosed {
				n++
			}
		}
		return n == len(on[1])
	})
	for _, e := range tp.audit.events(t) {
		if e.Event != EventAuth {
			continue
		}
		if e.Result != ResultSuccess || e.UpstreamName != "pair" || e.Route != "" {
			t.Errorf("auth event %+v; want success through pair, no lookup", e)
		}
	}
}

// TestLoginBeforeFirstProbeSkipsADeadAddress: the first address of a group
// refuses connections (nothing listens) and no probe has run yet. The
// login still succeeds on the second, and the first is marked down.
func TestLoginBeforeFirstProbeSkipsADeadAddress(t *testing.T) {
	d := proxytest.StartDovecot(t, proxytest.DovecotOptions{})
	dead := proxytest.FreePort(t)
	g := routedGroup("pair", time.Hour, dead, d.Addr)
	g.Balance = BalanceFailover
	tp := startProxyTo(t, d.Addr, UpstreamPlaintext, nil, func(c *Config) {
		c.Router = &Router{Upstreams: []*UpstreamGroup{g}, Default: g}
	}, nil)
	c := tp.dialImplicit(t)
	if got := c.plainLogin("a", "user1", proxytest.DefaultUsers()["user1"]); !strings.HasPrefix(got, "a OK") {
		t.Fatalf("login: %q", got)
	}
	if g.Up(0) {
		t.Error("the dead address is still up after a login failed to connect to it")
	}
	waitFor(t, func() bool { return len(tp.audit.events(t)) > 0 })
	for _, e := range tp.audit.events(t) {
		if e.Event == EventAuth && e.Upstream != d.Addr {
			t.Errorf("auth event names upstream %q, want the address that answered, %s", e.Upstream, d.Addr)
		}
	}
}

// TestWrongPasswordIsNeverTriedOnAnotherAddress: a group of two Dovecots
// with the same users. A wrong password is answered NO by the first one
// asked, and the other never sees it: the two logs together hold exactly
// one attempt per guess.
func TestWrongPasswordIsNeverTriedOnAnotherAddress(t *testing.T) {
	a := proxytest.StartDovecot(t, proxytest.DovecotOptions{})
	b := proxytest.StartDovecot(t, proxytest.DovecotOptions{})
	g := routedGroup("pair", time.Hour, a.Addr, b.Addr)
	tp := startProxyTo(t, a.Addr, UpstreamPlaintext, nil, func(c *Config) {
		c.Router = &Router{Upstreams: []*UpstreamGroup{g}, Default: g}
	}, nil)
	const guesses = 2
	c := tp.dialImplicit(t)
	for i := range guesses {
		tag := fmt.Sprintf("g%d", i)
		if got := c.plainLogin(tag, "user1", "Wrong-Guess-1"); got != tag+" NO [AUTHENTICATIONFAILED] Authentication failed." {
			t.Fatalf("guess %d: %q", i, got)
		}
	}
	total := func() int { return a.AuthAttempts().Failure + b.AuthAttempts().Failure }
	waitFor(t, func() bool { return total() >= guesses })
	if ca, cb := a.AuthAttempts(), b.AuthAttempts(); ca.Failure+cb.Failure != guesses || ca.Success+cb.Success != 0 {
		t.Fatalf("Dovecots saw %+v and %+v; want %d failures in all", ca, cb, guesses)
	}
}

// silentServer greets, answers CAPABILITY, and swallows everything after
// it: a login sent to it never gets an answer.
func silentServer(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go serveSilently(&wg, conn)
		}
	}()
	return ln.Addr().String()
}

func serveSilently(wg *sync.WaitGroup, conn net.Conn) {
	defer wg.Done()
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	conn.Write([]byte("* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN SASL-IR] silent\r\n"))
	r := bufio.NewReader(conn)
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return
		}
		if tag, rest, _ := strings.Cut(line, " "); strings.HasPrefix(strings.ToUpper(rest), "CAPABILITY") {
			conn.Write([]byte("* CAPABILITY IMAP4rev1 AUTH=PLAIN SASL-IR\r\n" + tag + " OK done\r\n"))
		}
	}
}

// TestNoAnswerAfterTheCredentialIsNotRetried: the first address takes the
// credential and never answers. The login fails with ErrNoAnswer, and the
// second address, a real Dovecot, never sees the password.
func TestNoAnswerAfterTheCredentialIsNotRetried(t *testing.T) {
	d := proxytest.StartDovecot(t, proxytest.DovecotOptions{})
	g := routedGroup("pair", time.Hour, silentServer(t), d.Addr)
	g.Balance = BalanceFailover
	g.Members[0].LoginTimeout = 300 * time.Millisecond
	_, err := g.Login(context.Background(), "user1", proxytest.DefaultUsers()["user1"], ClientInfo{Session: "t"})
	if !errors.Is(err, ErrNoAnswer) || errors.Is(err, ErrConnectFailed) {
		t.Fatalf("login: %v; want ErrNoAnswer, not a connect failure", err)
	}
	if c := d.AuthAttempts(); c.Success+c.Failure != 0 {
		t.Fatalf("the second address saw %+v; want nothing", c)
	}
}
