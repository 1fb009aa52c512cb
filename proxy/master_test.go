package proxy

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/imapgate/imapgate/proxy/proxytest"
	"github.com/imapgate/imapgate/tlsconf"
)

const (
	testMasterUser   = "imapgate"
	testMasterSecret = "Master-Secret-7!"
)

// masterDovecot is a Dovecot with a master passdb holding imapgate's
// master user, 3 messages for user1 and the client addresses of
// 127.0.0.1 trusted (ID x-originating-ip).
func masterDovecot(t *testing.T, o proxytest.DovecotOptions) *proxytest.Dovecot {
	t.Helper()
	o.MasterUsers = map[string]string{testMasterUser: testMasterSecret}
	o.Messages = 3
	o.TrustedNetworks = "127.0.0.1/32"
	return proxytest.StartDovecot(t, o)
}

// masterUpstream is an Upstream to d over STARTTLS, verified with d's CA,
// forwarding the client's address with ID, logging in as master with
// form and method.
func masterUpstream(t *testing.T, d *proxytest.Dovecot, form MasterForm, method LoginMethod, secret string) *Upstream {
	t.Helper()
	tc, err := tlsconf.UpstreamConfig(tlsconf.UpstreamOptions{ServerName: "localhost", CAFile: d.CAFile})
	if err != nil {
		t.Fatal(err)
	}
	return &Upstream{
		Address: d.Addr, TLS: UpstreamSTARTTLS, TLSConfig: tc, Method: method, Forward: ForwardID,
		Master: &MasterLogin{User: testMasterUser, Secret: NewSecret(secret), Form: form},
	}
}

// phone is the client a master login speaks for.
var phone = ClientInfo{Addr: &net.TCPAddr{IP: net.ParseIP("192.0.2.7"), Port: 51234}, Session: "s-master"}

// imapCommand sends one command on a logged-in upstream connection and
// returns the untagged lines of its answer; the tagged one must be OK.
func imapCommand(t *testing.T, uc *UpstreamConn, tag, cmd string) []string {
	t.Helper()
	uc.Conn.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(uc.Conn, tag+" "+cmd+"\r\n"); err != nil {
		t.Fatal(err)
	}
	var untagged []string
	for {
		line, err := uc.R.ReadString('\n')
		if err != nil {
			t.Fatalf("%s: %v", cmd, err)
		}
		line = strings.TrimRight(line, "\r\n")
		if rest, ok := strings.CutPrefix(line, tag+" "); ok {
			if !strings.HasPrefix(rest, "OK") {
				t.Fatalf("%s: %s", cmd, line)
			}
			return untagged
		}
		untagged = append(untagged, line)
	}
}

// inbox selects the INBOX and returns how many messages it holds and
// which of them have subject in their Subject.
func inbox(t *testing.T, uc *UpstreamConn, subject string) (exists int, found string) {
	t.Helper()
	for _, l := range imapCommand(t, uc, "s1", "SELECT INBOX") {
		if n, ok := strings.CutSuffix(l, " EXISTS"); ok {
			exists, _ = strconv.Atoi(strings.TrimPrefix(n, "* "))
		}
	}
	for _, l := range imapCommand(t, uc, "s2", "SEARCH SUBJECT "+strconv.Quote(subject)) {
		if rest, ok := strings.CutPrefix(l, "* SEARCH"); ok {
			found = strings.TrimSpace(rest)
		}
	}
	imapCommand(t, uc, "s3", "LOGOUT")
	uc.Conn.Close()
	return exists, found
}

