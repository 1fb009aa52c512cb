package scram

import (
	"context"
	"crypto/elliptic"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"regexp"
	"slices"
	"testing"
	"time"

	"github.com/xdg-go/scram"
)

const (
	alice         = "alice@example.com#k3f9x2ab"
	alicePassword = "k3f9-x2ab-7hmq-4r8s-w2zt-9cdu-6vny"
)

func TestSCRAMSHA256OverTLSLogsInAndRefusesAWrongPassword(t *testing.T) {
	store := newMemStore(t, map[string]string{alice: alicePassword})
	srv := newTestServer(t, store, Options{})
	cert := ecdsaCert(t, elliptic.P256(), 0)
	for _, v := range tlsVersions {
		for _, tc := range []struct {
			name, password string
			ok             bool
		}{
			{"the right password", alicePassword, true},
			{"a wrong password", "k3f9-x2ab-7hmq-4r8s-w2zt-9cdu-6vnz", false},
		} {
			t.Run(v.name+"/"+tc.name, func(t *testing.T) {
				p := newTLSPair(t, cert, v.version)
				x := exchange(t, srv, SHA256, p.conn, ExchangeOptions{})
				// A client without channel binding support: "n".
				res, out := converse(t, p.client, p.server, x, newClient(t, alice, tc.password, "").NewConversation())
				if tc.ok {
					if out.err != nil || !res.accepted || !res.verified {
						t.Fatalf("server: %v; client: accepted %v, checked the server's signature %v", out.err, res.accepted, res.verified)
					}
				} else {
					if !errors.Is(out.err, ErrBadProof) || Reason(out.err) != ReasonBadProof || res.accepted {
						t.Fatalf("server: %v (reason %q), client accepted %v; want ErrBadProof, %q", out.err, Reason(out.err), res.accepted, ReasonBadProof)
					}
				}
				if out.id != (Identity{Login: alice}) {
					t.Fatalf("identity %+v, want login %q and no binding", out.id, alice)
				}
			})
		}
	}
}

// clientBinding is the channel binding a client computes from its own
// side of the connection, with xdg-go's client-side constructors.
func clientBinding(t *testing.T, typ BindingType, cs tls.ConnectionState) scram.ChannelBinding {
	t.Helper()
	var cb scram.ChannelBinding
	var err error
	switch typ {
	case TLSExporter:
		cb, err = scram.NewTLSExporterBinding(&cs)
	case TLSServerEndPoint:
		cb, err = scram.NewTLSServerEndpointBinding(&cs)
	case TLSUnique:
		cb = scram.NewTLSUniqueBinding(cs.TLSUnique)
	}
	if err != nil {
		t.Fatalf("client's %s binding: %v", typ, err)
	}
	return cb
}

func TestPlusLogsInBoundToTheTLSConnection(t *testing.T) {
	store := newMemStore(t, map[string]string{alice: alicePassword})
	srv := newTestServer(t, store, Options{})
	cert := ecdsaCert(t, elliptic.P256(), 0)
	for _, tc := range []struct {
		name    string
		version uint16
		binding BindingType
	}{
		{"tls-exporter on TLS 1.3", tls.VersionTLS13, TLSExporter},
		{"tls-server-end-point on TLS 1.3", tls.VersionTLS13, TLSServerEndPoint},
		{"tls-server-end-point on TLS 1.2", tls.VersionTLS12, TLSServerEndPoint},
		{"tls-unique on TLS 1.2 with the extended master secret", tls.VersionTLS12, TLSUnique},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := newTLSPair(t, cert, tc.version)
			x := exchange(t, srv, SHA256Plus, p.conn, ExchangeOptions{})
			cc := newClient(t, alice, alicePassword, "").NewConversationWithChannelBinding(clientBinding(t, tc.binding, p.clientState()))
			res, out := converse(t, p.client, p.server, x, cc)
			if out.err != nil || !res.verified {
				t.Fatalf("server: %v; client checked the server's signature: %v", out.err, res.verified)
			}
			if out.id.Binding != tc.binding {
				t.Fatalf("bound with %q, want %q", out.id.Binding, tc.binding)
			}
		})
	}
}

