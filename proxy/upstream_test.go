package proxy

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/imapgate/imapgate/tlsconf"
)

// scriptedUpstream is a tiny IMAP server whose behaviour each test writes:
// handle gets every command line and returns the lines to send back.
type scriptedUpstream struct {
	addr     string
	mu       sync.Mutex
	received []string
}

func startScripted(t *testing.T, greeting string, handle func(c *scriptedConn, line string) bool) *scriptedUpstream {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return serveScripted(t, ln, greeting, handle)
}

// serveScripted is startScripted on a listener of the test's (TLS, say);
// it closes ln at the end of the test.
func serveScripted(t *testing.T, ln net.Listener, greeting string, handle func(c *scriptedConn, line string) bool) *scriptedUpstream {
	t.Cleanup(func() { ln.Close() })
	su := &scriptedUpstream{addr: ln.Addr().String()}
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer conn.Close()
				c := &scriptedConn{Conn: conn, r: bufio.NewReader(conn)}
				if greeting != "" { // "": a server that never greets
					c.write(greeting)
				}
				for {
					conn.SetReadDeadline(time.Now().Add(5 * time.Second))
					line, err := c.r.ReadString('\n')
					if err != nil {
						return
					}
					line = strings.TrimRight(line, "\r\n")
					su.mu.Lock()
					su.received = append(su.received, line)
					su.mu.Unlock()
					if !handle(c, line) {
						return
					}
				}
			}()
		}
	}()
	return su
}

func (su *scriptedUpstream) lines() []string {
	su.mu.Lock()
	defer su.mu.Unlock()
	return append([]string(nil), su.received...)
}

type scriptedConn struct {
	net.Conn
	r *bufio.Reader
}

func (c *scriptedConn) write(lines ...string) {
	for _, l := range lines {
		c.Conn.Write([]byte(l + "\r\n"))
	}
}

func tagOf(line string) string { t, _, _ := strings.Cut(line, " "); return t }

func TestUpstreamRefusesPREAUTH(t *testing.T) {
	su := startScripted(t, "* PREAUTH [CAPABILITY IMAP4rev1] logged in already", func(c *scriptedConn, line string) bool { return true })
	u := &Upstream{Address: su.addr, TLS: UpstreamPlaintext}
	_, err := u.Login(context.Background(), "alice", "pw", ClientInfo{})
	if !errors.Is(err, ErrUpstreamProtocol) || !errors.Is(err, ErrUnavailable) {
		t.Fatalf("err = %v, want a protocol error", err)
	}
	if len(su.lines()) != 0 {
		t.Fatalf("proxy sent %q to a PREAUTH server", su.lines())
	}
}

func TestUpstreamSTARTTLSInjectionRefused(t *testing.T) {
	su := startScripted(t, "* OK [CAPABILITY IMAP4rev1 STARTTLS LOGINDISABLED] hi", func(c *scriptedConn, line string) bool {
		if strings.HasSuffix(line, "STARTTLS") {
			// The attack: an OK plus a forged response in the same
			// plaintext segment.
			c.Conn.Write([]byte(tagOf(line) + " OK begin TLS\r\n* CAPABILITY IMAP4rev1 AUTH=PLAIN\r\n"))
		}
		return true
	})
	u := &Upstream{Address: su.addr, TLS: UpstreamSTARTTLS, TLSConfig: &tls.Config{InsecureSkipVerify: true}}
	_, err := u.Login(context.Background(), "alice", "pw", ClientInfo{})
	if !errors.Is(err, ErrUpstreamProtocol) || !strings.Contains(err.Error(), "after STARTTLS") {
		t.Fatalf("err = %v, want the injection refused", err)
	}
}