// TestMasterLoginLandsInTheMailboxsOwnINBOX: for a client that proved who
// it is without the real password, imapgate logs in to the real Dovecot
// as its master user, in each form Dovecot speaks, and lands in the
// client's own INBOX: user1's three messages, and a message appended to
// user2 seen through user2's login only. Dovecot's log names the master
// and the user, with the phone's address from ID, and never the master's
// secret; the answer-time estimate for client guesses learns nothing.
func TestMasterLoginLandsInTheMailboxsOwnINBOX(t *testing.T) {
	d := masterDovecot(t, proxytest.DovecotOptions{})
	const subject = "only-for-user2"
	msg := "From: a@example.com\r\nTo: user2@example.com\r\nSubject: " + subject + "\r\n\r\nhello user2\r\n"
	d.Append(t, "user2", "INBOX", []byte(msg))

	tests := []struct {
		name   string
		form   MasterForm
		method LoginMethod
	}{
		{"sasl-authzid", MasterSASLAuthzid, LoginAuto},
		{"dovecot-login through AUTHENTICATE PLAIN", MasterDovecotLogin, LoginPlain},
		{"dovecot-login through LOGIN", MasterDovecotLogin, LoginLogin},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			u := masterUpstream(t, d, tt.form, tt.method, testMasterSecret)
			uc, err := u.LoginAs(context.Background(), "user1", phone)
			if err != nil {
				t.Fatalf("LoginAs user1: %v", err)
			}
			if caps := strings.Join(uc.Capabilities, " "); !strings.Contains(caps, "IDLE") || strings.Contains(caps, "AUTH=") {
				t.Errorf("capabilities %q: want the post-login list", caps)
			}
			if exists, found := inbox(t, uc, subject); exists != 3 || found != "" {
				t.Errorf("user1's INBOX: %d messages, %q found %q; want user1's 3 and not user2's", exists, subject, found)
			}
			uc, err = u.LoginAs(context.Background(), "user2", phone)
			if err != nil {
				t.Fatalf("LoginAs user2: %v", err)
			}
			if exists, found := inbox(t, uc, subject); exists != 1 || found != "1" {
				t.Errorf("user2's INBOX: %d messages, %q found %q; want the one appended", exists, subject, found)
			}
			if u.failures.seen {
				t.Error("a master login taught the estimate of how long a wrong password takes")
			}
			got := d.WaitAuthAttempts(t, func(c proxytest.AuthCounts) bool {
				return c.MasterLogins[proxytest.MasterUse{Master: testMasterUser, User: "user2"}] == i+1
			})
			if n := got.MasterLogins[proxytest.MasterUse{Master: testMasterUser, User: "user1"}]; n != i+1 || got.Failure != 0 || got.ByIP["192.0.2.7"] != 2*(i+1) {
				t.Errorf("Dovecot logged %+v; want %d master logins to each user, from the phone's address, no failure", got, i+1)
			}
		})
	}
	d.WaitLog(t, "Master user logging in as user1")
	assertNoMasterSecret(t, d, testMasterSecret)
}

// assertNoMasterSecret: Dovecot's log holds no master secret, neither
// plain nor inside a PLAIN message.
func assertNoMasterSecret(t *testing.T, d *proxytest.Dovecot, secrets ...string) {
	t.Helper()
	for _, s := range secrets {
		for _, form := range []string{s, base64.StdEncoding.EncodeToString([]byte("user1\x00" + testMasterUser + "\x00" + s)),
			base64.StdEncoding.EncodeToString([]byte("\x00user1*" + testMasterUser + "\x00" + s))} {
			if d.LogContains(form) {
				t.Errorf("Dovecot's log holds the master secret as %q", form)
			}
		}
	}
}