func TestRelayBetweenTwoTLSSessionsIsRefusedAsChannelBindingMismatch(t *testing.T) {
	store := newMemStore(t, map[string]string{alice: alicePassword})
	srv := newTestServer(t, store, Options{})
	serverCert, relayCert := ecdsaCert(t, elliptic.P256(), 0), ecdsaCert(t, elliptic.P256(), 0)
	for _, tc := range []struct {
		name    string
		version uint16
		binding BindingType
	}{
		{"tls-exporter", tls.VersionTLS13, TLSExporter},
		{"tls-server-end-point", tls.VersionTLS13, TLSServerEndPoint},
		{"tls-unique", tls.VersionTLS12, TLSUnique},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// The client has the right password and binds to the session
			// it has: the one with the relay, which passes every message
			// on unchanged over its own session with the server.
			toRelay, atServer := relay(t, serverCert, relayCert, tc.version)
			x := exchange(t, srv, SHA256Plus, atServer.conn, ExchangeOptions{})
			cc := newClient(t, alice, alicePassword, "").NewConversationWithChannelBinding(clientBinding(t, tc.binding, toRelay.clientState()))
			res, out := converse(t, toRelay.client, atServer.server, x, cc)
			if !errors.Is(out.err, ErrBindingMismatch) || Reason(out.err) != ReasonChannelBindingMismatch || res.accepted {
				t.Fatalf("server: %v (reason %q), client accepted %v; want ErrBindingMismatch", out.err, Reason(out.err), res.accepted)
			}
		})
	}
}

func TestClientThatCouldBindButSawNoPlusIsRefusedAsDowngrade(t *testing.T) {
	store := newMemStore(t, map[string]string{alice: alicePassword})
	srv := newTestServer(t, store, Options{})
	cert := ecdsaCert(t, elliptic.P256(), 0)

	// SCRAM-SHA-256-PLUS was offered, but the client says it saw none
	// ("y"): something in between stripped it from the capabilities.
	p := newTLSPair(t, cert, tls.VersionTLS13)
	x := exchange(t, srv, SHA256, p.conn, ExchangeOptions{})
	res, out := converse(t, p.client, p.server, x, newClient(t, alice, alicePassword, "").NewConversationAdvertisingChannelBinding())
	if !errors.Is(out.err, ErrDowngrade) || Reason(out.err) != ReasonChannelBindingDowngrade || res.accepted || res.serverFirst != "" {
		t.Fatalf("server: %v (reason %q); client accepted %v, got server-first %q; want ErrDowngrade at the first message", out.err, Reason(out.err), res.accepted, res.serverFirst)
	}
	if out.id.Login != alice {
		t.Fatalf("the audit has no login name: %+v", out.id)
	}
	if n := store.lookups.Load(); n != 0 {
		t.Fatalf("%d lookups for a refused downgrade", n)
	}

	// Where -PLUS was not offered, "y" is the truth and logs in.
	for name, tc := range map[string]struct {
		conn ConnState
		opts ExchangeOptions
	}{
		"plaintext connection":                 {ConnState{}, ExchangeOptions{}},
		"listener that does not offer it":      {newTLSPair(t, cert, tls.VersionTLS13).conn, ExchangeOptions{NoPlus: true}},
		"TLS 1.2 without a certificate or EMS": {ConnState{TLS: &tls.ConnectionState{Version: tls.VersionTLS12, HandshakeComplete: true}}, ExchangeOptions{}},
	} {
		t.Run(name, func(t *testing.T) {
			p := newTLSPair(t, cert, tls.VersionTLS13)
			x := exchange(t, srv, SHA256, tc.conn, tc.opts)
			res, out := converse(t, p.client, p.server, x, newClient(t, alice, alicePassword, "").NewConversationAdvertisingChannelBinding())
			if out.err != nil || !res.verified {
				t.Fatalf("server: %v; client verified %v", out.err, res.verified)
			}
		})
	}
}

