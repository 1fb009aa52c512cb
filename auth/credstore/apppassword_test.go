package credstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestAppPasswordOpensOnlyItsOwnUsersMailbox(t *testing.T) {
	s := openTestStore(t, nil)
	phone, secret := s.add(t, NewAppPassword{User: "alice", Label: "phone"})
	_, other := s.add(t, NewAppPassword{User: "bob", Label: "phone"})
	typed := secret.Reveal()
	for _, tc := range []struct {
		name, user, password string
		reason               string // "" for success
	}{
		{"as printed", "alice", typed, ""},
		{"typed in capitals without dashes", "alice", strings.ToUpper(strings.ReplaceAll(typed, "-", "")), ""},
		{"typed with spaces", "alice", strings.ReplaceAll(typed, "-", " "), ""},
		{"by another user", "bob", typed, ReasonAppPasswordUnknown},
		{"with a user name in another case", "Alice", typed, ReasonAppPasswordUnknown},
		{"another user's password", "alice", other.Reveal(), ReasonAppPasswordUnknown},
		{"a guess", "alice", formatSecret(canonicalExample), ReasonAppPasswordUnknown},
		{"the user's real password", "alice", "Winter2026!", ReasonAppPasswordUnknown},
		{"one symbol off", "alice", mistype(typed), ReasonAppPasswordUnknown},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := s.verify(tc.user, tc.password, "imaps")
			if got := Reason(err); got != tc.reason {
				t.Fatalf("Verify: reason %q (err %v), want %q", got, err, tc.reason)
			}
			if tc.reason == "" && (p.ID != phone.ID || p.User != "alice" || p.Label != "phone") {
				t.Fatalf("Verify returned %+v, want alice's phone %s", p, phone.ID)
			}
			if tc.reason != "" {
				if !errors.Is(err, ErrUnknown) {
					t.Fatalf("err %v does not wrap ErrUnknown", err)
				}
				var ce *CredentialError
				if errors.As(err, &ce); ce.ID != "" || ce.Label != "" {
					t.Fatalf("an unknown password names a credential: %+v", ce)
				}
			}
		})
	}
}

func TestOneLoginAttemptCostsOneHashHoweverManyPasswordsTheUserHas(t *testing.T) {
	s := openTestStore(t, nil)
	s.fill(t, "alice", 999)
	_, last := s.add(t, NewAppPassword{User: "alice", Label: "the last one"})
	for _, tc := range []struct {
		name, password string
		hashes         int64
	}{
		{"the right password", last.Reveal(), 1},
		{"a wrong password of the right form", formatSecret(canonicalExample), 1},
		{"a string that is no app password", "Winter2026!", 0},
	} {
		before := s.keys.digests.Load()
		s.verify("alice", tc.password, "")
		if got := s.keys.digests.Load() - before; got != tc.hashes {
			t.Errorf("%s: %d hashes, want %d", tc.name, got, tc.hashes)
		}
	}
}

func TestExpiredAppPasswordFailsWithItsReason(t *testing.T) {
	s := openTestStore(t, nil)
	p, secret := s.add(t, NewAppPassword{User: "alice", Label: "laptop", Expires: s.clock.Now().Add(24 * time.Hour)})
	if _, err := s.verify("alice", secret.Reveal(), ""); err != nil {
		t.Fatalf("before expiry: %v", err)
	}
	s.clock.Advance(24 * time.Hour)
	_, err := s.verify("alice", secret.Reveal(), "")
	if !errors.Is(err, ErrExpired) || Reason(err) != ReasonAppPasswordExpired {
		t.Fatalf("at expiry: err %v reason %q, want ErrExpired, %q", err, Reason(err), ReasonAppPasswordExpired)
	}
	var ce *CredentialError
	if !errors.As(err, &ce) || ce.ID != p.ID || ce.Label != "laptop" || ce.User != "alice" {
		t.Fatalf("the error does not name the credential for the audit: %v", err)
	}
	// An expired password of someone else is just unknown.
	if _, err := s.verify("bob", secret.Reveal(), ""); Reason(err) != ReasonAppPasswordUnknown {
		t.Fatalf("expired, other user: reason %q, want %q", Reason(err), ReasonAppPasswordUnknown)
	}
}