// TestWrongMasterSecretIsAnOutageNotTheClientsBadPassword: a master secret
// Dovecot rejects is ErrMasterRejected (so NO [UNAVAILABLE]), never
// ErrBadCredentials: the client proved who it is and no guess of its
// reached Dovecot. How long the NO took does not move the estimate
// refused guesses wait for, which a client's wrong password set.
func TestWrongMasterSecretIsAnOutageNotTheClientsBadPassword(t *testing.T) {
	d := masterDovecot(t, proxytest.DovecotOptions{})
	const wrong = "Not-The-Master-Secret"
	u := masterUpstream(t, d, MasterSASLAuthzid, LoginAuto, wrong)
	var observed []error
	u.ObserveLogin = func(_ time.Duration, err error) { observed = append(observed, err) }

	// A client's wrong password, passed through, sets the estimate.
	if _, err := u.Login(context.Background(), "user1", "Wrong-Pass-1", phone); !errors.Is(err, ErrBadCredentials) {
		t.Fatalf("pass-through with a wrong password: %v, want ErrBadCredentials", err)
	}
	u.failures.mu.Lock()
	mean, dev := u.failures.mean, u.failures.dev
	u.failures.mu.Unlock()

	for _, form := range []MasterForm{MasterSASLAuthzid, MasterDovecotLogin} {
		u.Master.Form = form
		_, err := u.LoginAs(context.Background(), "user1", phone)
		if !errors.Is(err, ErrMasterRejected) || !errors.Is(err, ErrUnavailable) || errors.Is(err, ErrBadCredentials) || errors.Is(err, ErrNoAnswer) || errors.Is(err, ErrMailboxRefused) {
			t.Fatalf("%s with a wrong master secret: err = %v, want ErrMasterRejected (an ErrUnavailable) only", form, err)
		}
		if strings.Contains(err.Error(), wrong) {
			t.Errorf("the error shows the secret: %v", err)
		}
	}
	u.failures.mu.Lock()
	if u.failures.mean != mean || u.failures.dev != dev {
		t.Errorf("the wrong-password estimate moved from %v±%v to %v±%v after master logins", mean, dev, u.failures.mean, u.failures.dev)
	}
	u.failures.mu.Unlock()
	if len(observed) != 3 || !errors.Is(observed[1], ErrMasterRejected) || !errors.Is(observed[2], ErrMasterRejected) {
		t.Errorf("ObserveLogin saw %v, want the pass-through failure then two master rejections", observed)
	}

	got := d.WaitAuthAttempts(t, func(c proxytest.AuthCounts) bool { return c.Failure == 3 })
	if got.FailureByUser[testMasterUser] != 2 || got.FailureByUser["user1"] != 1 || got.Success != 0 {
		t.Errorf("Dovecot logged %+v; want the master's two failures and user1's one", got)
	}
	d.WaitLog(t, "passwd-file("+testMasterUser+",192.0.2.7,master,")
	assertNoMasterSecret(t, d, wrong, testMasterSecret)
}

// TestMasterRefusedTheMailboxIsNotARejectedMaster: Dovecot accepts the
// master's secret and then refuses the mailbox with NO
// [AUTHORIZATIONFAILED], for a user it does not have and for one a deny
// passdb refuses alike: both are ErrMailboxRefused, with the same error,
// and neither is ErrMasterRejected (the master is fine).
func TestMasterRefusedTheMailboxIsNotARejectedMaster(t *testing.T) {
	d := masterDovecot(t, proxytest.DovecotOptions{DeniedUsers: []string{"user2"}})
	for _, form := range []MasterForm{MasterSASLAuthzid, MasterDovecotLogin} {
		u := masterUpstream(t, d, form, LoginAuto, testMasterSecret)
		var errs []string
		for _, mailbox := range []string{"nosuch", "user2"} {
			_, err := u.LoginAs(context.Background(), mailbox, phone)
			if !errors.Is(err, ErrMailboxRefused) || !errors.Is(err, ErrUnavailable) || errors.Is(err, ErrMasterRejected) || errors.Is(err, ErrBadCredentials) {
				t.Fatalf("%s LoginAs %s: err = %v, want ErrMailboxRefused only", form, mailbox, err)
			}
			errs = append(errs, err.Error())
		}
		if errs[0] != errs[1] {
			t.Errorf("%s: an unknown and a denied mailbox differ (%q, %q): Dovecot says the same of both", form, errs[0], errs[1])
		}
		if u.failures.seen {
			t.Error("a refused mailbox taught the estimate of how long a wrong password takes")
		}
	}
	d.WaitLog(t, "Master user logging in as nosuch")
	d.WaitLog(t, "User found from deny passdb")
}

// countingDialer counts dials and connects nowhere.
type countingDialer struct{ n atomic.Int32 }

func (c *countingDialer) dial(context.Context, string, string) (net.Conn, error) {
	c.n.Add(1)
	return nil, errors.New("test: no upstream")
}