func TestChannelBindingFlagMustFitTheMechanism(t *testing.T) {
	store := newMemStore(t, map[string]string{alice: alicePassword})
	srv := newTestServer(t, store, Options{})
	p := newTLSPair(t, ecdsaCert(t, elliptic.P256(), 0), tls.VersionTLS13)
	exporter := clientBinding(t, TLSExporter, p.clientState())
	for _, tc := range []struct {
		name   string
		mech   Mechanism
		client *scram.ClientConversation
		want   error
	}{
		{"n with SCRAM-SHA-256-PLUS", SHA256Plus, newClient(t, alice, alicePassword, "").NewConversation(), ErrMalformed},
		{"y with SCRAM-SHA-256-PLUS", SHA256Plus, newClient(t, alice, alicePassword, "").NewConversationAdvertisingChannelBinding(), ErrMalformed},
		{"p= with SCRAM-SHA-256", SHA256, newClient(t, alice, alicePassword, "").NewConversationWithChannelBinding(exporter), ErrMalformed},
		{"p= with a type not offered", SHA256Plus, newClient(t, alice, alicePassword, "").NewConversationWithChannelBinding(scram.NewTLSUniqueBinding([]byte("twelve bytes"))), ErrBindingMismatch},
	} {
		t.Run(tc.name, func(t *testing.T) {
			x := exchange(t, srv, tc.mech, p.conn, ExchangeOptions{})
			first, _ := tc.client.Step("")
			out, done, err := x.Step(context.Background(), []byte(first))
			if !errors.Is(err, tc.want) || !done || out != nil {
				t.Fatalf("Step = %q, %v, %v; want %v, done, no message", out, done, err, tc.want)
			}
		})
	}
	if _, err := srv.NewExchange(SHA256Plus, ConnState{}, ExchangeOptions{}); !errors.Is(err, ErrNotOffered) || Reason(err) != ReasonMechanismNotAllowed {
		t.Fatalf("SCRAM-SHA-256-PLUS on a plaintext connection: %v", err)
	}
	if _, err := srv.NewExchange(SHA256Plus, p.conn, ExchangeOptions{NoPlus: true}); !errors.Is(err, ErrNotOffered) {
		t.Fatalf("SCRAM-SHA-256-PLUS where the listener does not offer it: %v", err)
	}
}

// serverFirstShape is what every server-first message looks like here:
// the client's nonce and 32 more base64 characters, a 16-byte salt, the
// store's iteration count.
var serverFirstShape = regexp.MustCompile(`^r=fixedclientnonce[A-Za-z0-9+/]{32},s=([A-Za-z0-9+/]{22}==),i=4096$`)

func TestUnknownLoginFailsLikeAWrongPassword(t *testing.T) {
	store := newMemStore(t, map[string]string{alice: alicePassword})
	srv := newTestServer(t, store, Options{})
	try := func(login, password string) (serverFirst string, err error) {
		t.Helper()
		c := newClient(t, login, password, "").WithNonceGenerator(func() string { return "fixedclientnonce" })
		cc := c.NewConversation()
		x := exchange(t, srv, SHA256, ConnState{}, ExchangeOptions{})
		first, _ := cc.Step("")
		out, done, err := x.Step(context.Background(), []byte(first))
		if err != nil || done {
			t.Fatalf("%s: the first message was refused (%v): a guesser learns the name is unknown", login, err)
		}
		final, err := cc.Step(string(out))
		if err != nil {
			t.Fatalf("%s: the client could not answer the server-first message %q: %v", login, out, err)
		}
		end, done, err := x.Step(context.Background(), []byte(final))
		if end != nil || !done {
			t.Fatalf("%s: final Step = %q, %v", login, end, done)
		}
		return string(out), err
	}

	wrongFirst, wrongErr := try(alice, "a wrong password")
	unknownFirst, unknownErr := try("mallory#zzzzzzzz", "a wrong password")
	for name, first := range map[string]string{"wrong password": wrongFirst, "unknown login": unknownFirst} {
		if !serverFirstShape.MatchString(first) {
			t.Errorf("%s: server-first %q is not of the shape %s", name, first, serverFirstShape)
		}
	}
	if !errors.Is(wrongErr, ErrBadProof) || !errors.Is(unknownErr, ErrUnknownUser) || !errors.Is(unknownErr, errNoSuchLogin) {
		t.Fatalf("wrong password: %v; unknown login: %v (want ErrUnknownUser wrapping the store's error)", wrongErr, unknownErr)
	}
	if Reason(wrongErr) != ReasonBadProof || Reason(unknownErr) != ReasonUnknownUser {
		t.Fatalf("the audit cannot tell them apart: %q, %q", Reason(wrongErr), Reason(unknownErr))
	}

	// A real login's salt does not change between attempts: neither does
	// an unknown one's, and two unknown names do not share one.
	again, _ := try("mallory#zzzzzzzz", "another guess")
	other, _ := try("eve#yyyyyyyy", "a guess")
	salt := func(first string) string { return serverFirstShape.FindStringSubmatch(first)[1] }
	if salt(again) != salt(unknownFirst) {
		t.Errorf("an unknown name's salt changed between two attempts: %s, %s", salt(unknownFirst), salt(again))
	}
	if salt(other) == salt(unknownFirst) {
		t.Errorf("two unknown names share the salt %s", salt(other))
	}
	// Another process (another key) makes up other salts; the same key,
	// the same ones.
	keyed := func(key byte) string {
		s, err := NewServer(store.lookup, Options{Key: []byte(string(make([]byte, 31)) + string(rune(key)))})
		if err != nil {
			t.Fatal(err)
		}
		return s.fake("mallory#zzzzzzzz").Salt
	}
	if keyed(1) != keyed(1) || keyed(1) == keyed(2) {
		t.Error("made-up salts do not follow Options.Key")
	}
}