func TestUpstreamLoginQuotingAndLiterals(t *testing.T) {
	tests := []struct {
		name     string
		caps     string
		user     string
		password string
		want     []string // lines the server must receive
	}{
		{"quoted", "IMAP4rev1", "alice", `p"w\d`, []string{`ig1 LOGIN "alice" "p\"w\\d"`}},
		{"sync literal for 8-bit", "IMAP4rev1", "jürgen", "pw", []string{`ig1 LOGIN {7}`, `jürgen "pw"`}},
		{"literal+ when offered", "IMAP4rev1 LITERAL+", "alice", "pässword", []string{`ig1 LOGIN "alice" {9+}`, `pässword`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			su := startScripted(t, "* OK [CAPABILITY "+tt.caps+"] hi", func(c *scriptedConn, line string) bool {
				switch {
				case strings.HasSuffix(line, "}") && !strings.HasSuffix(line, "+}"):
					c.write("+ go ahead")
				case strings.HasPrefix(line, "ig1 LOGIN") && !strings.HasSuffix(line, "}"),
					!strings.HasPrefix(line, "ig"):
					c.write("ig1 OK [CAPABILITY IMAP4rev1 IDLE] done")
				}
				return true
			})
			u := &Upstream{Address: su.addr, TLS: UpstreamPlaintext}
			uc, err := u.Login(context.Background(), tt.user, tt.password, ClientInfo{})
			if err != nil {
				t.Fatal(err)
			}
			uc.Conn.Close()
			got := su.lines()
			// The line after a literal starts with the literal's bytes.
			for i, w := range tt.want {
				if i >= len(got) || !strings.HasPrefix(got[i], w) {
					t.Fatalf("server received %q, want %q", got, tt.want)
				}
			}
			if strings.Join(uc.Capabilities, " ") != "IMAP4rev1 IDLE" {
				t.Fatalf("capabilities = %v", uc.Capabilities)
			}
		})
	}
}

func TestUpstreamOutcomes(t *testing.T) {
	tests := []struct {
		name   string
		answer string
		want   error
	}{
		{"bad credentials", "NO [AUTHENTICATIONFAILED] Authentication failed.", ErrBadCredentials},
		{"plain NO", "NO go away", ErrBadCredentials},
		{"unavailable", "NO [UNAVAILABLE] backend down", ErrUnavailable},
		{"BAD", "BAD what", ErrUpstreamProtocol},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			su := startScripted(t, "* OK [CAPABILITY IMAP4rev1 SASL-IR AUTH=PLAIN] hi", func(c *scriptedConn, line string) bool {
				c.write(tagOf(line) + " " + tt.answer)
				return true
			})
			u := &Upstream{Address: su.addr, TLS: UpstreamPlaintext}
			_, err := u.Login(context.Background(), "alice", "pw", ClientInfo{})
			if !errors.Is(err, tt.want) {
				t.Fatalf("err = %v, want %v", err, tt.want)
			}
			if strings.Contains(err.Error(), "backend down") || strings.Contains(err.Error(), "go away") {
				// Only the code is kept; the text could leak internals.
				t.Fatalf("upstream text kept in the error: %v", err)
			}
			if got := su.lines(); len(got) != 1 || !strings.HasPrefix(got[0], "ig1 AUTHENTICATE PLAIN ") {
				t.Fatalf("server received %q, want one AUTHENTICATE with SASL-IR", got)
			}
		})
	}
}

func TestUpstreamAuthenticateWithoutSASLIR(t *testing.T) {
	su := startScripted(t, "* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN] hi", func(c *scriptedConn, line string) bool {
		if strings.HasSuffix(line, "AUTHENTICATE PLAIN") {
			c.write("+ ")
			return true
		}
		c.write("ig1 OK [CAPABILITY IMAP4rev1 MOVE] welcome")
		return true
	})
	u := &Upstream{Address: su.addr, TLS: UpstreamPlaintext}
	uc, err := u.Login(context.Background(), "alice", "pw", ClientInfo{})
	if err != nil {
		t.Fatal(err)
	}
	uc.Conn.Close()
	if got := su.lines(); len(got) != 2 || got[1] != plainIR("alice", "pw") {
		t.Fatalf("server received %q", got)
	}
}

func TestUpstreamForwardsClientIPWithID(t *testing.T) {
	su := startScripted(t, "* OK [CAPABILITY IMAP4rev1 ID AUTH=PLAIN SASL-IR] hi", func(c *scriptedConn, line string) bool {
		if strings.HasSuffix(line, " CAPABILITY") {
			c.write("* CAPABILITY IMAP4rev1 ID")
		}
		c.write(tagOf(line) + " OK done")
		return true
	})
	u := &Upstream{Address: su.addr, TLS: UpstreamPlaintext, Forward: ForwardID}
	uc, err := u.Login(context.Background(), "alice", "pw", ClientInfo{
		Addr: &net.TCPAddr{IP: net.ParseIP("192.0.2.7"), Port: 51234}, Session: "s123"})
	if err != nil {
		t.Fatal(err)
	}
	uc.Conn.Close()
	got := su.lines()
	if len(got) < 1 || !strings.Contains(got[0], `"x-originating-ip" "192.0.2.7"`) || !strings.Contains(got[0], `"x-session-id" "s123"`) {
		t.Fatalf("server received %q", got)
	}
}