// TestMasterMailboxNameCannotInjectTheSeparator: a mailbox holding the
// form's separator would, on the wire, name another master (Dovecot
// splits "a*b*master" at the first "*") or another mailbox; one holding
// NUL, CR or LF would cut a PLAIN message or a command line. LoginAs
// refuses them with ErrMailboxName before it dials; names that are safe
// in a form are dialled.
func TestMasterMailboxNameCannotInjectTheSeparator(t *testing.T) {
	tests := []struct {
		form      MasterForm
		separator string
		mailbox   string
		refused   bool
	}{
		{MasterDovecotLogin, "", "user1*evil", true},
		{MasterDovecotLogin, "", "*", true},
		{MasterDovecotLogin, "", `user1\x`, false},
		{MasterDovecotLogin, "+", "user1+evil", true},
		{MasterDovecotLogin, "+", "user1*x", false},
		{MasterExchangeDelegate, "", `other\alice`, true},
		{MasterExchangeDelegate, "", "alice*x", false},
		{MasterExchangeDelegate, "/", "a/b", true},
		{MasterExchangeDelegate, "/", `a\b`, false},
		{MasterSASLAuthzid, "", "a*b", false},
		{MasterSASLAuthzid, "", `a\b`, false},
		{MasterSASLAuthzid, "", "user1\x00admin", true},
		{MasterDovecotLogin, "", "user1\x00admin", true},
		{MasterExchangeDelegate, "", "user1\r\nA1 LOGIN x y", true},
		{MasterSASLAuthzid, "", "user1\n", true},
		{MasterSASLAuthzid, "", "", true},
		{MasterDovecotLogin, "", "\xff", true},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%s %q %q", tt.form, tt.separator, tt.mailbox), func(t *testing.T) {
			var d countingDialer
			u := &Upstream{Address: "192.0.2.1:143", TLS: UpstreamPlaintext, Dialer: d.dial,
				Master: &MasterLogin{User: testMasterUser, Secret: NewSecret(testMasterSecret), Form: tt.form, Separator: tt.separator}}
			_, err := u.LoginAs(context.Background(), tt.mailbox, ClientInfo{})
			switch {
			case tt.refused && (!errors.Is(err, ErrMailboxName) || d.n.Load() != 0):
				t.Errorf("err = %v after %d dials, want ErrMailboxName before any", err, d.n.Load())
			case !tt.refused && (errors.Is(err, ErrMailboxName) || d.n.Load() != 1):
				t.Errorf("err = %v after %d dials, want the name sent (one dial)", err, d.n.Load())
			}
		})
	}
}

// TestMasterLoginOnTheWire: the exact bytes of each form. A quoted string
// escapes '\' and '"' (RFC 3501 quoted-specials), so Exchange's
// `CORP\svc\alice` goes as "CORP\\svc\\alice"; a literal carries the
// name as it is. The Exchange delegate form is checked only against
// this scripted server, never against a real Exchange.
func TestMasterLoginOnTheWire(t *testing.T) {
	const secret = `M@ster "pw" \x`
	const quotedSecret = `"M@ster \"pw\" \\x"`
	plain := func(authzid, authcid string) string {
		return base64.StdEncoding.EncodeToString([]byte(authzid + "\x00" + authcid + "\x00" + secret))
	}
	tests := []struct {
		name    string
		caps    string
		master  MasterLogin
		method  LoginMethod
		mailbox string
		want    []string
	}{
		{"sasl-authzid", "IMAP4rev1 AUTH=PLAIN SASL-IR", MasterLogin{User: "svc"}, LoginAuto, "alice",
			[]string{"ig1 AUTHENTICATE PLAIN " + plain("alice", "svc")}},
		{"sasl-authzid without SASL-IR", "IMAP4rev1 AUTH=PLAIN", MasterLogin{User: "svc"}, LoginAuto, "alice",
			[]string{"ig1 AUTHENTICATE PLAIN", plain("alice", "svc")}},
		{"dovecot-login through LOGIN", "IMAP4rev1", MasterLogin{User: "svc", Form: MasterDovecotLogin}, LoginAuto, "alice",
			[]string{`ig1 LOGIN "alice*svc" ` + quotedSecret}},
		{"dovecot-login through PLAIN", "IMAP4rev1 AUTH=PLAIN SASL-IR", MasterLogin{User: "svc", Form: MasterDovecotLogin}, LoginAuto, "alice",
			[]string{"ig1 AUTHENTICATE PLAIN " + plain("", "alice*svc")}},
		{"exchange-delegate with a domain", "IMAP4rev1", MasterLogin{User: "svc-imapgate", Form: MasterExchangeDelegate, Domain: "CORP"}, LoginAuto, "alice",
			[]string{`ig1 LOGIN "CORP\\svc-imapgate\\alice" ` + quotedSecret}},
		{"exchange-delegate with a UPN", "IMAP4rev1", MasterLogin{User: "svc@corp.example", Form: MasterExchangeDelegate}, LoginAuto, "alice@corp.example",
			[]string{`ig1 LOGIN "svc@corp.example\\alice@corp.example" ` + quotedSecret}},
		{"exchange-delegate with a separator of the admin's", "IMAP4rev1", MasterLogin{User: "svc", Form: MasterExchangeDelegate, Domain: "CORP", Separator: "/"}, LoginAuto, "alice",
			[]string{`ig1 LOGIN "CORP/svc/alice" ` + quotedSecret}},
		{"exchange-delegate in a literal", "IMAP4rev1", MasterLogin{User: "svc", Form: MasterExchangeDelegate, Domain: "CORP"}, LoginAuto, "jürgen",
			[]string{`ig1 LOGIN {16}`, `CORP\svc\jürgen ` + quotedSecret}},
		{"exchange-delegate through PLAIN", "IMAP4rev1 AUTH=PLAIN SASL-IR", MasterLogin{User: "svc", Form: MasterExchangeDelegate, Domain: "CORP"}, LoginAuto, "alice",
			[]string{"ig1 AUTHENTICATE PLAIN " + plain("", `CORP\svc\alice`)}},
		{"exchange-delegate forced to LOGIN", "IMAP4rev1 AUTH=PLAIN SASL-IR", MasterLogin{User: "svc", Form: MasterExchangeDelegate, Domain: "CORP"}, LoginLogin, "alice",
			[]string{`ig1 LOGIN "CORP\\svc\\alice" ` + quotedSecret}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			su := startScripted(t, "* OK [CAPABILITY "+tt.caps+"] hi", func(c *scriptedConn, line string) bool {
				switch {
				case line == "ig1 AUTHENTICATE PLAIN":
					c.write("+ ")
				case strings.HasSuffix(line, "}"):
					c.write("+ go ahead")
				default:
					c.write("ig1 OK [CAPABILITY IMAP4rev1 IDLE] Logged in")
				}
				return true
			})
			m := tt.master
			m.Secret = NewSecret(secret)
			u := &Upstream{Address: su.addr, TLS: UpstreamPlaintext, Method: tt.method, Master: &m}
			uc, err := u.LoginAs(context.Background(), tt.mailbox, ClientInfo{})
			if err != nil {
				t.Fatal(err)
			}
			uc.Conn.Close()
			if got := su.lines(); strings.Join(got, "\n") != strings.Join(tt.want, "\n") {
				t.Errorf("server received\n%q\nwant\n%q", got, tt.want)
			}
		})
	}
}

