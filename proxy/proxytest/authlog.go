package proxytest

import (
	"bufio"
	"bytes"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"
)

// AuthCounts counts the authentication attempts that reached Dovecot, as
// its log tells them. The harness's own logins (Append) are not counted.
type AuthCounts struct {
	Success int // logins that succeeded
	Failure int // attempts Dovecot's auth process rejected

	// ByUser counts attempts, successful or not, per user name as Dovecot
	// logged it; "" when Dovecot rejected the attempt before it had a
	// valid user name (empty, or characters outside auth_username_chars).
	ByUser map[string]int
	// FailureByUser counts only the rejected attempts per user.
	FailureByUser map[string]int
	// ByIP counts attempts per client address as Dovecot saw it: the
	// connection's, or the ID x-originating-ip of a trusted client.
	ByIP map[string]int
	// Mechanisms counts successful logins per SASL mechanism ("PLAIN",
	// "LOGIN"). Dovecot runs the IMAP LOGIN command through its PLAIN
	// mechanism, so "PLAIN" means LOGIN or AUTHENTICATE PLAIN; the log
	// does not tell them apart. (A LoginOnly server refuses AUTHENTICATE
	// PLAIN, so there "PLAIN" means the LOGIN command.)
	Mechanisms map[string]int
	// MasterLogins counts the successful logins of a master user as
	// another user (DovecotOptions.MasterUsers), which Success and ByUser
	// count under the user logged in to. A master whose own password
	// was wrong counts as a Failure under the master's name; a master
	// refused the user (unknown, or in DeniedUsers) counts as a Failure
	// under the user's name when the passdb said "unknown user", and not
	// at all when the deny passdb refused it (Dovecot logs that line
	// without a user: use WaitLog).
	MasterLogins map[MasterUse]int
}

// MasterUse is one master user logging in as one user.
type MasterUse struct {
	Master, User string
}

// The lines AuthAttempts reads, as Dovecot 2.3.19 writes them with
// auth_verbose = yes and the default login_log_format_elements (the date
// prefix is log_timestamp):
//
// A success, written by imap-login once the session is handed to imap:
//
//	Nov 26 03:19:16 imap-login: Info: Login: user=<user1>, method=PLAIN, rip=127.0.0.1, lip=127.0.0.1, mpid=15115, secured, session=<mZOSaCVhLq5/AAAB>
//
// ("secured" is a loopback or trusted connection, "TLS" a TLS one;
// method=LOGIN after AUTHENTICATE LOGIN.)
//
// A failure, written by the auth process, one line per rejected attempt:
// by the passdb (user known, password wrong; user unknown) or by the SASL
// mechanism before any passdb lookup (bad user name, bad base64, a
// master-user login without master passdb, a client that stopped
// answering):
//
//	Nov 26 03:19:16 auth: Info: passwd-file(user1,127.0.0.1,<37CSaCVhPq5/AAAB>): Password mismatch
//	Nov 26 03:19:18 auth: Info: passwd-file(nosuch,127.0.0.1,<eaGpaCVhTq5/AAAB>): unknown user
//	Nov 26 03:16:09 auth: Info: plain(?,127.0.0.1,<GTxiXSVhzLd/AAAB>): Empty username
//	Nov 26 03:19:18 auth: Info: plain(?,127.0.0.1,<eaGpaCVhTq5/AAAB>): Username character disallowed by auth_username_chars: 0x20 (username: user1 x)
//	Nov 26 03:16:10 auth: Info: plain(?,127.0.0.1,<GC15XSVh0Ld/AAAB>): Invalid base64 data in initial response
//
// A failure, written by imap-login, for a mechanism Dovecot does not offer
// (the auth process never sees it):
//
//	Nov 26 03:19:17 imap-login: Info: Authenticate XOAUTH2 failed: Unsupported authentication mechanism.: user=<>, method=XOAUTH2, rip=127.0.0.1, lip=127.0.0.1, secured, session=<eaGpaCVhTq5/AAAB>
//
// Not counted: AUTHENTICATE cancelled by the client ("*", no auth line),
// and the per-connection summary, which repeats the attempts above:
//
//	Nov 26 03:19:20 imap-login: Info: Disconnected: Connection closed (auth failed, 1 attempts in 1 secs): user=<user1>, method=PLAIN, rip=127.0.0.1, lip=127.0.0.1, secured, session=</i/IaCVhUK5/AAAB>
//
// With MasterUsers the login lines also carry the SASL authentication
// identity (login_log_format_elements += auth_user=<%{auth_user}>),
// which is the master's name in a master login; the auth process says
// first that the master's password matched, and a failure of the master's
// own password carries "master" in its prefix:
//
//	Dec 01 10:11:30 auth: Info: Master user logging in as user1
//	Dec 01 10:11:30 imap-login: Info: Login: user=<user1>, method=PLAIN, rip=127.0.0.1, lip=127.0.0.1, mpid=18111, secured, session=<l8AHwI9h/OV/AAAB>, auth_user=<imapgate>
//	Dec 01 10:11:30 auth: Info: passwd-file(imapgate,127.0.0.1,master,<2dQHwI9hBOZ/AAAB>): Password mismatch
//
// A master refused the user it asked for (NO [AUTHORIZATIONFAILED]):
//
//	Dec 01 10:11:30 auth: Info: Master user logging in as nosuch
//	Dec 01 10:11:30 auth: Info: passwd-file(nosuch,127.0.0.1,<13wPwI9hCuZ/AAAB>): unknown user
//	Dec 01 10:11:31 auth: Info: Master user logging in as user3
//	Dec 01 10:11:31 auth: Info: User found from deny passdb
//
// The harness's sessions are known by the ID they send, which imap_id_log
// = * writes before their Login line:
//
//	Nov 26 03:40:02 imap-login: Info: ID sent: name=proxytest-harness: user=<>, rip=127.0.0.1, lip=127.0.0.1, secured, session=<ZB8TtSVh2ut/AAAB>
var (
	loginLine   = regexp.MustCompile(` imap-login: Info: Login: user=<([^>]*)>, method=([^,]*), rip=([^,]*), .*session=<([^>]*)>(?:, auth_user=<([^>]*)>)?`)
	authLine    = regexp.MustCompile(` auth: Info: ([a-z0-9_-]+)\(([^)]*)\): `)
	mechLine    = regexp.MustCompile(` imap-login: Info: Authenticate [^ ]+ failed: .*: user=<([^>]*)>, method=[^,]*, rip=([^,]*),`)
	harnessLine = regexp.MustCompile(` imap-login: Info: ID sent: .*name=` + harnessID + `\b.*session=<([^>]*)>`)
)

