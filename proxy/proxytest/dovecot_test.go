package proxytest

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"
	"github.com/emersion/go-sasl"
)

func TestPlaintextLoginReachesDovecot(t *testing.T) {
	t.Parallel()
	d := StartDovecot(t, DovecotOptions{})

	c, err := imapclient.DialInsecure(d.Addr, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Login("user1", d.Users["user1"]).Wait(); err != nil {
		t.Fatalf("LOGIN user1 over plaintext: %v", err)
	}
	if _, err := c.Select("INBOX", nil).Wait(); err != nil {
		t.Fatalf("SELECT INBOX: %v", err)
	}
	if err := c.Logout().Wait(); err != nil {
		t.Fatal(err)
	}

	got := d.WaitAuthAttempts(t, func(c AuthCounts) bool { return c.Success == 1 })
	if got.Failure != 0 || got.ByUser["user1"] != 1 || got.Mechanisms["PLAIN"] != 1 || got.ByIP["127.0.0.1"] != 1 {
		t.Errorf("AuthAttempts() = %+v, want one PLAIN success for user1 from 127.0.0.1", got)
	}
}

func TestSTARTTLSWithCAFile(t *testing.T) {
	t.Parallel()
	d := StartDovecot(t, DovecotOptions{})

	c, err := imapclient.DialStartTLS(d.Addr, &imapclient.Options{TLSConfig: clientTLS(t, d)})
	if err != nil {
		t.Fatalf("STARTTLS verified with CAFile: %v", err)
	}
	defer c.Close()
	if err := c.Login("user2", d.Users["user2"]).Wait(); err != nil {
		t.Fatal(err)
	}
	c.Logout().Wait()
	d.WaitLog(t, "Login: user=<user2>, method=PLAIN, rip=127.0.0.1, lip=127.0.0.1")
	if !d.LogContains(", TLS, session=") {
		t.Errorf("Dovecot did not log the login as TLS:\n%s", d.LogTail(10))
	}
}

func TestImplicitTLSWithCAFile(t *testing.T) {
	t.Parallel()
	d := StartDovecot(t, DovecotOptions{})

	c, err := imapclient.DialTLS(d.ImplicitAddr, &imapclient.Options{TLSConfig: clientTLS(t, d)})
	if err != nil {
		t.Fatalf("implicit TLS verified with CAFile: %v", err)
	}
	defer c.Close()
	if err := c.Login("user1", d.Users["user1"]).Wait(); err != nil {
		t.Fatal(err)
	}
	c.Logout().Wait()
	d.WaitAuthAttempts(t, func(c AuthCounts) bool { return c.Success == 1 })
}

func TestCertificateNamesLocalhostAndLoopback(t *testing.T) {
	t.Parallel()
	d := StartDovecot(t, DovecotOptions{})
	for _, name := range []string{"localhost", "127.0.0.1"} {
		conf := clientTLS(t, d)
		conf.ServerName = name
		conn, err := tls.Dial("tcp", d.ImplicitAddr, conf)
		if err != nil {
			t.Errorf("TLS as %q: %v", name, err)
			continue
		}
		conn.Close()
	}
}

func TestWrongPasswordFailsAndIsCounted(t *testing.T) {
	t.Parallel()
	d := StartDovecot(t, DovecotOptions{})

	c := dialText(t, d.Addr, nil)
	if resp := c.cmd(`LOGIN user1 "wrong password"`); !strings.Contains(resp, "NO [AUTHENTICATIONFAILED]") {
		t.Fatalf("LOGIN with a wrong password: %q", resp)
	}
	got := d.WaitAuthAttempts(t, func(c AuthCounts) bool { return c.Failure == 1 })
	if got.Success != 0 || got.FailureByUser["user1"] != 1 || got.ByUser["user1"] != 1 {
		t.Errorf("after a wrong password: %+v", got)
	}

	if resp := c.cmd(`LOGIN nosuchuser whatever`); !strings.Contains(resp, "NO ") {
		t.Fatalf("LOGIN as an unknown user: %q", resp)
	}
	if resp := c.cmd(`LOGIN "" ""`); !strings.Contains(resp, "NO ") {
		t.Fatalf("LOGIN with an empty user: %q", resp)
	}
	if resp := c.cmd(`AUTHENTICATE XOAUTH2 eA==`); !strings.Contains(resp, "NO ") {
		t.Fatalf("AUTHENTICATE with an unknown mechanism: %q", resp)
	}
	got = d.WaitAuthAttempts(t, func(c AuthCounts) bool { return c.Failure == 4 })
	if got.FailureByUser["nosuchuser"] != 1 || got.FailureByUser[""] != 2 {
		t.Errorf("after an unknown user, an empty user and an unknown mechanism: %+v", got)
	}

	if resp := c.cmd(`LOGIN user1 "pass1-Secret!"`); !strings.Contains(resp, " OK ") {
		t.Fatalf("LOGIN after failures: %q", resp)
	}
	got = d.WaitAuthAttempts(t, func(c AuthCounts) bool { return c.Success == 1 })
	if got.Failure != 4 || got.ByUser["user1"] != 2 {
		t.Errorf("after the right password: %+v", got)
	}
	if d.LogContains("pass1-Secret!") || d.LogContains("wrong password") {
		t.Error("Dovecot's log contains a password (auth_verbose_passwords must be no)")
	}
}

// Everything connects from 127.0.0.1, so Dovecot's per-IP auth penalty
// (2s, 4s, 8s, 15s) would make every later test slow: it is off unless
// AuthPenalty is set, and auth_failure_delay is 0.
func TestRepeatedFailuresStayFast(t *testing.T) {
	t.Parallel()
	d := StartDovecot(t, DovecotOptions{})
	c := dialText(t, d.Addr, nil)
	for i := range 4 {
		start := time.Now()
		if resp := c.cmd(`LOGIN user1 wrong`); !strings.Contains(resp, "NO ") {
			t.Fatalf("LOGIN: %q", resp)
		}
		// Dovecot's auth process answers failures on a 500ms timer.
		if took := time.Since(start); took > 1500*time.Millisecond {
			t.Errorf("failure %d took %v", i+1, took)
		}
	}
}

func TestLoginOnlyHidesAuthPlainYetLoginWorks(t *testing.T) {
	t.Parallel()
	d := StartDovecot(t, DovecotOptions{LoginOnly: true})

	check := func(where, caps string) {
		t.Helper()
		if strings.Contains(caps, "AUTH=PLAIN") || strings.Contains(caps, "LOGINDISABLED") {
			t.Errorf("%s: capabilities %q: want no AUTH=PLAIN and no LOGINDISABLED", where, caps)
		}
		if !strings.Contains(caps, "AUTH=LOGIN") || !strings.Contains(caps, "IMAP4rev1") {
			t.Errorf("%s: capabilities %q: want IMAP4rev1 and AUTH=LOGIN", where, caps)
		}
	}

	// Plaintext: greeting, CAPABILITY, AUTHENTICATE PLAIN refused, LOGIN.
	c := dialText(t, d.Addr, nil)
	check("greeting", c.greeting)
	check("CAPABILITY", c.cmd("CAPABILITY"))
	if !strings.Contains(c.greeting, "STARTTLS") {
		t.Errorf("greeting %q: want STARTTLS", c.greeting)
	}
	if resp := c.cmd("AUTHENTICATE PLAIN AHVzZXIxAHBhc3MxLVNlY3JldCE="); !strings.Contains(resp, " NO ") {
		t.Errorf("AUTHENTICATE PLAIN: %q, want NO", resp)
	}
	if resp := c.cmd(`LOGIN user1 "pass1-Secret!"`); !strings.Contains(resp, " OK ") {
		t.Fatalf("LOGIN: %q", resp)
	}
	if resp := c.cmd("SELECT INBOX"); !strings.Contains(resp, " OK ") {
		t.Fatalf("SELECT after LOGIN through the relay: %q", resp)
	}

	// STARTTLS: capabilities after TLS too.
	c = dialText(t, d.Addr, nil)
	c.startTLS(clientTLS(t, d))
	caps := c.cmd("CAPABILITY")
	check("CAPABILITY after STARTTLS", caps)
	if strings.Contains(caps, "STARTTLS") {
		t.Errorf("CAPABILITY after STARTTLS still offers STARTTLS: %q", caps)
	}
	if resp := c.cmd(`LOGIN user2 "pass2-Secret!"`); !strings.Contains(resp, " OK ") {
		t.Fatalf("LOGIN after STARTTLS: %q", resp)
	}

	// Implicit TLS, with go-imap: LOGIN and AUTHENTICATE LOGIN.
	ic, err := imapclient.DialTLS(d.ImplicitAddr, &imapclient.Options{TLSConfig: clientTLS(t, d)})
	if err != nil {
		t.Fatal(err)
	}
	defer ic.Close()
	capsSet, err := ic.Capability().Wait()
	if err != nil {
		t.Fatal(err)
	}
	if capsSet.Has(imap.AuthCap("PLAIN")) || !capsSet.Has(imap.AuthCap("LOGIN")) {
		t.Errorf("implicit TLS capabilities: %v", capsSet)
	}
	if err := ic.Authenticate(sasl.NewLoginClient("user1", "pass1-Secret!")); err != nil {
		t.Fatalf("AUTHENTICATE LOGIN: %v", err)
	}
	if _, err := ic.Select("INBOX", nil).Wait(); err != nil {
		t.Fatal(err)
	}

	got := d.WaitAuthAttempts(t, func(c AuthCounts) bool { return c.Success == 3 })
	if got.Mechanisms["PLAIN"] != 2 || got.Mechanisms["LOGIN"] != 1 || got.Failure != 0 {
		t.Errorf("AuthAttempts() = %+v, want 2 LOGIN commands (PLAIN) and 1 AUTHENTICATE LOGIN", got)
	}
	if !d.LogContains(", TLS, session=") {
		t.Error("the relay's TLS sessions reach Dovecot without TLS")
	}
}

// Documents why LoginOnly needs a relay: Dovecot's own "auth_mechanisms =
// login" hides AUTH=PLAIN but also disables the LOGIN command.
func TestAuthMechanismsLoginAloneDisablesLOGIN(t *testing.T) {
	t.Parallel()
	d := StartDovecot(t, DovecotOptions{AuthMechanisms: "login"})
	c := dialText(t, d.Addr, nil)
	if strings.Contains(c.greeting, "AUTH=PLAIN") || !strings.Contains(c.greeting, "LOGINDISABLED") {
		t.Errorf("greeting %q: Dovecot's behaviour changed; revisit LoginOnly", c.greeting)
	}
	if resp := c.cmd(`LOGIN user1 "pass1-Secret!"`); strings.Contains(resp, " OK ") {
		t.Errorf("LOGIN: %q: Dovecot's behaviour changed; revisit LoginOnly", resp)
	}
}

func TestPregeneratedMessages(t *testing.T) {
	t.Parallel()
	d := StartDovecot(t, DovecotOptions{Messages: 50})

	c, err := imapclient.DialInsecure(d.Addr, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Login("user1", d.Users["user1"]).Wait(); err != nil {
		t.Fatal(err)
	}
	sel, err := c.Select("INBOX", nil).Wait()
	if err != nil {
		t.Fatal(err)
	}
	if sel.NumMessages != 50 {
		t.Fatalf("SELECT INBOX: %d EXISTS, want 50", sel.NumMessages)
	}
	var all imap.SeqSet
	all.AddRange(1, 50)
	msgs, err := c.Fetch(all, &imap.FetchOptions{Envelope: true, RFC822Size: true}).Collect()
	if err != nil {
		t.Fatal(err)
	}
	if len(msgs) != 50 {
		t.Fatalf("FETCH 1:50 returned %d messages", len(msgs))
	}
	ids := map[string]bool{}
	for _, m := range msgs {
		ids[m.Envelope.MessageID] = true
		// Served with CRLF: a little larger than the LF file.
		if m.RFC822Size < 2048 || m.RFC822Size > 2048+200 {
			t.Errorf("message %d: RFC822.SIZE %d, want about 2048", m.SeqNum, m.RFC822Size)
		}
		if m.Envelope.Subject == "" || len(m.Envelope.From) == 0 || m.Envelope.Date.IsZero() {
			t.Errorf("message %d: envelope %+v lacks realistic headers", m.SeqNum, m.Envelope)
		}
	}
	if len(ids) != 50 {
		t.Errorf("%d distinct Message-IDs among 50 messages", len(ids))
	}

	// user2's INBOX is empty.
	c2, err := imapclient.DialInsecure(d.Addr, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	if err := c2.Login("user2", d.Users["user2"]).Wait(); err != nil {
		t.Fatal(err)
	}
	if sel, err := c2.Select("INBOX", nil).Wait(); err != nil || sel.NumMessages != 0 {
		t.Errorf("user2 SELECT INBOX: %v, %v; want 0 EXISTS", sel, err)
	}
}

func TestAppendWakesIdleClientAndIsNotCounted(t *testing.T) {
	t.Parallel()
	// Other Dovecots on the machine (load tests holding thousands of
	// sessions in IDLE) may have used up the mail user's inotify
	// instances: then Dovecot looks every IdleCheckInterval.
	d := StartDovecot(t, DovecotOptions{IdleCheckInterval: time.Second})

	exists := make(chan uint32, 10)
	c, err := imapclient.DialInsecure(d.Addr, &imapclient.Options{
		UnilateralDataHandler: &imapclient.UnilateralDataHandler{
			Mailbox: func(m *imapclient.UnilateralDataMailbox) {
				if m.NumMessages != nil {
					exists <- *m.NumMessages
				}
			},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Login("user1", d.Users["user1"]).Wait(); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Select("INBOX", nil).Wait(); err != nil {
		t.Fatal(err)
	}
	idle, err := c.Idle()
	if err != nil {
		t.Fatal(err)
	}

	d.Append(t, "user1", "INBOX", MakeMessage(1, 1000))
	select {
	case n := <-exists:
		if n != 1 {
			t.Errorf("IDLE: %d EXISTS, want 1", n)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("IDLE client was not told about the appended message")
	}
	if err := idle.Close(); err != nil {
		t.Fatal(err)
	}
	if err := idle.Wait(); err != nil {
		t.Fatal(err)
	}

	d.Append(t, "user2", "Archive/2024", MakeMessage(2, 500))
	d.Append(t, "user2", "Archive/2024", MakeMessage(3, 500))
	c2, err := imapclient.DialInsecure(d.Addr, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	if err := c2.Login("user2", d.Users["user2"]).Wait(); err != nil {
		t.Fatal(err)
	}
	if sel, err := c2.Select("Archive/2024", nil).Wait(); err != nil || sel.NumMessages != 2 {
		t.Errorf("SELECT Archive/2024 after two Appends: %v, %v", sel, err)
	}

	// Three Appends logged in too; only the two test clients count.
	d.WaitAuthAttempts(t, func(c AuthCounts) bool { return c.Success >= 2 })
	d.WaitLog(t, "name=proxytest-harness") // the Appends' sessions are logged
	time.Sleep(100 * time.Millisecond)
	got := d.AuthAttempts()
	if got.Success != 2 || got.ByUser["user1"] != 1 || got.ByUser["user2"] != 1 {
		t.Errorf("AuthAttempts() = %+v, want only the test's two logins", got)
	}
}

func TestTrustedNetworksHonourOriginatingIP(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		trusted string
		wantIP  string
	}{
		{"127.0.0.0/8", "192.0.2.7"},
		{"", "127.0.0.1"},
	} {
		t.Run("trusted="+tc.trusted, func(t *testing.T) {
			t.Parallel()
			d := StartDovecot(t, DovecotOptions{TrustedNetworks: tc.trusted})
			c := dialText(t, d.Addr, nil)
			c.cmd(`ID ("name" "imapgate" "x-originating-ip" "192.0.2.7")`)
			if resp := c.cmd(`LOGIN user1 "pass1-Secret!"`); !strings.Contains(resp, " OK ") {
				t.Fatalf("LOGIN: %q", resp)
			}
			got := d.WaitAuthAttempts(t, func(c AuthCounts) bool { return c.Success == 1 })
			if got.ByIP[tc.wantIP] != 1 {
				t.Errorf("AuthAttempts().ByIP = %v, want %s", got.ByIP, tc.wantIP)
			}
			if !d.LogContains("ID sent: name=imapgate, x-originating-ip=192.0.2.7") {
				t.Errorf("the client's ID is not in the log:\n%s", d.LogTail(10))
			}
		})
	}
}

func TestCustomUsers(t *testing.T) {
	t.Parallel()
	users := map[string]string{"alice@example.com": "colon:in password", "bob": "b"}
	d := StartDovecot(t, DovecotOptions{Users: users, Messages: 3, MessageSize: 300})
	c := dialText(t, d.Addr, nil)
	if resp := c.cmd(`LOGIN alice@example.com "colon:in password"`); !strings.Contains(resp, " OK ") {
		t.Fatalf("LOGIN alice: %q", resp)
	}
	// Without user1 the messages go to the first user in order.
	if resp := c.cmd("SELECT INBOX"); !strings.Contains(resp, "* 3 EXISTS") {
		t.Errorf("SELECT INBOX of alice: %q, want 3 EXISTS", resp)
	}
	c2 := dialText(t, d.Addr, nil)
	if resp := c2.cmd(`LOGIN user1 "pass1-Secret!"`); !strings.Contains(resp, " NO ") {
		t.Errorf("LOGIN user1, who is not in Users: %q", resp)
	}
}

// Tests may hold more than a thousand sessions at once.
func TestThousandConcurrentSessions(t *testing.T) {
	if testing.Short() {
		t.Skip("-short")
	}
	const n = 1100
	d := StartDovecot(t, DovecotOptions{})
	conns := make([]*textConn, n)
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := dialTextErr(d.Addr)
			if err == nil {
				var resp string
				resp, err = c.cmdErr(fmt.Sprintf(`LOGIN user%d "pass%d-Secret!"`, i%2+1, i%2+1))
				if err == nil && !strings.Contains(resp, " OK ") {
					err = errors.New(resp)
				}
			}
			if err != nil {
				errs <- fmt.Errorf("session %d: %v", i, err)
				return
			}
			conns[i] = c
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	for _, c := range conns {
		if resp, err := c.cmdErr("NOOP"); err != nil || !strings.Contains(resp, " OK ") {
			t.Fatalf("NOOP on an open session: %q %v", resp, err)
		}
	}
	for _, c := range conns {
		c.c.Close()
	}
}

func TestCleanupStopsDovecotAndRemovesDir(t *testing.T) {
	t.Parallel()
	var pid int
	var dir string
	t.Run("start", func(t *testing.T) {
		d := StartDovecot(t, DovecotOptions{LoginOnly: true})
		pid, dir = d.PID, d.Dir
		c := dialText(t, d.Addr, nil) // left open: cleanup must cope
		c.cmd(`LOGIN user1 "pass1-Secret!"`)
	})
	if pid == 0 {
		t.Fatal("no Dovecot started")
	}
	if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
		t.Errorf("Dovecot (PID %d) still runs after cleanup: %v", pid, err)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("%s still exists after cleanup: %v", dir, err)
	}
}

func TestFreePortAndRequireTool(t *testing.T) {
	t.Parallel()
	addr := FreePort(t)
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("FreePort() = %s, which cannot be listened on: %v", addr, err)
	}
	ln.Close()
	RequireTool(t, "sh")
}

func TestFreePortsAreDistinctAndFree(t *testing.T) {
	t.Parallel()
	addrs := FreePorts(t, 50)
	seen := map[string]bool{}
	for _, a := range addrs {
		if seen[a] {
			t.Fatalf("FreePorts handed out %s twice", a)
		}
		seen[a] = true
		ln, err := net.Listen("tcp", a)
		if err != nil {
			t.Fatalf("FreePorts gave %s, which cannot be listened on: %v", a, err)
		}
		defer ln.Close()
	}
}

// clientTLS trusts exactly d.CAFile.
func clientTLS(t testing.TB, d *Dovecot) *tls.Config {
	t.Helper()
	pem, err := os.ReadFile(d.CAFile)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(pem) {
		t.Fatalf("%s holds no certificate", d.CAFile)
	}
	return &tls.Config{RootCAs: roots, ServerName: "localhost"}
}

// textConn speaks IMAP as text, for what imapclient hides: greetings,
// raw capabilities, exact responses.
type textConn struct {
	c        net.Conn
	r        *bufio.Reader
	greeting string
	tag      int
	t        testing.TB
}

func dialText(t testing.TB, addr string, conf *tls.Config) *textConn {
	t.Helper()
	c, err := dialTextErr(addr)
	if err != nil {
		t.Fatal(err)
	}
	c.t = t
	t.Cleanup(func() { c.c.Close() })
	return c
}

func dialTextErr(addr string) (*textConn, error) {
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return nil, err
	}
	c := &textConn{c: conn, r: bufio.NewReader(conn)}
	conn.SetDeadline(time.Now().Add(30 * time.Second))
	if c.greeting, err = c.r.ReadString('\n'); err != nil {
		conn.Close()
		return nil, fmt.Errorf("greeting: %v", err)
	}
	return c, nil
}

// cmd sends a tagged command and returns every response line up to and
// including the tagged one.
func (c *textConn) cmd(command string) string {
	c.t.Helper()
	resp, err := c.cmdErr(command)
	if err != nil {
		c.t.Fatalf("%s: %v (so far %q)", command, err, resp)
	}
	return resp
}

func (c *textConn) cmdErr(command string) (string, error) {
	c.tag++
	tag := fmt.Sprintf("t%d", c.tag)
	c.c.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := fmt.Fprintf(c.c, "%s %s\r\n", tag, command); err != nil {
		return "", err
	}
	var b strings.Builder
	for {
		line, err := c.r.ReadString('\n')
		b.WriteString(line)
		if err != nil {
			return b.String(), err
		}
		if strings.HasPrefix(line, tag+" ") {
			return b.String(), nil
		}
	}
}

func (c *textConn) startTLS(conf *tls.Config) {
	c.t.Helper()
	if resp := c.cmd("STARTTLS"); !strings.Contains(resp, " OK ") {
		c.t.Fatalf("STARTTLS: %q", resp)
	}
	tc := tls.Client(c.c, conf)
	if err := tc.Handshake(); err != nil {
		c.t.Fatalf("TLS after STARTTLS: %v", err)
	}
	c.c, c.r = tc, bufio.NewReader(tc)
}