func TestAuthzidOtherThanTheLoginIsRefused(t *testing.T) {
	store := newMemStore(t, map[string]string{alice: alicePassword})
	srv := newTestServer(t, store, Options{})
	for _, tc := range []struct {
		name, authzid string
		want          error
	}{
		{"none", "", nil},
		{"the login itself", alice, nil},
		{"another user", "bob@example.com", ErrAuthzidNotAllowed},
		{"the user without the device", "alice@example.com", ErrAuthzidNotAllowed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := store.lookups.Load()
			x := exchange(t, srv, SHA256, ConnState{}, ExchangeOptions{})
			cc := newClient(t, alice, alicePassword, tc.authzid).NewConversation()
			first, _ := cc.Step("")
			out, _, err := x.Step(context.Background(), []byte(first))
			if tc.want != nil {
				if !errors.Is(err, tc.want) || Reason(err) != ReasonAuthzidNotAllowed || store.lookups.Load() != before {
					t.Fatalf("Step: %v (reason %q), %d lookups; want %v before any lookup", err, Reason(err), store.lookups.Load()-before, tc.want)
				}
				return
			}
			final, _ := cc.Step(string(out))
			if _, done, err := x.Step(context.Background(), []byte(final)); err != nil || !done {
				t.Fatalf("final: %v", err)
			}
			if x.Identity().Authzid != tc.authzid {
				t.Fatalf("authzid %q, want %q", x.Identity().Authzid, tc.authzid)
			}
		})
	}
}

func TestAdmitDecidesOnTheLoginBeforeTheLookup(t *testing.T) {
	store := newMemStore(t, map[string]string{alice: alicePassword})
	srv := newTestServer(t, store, Options{})
	overBudget := errors.New("policy: alice@example.com has spent her budget")
	var seen []Identity
	admit := func(_ context.Context, id Identity) error {
		seen = append(seen, id)
		if store.lookups.Load() != 0 {
			t.Error("Admit was called after the lookup")
		}
		return overBudget
	}
	x := exchange(t, srv, SHA256, ConnState{}, ExchangeOptions{Admit: admit})
	first, _ := newClient(t, alice, alicePassword, "").NewConversation().Step("")
	out, done, err := x.Step(context.Background(), []byte(first))
	if err != overBudget || !done || out != nil {
		t.Fatalf("Step = %q, %v, %v; want Admit's error unchanged", out, done, err)
	}
	if len(seen) != 1 || seen[0].Login != alice || store.lookups.Load() != 0 {
		t.Fatalf("Admit saw %+v; %d lookups", seen, store.lookups.Load())
	}
}

