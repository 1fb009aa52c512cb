package auth

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net/netip"
	"slices"
	"testing"
)

// fakeCerts maps certificates by their Raw bytes, counting its calls.
type fakeCerts struct {
	users  map[string]Credential // by string(cert.Raw): the credential, its Label the user
	refuse map[string]string     // by string(cert.Raw): a refusal reason
	broken bool                  // the store fails
	calls  int
	used   []string
	usedBy []netip.Addr
}

var errStoreDown = errors.New("store down")

func (f *fakeCerts) MapCert(_ context.Context, cs ConnState) (string, Credential, error) {
	f.calls++
	if f.broken {
		return "", Credential{}, errStoreDown
	}
	raw := string(cs.TLS.PeerCertificates[0].Raw)
	if reason, ok := f.refuse[raw]; ok {
		return "", Credential{}, &Refusal{Reason: reason}
	}
	c, ok := f.users[raw]
	if !ok {
		return "", Credential{}, &Refusal{Reason: "cert_unknown"}
	}
	return c.Label, c, nil
}

func (f *fakeCerts) RecordUse(id string, addr netip.Addr) {
	f.used, f.usedBy = append(f.used, id), append(f.usedBy, addr)
}

var (
	aliceCert = &x509.Certificate{Raw: []byte("alice's phone")}
	evesCert  = &x509.Certificate{Raw: []byte("eve's laptop")}
	aliceCred = Credential{Kind: CredentialClientCert, ID: "k3f9x2ab", Label: "alice@example.com"}
)

// certEnv is a TLS connection that presented cert (none when nil), with
// a cache as the proxy gives each connection.
func certEnv(certs *fakeCerts, cert *x509.Certificate) *Env {
	st := &tls.ConnectionState{}
	if cert != nil {
		st.PeerCertificates = []*x509.Certificate{cert}
	}
	return &Env{
		Conn:      ConnState{TLS: st, Listener: "[::]:993", ClientAddr: netip.MustParseAddr("192.0.2.7"), CertCache: &CertCache{}},
		Verifiers: &Verifiers{Certs: certs},
	}
}

func newFakeCerts() *fakeCerts {
	return &fakeCerts{users: map[string]Credential{string(aliceCert.Raw): aliceCred}, refuse: map[string]string{}}
}

// TestExternalIsOfferedOnlyForACertificateThatMaps: AUTH=EXTERNAL needs a
// client certificate that maps to a user; an unknown one, none, no TLS or
// no mapper leave it out (and AUTHENTICATE EXTERNAL then fails to start).
// A store that cannot say offers it, so the login says NO [UNAVAILABLE].
func TestExternalIsOfferedOnlyForACertificateThatMaps(t *testing.T) {
	configured := []string{Plain, External}
	broken := newFakeCerts()
	broken.broken = true
	tests := []struct {
		name string
		env  *Env
		want bool
	}{
		{"a mapped certificate", certEnv(newFakeCerts(), aliceCert), true},
		{"an unknown certificate", certEnv(newFakeCerts(), evesCert), false},
		{"no certificate", certEnv(newFakeCerts(), nil), false},
		{"no TLS", &Env{Verifiers: &Verifiers{Certs: newFakeCerts()}}, false},
		{"no mapper", &Env{Conn: certEnv(nil, aliceCert).Conn, Verifiers: &Verifiers{}}, false},
		{"no verifiers", &Env{Conn: certEnv(nil, aliceCert).Conn}, false},
		{"the store failing", certEnv(broken, aliceCert), true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := slices.Contains(Offered(context.Background(), configured, tt.env), External)
			if got != tt.want {
				t.Fatalf("EXTERNAL offered: %v, want %v", got, tt.want)
			}
			_, err := Start(context.Background(), "external", configured, tt.env)
			if (err == nil) != tt.want {
				t.Fatalf("Start: %v", err)
			}
		})
	}
	if slices.Contains(Offered(context.Background(), []string{Plain}, certEnv(newFakeCerts(), aliceCert)), External) {
		t.Error("EXTERNAL offered where the listener does not configure it")
	}
}

