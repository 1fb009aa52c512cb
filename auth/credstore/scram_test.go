package credstore

import (
	"bytes"
	"context"
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/imapgate/imapgate/auth"
	authscram "github.com/imapgate/imapgate/auth/scram"
	"github.com/xdg-go/scram"
)

// scramLogin runs a whole SCRAM-SHA-256 conversation between xdg-go/scram's
// client (login, password) and its server, whose CredentialLookup is the
// store's LookupSCRAM on listener. It returns whether the server accepted
// the proof, whether the client accepted the server's signature, and the
// lookup's error.
func scramLogin(t *testing.T, s Store, login, password, listener string) (serverOK, clientOK bool, lookupErr error) {
	t.Helper()
	var found SCRAMCredential
	server, err := scram.SHA256.NewServer(func(name string) (scram.StoredCredentials, error) {
		c, err := s.LookupSCRAM(context.Background(), name, listener)
		lookupErr, found = err, c
		return c.Keys, err
	})
	if err != nil {
		t.Fatal(err)
	}
	client, err := scram.SHA256.NewClient(login, password, "")
	if err != nil {
		t.Fatal(err)
	}
	sc, cc := server.NewConversation(), client.NewConversation()
	msg, err := cc.Step("")
	for err == nil && !sc.Done() {
		if msg, err = sc.Step(msg); err != nil {
			break
		}
		if msg, err = cc.Step(msg); err != nil || cc.Done() {
			break
		}
	}
	if sc.Valid() {
		s.RecordUse(found.AppPassword.ID, testAddr)
	}
	return sc.Valid(), cc.Valid(), lookupErr
}

func TestSCRAMConversationWithTheStoredKeys(t *testing.T) {
	s := openTestStore(t, nil)
	p, secret := s.add(t, NewAppPassword{User: "alice", Label: "mbsync"})
	_, other := s.add(t, NewAppPassword{User: "alice", Label: "phone"})
	login := p.SCRAMLogin()
	for _, tc := range []struct {
		name, login, password string
		ok                    bool
		reason                string
	}{
		{"the password as printed", login, secret.Reveal(), true, ""},
		{"another of alice's passwords", login, other.Reveal(), false, ""},
		{"one symbol off", login, mistype(secret.Reveal()), false, ""},
		{"without dashes (SCRAM hashes what it is given)", login, strings.ReplaceAll(secret.Reveal(), "-", ""), false, ""},
		{"the user's plain name", "alice", secret.Reveal(), false, ReasonAppPasswordUnknown},
		{"another user with the ID", "bob#" + p.ID, secret.Reveal(), false, ReasonAppPasswordUnknown},
		{"an unknown ID", "alice#zzzzzzzz", secret.Reveal(), false, ReasonAppPasswordUnknown},
	} {
		t.Run(tc.name, func(t *testing.T) {
			serverOK, clientOK, err := scramLogin(t, s, tc.login, tc.password, "imaps")
			if serverOK != tc.ok || clientOK != tc.ok {
				t.Fatalf("server accepted %v, client accepted the server %v; want %v", serverOK, clientOK, tc.ok)
			}
			if Reason(err) != tc.reason {
				t.Fatalf("lookup: reason %q (err %v), want %q", Reason(err), err, tc.reason)
			}
		})
	}
	l, _ := s.ListAppPasswords(context.Background(), "alice")
	for _, q := range l {
		if used := q.LastAddr == testAddr; used != (q.ID == p.ID) {
			t.Errorf("%s used %v: only the SCRAM login's password was used: %+v", q.Label, used, q)
		}
	}
}