func TestStoredIterationCountsOutsideTheLimitsAreUnavailable(t *testing.T) {
	store := newMemStore(t, nil)
	srv := newTestServer(t, store, Options{MaxIterations: 8192})
	for _, tc := range []struct {
		iters int
		want  error
	}{
		{1024, ErrUnavailable},
		{4096, nil},
		{8192, nil},
		{8193, ErrUnavailable},
	} {
		store.add(t, alice, alicePassword, tc.iters)
		x := exchange(t, srv, SHA256, ConnState{}, ExchangeOptions{})
		first, _ := newClient(t, alice, alicePassword, "").NewConversation().Step("")
		_, _, err := x.Step(context.Background(), []byte(first))
		if !errors.Is(err, tc.want) || (tc.want != nil && Reason(err) != ReasonUnavailable) {
			t.Errorf("%d iterations: %v, want %v", tc.iters, err, tc.want)
		}
	}
	if _, err := NewServer(store.lookup, Options{MaxIterations: 1000}); err == nil {
		t.Error("MaxIterations below 4096 accepted")
	}
	if _, err := NewServer(store.lookup, Options{Key: []byte("short")}); err == nil {
		t.Error("a 5-byte key accepted")
	}
}

func TestLookupFailureIsUnavailableNotTheClientsFault(t *testing.T) {
	down := errors.New("credential store: closed")
	srv, err := NewServer(func(context.Context, string) (StoredCredentials, error) { return StoredCredentials{}, down }, Options{})
	if err != nil {
		t.Fatal(err)
	}
	x := exchange(t, srv, SHA256, ConnState{}, ExchangeOptions{})
	first, _ := newClient(t, alice, alicePassword, "").NewConversation().Step("")
	if _, _, err := x.Step(context.Background(), []byte(first)); !errors.Is(err, ErrUnavailable) || !errors.Is(err, down) || Reason(err) != ReasonUnavailable {
		t.Fatalf("%v, want ErrUnavailable wrapping the store's error", err)
	}
}

func TestBindingsOfferedPerConnection(t *testing.T) {
	p256, p384 := ecdsaCert(t, elliptic.P256(), 0), ecdsaCert(t, elliptic.P384(), x509.ECDSAWithSHA384)
	ed := ed25519Cert(t)
	tls13, tls12 := newTLSPair(t, p256, tls.VersionTLS13), newTLSPair(t, p256, tls.VersionTLS12)
	noCert := tls13.conn
	noCert.Certificate = nil
	for _, tc := range []struct {
		name string
		conn ConnState
		want []BindingType
	}{
		{"plaintext", ConnState{}, nil},
		{"TLS 1.3", tls13.conn, []BindingType{TLSExporter, TLSServerEndPoint}},
		{"TLS 1.2 with the extended master secret", tls12.conn, []BindingType{TLSUnique, TLSServerEndPoint}},
		{"TLS 1.3, certificate not known", noCert, []BindingType{TLSExporter}},
		{"TLS 1.3, ECDSA P-384 with SHA-384", newTLSPair(t, p384, tls.VersionTLS13).conn, []BindingType{TLSExporter, TLSServerEndPoint}},
		{"TLS 1.3, Ed25519 (RFC 5929 defines no hash)", newTLSPair(t, ed, tls.VersionTLS13).conn, []BindingType{TLSExporter}},
		{"handshake not complete", ConnState{TLS: &tls.ConnectionState{Version: tls.VersionTLS13}, Certificate: p256.leaf}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := tc.conn.Bindings()
			if !equalTypes(got, tc.want) || tc.conn.OffersPlus() != (len(tc.want) > 0) {
				t.Fatalf("Bindings() = %v, want %v", got, tc.want)
			}
		})
	}
	t.Run("TLS 1.2 with GODEBUG=tlsunsafeekm=1", func(t *testing.T) {
		// Then crypto/tls exports keys without the extended master
		// secret, so an export no longer proves it: no tls-unique.
		t.Setenv("GODEBUG", "tlsunsafeekm=1")
		if got := tls12.conn.Bindings(); !equalTypes(got, []BindingType{TLSServerEndPoint}) {
			t.Fatalf("Bindings() = %v", got)
		}
	})
}

