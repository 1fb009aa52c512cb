package proxy

import (
	"encoding/base64"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/imapgate/imapgate/auth"
	"github.com/imapgate/imapgate/policy"
	"github.com/imapgate/imapgate/proxy/proxytest"
)

// loginWithLiterals sends LOGIN with the user name and the password as
// synchronizing literals, which may carry any byte, NUL and CRLF included,
// and returns the tagged answer.
func (c *textClient) loginWithLiterals(tag, user, pass string) string {
	c.t.Helper()
	c.send(tag + " LOGIN {" + strconv.Itoa(len(user)) + "}")
	c.expect("+ ")
	c.send(user + " {" + strconv.Itoa(len(pass)) + "}")
	c.expect("+ ")
	c.send(pass)
	return c.expect(tag + " ")
}

// TestNULInLoginUserNameNeverReachesDovecot is the attack of the review
// against LOGIN (login_command = "allow-over-tls"): guesses for user1 sent
// as "user1\x00guessN", each a user name of its own, so a budget of 2
// failures per user never stopped them and every one went to Dovecot
// inside a PLAIN message. The same goes for every name with a control
// character, through LOGIN and AUTHENTICATE PLAIN alike: the proxy refuses
// it before the policy check, so it spends no budget, makes no user key,
// and never reaches the upstream. Dovecot's own log is the witness: the
// only attempt in it is a bystander's wrong password sent last.
func TestNULInLoginUserNameNeverReachesDovecot(t *testing.T) {
	d := proxytest.StartDovecot(t, proxytest.DovecotOptions{})
	budgets := policy.Budgets{PerIP: 100, PerNetwork: 100, PerUser: 2, PerDevice: 2, Window: 15 * time.Minute, Delay: time.Millisecond}
	tp := startProxyTo(t, d.Addr, UpstreamPlaintext, nil, func(c *Config) {
		c.AllowLoginOverTLS = true
		c.MaxAuthFailures = 1000
		c.Policy = policy.NewGuard(nil, budgets, nil)
	}, nil)
	c := tp.dialImplicit(t)

	const guesses = 10
	for i := range guesses {
		tag := fmt.Sprintf("g%d", i)
		if got := c.loginWithLiterals(tag, fmt.Sprintf("user1\x00guess%d", i), fmt.Sprintf("Guess-%d", i)); got != tag+" NO [AUTHENTICATIONFAILED] Authentication failed." {
			t.Fatalf("guess %d: %q", i, got)
		}
	}
	// Names no mailbox has: C0, DEL, C1, a line separator, a bidi
	// override, invalid UTF-8, through LOGIN and through PLAIN.
	odd := []string{"user1\x01", "user1\r\nx", "user1\t", "user1\x7f", "user1\u0085", "user1\u009b", "user1\u2028", "user1\u202e", "user1\xff"}
	for i, name := range odd {
		tag := fmt.Sprintf("l%d", i)
		if got := c.loginWithLiterals(tag, name, "Guess-odd"); got != tag+" NO [AUTHENTICATIONFAILED] Authentication failed." {
			t.Errorf("LOGIN %q: %q", name, got)
		}
		tag = fmt.Sprintf("p%d", i)
		c.send(tag + " AUTHENTICATE PLAIN " + base64.StdEncoding.EncodeToString([]byte("\x00"+name+"\x00Guess-odd")))
		if got := c.expect(tag + " "); got != tag+" NO [AUTHENTICATIONFAILED] Authentication failed." {
			t.Errorf("AUTHENTICATE PLAIN %q: %q", name, got)
		}
	}
	// The witness: one wrong password for user2, which must reach Dovecot.
	c.send(`w LOGIN "user2" "Wrong-Pass-1"`)
	c.expect("w NO [AUTHENTICATIONFAILED]")
	counts := d.WaitAuthAttempts(t, func(c proxytest.AuthCounts) bool { return c.Failure >= 1 })
	if counts.Failure != 1 || counts.FailureByUser["user2"] != 1 || counts.Success != 0 {
		t.Fatalf("Dovecot saw %+v; want only the witness's failure for user2", counts)
	}

	// LOGIN and PLAIN share one reason word (claimFailureReason).
	wantReason := map[string]string{"LOGIN": "malformed_user", auth.Plain: "malformed_user"}
	refused := map[string]int{}
	for _, e := range tp.audit.events(t) {
		if e.Event != EventAuth || e.User == "user2" {
			continue
		}
		if e.Result != ResultFailure || e.Reason != wantReason[e.Mechanism] || e.Upstream != "" {
			t.Errorf("auth event %+v; want result failure, reason %s, no upstream", e, wantReason[e.Mechanism])
		}
		refused[e.Mechanism]++
	}
	if refused["LOGIN"] != guesses+len(odd) || refused[auth.Plain] != len(odd) {
		t.Errorf("refused attempts by mechanism: %v, want LOGIN %d, PLAIN %d", refused, guesses+len(odd), len(odd))
	}
}

// TestSafeUser: the audit log shows a refused name with its odd characters
// marked, never silently joined into another user's name, and never more
// than auth.MaxUsernameLength bytes of it, cut between characters.
func TestSafeUser(t *testing.T) {
	tests := []struct{ in, want string }{
		{"alice", "alice"},
		{"jürgen@example.com", "jürgen@example.com"},
		{"user1\x00guess1", "user1\ufffdguess1"},
		{"user1\r\nx", "user1\ufffd\ufffdx"},
		{"user1\u0085", "user1\ufffd"},
		{"user1\u202egpj", "user1\ufffdgpj"},
		{"a\xffb", "a\ufffdb"},
		{strings.Repeat("a", 300), strings.Repeat("a", auth.MaxUsernameLength)},
		{strings.Repeat("ü", 200), strings.Repeat("ü", auth.MaxUsernameLength/2)},
		{"a" + strings.Repeat("ü", 200), "a" + strings.Repeat("ü", auth.MaxUsernameLength/2-1)},
	}
	for _, tt := range tests {
		if got := safeUser(tt.in); got != tt.want {
			t.Errorf("safeUser(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

// FuzzSafeUser: whatever a client sends, the audit log gets a name that
// auth.CheckUsername would accept (or nothing), and a name it accepts is
// logged unchanged.
func FuzzSafeUser(f *testing.F) {
	for _, s := range []string{"alice", "user1\x00guess1", "\xff\xfe", "user1\u2028", strings.Repeat("ü", 200)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, u string) {
		got := safeUser(u)
		if got != "" && auth.CheckUsername(got) != nil {
			t.Fatalf("safeUser(%q) = %q, which CheckUsername refuses", u, got)
		}
		if auth.CheckUsername(u) == nil && got != u {
			t.Fatalf("safeUser changed the valid name %q to %q", u, got)
		}
	})
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