func TestSCRAMLookupRefusesRevokedExpiredAndOutOfScope(t *testing.T) {
	s := openTestStore(t, nil)
	revoked, rs := s.add(t, NewAppPassword{User: "alice", Label: "old phone"})
	if _, err := s.Revoke(context.Background(), revoked.ID); err != nil {
		t.Fatal(err)
	}
	expiring, es := s.add(t, NewAppPassword{User: "alice", Label: "contractor", Expires: s.clock.Now().Add(1)})
	scoped, ss := s.add(t, NewAppPassword{User: "alice", Label: "internal only", Scope: []string{"internal"}})
	s.clock.Advance(1)
	for _, tc := range []struct {
		name, login, password, reason string
	}{
		{"revoked", revoked.SCRAMLogin(), rs.Reveal(), ReasonAppPasswordRevoked},
		{"expired", expiring.SCRAMLogin(), es.Reveal(), ReasonAppPasswordExpired},
		{"out of scope", scoped.SCRAMLogin(), ss.Reveal(), ReasonAppPasswordScope},
	} {
		serverOK, _, err := scramLogin(t, s, tc.login, tc.password, "public")
		if serverOK || Reason(err) != tc.reason {
			t.Errorf("%s: accepted %v, reason %q (err %v); want refused, %q", tc.name, serverOK, Reason(err), err, tc.reason)
		}
	}
	if ok, _, err := scramLogin(t, s, scoped.SCRAMLogin(), ss.Reveal(), "internal"); !ok {
		t.Fatalf("scoped password on its listener: %v", err)
	}
}

func TestSCRAMKeysAreSealedAtRest(t *testing.T) {
	s := openTestStore(t, nil)
	p, _ := s.add(t, NewAppPassword{User: "alice", Label: "mbsync"})
	c, err := s.LookupSCRAM(context.Background(), p.SCRAMLogin(), "")
	if err != nil {
		t.Fatal(err)
	}
	if c.Keys.Iters != DefaultSCRAMIterations || len(c.Keys.Salt) != 16 || len(c.Keys.StoredKey) != 32 || len(c.Keys.ServerKey) != 32 {
		t.Fatalf("keys: %d iterations, %d-byte salt, %d and %d-byte keys", c.Keys.Iters, len(c.Keys.Salt), len(c.Keys.StoredKey), len(c.Keys.ServerKey))
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	db, err := os.ReadFile(s.path)
	if err != nil {
		t.Fatal(err)
	}
	for name, key := range map[string][]byte{"StoredKey": c.Keys.StoredKey, "ServerKey": c.Keys.ServerKey} {
		if bytes.Contains(db, key) || bytes.Contains(db, []byte(b64(key))) {
			t.Errorf("the database file holds the %s in clear", name)
		}
	}
}

func TestSCRAMIterationsBelowRFC7677AreRefused(t *testing.T) {
	_, err := OpenBolt(t.TempDir()+"/c.db", Options{SCRAMIterations: 1000})
	if !errors.Is(err, ErrInvalid) {
		t.Fatalf("1000 iterations: %v, want ErrInvalid", err)
	}
	s := openTestStore(t, func(o *Options) { o.SCRAMIterations = 8192 })
	p, secret := s.add(t, NewAppPassword{User: "alice", Label: "x"})
	if ok, _, err := scramLogin(t, s, p.SCRAMLogin(), secret.Reveal(), ""); !ok {
		t.Fatalf("8192 iterations: %v", err)
	}
}

// TestAnIDDrawnTwiceDerivesTheSCRAMKeysOnce: the keys (a PBKDF2 of the
// password) do not depend on the ID, only their seal does, so an ID that
// is taken costs a new seal, not a new derivation.
func TestAnIDDrawnTwiceDerivesTheSCRAMKeysOnce(t *testing.T) {
	s := openTestStore(t, nil)
	taken, _ := s.add(t, NewAppPassword{User: "alice", Label: "phone"})
	ids := []string{taken.ID, taken.ID, "k3f9x2ab"}
	s.drawID = func() string { id := ids[0]; ids = ids[1:]; return id }
	before := s.keys.derivations.Load()
	p, secret := s.add(t, NewAppPassword{User: "alice", Label: "laptop"})
	if p.ID != "k3f9x2ab" {
		t.Fatalf("ID %q, want the third drawn", p.ID)
	}
	if n := s.keys.derivations.Load() - before; n != 1 {
		t.Fatalf("%d SCRAM key derivations for one app password whose first two IDs were taken, want 1", n)
	}
	if ok, _, err := scramLogin(t, s, p.SCRAMLogin(), secret.Reveal(), "imaps"); !ok {
		t.Fatalf("SCRAM login with the password sealed under its third ID: %v", err)
	}
}

// TestTheLongestLoginNameTheStoreHandsOutLogsIn: a user name as long as
// the store takes, with its "#id", is a login name auth/scram accepts.
func TestTheLongestLoginNameTheStoreHandsOutLogsIn(t *testing.T) {
	s := openTestStore(t, nil)
	p, secret := s.add(t, NewAppPassword{User: strings.Repeat("a", MaxUserLength), Label: "phone"})
	srv, err := authscram.NewServer(func(ctx context.Context, login string) (authscram.StoredCredentials, error) {
		c, err := s.LookupSCRAM(ctx, login, "imaps")
		return c.Keys, err
	}, authscram.Options{})
	if err != nil {
		t.Fatal(err)
	}
	x, err := srv.NewExchange(authscram.SHA256, authscram.ConnState{}, authscram.ExchangeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	client, err := scram.SHA256.NewClient(p.SCRAMLogin(), secret.Reveal(), "")
	if err != nil {
		t.Fatal(err)
	}
	cc := client.NewConversation()
	msg, _ := cc.Step("")
	for !cc.Done() {
		out, _, err := x.Step(context.Background(), []byte(msg))
		if err != nil {
			t.Fatalf("a login name of %d bytes: %v", len(p.SCRAMLogin()), err)
		}
		if msg, err = cc.Step(string(out)); err != nil {
			t.Fatalf("client: %v", err)
		}
	}
	if !cc.Valid() {
		t.Fatal("the client did not accept the server's signature")
	}
}

// TestUserNamesSCRAMWouldSendOtherwiseAreRefused: a SCRAM client sends the
// login name SASLprep'd (RFC 5802 section 5.1), so an app password for a
// user name SASLprep changes or refuses could never log in with SCRAM.
func TestUserNamesSCRAMWouldSendOtherwiseAreRefused(t *testing.T) {
	s := openTestStore(t, nil)
	for _, tc := range []struct{ name, user string }{
		{"decomposed umlaut (NFKC composes it)", "mu\u0308ller"},
		{"full-width letters (NFKC maps them)", "ａlice"},
		{"a soft hyphen (mapped to nothing)", "al\u00adice"},
		{"right-to-left letters (no '#id' may follow them)", "\u05de\u05e9\u05d4"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := s.AddAppPassword(context.Background(), NewAppPassword{User: tc.user, Label: "phone"})
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("AddAppPassword(%q): %v, want ErrInvalid", tc.user, err)
			}
		})
	}
	for _, user := range []string{"alice", "müller", "alice@example.com", "DOMAIN\\alice"} {
		if _, _, err := s.AddAppPassword(context.Background(), NewAppPassword{User: user, Label: "phone"}); err != nil {
			t.Errorf("AddAppPassword(%q): %v", user, err)
		}
	}
}