// harnessID is the ID name of the harness's own sessions.
const harnessID = "proxytest-harness"

// AuthAttempts parses LogFile and counts the authentication attempts that
// reached Dovecot so far. Dovecot writes its log through a separate log
// process, a few milliseconds after the client has its answer: use
// WaitAuthAttempts to wait for an expected count.
func (d *Dovecot) AuthAttempts() AuthCounts {
	c := AuthCounts{
		ByUser:        map[string]int{},
		FailureByUser: map[string]int{},
		ByIP:          map[string]int{},
		Mechanisms:    map[string]int{},
		MasterLogins:  map[MasterUse]int{},
	}
	f, err := os.Open(d.LogFile)
	if err != nil {
		return c
	}
	defer f.Close()
	harness := map[string]bool{}
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if m := harnessLine.FindStringSubmatch(line); m != nil {
			harness[m[1]] = true
		} else if m := loginLine.FindStringSubmatch(line); m != nil {
			user, mech, ip, session, authUser := m[1], m[2], m[3], m[4], m[5]
			if harness[session] {
				continue
			}
			c.Success++
			c.ByUser[user]++
			c.ByIP[ip]++
			c.Mechanisms[mech]++
			if authUser != "" && authUser != user {
				c.MasterLogins[MasterUse{Master: authUser, User: user}]++
			}
		} else if m := authLine.FindStringSubmatch(line); m != nil {
			user, ip := splitAuthPrefix(m[2])
			c.fail(user, ip)
		} else if m := mechLine.FindStringSubmatch(line); m != nil {
			c.fail(m[1], m[2])
		}
	}
	return c
}

func (c *AuthCounts) fail(user, ip string) {
	c.Failure++
	c.ByUser[user]++
	c.FailureByUser[user]++
	c.ByIP[ip]++
}

// splitAuthPrefix splits the inside of "passwd-file(user1,127.0.0.1,<session>)"
// from the right: the session is optional, "?" is an unknown user, and a
// master user's lookup has "master" after the address
// ("passwd-file(imapgate,127.0.0.1,master,<session>)"; user names
// cannot hold a comma, so the address is never "master").
func splitAuthPrefix(s string) (user, ip string) {
	if strings.HasSuffix(s, ">") {
		if i := strings.LastIndex(s, ",<"); i >= 0 {
			s = s[:i]
		}
	}
	if rest, ok := strings.CutSuffix(s, ",master"); ok && strings.Contains(rest, ",") {
		s = rest
	}
	if i := strings.LastIndex(s, ","); i >= 0 {
		user, ip = s[:i], s[i+1:]
	} else {
		user = s
	}
	if user == "?" {
		user = ""
	}
	return user, ip
}

// WaitAuthAttempts polls AuthAttempts until ok accepts the counts, and
// returns them; after 5 seconds it fails the test.
func (d *Dovecot) WaitAuthAttempts(t testing.TB, ok func(AuthCounts) bool) AuthCounts {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		c := d.AuthAttempts()
		if ok(c) {
			return c
		}
		if time.Now().After(deadline) {
			t.Fatalf("proxytest: auth attempts in Dovecot's log are still %+v\n%s", c, d.diagnostics())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// LogContains reports whether Dovecot's log contains s.
func (d *Dovecot) LogContains(s string) bool {
	b, err := os.ReadFile(d.LogFile)
	return err == nil && bytes.Contains(b, []byte(s))
}

// WaitLog waits until Dovecot's log contains s; after 5 seconds it fails
// the test.
func (d *Dovecot) WaitLog(t testing.TB, s string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !d.LogContains(s) {
		if time.Now().After(deadline) {
			t.Fatalf("proxytest: Dovecot's log has no %q\n%s", s, d.diagnostics())
		}
		time.Sleep(20 * time.Millisecond)
	}
}