func TestUpstreamImplicitTLSWithPin(t *testing.T) {
	cert, _, err := tlsconf.SelfSigned(time.Hour, "legacy.internal")
	if err != nil {
		t.Fatal(err)
	}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{cert}})
	if err != nil {
		t.Fatal(err)
	}
	su := serveScripted(t, ln, "* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN SASL-IR] hi", func(c *scriptedConn, line string) bool {
		c.write(tagOf(line) + " OK [CAPABILITY IMAP4rev1] ok")
		return true
	})
	leaf, _ := x509.ParseCertificate(cert.Certificate[0])
	good, err := tlsconf.UpstreamConfig(tlsconf.UpstreamOptions{ServerName: "legacy.internal", PinSHA256: tlsconf.SPKIPin(leaf)})
	if err != nil {
		t.Fatal(err)
	}
	u := &Upstream{Address: su.addr, TLS: UpstreamImplicit, TLSConfig: good}
	uc, err := u.Login(context.Background(), "alice", "pw", ClientInfo{})
	if err != nil {
		t.Fatalf("pinned login: %v", err)
	}
	uc.Conn.Close()

	other, _, _ := tlsconf.SelfSigned(time.Hour, "legacy.internal")
	otherLeaf, _ := x509.ParseCertificate(other.Certificate[0])
	bad, _ := tlsconf.UpstreamConfig(tlsconf.UpstreamOptions{ServerName: "legacy.internal", PinSHA256: tlsconf.SPKIPin(otherLeaf)})
	u.TLSConfig = bad
	if _, err := u.Login(context.Background(), "alice", "pw", ClientInfo{}); !errors.Is(err, ErrUnavailable) || !strings.Contains(err.Error(), "pin") {
		t.Fatalf("wrong pin: err = %v", err)
	}
}

// loginKind is one way imapgate logs in to the upstream: with the
// client's own password (Login), or as a master user for the client's
// mailbox (LoginAs), where the master's secret is the credential. What
// the two share (connecting, timeouts, the end of ctx) is tested once
// per kind.
type loginKind struct {
	name string
	// needsPlain: the kind logs in with AUTHENTICATE PLAIN only.
	needsPlain bool
	// login logs in to user's mailbox with password as the credential.
	login func(ctx context.Context, u *Upstream, user, password string, ci ClientInfo) (*UpstreamConn, error)
}

func loginKinds() []loginKind {
	master := func(form MasterForm) func(context.Context, *Upstream, string, string, ClientInfo) (*UpstreamConn, error) {
		return func(ctx context.Context, u *Upstream, user, password string, ci ClientInfo) (*UpstreamConn, error) {
			u.Master = &MasterLogin{User: "imapgate", Secret: NewSecret(password), Form: form}
			return u.LoginAs(ctx, user, ci)
		}
	}
	return []loginKind{
		{"client password", false, func(ctx context.Context, u *Upstream, user, password string, ci ClientInfo) (*UpstreamConn, error) {
			return u.Login(ctx, user, password, ci)
		}},
		{"master sasl-authzid", true, master(MasterSASLAuthzid)},
		{"master dovecot-login", false, master(MasterDovecotLogin)},
	}
}