// TestExchangeDelegateRefusedIsMasterRejected: Exchange answers a wrong
// delegate password or a mailbox the account may not open with the same
// plain "NO LOGIN failed." and no code: both are ErrMasterRejected. Only
// a server that says AUTHORIZATIONFAILED has its refusal of the mailbox
// told apart.
func TestExchangeDelegateRefusedIsMasterRejected(t *testing.T) {
	for _, tt := range []struct {
		answer string
		want   error
	}{
		{"NO LOGIN failed.", ErrMasterRejected},
		{"NO [AUTHENTICATIONFAILED] Authentication failed.", ErrMasterRejected},
		{"NO [AUTHORIZATIONFAILED] Authorization failed", ErrMailboxRefused},
		{"NO [UNAVAILABLE] Try later", ErrUnavailable},
		{"BAD what", ErrUpstreamProtocol},
	} {
		t.Run(tt.answer, func(t *testing.T) {
			su := startScripted(t, "* OK [CAPABILITY IMAP4rev1] hi", func(c *scriptedConn, line string) bool {
				c.write(tagOf(line) + " " + tt.answer)
				return true
			})
			u := &Upstream{Address: su.addr, TLS: UpstreamPlaintext,
				Master: &MasterLogin{User: "svc", Secret: NewSecret("pw"), Form: MasterExchangeDelegate, Domain: "CORP"}}
			_, err := u.LoginAs(context.Background(), "alice", ClientInfo{})
			if !errors.Is(err, tt.want) || errors.Is(err, ErrBadCredentials) {
				t.Fatalf("err = %v, want %v", err, tt.want)
			}
			if tt.want == ErrUnavailable && (errors.Is(err, ErrMasterRejected) || errors.Is(err, ErrMailboxRefused)) {
				t.Fatalf("NO [UNAVAILABLE] is an outage, not a verdict on the master: %v", err)
			}
			if u.failures.seen {
				t.Error("a master login taught the estimate of how long a wrong password takes")
			}
		})
	}
}

