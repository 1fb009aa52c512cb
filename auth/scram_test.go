package auth

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"math/big"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/imapgate/imapgate/auth/scram"
	xdg "github.com/xdg-go/scram"
)

const (
	scramAlice    = "alice#k3f9x2ab"
	scramPassword = "k3f9-x2ab-7hmq-4r8s-w2zt-9cdu-6vnz"
)

// memSCRAMKeys is a SCRAMKeys in memory: login names with their keys, and
// refusals by login name.
type memSCRAMKeys struct {
	keys    map[string]scram.StoredCredentials
	refused map[string]*Refusal
	err     error // the store's failure, for every lookup
	lookups []string
	uses    []string
}

func newMemSCRAMKeys(t testing.TB) *memSCRAMKeys {
	t.Helper()
	c, err := xdg.SHA256.NewClient("", scramPassword, "")
	if err != nil {
		t.Fatal(err)
	}
	keys, err := c.GetStoredCredentialsWithError(xdg.KeyFactors{Salt: "0123456789abcdef", Iters: scram.MinIterations})
	if err != nil {
		t.Fatal(err)
	}
	return &memSCRAMKeys{
		keys: map[string]scram.StoredCredentials{scramAlice: keys},
		refused: map[string]*Refusal{
			"alice#oldphone": {Reason: "app_password_revoked", User: "alice", Credential: Credential{Kind: CredentialAppPassword, ID: "oldphone", Label: "old phone"}},
		},
	}
}

func (m *memSCRAMKeys) LookupSCRAM(_ context.Context, login, _ string) (scram.StoredCredentials, string, Credential, error) {
	m.lookups = append(m.lookups, login)
	if m.err != nil {
		return scram.StoredCredentials{}, "", Credential{}, m.err
	}
	if k, ok := m.keys[login]; ok {
		return k, "alice", Credential{Kind: CredentialAppPassword, ID: "k3f9x2ab", Label: "phone"}, nil
	}
	if r, ok := m.refused[login]; ok {
		return scram.StoredCredentials{}, "", Credential{}, r
	}
	return scram.StoredCredentials{}, "", Credential{}, &Refusal{Err: errors.New("unknown")}
}

func (m *memSCRAMKeys) RecordUse(id string, _ netip.Addr) { m.uses = append(m.uses, id) }

// serverCert is a self-signed ECDSA leaf, which tls-server-end-point binds to.
func serverCert(t testing.TB) *x509.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "localhost"}, NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return leaf
}