// TestUpstreamLoginTimeoutStartsWithTheCredential: an upstream that stops
// answering before the password is on the wire never saw the credential
// (ErrUnavailable, within the connect timeout); one that stops after it
// may have judged it (ErrNoAnswer, after the login timeout). For
// AUTHENTICATE without SASL-IR and for a synchronizing literal the
// password leaves only after the server's "+". A master login's secret
// is a credential like the client's password.
func TestUpstreamLoginTimeoutStartsWithTheCredential(t *testing.T) {
	const connectTimeout, loginTimeout = 200 * time.Millisecond, time.Second
	stall := func(c *scriptedConn, line string) bool { return true }
	tests := []struct {
		name     string
		greeting string
		handle   func(c *scriptedConn, line string) bool
		forward  ForwardMode
		password string
		want     error
	}{
		{"no greeting", "", stall, "", "pw", ErrUnavailable},
		{"CAPABILITY unanswered", "* OK hi", stall, "", "pw", ErrUnavailable},
		{"closed at CAPABILITY", "* OK hi", func(*scriptedConn, string) bool { return false }, "", "pw", ErrUnavailable},
		{"ID unanswered", "* OK [CAPABILITY IMAP4rev1 ID AUTH=PLAIN SASL-IR] hi", stall, ForwardID, "pw", ErrUnavailable},
		{"no + for AUTHENTICATE", "* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN] hi", stall, "", "pw", ErrUnavailable},
		{"no + for the password literal", "* OK [CAPABILITY IMAP4rev1] hi", stall, "", "pässword", ErrUnavailable},

		{"AUTHENTICATE with SASL-IR unanswered", "* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN SASL-IR] hi", stall, "", "pw", ErrNoAnswer},
		{"PLAIN response unanswered", "* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN] hi", func(c *scriptedConn, line string) bool {
			if strings.HasSuffix(line, "AUTHENTICATE PLAIN") {
				c.write("+ ")
			}
			return true
		}, "", "pw", ErrNoAnswer},
		{"LOGIN unanswered", "* OK [CAPABILITY IMAP4rev1] hi", stall, "", "pw", ErrNoAnswer},
		{"password literal unanswered", "* OK [CAPABILITY IMAP4rev1] hi", func(c *scriptedConn, line string) bool {
			if strings.HasSuffix(line, "}") {
				c.write("+ go ahead")
			}
			return true
		}, "", "pässword", ErrNoAnswer},
		{"closed after the credential", "* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN SASL-IR] hi", func(*scriptedConn, string) bool { return false }, "", "pw", ErrNoAnswer},
	}
	for _, kind := range loginKinds() {
		for _, tt := range tests {
			offersPlain := tt.greeting == "" || strings.Contains(tt.greeting, "AUTH=PLAIN") || !strings.Contains(tt.greeting, "CAPABILITY")
			if kind.needsPlain && !offersPlain {
				continue // refused before the credential: TestMasterSASLAuthzidNeedsAUTHPLAIN
			}
			t.Run(kind.name+"/"+tt.name, func(t *testing.T) {
				t.Parallel()
				su := startScripted(t, tt.greeting, tt.handle)
				u := &Upstream{Address: su.addr, TLS: UpstreamPlaintext, Forward: tt.forward, ConnectTimeout: connectTimeout, LoginTimeout: loginTimeout}
				start := time.Now()
				_, err := kind.login(context.Background(), u, "alice", tt.password, ClientInfo{})
				took := time.Since(start)
				other := ErrNoAnswer
				if tt.want == ErrNoAnswer {
					other = ErrUnavailable
				}
				if !errors.Is(err, tt.want) || errors.Is(err, other) {
					t.Fatalf("err = %v, want %v (and not %v)", err, tt.want, other)
				}
				stalled := !strings.HasPrefix(tt.name, "closed")
				switch {
				case tt.want == ErrUnavailable && took >= loginTimeout:
					t.Errorf("gave up after %v: the connect timeout (%v) bounds what comes before the credential", took, connectTimeout)
				case tt.want == ErrNoAnswer && stalled && took < loginTimeout:
					t.Errorf("gave up after %v: the login timeout (%v) bounds the wait for the answer", took, loginTimeout)
				}
			})
		}
	}
}

// TestUpstreamWaitsLoginTimeoutForTheAnswer: Dovecot delays a login from
// a penalised address by up to 15s; an answer slower than the connect
// timeout but within the login timeout is taken.
func TestUpstreamWaitsLoginTimeoutForTheAnswer(t *testing.T) {
	const connectTimeout = 200 * time.Millisecond
	su := startScripted(t, "* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN SASL-IR] hi", func(c *scriptedConn, line string) bool {
		time.Sleep(3 * connectTimeout) // the upstream's own delay
		c.write(tagOf(line) + " OK [CAPABILITY IMAP4rev1 IDLE] Logged in")
		return true
	})
	for _, kind := range loginKinds() {
		t.Run(kind.name, func(t *testing.T) {
			u := &Upstream{Address: su.addr, TLS: UpstreamPlaintext, ConnectTimeout: connectTimeout, LoginTimeout: 5 * time.Second}
			uc, err := kind.login(context.Background(), u, "alice", "pw", ClientInfo{})
			if err != nil {
				t.Fatalf("an answer after %v, within the login timeout: %v", 3*connectTimeout, err)
			}
			uc.Conn.Close()
		})
	}
}