// runExternal starts EXTERNAL in env and feeds it responses.
func runExternal(t *testing.T, env *Env, responses ...[]byte) (Result, error) {
	t.Helper()
	x, err := Start(context.Background(), External, []string{External}, env)
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	for i, r := range responses {
		ch, done, err := x.Next(context.Background(), r)
		switch {
		case err != nil:
			return Result{}, err
		case done:
			if i != len(responses)-1 {
				t.Fatalf("done after %d of %d responses", i+1, len(responses))
			}
			return x.Result(), nil
		case len(ch) != 0:
			t.Fatalf("challenge %q, want an empty one", ch)
		}
	}
	t.Fatal("the exchange did not end")
	return Result{}, nil
}

// TestExternalLogsInAsTheCertificatesUser: the message is empty or names
// the certificate's own user (any ASCII case); the result is verified,
// names the certificate's credential, and records its use from the
// client's address. Another user is ErrAuthzidNotAllowed; a malformed
// name ErrMalformedUser. The policy is asked for the certificate's user
// first.
func TestExternalLogsInAsTheCertificatesUser(t *testing.T) {
	tests := []struct {
		name      string
		responses [][]byte
		wantErr   error
	}{
		{"SASL-IR, empty (AUTHENTICATE EXTERNAL =)", [][]byte{{}}, nil},
		{"no initial response, then empty", [][]byte{nil, {}}, nil},
		{"the user itself", [][]byte{[]byte("alice@example.com")}, nil},
		{"the user in another ASCII case", [][]byte{[]byte("Alice@Example.COM")}, nil},
		{"another user", [][]byte{[]byte("bob@example.com")}, ErrAuthzidNotAllowed},
		{"a Unicode case fold is not the user", [][]byte{[]byte("alice@exampl\u212a.com")}, ErrAuthzidNotAllowed},
		{"a control character", [][]byte{[]byte("alice\r\n@example.com")}, ErrMalformedUser},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			certs := newFakeCerts()
			env := certEnv(certs, aliceCert)
			var admitted []string
			env.Admit = func(_ context.Context, user string) error {
				admitted = append(admitted, user)
				return nil
			}
			res, err := runExternal(t, env, tt.responses...)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("err = %v, want %v", err, tt.wantErr)
			}
			if tt.wantErr != nil {
				if tt.wantErr == ErrAuthzidNotAllowed && !slices.Equal(admitted, []string{"alice@example.com"}) {
					t.Errorf("admitted %q before refusing the authzid, want the certificate's user", admitted)
				}
				if len(certs.used) != 0 {
					t.Errorf("a use was recorded for a refused exchange")
				}
				return
			}
			want := Result{Mechanism: External, User: "alice@example.com", Verified: true, Credential: aliceCred}
			if res != want {
				t.Errorf("result = %+v, want %+v", res, want)
			}
			if !slices.Equal(admitted, []string{"alice@example.com"}) {
				t.Errorf("admitted %q, want the certificate's user once", admitted)
			}
			if !slices.Equal(certs.used, []string{aliceCred.ID}) || certs.usedBy[0] != env.Conn.ClientAddr {
				t.Errorf("uses recorded: %q from %v", certs.used, certs.usedBy)
			}
			x, _ := Start(context.Background(), External, []string{External}, env)
			x.Next(context.Background(), []byte{})
			if _, _, err := x.Next(context.Background(), []byte{}); !errors.Is(err, ErrMalformed) {
				t.Errorf("a response after the end: err = %v, want ErrMalformed", err)
			}
		})
	}
}