func TestScopedAppPasswordWorksOnlyOnItsListeners(t *testing.T) {
	s := openTestStore(t, nil)
	p, scoped := s.add(t, NewAppPassword{User: "alice", Label: "scanner", Scope: []string{"internal", "imaps", "internal"}})
	if want := []string{"imaps", "internal"}; !slices.Equal(p.Scope, want) {
		t.Fatalf("scope %q, want %q (sorted, no duplicates)", p.Scope, want)
	}
	_, anywhere := s.add(t, NewAppPassword{User: "alice", Label: "phone"})
	for _, tc := range []struct {
		name     string
		secret   Secret
		listener string
		reason   string
	}{
		{"scoped, on its listener", scoped, "internal", ""},
		{"scoped, on its other listener", scoped, "imaps", ""},
		{"scoped, elsewhere", scoped, "public", ReasonAppPasswordScope},
		{"scoped, no listener named", scoped, "", ReasonAppPasswordScope},
		{"unscoped, anywhere", anywhere, "public", ""},
	} {
		_, err := s.verify("alice", tc.secret.Reveal(), tc.listener)
		if Reason(err) != tc.reason {
			t.Errorf("%s: reason %q (err %v), want %q", tc.name, Reason(err), err, tc.reason)
		}
		if tc.reason == ReasonAppPasswordScope && !errors.Is(err, ErrScope) {
			t.Errorf("%s: %v does not wrap ErrScope", tc.name, err)
		}
	}
}

func TestAddRefusesBadRequests(t *testing.T) {
	s := openTestStore(t, nil)
	s.add(t, NewAppPassword{User: "alice", Label: "phone"})
	now := s.clock.Now()
	for _, tc := range []struct {
		name string
		req  NewAppPassword
		want error
	}{
		{"no user", NewAppPassword{Label: "phone"}, ErrInvalid},
		{"no label", NewAppPassword{User: "alice"}, ErrInvalid},
		{"label with a newline", NewAppPassword{User: "alice", Label: "phone\nauth ok"}, ErrInvalid},
		{"user with a NUL", NewAppPassword{User: "alice\x00bob", Label: "x"}, ErrInvalid},
		{"label with a bidi override", NewAppPassword{User: "alice", Label: "\u202ephone"}, ErrInvalid},
		{"label with a trailing space", NewAppPassword{User: "alice", Label: "phone "}, ErrInvalid},
		{"label too long", NewAppPassword{User: "alice", Label: strings.Repeat("x", MaxLabelLength+1)}, ErrInvalid},
		{"expiry in the past", NewAppPassword{User: "alice", Label: "old", Expires: now.Add(-time.Second)}, ErrInvalid},
		{"expiry now", NewAppPassword{User: "alice", Label: "old", Expires: now}, ErrInvalid},
		{"empty listener in scope", NewAppPassword{User: "alice", Label: "x", Scope: []string{""}}, ErrInvalid},
		{"label taken", NewAppPassword{User: "alice", Label: "phone"}, ErrLabelTaken},
	} {
		_, _, err := s.AddAppPassword(context.Background(), tc.req)
		if !errors.Is(err, tc.want) {
			t.Errorf("%s: err %v, want %v", tc.name, err, tc.want)
		}
	}
	// The same label for another user, and a label with spaces and
	// another script inside, are fine.
	s.add(t, NewAppPassword{User: "bob", Label: "phone"})
	s.add(t, NewAppPassword{User: "alice", Label: "Téléphone de Zoë"})
}

func TestConcurrentAddsWithOneLabelGiveOnePassword(t *testing.T) {
	s := openTestStore(t, nil)
	var wg sync.WaitGroup
	errs := make([]error, 8)
	for i := range errs {
		wg.Go(func() {
			_, _, errs[i] = s.AddAppPassword(context.Background(), NewAppPassword{User: "alice", Label: "phone"})
		})
	}
	wg.Wait()
	ok, taken := 0, 0
	for _, err := range errs {
		switch {
		case err == nil:
			ok++
		case errors.Is(err, ErrLabelTaken):
			taken++
		default:
			t.Errorf("add: %v", err)
		}
	}
	if ok != 1 || taken != len(errs)-1 {
		t.Fatalf("%d added, %d ErrLabelTaken; want 1 and %d", ok, taken, len(errs)-1)
	}
}