// TestLoginStaysPassThroughWithAMaster: with a master configured, Login
// still sends the client's own user and password, and its NO is still
// the client's bad password.
func TestLoginStaysPassThroughWithAMaster(t *testing.T) {
	su := startScripted(t, "* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN SASL-IR] hi", func(c *scriptedConn, line string) bool {
		c.write(tagOf(line) + " NO [AUTHENTICATIONFAILED] Authentication failed.")
		return true
	})
	u := &Upstream{Address: su.addr, TLS: UpstreamPlaintext,
		Master: &MasterLogin{User: testMasterUser, Secret: NewSecret(testMasterSecret)}}
	_, err := u.Login(context.Background(), "alice", "pw", ClientInfo{})
	if !errors.Is(err, ErrBadCredentials) || errors.Is(err, ErrMasterRejected) {
		t.Fatalf("err = %v, want ErrBadCredentials", err)
	}
	if got := su.lines(); len(got) != 1 || got[0] != "ig1 AUTHENTICATE PLAIN "+plainIR("alice", "pw") {
		t.Fatalf("server received %q, want the client's own credentials", got)
	}
	if !u.failures.seen {
		t.Error("the client's wrong password did not teach the estimate")
	}
}

// TestMasterSASLAuthzidNeedsAUTHPLAIN: LOGIN cannot carry an
// authorization identity: a server without AUTH=PLAIN is refused before
// the secret is sent, and login = "login" is refused by CheckMaster
// before anything is dialled.
func TestMasterSASLAuthzidNeedsAUTHPLAIN(t *testing.T) {
	su := startScripted(t, "* OK [CAPABILITY IMAP4rev1] hi", func(c *scriptedConn, line string) bool {
		c.write(tagOf(line) + " OK done")
		return true
	})
	u := &Upstream{Address: su.addr, TLS: UpstreamPlaintext, Master: &MasterLogin{User: "svc", Secret: NewSecret("pw")}}
	if _, err := u.LoginAs(context.Background(), "alice", ClientInfo{}); !errors.Is(err, ErrUpstreamProtocol) || !strings.Contains(err.Error(), "AUTH=PLAIN") {
		t.Fatalf("err = %v, want a protocol error naming AUTH=PLAIN", err)
	}
	if got := su.lines(); len(got) != 0 {
		t.Fatalf("server received %q, want nothing", got)
	}
	u.Method = LoginLogin
	if err := u.CheckMaster(); err == nil {
		t.Fatal("CheckMaster accepted sasl-authzid with login = login")
	}
	if _, err := u.LoginAs(context.Background(), "alice", ClientInfo{}); !errors.Is(err, ErrNoMaster) {
		t.Fatalf("err = %v, want ErrNoMaster", err)
	}
}

func TestMasterLoginCheck(t *testing.T) {
	s := NewSecret("pw")
	tests := []struct {
		name string
		m    *MasterLogin
		want string // "" = valid
	}{
		{"sasl-authzid by default", &MasterLogin{User: "svc", Secret: s}, ""},
		{"dovecot-login", &MasterLogin{User: "svc", Secret: s, Form: MasterDovecotLogin}, ""},
		{"exchange-delegate with domain and separator", &MasterLogin{User: "svc", Secret: s, Form: MasterExchangeDelegate, Domain: "CORP", Separator: "/"}, ""},
		{"nil", nil, "no master login"},
		{"no user", &MasterLogin{Secret: s}, "master user"},
		{"no secret", &MasterLogin{User: "svc"}, "secret is empty"},
		{"secret with a newline", &MasterLogin{User: "svc", Secret: NewSecret("pw\n")}, "NUL, CR or LF"},
		{"secret with NUL", &MasterLogin{User: "svc", Secret: NewSecret("p\x00w")}, "NUL, CR or LF"},
		{"unknown form", &MasterLogin{User: "svc", Secret: s, Form: "kerberos"}, "not one of"},
		{"separator without one", &MasterLogin{User: "svc", Secret: s, Separator: "*"}, "has no separator"},
		{"domain outside exchange", &MasterLogin{User: "svc", Secret: s, Form: MasterDovecotLogin, Domain: "CORP"}, "only used by"},
		{"user holds the separator", &MasterLogin{User: "s*vc", Secret: s, Form: MasterDovecotLogin}, "contains the separator"},
		{"domain holds the separator", &MasterLogin{User: "svc", Secret: s, Form: MasterExchangeDelegate, Domain: `CORP\EU`}, "contains the separator"},
		{"separator with a space", &MasterLogin{User: "svc", Secret: s, Form: MasterDovecotLogin, Separator: " "}, "space"},
		{"separator with a control", &MasterLogin{User: "svc", Secret: s, Form: MasterDovecotLogin, Separator: "\x00"}, "control"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			u := &Upstream{Master: tt.m}
			err := u.CheckMaster()
			if tt.want == "" && err != nil || tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)) {
				t.Fatalf("CheckMaster() = %v, want %q", err, tt.want)
			}
		})
	}
}