// TestExternalAsksTheMapperOnceForCapabilityAndAgainAtTheLogin: the
// CAPABILITY that offers EXTERNAL and the AUTHENTICATE that starts it share
// one mapping (the connection's CertCache); the exchange maps again, after
// the policy admitted the user, so a registration revoked in between is
// refused with its reason and the mailbox the certificate named.
func TestExternalAsksTheMapperOnceForCapabilityAndAgainAtTheLogin(t *testing.T) {
	certs := newFakeCerts()
	env := certEnv(certs, aliceCert)
	calls := 0
	env.Admit = func(context.Context, string) error {
		calls = certs.calls
		return nil
	}
	for range 3 {
		Offered(context.Background(), []string{External}, env) // CAPABILITY, thrice
	}
	if _, err := runExternal(t, env, []byte{}); err != nil {
		t.Fatal(err)
	}
	if certs.calls != 2 || calls != 1 {
		t.Errorf("MapCert called %d times (%d before the policy check), want 2 (1)", certs.calls, calls)
	}

	revoked := newFakeCerts()
	env = certEnv(revoked, aliceCert)
	Offered(context.Background(), []string{External}, env)
	revoked.refuse[string(aliceCert.Raw)] = "cert_revoked" // revoked between CAPABILITY and AUTHENTICATE
	_, err := runExternal(t, env, []byte{})
	var r *Refusal
	if !errors.As(err, &r) || r.Reason != "cert_revoked" || r.User != "alice@example.com" {
		t.Fatalf("err = %v, want a cert_revoked refusal for alice", err)
	}
	if len(revoked.used) != 0 {
		t.Error("a use was recorded for a revoked certificate")
	}
	if slices.Contains(Offered(context.Background(), []string{External}, env), External) {
		t.Error("EXTERNAL still offered after the refusal")
	}
}

// TestExternalAdmitErrorIsReturnedUnchanged: a policy refusal ends the
// exchange before the certificate is checked; a store failure at the
// login is ErrUnavailable, not the client's failure.
func TestExternalAdmitErrorIsReturnedUnchanged(t *testing.T) {
	certs := newFakeCerts()
	env := certEnv(certs, aliceCert)
	locked := errors.New("user locked")
	env.Admit = func(context.Context, string) error { return locked }
	if _, err := runExternal(t, env, []byte{}); err != locked {
		t.Fatalf("err = %v, want the Admit error itself", err)
	}
	if certs.calls != 1 {
		t.Errorf("MapCert called %d times, want once (the offer): nothing after the policy refused", certs.calls)
	}

	certs = newFakeCerts()
	env = certEnv(certs, aliceCert)
	Offered(context.Background(), []string{External}, env)
	certs.broken = true
	if _, err := runExternal(t, env, []byte{}); !errors.Is(err, ErrUnavailable) || !errors.Is(err, errStoreDown) {
		t.Fatalf("err = %v, want ErrUnavailable wrapping the store's error", err)
	}
}

// FuzzExternalMessage: whatever the client sends as its EXTERNAL message
// (RFC 4422 appendix A: an optional authorization identity), the exchange
// never panics, never logs in as anyone but the certificate's user, and
// succeeds exactly for the empty message or that user in some ASCII case.
func FuzzExternalMessage(f *testing.F) {
	for _, seed := range []string{"", "alice@example.com", "ALICE@example.com", "bob", "alice@exampl\u212a.com", "\x00", "alice\r\n", "\xff\xfe"} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, msg []byte) {
		env := certEnv(newFakeCerts(), aliceCert)
		x, err := Start(context.Background(), External, []string{External}, env)
		if err != nil {
			t.Fatal(err)
		}
		_, done, err := x.Next(context.Background(), msg)
		want := len(msg) == 0 || equalFoldASCII(string(msg), "alice@example.com")
		if done != want || (err == nil) != want {
			t.Fatalf("message %q: done %v, err %v; want success %v", msg, done, err, want)
		}
		if done && x.Result().User != "alice@example.com" {
			t.Fatalf("message %q logged in as %q", msg, x.Result().User)
		}
	})
}