// TestUpstreamShutdownWhileWaitingIsNoAnswer: the session's context ends
// (shutdown) after the credential went out: the upstream may have judged
// it, so it is not "unavailable".
func TestUpstreamShutdownWhileWaitingIsNoAnswer(t *testing.T) {
	for _, kind := range loginKinds() {
		t.Run(kind.name, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			su := startScripted(t, "* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN SASL-IR] hi", func(c *scriptedConn, line string) bool {
				cancel() // shutdown, while the upstream thinks
				return true
			})
			u := &Upstream{Address: su.addr, TLS: UpstreamPlaintext, LoginTimeout: 5 * time.Second}
			_, err := kind.login(ctx, u, "alice", "pw", ClientInfo{})
			if !errors.Is(err, ErrNoAnswer) || errors.Is(err, ErrUnavailable) {
				t.Fatalf("err = %v, want ErrNoAnswer", err)
			}
		})
	}
}

// capsUpstream answers a login with a bare OK (no CAPABILITY code) and
// lists other capabilities after login than before, as RFC 3501 allows.
func capsUpstream(t *testing.T) *scriptedUpstream {
	var mu sync.Mutex
	loggedIn := map[*scriptedConn]bool{}
	return startScripted(t, "* OK [CAPABILITY IMAP4rev1 ID LITERAL+ SASL-IR AUTH=PLAIN AUTH=LOGIN] pre-login", func(c *scriptedConn, line string) bool {
		mu.Lock()
		after := loggedIn[c]
		mu.Unlock()
		switch {
		case strings.Contains(line, " AUTHENTICATE "):
			mu.Lock()
			loggedIn[c] = true
			mu.Unlock()
			c.write(tagOf(line) + " OK Logged in")
		case strings.HasSuffix(line, " CAPABILITY") && after:
			c.write("* CAPABILITY IMAP4rev1 ID IDLE MOVE CONDSTORE UIDPLUS", tagOf(line)+" OK done")
		case strings.HasSuffix(line, " CAPABILITY"):
			c.write("* CAPABILITY IMAP4rev1 ID LITERAL+ SASL-IR AUTH=PLAIN AUTH=LOGIN", tagOf(line)+" OK done")
		default:
			c.write(tagOf(line) + " OK done")
		}
		return true
	})
}

// TestUpstreamAsksCapabilitiesAfterLogin: when the OK to the login
// carries no CAPABILITY code, the post-login list is asked for; the
// pre-login one (AUTH=, no IDLE or MOVE) would be stale.
func TestUpstreamAsksCapabilitiesAfterLogin(t *testing.T) {
	su := capsUpstream(t)
	u := &Upstream{Address: su.addr, TLS: UpstreamPlaintext}
	uc, err := u.Login(context.Background(), "alice", "pw", ClientInfo{})
	if err != nil {
		t.Fatal(err)
	}
	uc.Conn.Close()
	if got, want := strings.Join(uc.Capabilities, " "), "IMAP4rev1 ID IDLE MOVE CONDSTORE UIDPLUS"; got != want {
		t.Errorf("capabilities %q, want the post-login list %q", got, want)
	}
	if got := su.lines(); len(got) != 2 || got[1] != "ig2 CAPABILITY" {
		t.Errorf("server received %q, want the login then CAPABILITY", got)
	}

	// The client sees the post-login list.
	tp := startProxyTo(t, su.addr, UpstreamPlaintext, nil, nil, nil)
	c := tp.dialImplicit(t)
	c.send("a AUTHENTICATE PLAIN " + plainIR(testUser, testPass))
	if line := c.expect("a OK"); line != "a OK [CAPABILITY IMAP4rev1 ID IDLE MOVE CONDSTORE UIDPLUS] Logged in" {
		t.Errorf("client got %q", line)
	}
}