// TestMasterSecretNeverShows: the master secret is printed by no fmt
// verb, no slog handler and no JSON encoding, whether alone, in its
// MasterLogin or in the Upstream holding it.
func TestMasterSecretNeverShows(t *testing.T) {
	const secret = "Top-Secret-42"
	m := &MasterLogin{User: "svc", Secret: NewSecret(secret), Form: MasterDovecotLogin}
	u := &Upstream{Address: "mail.internal:143", Master: m}
	var out bytes.Buffer
	for _, v := range []any{m.Secret, *m, m} {
		for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q", "%x", "%X", "%d", "%10.3s"} {
			fmt.Fprintf(&out, verb+"\n", v)
		}
		b, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		out.Write(b)
		text, _ := m.Secret.MarshalText()
		out.Write(text)
	}
	fmt.Fprintf(&out, "%+v\n", u)
	slog.New(slog.NewJSONHandler(&out, nil)).Info("login", "master", m, "secret", m.Secret, "login", *m)
	slog.New(slog.NewTextHandler(&out, nil)).Info("login", "master", m, "secret", m.Secret, "login", *m)
	if strings.Contains(out.String(), secret) || strings.Contains(out.String(), fmt.Sprintf("%x", secret)) {
		t.Fatalf("the secret shows in:\n%s", out.String())
	}
	if !strings.Contains(out.String(), "[secret]") || m.Secret.Reveal() != secret {
		t.Fatalf("the secret is not merely hidden:\n%s", out.String())
	}
}

// FuzzMasterLoginNameSplitsBack: every mailbox LoginAs accepts gives a
// name on the wire that splits back into exactly the configured parts,
// with no NUL, CR or LF, in every form.
func FuzzMasterLoginNameSplitsBack(f *testing.F) {
	for _, s := range []string{"alice", "a*b", `a\b`, "a/b", "a\x00b", "jürgen", "a\r\nb", "**", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, mailbox string) {
		for _, m := range []MasterLogin{
			{User: "svc", Secret: NewSecret("pw")},
			{User: "svc", Secret: NewSecret("pw"), Form: MasterDovecotLogin},
			{User: "svc", Secret: NewSecret("pw"), Form: MasterExchangeDelegate, Domain: "CORP"},
			{User: "svc", Secret: NewSecret("pw"), Form: MasterExchangeDelegate, Separator: "/"},
		} {
			cred, err := m.credential(mailbox)
			if err != nil {
				if !errors.Is(err, ErrMailboxName) {
					t.Fatalf("%s: err = %v, want ErrMailboxName", m.form(), err)
				}
				continue
			}
			if strings.ContainsAny(cred.authzid+cred.authcid, "\x00\r\n") {
				t.Fatalf("%s: %q on the wire holds NUL, CR or LF", m.form(), cred)
			}
			sep := m.separator()
			var parts []string
			switch m.form() {
			case MasterSASLAuthzid:
				parts = []string{cred.authzid, cred.authcid}
			default:
				parts = strings.Split(cred.authcid, sep)
			}
			want := []string{mailbox, "svc"}
			switch {
			case m.form() == MasterExchangeDelegate && m.Domain != "":
				want = []string{"CORP", "svc", mailbox}
			case m.form() == MasterExchangeDelegate:
				want = []string{"svc", mailbox}
			}
			if strings.Join(parts, "\x00") != strings.Join(want, "\x00") || len(parts) != len(want) {
				t.Fatalf("%s: %q splits into %q, want %q", m.form(), cred.authcid, parts, want)
			}
		}
	})
}

// instantUpstream answers every login at once, so a benchmark measures
// the proxy's side of the exchange only.
func instantUpstream(b *testing.B) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { ln.Close() })
	go acceptInstant(ln)
	return ln.Addr().String()
}