func TestLostPhoneIsAuditedAsRevokedUntilItsTombstoneExpires(t *testing.T) {
	var told []Revoked
	s := openTestStore(t, func(o *Options) { o.OnRevoke = func(r Revoked) { told = append(told, r) } })
	phone, secret := s.add(t, NewAppPassword{User: "alice", Label: "phone"})
	_, laptop := s.add(t, NewAppPassword{User: "alice", Label: "laptop"})

	rv, err := s.Revoke(context.Background(), phone.ID)
	if err != nil {
		t.Fatalf("Revoke: %v", err)
	}
	want := Revoked{Kind: KindAppPassword, ID: phone.ID, User: "alice", Label: "phone", At: s.clock.Now()}
	if rv != want || len(told) != 1 || told[0] != want {
		t.Fatalf("Revoke returned %+v and told %+v, want %+v once", rv, told, want)
	}

	// The phone keeps trying: the audit can name it.
	_, err = s.verify("alice", secret.Reveal(), "")
	var ce *CredentialError
	if !errors.Is(err, ErrRevoked) || Reason(err) != ReasonAppPasswordRevoked || !errors.As(err, &ce) || ce.ID != phone.ID || ce.Label != "phone" {
		t.Fatalf("revoked password: err %v reason %q, want ErrRevoked naming %s", err, Reason(err), phone.ID)
	}
	// Under another user name it tells nothing.
	if _, err := s.verify("bob", secret.Reveal(), ""); Reason(err) != ReasonAppPasswordUnknown {
		t.Fatalf("revoked password, other user: reason %q, want %q", Reason(err), ReasonAppPasswordUnknown)
	}
	// The laptop is untouched, the label is free again, and the list no
	// longer shows the phone.
	if _, err := s.verify("alice", laptop.Reveal(), ""); err != nil {
		t.Fatalf("the other password: %v", err)
	}
	if l, _ := s.ListAppPasswords(context.Background(), "alice"); len(l) != 1 || l[0].Label != "laptop" {
		t.Fatalf("list after revoke: %+v, want the laptop only", l)
	}
	newPhone, _ := s.add(t, NewAppPassword{User: "alice", Label: "phone"})
	if newPhone.ID == phone.ID {
		t.Fatal("a new password reused the revoked ID")
	}
	// Revoking again says so.
	if _, err := s.Revoke(context.Background(), phone.ID); !errors.Is(err, ErrRevoked) {
		t.Fatalf("second Revoke: %v, want ErrRevoked", err)
	}

	// After TombstoneFor, a reopened store has forgotten it.
	s.clock.Advance(DefaultTombstoneFor - time.Minute)
	if err := s.purgeTombstones(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.verify("alice", secret.Reveal(), ""); !errors.Is(err, ErrRevoked) {
		t.Fatalf("a minute before the tombstone expires: %v, want ErrRevoked", err)
	}
	s.Close()
	s.clock.Advance(time.Minute)
	s = reopenTestStore(t, s.path, s.clock, nil)
	if _, err := s.verify("alice", secret.Reveal(), ""); Reason(err) != ReasonAppPasswordUnknown {
		t.Fatalf("after the tombstone expired: reason %q (err %v), want %q", Reason(err), err, ReasonAppPasswordUnknown)
	}
	if _, err := s.Revoke(context.Background(), phone.ID); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Revoke of a forgotten ID: %v, want ErrNotFound", err)
	}
}

func TestRevokeByUserAndLabel(t *testing.T) {
	s := openTestStore(t, nil)
	_, alicePhone := s.add(t, NewAppPassword{User: "alice", Label: "phone"})
	_, bobPhone := s.add(t, NewAppPassword{User: "bob", Label: "phone"})
	if _, err := s.RevokeLabel(context.Background(), KindAppPassword, "alice", "tablet"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("RevokeLabel of a label alice does not have: %v, want ErrNotFound", err)
	}
	if _, err := s.RevokeLabel(context.Background(), KindClientCert, "alice", "phone"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("RevokeLabel of the wrong kind: %v, want ErrNotFound", err)
	}
	if _, err := s.RevokeLabel(context.Background(), KindAppPassword, "alice", "phone"); err != nil {
		t.Fatalf("RevokeLabel: %v", err)
	}
	if _, err := s.verify("alice", alicePhone.Reveal(), ""); !errors.Is(err, ErrRevoked) {
		t.Fatalf("alice's phone: %v, want ErrRevoked", err)
	}
	if _, err := s.verify("bob", bobPhone.Reveal(), ""); err != nil {
		t.Fatalf("bob's phone, same label: %v", err)
	}
	if _, err := s.Revoke(context.Background(), "zzzzzzzz"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Revoke of an unknown ID: %v, want ErrNotFound", err)
	}
}