func equalTypes(a, b []BindingType) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestServerEndPointHashFollowsTheCertificateSignature(t *testing.T) {
	for _, tc := range []struct {
		name string
		cert testCert
		size int
	}{
		{"ECDSA P-256 SHA-256", ecdsaCert(t, elliptic.P256(), x509.ECDSAWithSHA256), 32},
		{"ECDSA P-384 SHA-384", ecdsaCert(t, elliptic.P384(), x509.ECDSAWithSHA384), 48},
		{"ECDSA P-521 SHA-512", ecdsaCert(t, elliptic.P521(), x509.ECDSAWithSHA512), 64},
		{"ECDSA P-256 SHA-1 (hashed with SHA-256)", ecdsaCert(t, elliptic.P256(), x509.ECDSAWithSHA1), 32},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := newTLSPair(t, tc.cert, tls.VersionTLS13)
			ours, err := p.conn.bindingData(TLSServerEndPoint)
			if err != nil {
				t.Fatal(err)
			}
			// xdg-go's client computes it from the certificate it received.
			theirs := clientBinding(t, TLSServerEndPoint, p.clientState())
			if len(ours) != tc.size || string(ours) != string(theirs.Data) {
				t.Fatalf("server %x (%d bytes), client %x", ours, len(ours), theirs.Data)
			}
		})
	}
}

func TestLoginIsSASLpreppedAsRFC5802Says(t *testing.T) {
	store := newMemStore(t, map[string]string{"alice#k3f9x2ab": alicePassword, "ȡ#k3f9x2ab": alicePassword})
	srv := newTestServer(t, store, Options{})
	for _, tc := range []struct {
		name, sent, login string
		want              error
	}{
		// A client that skips SASLprep: the soft hyphen maps to nothing
		// and the no-break space to a space (RFC 4013 section 2.1).
		{"soft hyphen", "ali\u00adce#k3f9x2ab", "alice#k3f9x2ab", nil},
		{"fullwidth letters (NFKC)", "ａｌｉｃｅ#k3f9x2ab", "alice#k3f9x2ab", nil},
		// RFC 5802 prepares it as a query: a code point unassigned in
		// Unicode 3.2 (U+0221, assigned in 4.0) is allowed.
		{"unassigned in Unicode 3.2", "ȡ#k3f9x2ab", "ȡ#k3f9x2ab", nil},
		{"a control character", "alice\a#k3f9x2ab", "", ErrMalformed},
		{"a bidi control", "alice\u202e#k3f9x2ab", "", ErrMalformed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := scram.SHA256.NewClientUnprepped(tc.sent, alicePassword, "")
			if err != nil {
				t.Fatal(err)
			}
			cc := c.NewConversation()
			x := exchange(t, srv, SHA256, ConnState{}, ExchangeOptions{})
			first, _ := cc.Step("")
			out, _, err := x.Step(context.Background(), []byte(first))
			if tc.want != nil {
				if !errors.Is(err, tc.want) {
					t.Fatalf("Step: %v, want %v", err, tc.want)
				}
				return
			}
			if err != nil || x.Identity().Login != tc.login {
				t.Fatalf("Step: %v, login %q, want %q", err, x.Identity().Login, tc.login)
			}
			// The client hashed the bare message with the name as it sent
			// it: the proof still checks, the message being what is signed.
			final, _ := cc.Step(string(out))
			if _, _, err := x.Step(context.Background(), []byte(final)); err != nil {
				t.Fatalf("final: %v", err)
			}
		})
	}
}

func TestEmptyInitialResponseGetsAnEmptyChallengeOnce(t *testing.T) {
	store := newMemStore(t, map[string]string{alice: alicePassword})
	srv := newTestServer(t, store, Options{})
	x := exchange(t, srv, SHA256, ConnState{}, ExchangeOptions{})
	out, done, err := x.Step(context.Background(), nil)
	if err != nil || done || out == nil || len(out) != 0 {
		t.Fatalf("first empty Step = %q, %v, %v; want an empty challenge", out, done, err)
	}
	if _, done, err := x.Step(context.Background(), nil); !errors.Is(err, ErrMalformed) || !done {
		t.Fatalf("second empty Step: %v, %v; want ErrMalformed", done, err)
	}
	if _, _, err := x.Step(context.Background(), []byte("n,,n=a,r=b")); !errors.Is(err, ErrFinished) {
		t.Fatalf("Step after the end: %v", err)
	}
}