// TestSCRAMKeysTellTheMechanismWhatTheStoreSaid: the auth package's view
// of the store names the credential found, and refuses with the store's
// words, except for an unknown name, which the mechanism words itself.
func TestSCRAMKeysTellTheMechanismWhatTheStoreSaid(t *testing.T) {
	s := openTestStore(t, nil)
	p, _ := s.add(t, NewAppPassword{User: "alice", Label: "phone"})
	old, _ := s.add(t, NewAppPassword{User: "alice", Label: "old phone"})
	if _, err := s.Revoke(context.Background(), old.ID); err != nil {
		t.Fatal(err)
	}
	keys := SCRAMKeys(s)
	got, user, c, err := keys.LookupSCRAM(context.Background(), p.SCRAMLogin(), "imaps")
	if err != nil || user != "alice" || c != (auth.Credential{Kind: auth.CredentialAppPassword, ID: p.ID, Label: "phone"}) || got.Iters != DefaultSCRAMIterations {
		t.Fatalf("LookupSCRAM = %d iterations, %q, %+v, %v", got.Iters, user, c, err)
	}
	for _, tc := range []struct {
		login, reason string
		cred          auth.Credential
	}{
		{old.SCRAMLogin(), ReasonAppPasswordRevoked, auth.Credential{Kind: auth.CredentialAppPassword, ID: old.ID, Label: "old phone"}},
		{"alice#zzzzzzzz", "", auth.Credential{}},
	} {
		_, _, _, err := keys.LookupSCRAM(context.Background(), tc.login, "imaps")
		var r *auth.Refusal
		if !errors.As(err, &r) || r.Reason != tc.reason || r.Credential != tc.cred {
			t.Errorf("%s: %v (%+v), want a refusal %q naming %+v", tc.login, err, r, tc.reason, tc.cred)
		}
	}
}
