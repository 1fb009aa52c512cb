package proxy

import (
	"context"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/imapgate/imapgate/auth/credstore"
	"github.com/imapgate/imapgate/policy"
	"github.com/imapgate/imapgate/proxy/proxytest"
)

// testClock is a settable clock for the credential store.
type testClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *testClock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *testClock) add(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

// openTestStore opens a credential store in a fresh directory.
func openTestStore(t testing.TB, clock *testClock) *credstore.Bolt {
	t.Helper()
	s, err := credstore.OpenBolt(filepath.Join(t.TempDir(), "credentials.db"), credstore.Options{Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// addAppPassword adds an app password and returns it as printed.
func addAppPassword(t testing.TB, s credstore.Store, req credstore.NewAppPassword) (credstore.AppPassword, string) {
	t.Helper()
	p, secret, err := s.AddAppPassword(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	return p, secret.Reveal()
}

// startAppPasswordProxy is a proxy in front of d with the store, logging
// in as d's master user with secret, the client's address forwarded by ID.
func startAppPasswordProxy(t *testing.T, d *proxytest.Dovecot, store credstore.Store, secret string, mod func(*Config)) *testProxy {
	t.Helper()
	return startProxyTo(t, d.Addr, UpstreamSTARTTLS, dovecotTLS(d), func(c *Config) {
		c.Upstream.Forward = ForwardID
		c.Upstream.Master = &MasterLogin{User: testMasterUser, Secret: NewSecret(secret)}
		c.AppPasswords = store
		c.Policy = policy.NewGuard(nil, attackBudgets, nil)
		if mod != nil {
			mod(c)
		}
	}, nil)
}

// lastAuth returns the last auth event written.
func lastAuth(t *testing.T, tp *testProxy) Event {
	t.Helper()
	var last Event
	for _, e := range tp.audit.events(t) {
		if e.Event == EventAuth {
			last = e
		}
	}
	return last
}

// TestAppPasswordLandsInItsOwnINBOXAndRevokedOrExpiredNeverReachesDovecot:
// user1 logs in through imapgate with an app password (AUTHENTICATE PLAIN
// with SASL-IR); imapgate logs in to the real Dovecot as its master user
// and the client sees user1's three messages. The auth event names the
// credential, never the secret; Dovecot's log shows the master login and
// neither the app password nor the master secret. Revoked, the password
// fails with app_password_revoked, and expired with app_password_expired,
// and neither reaches Dovecot.
func TestAppPasswordLandsInItsOwnINBOXAndRevokedOrExpiredNeverReachesDovecot(t *testing.T) {
	d := masterDovecot(t, proxytest.DovecotOptions{})
	clock := &testClock{now: time.Now()}
	store := openTestStore(t, clock)
	tp := startAppPasswordProxy(t, d, store, testMasterSecret, nil)
	phoneP, phonePass := addAppPassword(t, store, credstore.NewAppPassword{User: "user1", Label: "phone"})
	_, tabletPass := addAppPassword(t, store, credstore.NewAppPassword{User: "user1", Label: "tablet", Expires: clock.Now().Add(time.Hour)})

	c := tp.dialImplicit(t)
	c.send("a AUTHENTICATE PLAIN " + saslPlain("user1", phonePass))
	c.expect("a OK")
	c.send("b SELECT INBOX")
	c.expect("* 3 EXISTS")
	c.expect("b OK")
	c.send("c LOGOUT")
	c.expect("c OK")
	ev := lastAuth(t, tp)
	if ev.Result != ResultSuccess || ev.User != "user1" || ev.Credential != CredentialAppPassword || ev.CredentialID != phoneP.ID || ev.CredentialLabel != "phone" {
		t.Errorf("auth event %+v; want a success of user1 with app_password %s labelled phone", ev, phoneP.ID)
	}
	got := d.WaitAuthAttempts(t, func(c proxytest.AuthCounts) bool {
		return c.MasterLogins[proxytest.MasterUse{Master: testMasterUser, User: "user1"}] == 1
	})
	if got.Failure != 0 {
		t.Errorf("Dovecot logged %d failures, want none", got.Failure)
	}

	if _, err := store.Revoke(context.Background(), phoneP.ID); err != nil {
		t.Fatal(err)
	}
	clock.add(2 * time.Hour)
	for _, tc := range []struct{ pass, reason string }{
		{phonePass, credstore.ReasonAppPasswordRevoked},
		{tabletPass, credstore.ReasonAppPasswordExpired},
	} {
		c := tp.dialImplicit(t)
		c.send("a AUTHENTICATE PLAIN " + saslPlain("user1", tc.pass))
		c.expect("a NO [AUTHENTICATIONFAILED]")
		if ev := lastAuth(t, tp); ev.Result != ResultFailure || ev.Reason != tc.reason || ev.Credential != CredentialAppPassword || ev.CredentialID == "" {
			t.Errorf("auth event %+v; want failure %s naming the credential", ev, tc.reason)
		}
	}
	if now := d.AuthAttempts(); now.Success != got.Success || now.Failure != 0 {
		t.Errorf("Dovecot saw %+v after the refused passwords, before %+v: they reached it", now, got)
	}
	assertNoMasterSecret(t, d, testMasterSecret)
	for _, secret := range []string{phonePass, tabletPass, strings.ReplaceAll(phonePass, "-", "")} {
		if d.LogContains(secret) {
			t.Errorf("Dovecot's log holds an app password")
		}
		if strings.Contains(tp.audit.String(), secret) {
			t.Errorf("the audit log holds an app password")
		}
	}
}

// TestPassthroughOffRefusesTheRealPasswordWhileTheAppPasswordWorks:
// with auth.passthrough = false, user1's real password is refused with
// passthrough_disabled and NO [AUTHENTICATIONFAILED], and never reaches
// Dovecot; the app password logs in.
func TestPassthroughOffRefusesTheRealPasswordWhileTheAppPasswordWorks(t *testing.T) {
	d := masterDovecot(t, proxytest.DovecotOptions{})
	store := openTestStore(t, &testClock{now: time.Now()})
	tp := startAppPasswordProxy(t, d, store, testMasterSecret, func(c *Config) { c.RefusePassThrough = true })
	_, pass := addAppPassword(t, store, credstore.NewAppPassword{User: "user1", Label: "phone"})

	c := tp.dialImplicit(t)
	c.send("a AUTHENTICATE PLAIN " + saslPlain("user1", proxytest.DefaultUsers()["user1"]))
	c.expect("a NO [AUTHENTICATIONFAILED]")
	if ev := lastAuth(t, tp); ev.Result != ResultFailure || ev.Reason != ReasonPassthroughDisabled {
		t.Errorf("real password: auth event %+v, want failure passthrough_disabled", ev)
	}
	c.send("b AUTHENTICATE PLAIN " + saslPlain("user1", pass))
	c.expect("b OK")
	got := d.WaitAuthAttempts(t, func(c proxytest.AuthCounts) bool { return c.Success == 1 })
	if got.Failure != 0 || got.ByUser["user1"] != 1 {
		t.Errorf("Dovecot saw %+v; want only the master login for user1", got)
	}
}

// TestLoginCommandTakesOnlyAppPasswords: with login_command =
// "app-passwords", LOGIN over TLS works with an app password and refuses
// the real password (passthrough_disabled), which never reaches Dovecot,
// while AUTHENTICATE PLAIN still passes the real password through.
func TestLoginCommandTakesOnlyAppPasswords(t *testing.T) {
	d := masterDovecot(t, proxytest.DovecotOptions{})
	store := openTestStore(t, &testClock{now: time.Now()})
	tp := startAppPasswordProxy(t, d, store, testMasterSecret, func(c *Config) { c.LoginAppPasswordsOnly = true })
	_, pass := addAppPassword(t, store, credstore.NewAppPassword{User: "user1", Label: "scanner"})
	real := proxytest.DefaultUsers()["user1"]

	c := tp.dialImplicit(t)
	c.send("a LOGIN user1 " + quoteIMAP(real))
	c.expect("a NO [AUTHENTICATIONFAILED]")
	if ev := lastAuth(t, tp); ev.Mechanism != mechanismLogin || ev.Reason != ReasonPassthroughDisabled {
		t.Errorf("LOGIN with the real password: auth event %+v, want passthrough_disabled", ev)
	}
	c.send("b LOGIN user1 " + quoteIMAP(pass))
	c.expect("b OK")
	if ev := lastAuth(t, tp); ev.Result != ResultSuccess || ev.CredentialLabel != "scanner" {
		t.Errorf("LOGIN with the app password: auth event %+v, want success with label scanner", ev)
	}
	c2 := tp.dialImplicit(t)
	c2.send("a AUTHENTICATE PLAIN " + saslPlain("user1", real))
	c2.expect("a OK")
	got := d.WaitAuthAttempts(t, func(c proxytest.AuthCounts) bool { return c.Success == 2 })
	if got.Failure != 0 || got.MasterLogins[proxytest.MasterUse{Master: testMasterUser, User: "user1"}] != 1 {
		t.Errorf("Dovecot saw %+v; want one master login and one pass-through, no failure", got)
	}
}

func quoteIMAP(s string) string { return `"` + s + `"` }

// TestWrongMasterSecretIsUnavailableAndCountsNothing: with a master
// secret Dovecot rejects, a valid app password is answered NO
// [UNAVAILABLE], audited as error master_login_failed with an
// operational warning, and not counted: more such attempts than
// MaxAuthFailures and than the user's budget leave the connection open
// and the user unlocked.
func TestWrongMasterSecretIsUnavailableAndCountsNothing(t *testing.T) {
	d := masterDovecot(t, proxytest.DovecotOptions{})
	store := openTestStore(t, &testClock{now: time.Now()})
	var oplog syncBuffer
	tp := startAppPasswordProxy(t, d, store, "Not-The-Master-Secret", func(c *Config) {
		c.Policy = policy.NewGuard(nil, policy.Budgets{PerIP: 10, PerNetwork: 50, PerUser: 2, PerDevice: 2, Window: time.Hour, Delay: time.Millisecond}, nil)
		c.Log = slog.New(slog.NewTextHandler(&oplog, nil))
	})
	_, pass := addAppPassword(t, store, credstore.NewAppPassword{User: "user1", Label: "phone"})

	c := tp.dialImplicit(t)
	for i := range 4 {
		tag := string(rune('a' + i))
		c.send(tag + " AUTHENTICATE PLAIN " + saslPlain("user1", pass))
		c.expect(tag + " NO [UNAVAILABLE]")
		if ev := lastAuth(t, tp); ev.Result != ResultError || ev.Reason != ReasonMasterLoginFailed {
			t.Fatalf("attempt %d: auth event %+v, want error master_login_failed", i, ev)
		}
	}
	if !strings.Contains(oplog.String(), "master login failed") {
		t.Errorf("no operational warning; log: %s", oplog.String())
	}
	if strings.Contains(oplog.String(), "Not-The-Master-Secret") || strings.Contains(oplog.String(), pass) {
		t.Errorf("the operational log holds a secret")
	}
	c.send("z NOOP")
	c.expect("z OK")
}

// TestBruteForceAgainstAppPasswordsIsHeldToTheBudget: guesses of app
// passwords (passthrough off, so none reaches Dovecot) spend the user's
// budget of 2 like wrong passwords: the third is refused as locked, and
// then even the right app password is, until the window passes.
func TestBruteForceAgainstAppPasswordsIsHeldToTheBudget(t *testing.T) {
	d := masterDovecot(t, proxytest.DovecotOptions{})
	store := openTestStore(t, &testClock{now: time.Now()})
	tp := startAppPasswordProxy(t, d, store, testMasterSecret, func(c *Config) {
		c.RefusePassThrough = true
		c.MaxAuthFailures = 10
		c.Policy = policy.NewGuard(nil, policy.Budgets{PerIP: 10, PerNetwork: 50, PerUser: 2, PerDevice: 2, Window: time.Hour, Delay: time.Millisecond}, nil)
	})
	_, pass := addAppPassword(t, store, credstore.NewAppPassword{User: "user1", Label: "phone"})

	c := tp.dialImplicit(t)
	var reasons []string
	for i, guess := range []string{"aaaa-bbbb-cccc-dddd-eeee-ffff-gggg", "hhhh-iiii-jjjj-kkkk-mmmm-nnnn-pppp", "qqqq-rrrr-ssss-tttt-uuuu-vvvv-wwww", pass} {
		tag := string(rune('a' + i))
		c.send(tag + " AUTHENTICATE PLAIN " + saslPlain("user1", guess))
		c.expect(tag + " NO [AUTHENTICATIONFAILED]")
		reasons = append(reasons, lastAuth(t, tp).Reason)
	}
	if reasons[0] != ReasonPassthroughDisabled || reasons[1] != ReasonPassthroughDisabled ||
		reasons[2] == ReasonPassthroughDisabled || reasons[3] == ReasonPassthroughDisabled {
		t.Errorf("reasons %q; want two guesses judged, then the budget refusing the rest (the right password too)", reasons)
	}
	if got := d.AuthAttempts(); got.Success+got.Failure != 0 {
		t.Errorf("Dovecot saw %+v; want nothing", got)
	}
}

// TestEndCredentialCutsOffTheRevokedDeviceOnly: two devices of user1 in
// IDLE through the master login; ending the phone's credential closes the
// phone's session within a second (session_end credential_revoked) and
// leaves the tablet's relaying.
func TestEndCredentialCutsOffTheRevokedDeviceOnly(t *testing.T) {
	d := masterDovecot(t, proxytest.DovecotOptions{})
	store := openTestStore(t, &testClock{now: time.Now()})
	tp := startAppPasswordProxy(t, d, store, testMasterSecret, nil)
	phoneP, phonePass := addAppPassword(t, store, credstore.NewAppPassword{User: "user1", Label: "phone"})
	_, tabletPass := addAppPassword(t, store, credstore.NewAppPassword{User: "user1", Label: "tablet"})
	idle := func(pass string) *textClient {
		c := tp.dialImplicit(t)
		c.send("a AUTHENTICATE PLAIN " + saslPlain("user1", pass))
		c.expect("a OK")
		c.send("b SELECT INBOX")
		c.expect("b OK")
		c.send("c IDLE")
		c.expect("+ ")
		return c
	}
	phone, tablet := idle(phonePass), idle(tabletPass)

	start := time.Now()
	if n := tp.srv.EndCredential(phoneP.ID); n != 1 {
		t.Fatalf("EndCredential ended %d sessions, want the phone's", n)
	}
	phone.expectClosed()
	if took := time.Since(start); took > time.Second {
		t.Errorf("the phone's session ended after %v, want within a second", took)
	}
	tablet.send("DONE")
	tablet.expect("c OK")
	// The phone saw its connection close before session_end was written.
	waitFor(t, func() bool { return tp.srv.Sessions() == 1 })
	ended := 0
	for _, e := range tp.audit.events(t) {
		if e.Event == EventSessionEnd && e.Reason == endCredentialRevoked {
			ended++
		}
	}
	if ended != 1 {
		t.Errorf("%d session_end events with credential_revoked, want 1", ended)
	}
}