func TestErrorsHoldNoSecretMaterial(t *testing.T) {
	store := newMemStore(t, map[string]string{alice: alicePassword})
	srv := newTestServer(t, store, Options{})
	serverCert, relayCert := ecdsaCert(t, elliptic.P256(), 0), ecdsaCert(t, elliptic.P256(), 0)
	toRelay, atServer := relay(t, serverCert, relayCert, tls.VersionTLS13)
	cb := clientBinding(t, TLSExporter, toRelay.clientState())
	serverCB, _ := atServer.conn.bindingData(TLSExporter)
	keys := store.keys[alice]

	var errs []error
	var secrets []string
	for _, password := range []string{alicePassword, "a wrong password"} {
		for _, binding := range []bool{true, false} {
			c := newClient(t, alice, password, "")
			cc, mech, conn := c.NewConversation(), SHA256, ConnState{}
			if binding {
				cc, mech, conn = c.NewConversationWithChannelBinding(cb), SHA256Plus, atServer.conn
			}
			x := exchange(t, srv, mech, conn, ExchangeOptions{})
			first, _ := cc.Step("")
			out, _, err := x.Step(context.Background(), []byte(first))
			if err != nil {
				t.Fatal(err)
			}
			final, _ := cc.Step(string(out))
			_, _, err = x.Step(context.Background(), []byte(final))
			if err == nil && password != alicePassword {
				t.Fatal("wrong password accepted")
			}
			errs = append(errs, err)
			secrets = append(secrets, final)
		}
	}
	for _, b := range [][]byte{cb.Data, serverCB, keys.StoredKey, keys.ServerKey, []byte(keys.Salt)} {
		secrets = append(secrets, base64.StdEncoding.EncodeToString(b), string(b), hexString(b))
	}
	secrets = append(secrets, alicePassword)
	for _, err := range errs {
		if err == nil {
			continue
		}
		for _, s := range secrets {
			if len(s) >= 8 && containsFold(err.Error(), s) {
				t.Errorf("error %q holds secret material %q", err, s)
			}
		}
	}
	if len(errs) != 4 || errs[0] == nil || errs[1] != nil {
		t.Fatalf("errors %v: want a mismatch for the relayed binding and success without", errs)
	}
}

// TestUnknownLoginCostsWhatAWrongPasswordCosts compares the server's time
// for a wrong password and for an unknown login name, interleaved, by
// their medians: of one class (no PBKDF2, no early answer for either), so
// that timing does not tell a guesser which names exist better than the
// store's own lookup does. BenchmarkServerExchange and
// BenchmarkServerExchangeUnknownLogin give the figures.
func TestUnknownLoginCostsWhatAWrongPasswordCosts(t *testing.T) {
	store := newMemStore(t, map[string]string{alice: alicePassword})
	srv := newTestServer(t, store, Options{})
	srv.nonce = func() string { return "SNONCE" }
	messages := func(login string) (first, final []byte) {
		c := newClient(t, login, "a wrong password", "").WithNonceGenerator(func() string { return "cnonce" })
		cc := c.NewConversation()
		f, _ := cc.Step("")
		x := exchange(t, srv, SHA256, ConnState{}, ExchangeOptions{})
		out, _, err := x.Step(context.Background(), []byte(f))
		if err != nil {
			t.Fatal(err)
		}
		fin, _ := cc.Step(string(out))
		return []byte(f), []byte(fin)
	}
	run := func(first, final []byte, want string) time.Duration {
		start := time.Now()
		x, _ := srv.NewExchange(SHA256, ConnState{}, ExchangeOptions{})
		x.Step(context.Background(), first)
		_, _, err := x.Step(context.Background(), final)
		d := time.Since(start)
		if Reason(err) != want {
			t.Fatalf("%v, want %s", err, want)
		}
		return d
	}
	wf, wfin := messages(alice)
	uf, ufin := messages("mallory#zzzzzzzz")
	const n = 301
	var wrong, unknown []time.Duration
	for range n {
		wrong = append(wrong, run(wf, wfin, ReasonBadProof))
		unknown = append(unknown, run(uf, ufin, ReasonUnknownUser))
	}
	median := func(d []time.Duration) time.Duration { slices.Sort(d); return d[len(d)/2] }
	mw, mu := median(wrong), median(unknown)
	t.Logf("median server time: wrong password %v, unknown login %v", mw, mu)
	if mu > 2*mw || mw > 2*mu {
		t.Fatalf("wrong password %v, unknown login %v: not of one class", mw, mu)
	}
}