func acceptInstant(ln net.Listener) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go serveInstant(c)
	}
}

func serveInstant(c net.Conn) {
	defer c.Close()
	r := bufio.NewReader(c)
	io.WriteString(c, "* OK [CAPABILITY IMAP4rev1 SASL-IR AUTH=PLAIN ID] ready\r\n")
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return
		}
		tag, cmd, _ := strings.Cut(strings.TrimRight(line, "\r\n"), " ")
		if strings.HasPrefix(cmd, "LOGOUT") {
			io.WriteString(c, "* BYE\r\n"+tag+" OK bye\r\n")
			return
		}
		io.WriteString(c, tag+" OK [CAPABILITY IMAP4rev1 IDLE MOVE] Logged in\r\n")
	}
}

// BenchmarkUpstreamLoginMaster sets a master login exchange in each form
// beside a pass-through one, against an upstream that answers at once:
// dial, greeting, AUTHENTICATE PLAIN with SASL-IR, capabilities, LOGOUT.
// Run it with BenchmarkUpstreamLogin (go-imap's memory server):
//
//	go test ./proxy/ -run '^$' -bench 'UpstreamLogin' -benchmem
func BenchmarkUpstreamLoginMaster(b *testing.B) {
	addr := instantUpstream(b)
	for _, bb := range []struct {
		name   string
		master *MasterLogin
	}{
		{"pass-through", nil},
		{"sasl-authzid", &MasterLogin{User: testMasterUser, Secret: NewSecret(testMasterSecret)}},
		{"dovecot-login", &MasterLogin{User: testMasterUser, Secret: NewSecret(testMasterSecret), Form: MasterDovecotLogin}},
		{"exchange-delegate", &MasterLogin{User: testMasterUser, Secret: NewSecret(testMasterSecret), Form: MasterExchangeDelegate, Domain: "CORP"}},
	} {
		b.Run(bb.name, func(b *testing.B) {
			u := &Upstream{Address: addr, TLS: UpstreamPlaintext, Master: bb.master}
			benchLogins(b, u, bb.master != nil)
		})
	}
}

// BenchmarkUpstreamLoginMasterDovecot is the same against the real
// Dovecot (its imap processes reused), STARTTLS included: what a login
// costs end to end, Dovecot's side with it.
func BenchmarkUpstreamLoginMasterDovecot(b *testing.B) {
	d := proxytest.StartDovecot(b, proxytest.DovecotOptions{ReuseProcesses: true, MaxSessions: 100,
		MasterUsers: map[string]string{testMasterUser: testMasterSecret}})
	tc, err := tlsconf.UpstreamConfig(tlsconf.UpstreamOptions{ServerName: "localhost", CAFile: d.CAFile})
	if err != nil {
		b.Fatal(err)
	}
	for _, bb := range []struct {
		name   string
		master *MasterLogin
	}{
		{"pass-through", nil},
		{"sasl-authzid", &MasterLogin{User: testMasterUser, Secret: NewSecret(testMasterSecret)}},
		{"dovecot-login", &MasterLogin{User: testMasterUser, Secret: NewSecret(testMasterSecret), Form: MasterDovecotLogin}},
	} {
		b.Run(bb.name, func(b *testing.B) {
			u := &Upstream{Address: d.Addr, TLS: UpstreamSTARTTLS, TLSConfig: tc, Master: bb.master}
			benchLoginsAs(b, u, bb.master != nil, "user1", d.Users["user1"])
		})
	}
}

func benchLogins(b *testing.B, u *Upstream, master bool) {
	benchLoginsAs(b, u, master, "user1", "pass1-Secret!")
}

// benchLoginsAs logs in b.N times, as master for user or with password,
// and logs out each time.
func benchLoginsAs(b *testing.B, u *Upstream, master bool, user, password string) {
	ctx := context.Background()
	ci := ClientInfo{Session: "bench"}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		var uc *UpstreamConn
		var err error
		if master {
			uc, err = u.LoginAs(ctx, user, ci)
		} else {
			uc, err = u.Login(ctx, user, password, ci)
		}
		if err != nil {
			b.Fatal(err)
		}
		uc.Conn.Write([]byte("z LOGOUT\r\n"))
		io.Copy(io.Discard, uc.Conn)
		uc.Conn.Close()
	}
}