// TestReloadKeepsTheUpstreamsAnswerTimes: a reload builds a new Upstream;
// for the same address it keeps what the old one learnt, so refusals
// still wait as long as a wrong password takes; for a new address it
// starts afresh.
func TestReloadKeepsTheUpstreamsAnswerTimes(t *testing.T) {
	old := &Upstream{Address: "192.0.2.1:143"}
	for range 8 {
		old.failures.observe(2 * time.Second)
	}
	same := &Upstream{Address: old.Address}
	same.KeepAnswerTimes(old)
	if d := same.failures.draw(); d < time.Second {
		t.Errorf("after a reload to the same address a refusal waits %v, want about 2s", d)
	}
	other := &Upstream{Address: "192.0.2.2:143"}
	other.KeepAnswerTimes(old)
	if d := other.failures.draw(); d != 0 {
		t.Errorf("a new upstream inherited an answer time of %v", d)
	}
}

// TestProbeChecksWhatLoginWouldFind: a probe reads the greeting, runs
// STARTTLS as a login does and logs out, sending no credential and no
// other command; it fails where a login would fail before the credential
// (PREAUTH, bytes injected after STARTTLS's OK, a server that never
// greets, within the connect timeout).
func TestProbeChecksWhatLoginWouldFind(t *testing.T) {
	const connectTimeout = 300 * time.Millisecond
	injecting := func(c *scriptedConn, line string) bool {
		if strings.HasSuffix(line, "STARTTLS") {
			c.Conn.Write([]byte(tagOf(line) + " OK begin TLS\r\n* CAPABILITY IMAP4rev1 AUTH=PLAIN\r\n"))
		}
		return true
	}
	answering := func(c *scriptedConn, line string) bool { c.write(tagOf(line) + " OK done"); return true }
	tests := []struct {
		name     string
		greeting string
		handle   func(c *scriptedConn, line string) bool
		mode     UpstreamTLS
		want     error // nil: the probe succeeds
		sent     []string
	}{
		{"answers", "* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN] hi", answering, UpstreamPlaintext, nil, []string{"p LOGOUT"}},
		{"PREAUTH", "* PREAUTH [CAPABILITY IMAP4rev1] logged in already", answering, UpstreamPlaintext, ErrUpstreamProtocol, nil},
		{"STARTTLS injection", "* OK [CAPABILITY IMAP4rev1 STARTTLS] hi", injecting, UpstreamSTARTTLS, ErrUpstreamProtocol, []string{"ig1 STARTTLS"}},
		{"no STARTTLS offered", "* OK [CAPABILITY IMAP4rev1] hi", answering, UpstreamSTARTTLS, ErrUpstreamProtocol, nil},
		{"never greets", "", answering, UpstreamPlaintext, ErrUnavailable, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			su := startScripted(t, tt.greeting, tt.handle)
			u := &Upstream{Address: su.addr, TLS: tt.mode, TLSConfig: &tls.Config{InsecureSkipVerify: true}, ConnectTimeout: connectTimeout}
			start := time.Now()
			err := u.Probe(context.Background())
			if took := time.Since(start); took > 3*connectTimeout {
				t.Errorf("the probe took %v, connect timeout %v", took, connectTimeout)
			}
			if tt.want == nil && err != nil || tt.want != nil && !errors.Is(err, tt.want) {
				t.Fatalf("err = %v, want %v", err, tt.want)
			}
			if tt.sent != nil {
				waitFor(t, func() bool { return len(su.lines()) >= len(tt.sent) })
			}
			if got := su.lines(); strings.Join(got, "\n") != strings.Join(tt.sent, "\n") {
				t.Fatalf("server received %q, want %q", got, tt.sent)
			}
		})
	}
}

// TestProbeEndsWithItsContext: a probe of an upstream that never greets
// ends when its context does, before the connect timeout.
func TestProbeEndsWithItsContext(t *testing.T) {
	su := startScripted(t, "", func(*scriptedConn, string) bool { return true })
	u := &Upstream{Address: su.addr, TLS: UpstreamPlaintext, ConnectTimeout: time.Minute}
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	if err := u.Probe(ctx); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("err = %v, want ErrUnavailable", err)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Fatalf("the probe outlived its context by %v", took)
	}
}
