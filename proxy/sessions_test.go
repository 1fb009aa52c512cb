package proxy

import (
	"testing"
	"time"

	"github.com/imapgate/imapgate/auth/credstore"
	"github.com/imapgate/imapgate/proxy/proxytest"
)

// TestSessionsListWhoIsConnectedAndKickEndsThem: user1's phone (an app
// password) and user2 (its own password, passed through) are in IDLE at
// the real Dovecot, and a third client has not logged in. The list shows
// the two logged-in sessions with their credential, listener, upstream
// and bytes, and never the pre-auth one. Kicking the phone's credential
// ends it within a second (session_end kicked); kicking user2 ends
// user2's; the pre-auth client is untouched.
func TestSessionsListWhoIsConnectedAndKickEndsThem(t *testing.T) {
	d := masterDovecot(t, proxytest.DovecotOptions{})
	store := openTestStore(t, &testClock{now: time.Now()})
	tp := startAppPasswordProxy(t, d, store, testMasterSecret, nil)
	phoneP, phonePass := addAppPassword(t, store, credstore.NewAppPassword{User: "user1", Label: "phone"})
	idle := func(user, pass string) *textClient {
		c := tp.dialImplicit(t)
		c.send("a AUTHENTICATE PLAIN " + saslPlain(user, pass))
		c.expect("a OK")
		c.send("b SELECT INBOX")
		c.expect("b OK")
		c.send("c IDLE")
		c.expect("+ ")
		return c
	}
	before := time.Now()
	phone := idle("user1", phonePass)
	user2 := idle("user2", proxytest.DefaultUsers()["user2"])
	waiting := tp.dialImplicit(t)

	list := tp.srv.ListSessions()
	if len(list) != 2 {
		t.Fatalf("ListSessions = %+v, want the two logged-in sessions", list)
	}
	p, u := list[0], list[1]
	if p.User != "user1" || p.Mechanism != "PLAIN" || p.Credential != CredentialAppPassword || p.CredentialID != phoneP.ID || p.CredentialLabel != "phone" {
		t.Errorf("phone's session %+v, want user1 with app password %s labelled phone", p, phoneP.ID)
	}
	if u.User != "user2" || u.Credential != "" || u.CredentialID != "" {
		t.Errorf("user2's session %+v, want its own password (no credential)", u)
	}
	for _, si := range list {
		if si.Listener != string(TLSImplicit) || si.Upstream != d.Addr || !si.Client.Addr().IsLoopback() ||
			si.Since.Before(before) || si.BytesIn == 0 || si.BytesOut == 0 || si.Session == "" {
			t.Errorf("session %+v: want listener, upstream, client, since, session id and bytes of the SELECT and IDLE", si)
		}
	}

	start := time.Now()
	if n := tp.srv.KickCredential(phoneP.ID); n != 1 {
		t.Fatalf("KickCredential ended %d sessions, want the phone's", n)
	}
	phone.expectClosed()
	if took := time.Since(start); took > time.Second {
		t.Errorf("the phone's session ended after %v, want within a second", took)
	}
	if n := tp.srv.Kick("USER2"); n != 1 {
		t.Fatalf("Kick(USER2) ended %d sessions, want user2's", n)
	}
	user2.expectClosed()
	// The client sees its connection close before the session is done
	// (session_end written, the session gone from the list).
	waitFor(t, func() bool { return len(tp.srv.ListSessions()) == 0 })
	if n := tp.srv.Kick("user1"); n != 0 {
		t.Errorf("Kick(user1) after its only session ended: %d", n)
	}
	waiting.send("z NOOP")
	waiting.expect("z OK")
	kicked := 0
	for _, e := range tp.audit.events(t) {
		if e.Event == EventSessionEnd && e.Reason == endKicked {
			kicked++
		}
	}
	if kicked != 2 {
		t.Errorf("%d session_end events with reason kicked, want 2", kicked)
	}
}