// scramEnv is a TLS connection (TLS 1.2 without the extended master
// secret, so the only binding is tls-server-end-point, when leaf is set)
// with keys' verifier, whose Admit records the users it was asked about.
func scramEnv(t testing.TB, keys SCRAMKeys, leaf *x509.Certificate, admitted *[]string) *Env {
	t.Helper()
	v, err := NewSCRAMVerifier(keys, scram.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return &Env{
		Conn:      ConnState{TLS: &tls.ConnectionState{Version: tls.VersionTLS12, HandshakeComplete: true}, Certificate: leaf, Listener: "imaps", ClientAddr: netip.MustParseAddr("192.0.2.7")},
		Verifiers: &Verifiers{SCRAM: v},
		Admit: func(_ context.Context, user string) error {
			*admitted = append(*admitted, user)
			return nil
		},
	}
}

// scramConverse runs cc against mechanism mech in env, as the proxy's wire
// loop does: challenges until done or an error; the client answers the
// server-final message with an empty response. Nil configured: both SCRAM
// mechanisms.
func scramConverse(t testing.TB, mech string, configured []string, env *Env, cc *xdg.ClientConversation) (Result, error) {
	t.Helper()
	ctx := context.Background()
	if configured == nil {
		configured = []string{SCRAMSHA256, SCRAMSHA256Plus}
	}
	x, err := Start(ctx, mech, configured, env)
	if err != nil {
		return Result{}, err
	}
	msg, err := cc.Step("")
	if err != nil {
		t.Fatal(err)
	}
	resp := []byte(msg)
	for range 5 {
		challenge, done, err := x.Next(ctx, resp)
		switch {
		case err != nil:
			return x.Result(), err
		case done:
			return x.Result(), nil
		}
		if cc.Done() {
			resp = []byte{}
			continue
		}
		out, err := cc.Step(string(challenge))
		if err != nil {
			return Result{}, fmt.Errorf("client: %w", err)
		}
		if cc.Done() && !cc.Valid() {
			return Result{}, errors.New("client: the server's signature is wrong")
		}
		resp = []byte(out)
	}
	return Result{}, errors.New("exchange did not end")
}

func newSCRAMClient(t testing.TB, login, password string) *xdg.Client {
	t.Helper()
	c, err := xdg.SHA256.NewClient(login, password, "")
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func endPointBinding(leaf *x509.Certificate) xdg.ChannelBinding {
	h := sha256.Sum256(leaf.Raw)
	return xdg.ChannelBinding{Type: xdg.ChannelBindingType(scram.TLSServerEndPoint), Data: h[:]}
}

func TestSCRAMIsOfferedWithItsVerifierOverTLSAndPlusWhereTheConnectionBinds(t *testing.T) {
	keys := newMemSCRAMKeys(t)
	leaf := serverCert(t)
	both := []string{Plain, SCRAMSHA256, SCRAMSHA256Plus}
	var admitted []string
	withBinding := scramEnv(t, keys, leaf, &admitted)
	noBinding := scramEnv(t, keys, nil, &admitted)
	plaintext := scramEnv(t, keys, leaf, &admitted)
	plaintext.Conn.TLS = nil
	for _, tc := range []struct {
		name       string
		env        *Env
		configured []string
		want       []string
	}{
		{"no SCRAM verifier", &Env{Conn: withBinding.Conn}, both, []string{Plain}},
		{"plaintext", plaintext, both, []string{Plain}},
		{"TLS without a binding", noBinding, both, []string{Plain, SCRAMSHA256}},
		{"TLS with the served certificate", withBinding, both, both},
		{"the listener leaves -PLUS out", withBinding, []string{SCRAMSHA256}, []string{SCRAMSHA256}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := Offered(context.Background(), tc.configured, tc.env); !slices.Equal(got, tc.want) {
				t.Fatalf("Offered = %q, want %q", got, tc.want)
			}
		})
	}
}

func TestSCRAMLogsInTheAppPasswordsUserAfterAdmittingIt(t *testing.T) {
	leaf := serverCert(t)
	for _, tc := range []struct {
		mech string
		cc   func(*xdg.Client) *xdg.ClientConversation
	}{
		{SCRAMSHA256, (*xdg.Client).NewConversation},
		{SCRAMSHA256Plus, func(c *xdg.Client) *xdg.ClientConversation {
			return c.NewConversationWithChannelBinding(endPointBinding(leaf))
		}},
	} {
		t.Run(tc.mech, func(t *testing.T) {
			keys := newMemSCRAMKeys(t)
			var admitted []string
			env := scramEnv(t, keys, leaf, &admitted)
			env.Admit = func(_ context.Context, user string) error {
				if len(keys.lookups) != 0 {
					t.Error("the keys were looked up before the attempt was admitted")
				}
				admitted = append(admitted, user)
				return nil
			}
			r, err := scramConverse(t, tc.mech, nil, env, tc.cc(newSCRAMClient(t, scramAlice, scramPassword)))
			if err != nil {
				t.Fatal(err)
			}
			want := Result{Mechanism: tc.mech, User: "alice", Verified: true, Credential: Credential{Kind: CredentialAppPassword, ID: "k3f9x2ab", Label: "phone"}}
			if r != want {
				t.Fatalf("Result = %+v, want %+v", r, want)
			}
			if !slices.Equal(admitted, []string{"alice"}) || !slices.Equal(keys.uses, []string{"k3f9x2ab"}) {
				t.Fatalf("admitted %q, uses recorded %q; want alice once, k3f9x2ab once", admitted, keys.uses)
			}
		})
	}
}

func TestSCRAMFailuresAreRefusalsWithTheirReasons(t *testing.T) {
	leaf := serverCert(t)
	storeDown := newMemSCRAMKeys(t)
	storeDown.err = errors.New("disk on fire")
	for _, tc := range []struct {
		name       string
		keys       *memSCRAMKeys
		mech       string
		configured []string
		login      string
		password   string
		cc         func(*xdg.Client) *xdg.ClientConversation
		reason     string
		cred       string // the credential ID the refusal names
	}{
		{name: "a wrong password", login: scramAlice, password: "k3f9-x2ab-7hmq-4r8s-w2zt-9cdu-6vnq", reason: scram.ReasonBadProof, cred: "k3f9x2ab"},
		{name: "an unknown login name", login: "alice#zzzzzzzz", password: scramPassword, reason: scram.ReasonUnknownUser},
		{name: "the user's plain name", login: "alice", password: scramPassword, reason: scram.ReasonUnknownUser},
		{name: "a revoked app password", login: "alice#oldphone", password: scramPassword, reason: "app_password_revoked", cred: "oldphone"},
		{name: `"y" where -PLUS was offered`, login: scramAlice, password: scramPassword, reason: scram.ReasonChannelBindingDowngrade,
			cc: (*xdg.Client).NewConversationAdvertisingChannelBinding},
		{name: "binding to another certificate", mech: SCRAMSHA256Plus, login: scramAlice, password: scramPassword, reason: scram.ReasonChannelBindingMismatch, cred: "k3f9x2ab",
			cc: func(c *xdg.Client) *xdg.ClientConversation {
				return c.NewConversationWithChannelBinding(endPointBinding(serverCert(t)))
			}},
		{name: "the store fails", keys: storeDown, login: scramAlice, password: scramPassword, reason: scram.ReasonUnavailable},
	} {
		t.Run(tc.name, func(t *testing.T) {
			keys := cmpOrKeys(tc.keys, newMemSCRAMKeys(t))
			var admitted []string
			env := scramEnv(t, keys, leaf, &admitted)
			cc := (*xdg.Client).NewConversation
			if tc.cc != nil {
				cc = tc.cc
			}
			mech := SCRAMSHA256
			if tc.mech != "" {
				mech = tc.mech
			}
			r, err := scramConverse(t, mech, tc.configured, env, cc(newSCRAMClient(t, tc.login, tc.password)))
			var refusal *Refusal
			var unavailable *Unavailable
			switch {
			case errors.As(err, &refusal):
				if refusal.Reason != tc.reason || refusal.User != scramUser(tc.login) || refusal.Credential.ID != tc.cred {
					t.Fatalf("refusal %+v; want reason %q, user %q, credential %q", refusal, tc.reason, scramUser(tc.login), tc.cred)
				}
			case errors.As(err, &unavailable):
				if unavailable.Reason != tc.reason {
					t.Fatalf("unavailable %v, want reason %q", unavailable, tc.reason)
				}
			default:
				t.Fatalf("err = %v, result %+v; want a refusal with %q", err, r, tc.reason)
			}
			if len(keys.uses) != 0 || r.Verified {
				t.Fatalf("a refused exchange recorded uses %q, result %+v", keys.uses, r)
			}
		})
	}
}

func cmpOrKeys(a, b *memSCRAMKeys) *memSCRAMKeys {
	if a != nil {
		return a
	}
	return b
}

// TestSCRAMClientThatCouldBindIsNoDowngradeWhereTheListenerLeavesPlusOut:
// a client that says "y" saw no -PLUS, which is the truth where the
// listener's mechanisms leave it out.
func TestSCRAMClientThatCouldBindIsNoDowngradeWhereTheListenerLeavesPlusOut(t *testing.T) {
	keys := newMemSCRAMKeys(t)
	var admitted []string
	env := scramEnv(t, keys, serverCert(t), &admitted)
	cc := newSCRAMClient(t, scramAlice, scramPassword).NewConversationAdvertisingChannelBinding()
	if r, err := scramConverse(t, SCRAMSHA256, []string{SCRAMSHA256}, env, cc); err != nil || !r.Verified {
		t.Fatalf("err %v, result %+v", err, r)
	}
}

func TestSCRAMAdmitRefusalEndsTheExchangeBeforeAnyLookup(t *testing.T) {
	keys := newMemSCRAMKeys(t)
	var admitted []string
	env := scramEnv(t, keys, nil, &admitted)
	locked := errors.New("locked")
	env.Admit = func(context.Context, string) error { return locked }
	_, err := scramConverse(t, SCRAMSHA256, nil, env, newSCRAMClient(t, scramAlice, scramPassword).NewConversation())
	if !errors.Is(err, locked) || len(keys.lookups) != 0 {
		t.Fatalf("err %v, lookups %q; want Admit's error unchanged and no lookup", err, keys.lookups)
	}
}

func TestSCRAMRefusesAResponseToTheServerFinalMessage(t *testing.T) {
	keys := newMemSCRAMKeys(t)
	var admitted []string
	env := scramEnv(t, keys, nil, &admitted)
	ctx := context.Background()
	x, err := Start(ctx, SCRAMSHA256, []string{SCRAMSHA256}, env)
	if err != nil {
		t.Fatal(err)
	}
	cc := newSCRAMClient(t, scramAlice, scramPassword).NewConversation()
	first, _ := cc.Step("")
	serverFirst, _, err := x.Next(ctx, []byte(first))
	if err != nil {
		t.Fatal(err)
	}
	final, _ := cc.Step(string(serverFirst))
	if _, done, err := x.Next(ctx, []byte(final)); err != nil || done {
		t.Fatalf("client-final: done %v, err %v; want the server-final message as a challenge", done, err)
	}
	if _, done, err := x.Next(ctx, []byte("v=more")); !errors.Is(err, ErrMalformed) || done {
		t.Fatalf("done %v, err %v; want ErrMalformed", done, err)
	}
	if len(keys.uses) != 0 {
		t.Fatal("a use was recorded")
	}
}