func TestListShowsMetadataOnly(t *testing.T) {
	s := openTestStore(t, nil)
	expires := s.clock.Now().Add(30 * 24 * time.Hour)
	a1, s1 := s.add(t, NewAppPassword{User: "alice", Label: "phone", Expires: expires})
	s.clock.Advance(time.Second)
	a2, s2 := s.add(t, NewAppPassword{User: "alice", Label: "laptop", Scope: []string{"imaps"}})
	b1, s3 := s.add(t, NewAppPassword{User: "bob", Label: "phone"})
	if a1.SCRAMLogin() != "alice#"+a1.ID {
		t.Fatalf("SCRAMLogin() = %q", a1.SCRAMLogin())
	}

	alice, err := s.ListAppPasswords(context.Background(), "alice")
	if err != nil {
		t.Fatal(err)
	}
	if len(alice) != 2 || alice[0].ID != a1.ID || alice[1].ID != a2.ID {
		t.Fatalf("alice's list: %+v, want %s then %s (creation order)", alice, a1.ID, a2.ID)
	}
	if !alice[0].Expires.Equal(expires) || !alice[0].Created.Equal(a1.Created) || !slices.Equal(alice[1].Scope, []string{"imaps"}) {
		t.Fatalf("alice's list lost metadata: %+v", alice)
	}
	all, err := s.ListAppPasswords(context.Background(), "")
	if err != nil {
		t.Fatal(err)
	}
	if len(all) != 3 || all[2].ID != b1.ID {
		t.Fatalf("full list: %+v, want alice's two then bob's", all)
	}
	if l, _ := s.ListAppPasswords(context.Background(), "ali"); len(l) != 0 {
		t.Fatalf("a user name prefix lists %+v", l)
	}

	// Nothing secret or derived from a secret in what a list gives.
	js, err := json.Marshal(all)
	if err != nil {
		t.Fatal(err)
	}
	for _, secret := range []Secret{s1, s2, s3} {
		canonical, _ := NormalizeAppPassword(secret.Reveal())
		for _, leak := range []string{secret.Reveal(), canonical, fmt.Sprintf("%x", s.keys.digest(canonical))} {
			if strings.Contains(string(js)+fmt.Sprintf("%+v", all), leak) {
				t.Fatalf("the list shows %q", leak)
			}
		}
	}
}

func TestRevokedWhileLoggingInIsSeenByTheNextLogin(t *testing.T) {
	s := openTestStore(t, nil)
	p, secret := s.add(t, NewAppPassword{User: "alice", Label: "phone"})
	revoked := make(chan struct{})
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for {
				select {
				case <-revoked:
					// Every login that starts after Revoke returned fails.
					if _, err := s.verify("alice", secret.Reveal(), ""); !errors.Is(err, ErrRevoked) {
						t.Errorf("login after revoke: %v", err)
					}
					return
				default:
					s.verify("alice", secret.Reveal(), "")
				}
			}
		})
	}
	if _, err := s.Revoke(context.Background(), p.ID); err != nil {
		t.Fatal(err)
	}
	close(revoked)
	wg.Wait()
}

func TestClosedStoreRefusesAndCloseIsIdempotent(t *testing.T) {
	s := openTestStore(t, nil)
	_, secret := s.add(t, NewAppPassword{User: "alice", Label: "phone"})
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, err := s.verify("alice", secret.Reveal(), ""); !errors.Is(err, ErrClosed) {
		t.Fatalf("Verify after Close: %v, want ErrClosed", err)
	}
	if _, _, err := s.AddAppPassword(context.Background(), NewAppPassword{User: "a", Label: "b"}); !errors.Is(err, ErrClosed) {
		t.Fatalf("Add after Close: %v, want ErrClosed", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	s2 := openTestStore(t, nil)
	if _, err := s2.VerifyAppPassword(ctx, AppPasswordAttempt{User: "a", Password: secret.Reveal(), Addr: netip.IPv6Loopback()}); !errors.Is(err, context.Canceled) {
		t.Fatalf("Verify with a cancelled context: %v", err)
	}
}

// mistype changes the last symbol of a password.
func mistype(typed string) string {
	last := "a"
	if strings.HasSuffix(typed, last) {
		last = "b"
	}
	return typed[:len(typed)-1] + last
}
