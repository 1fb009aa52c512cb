package scram

import (
	"context"
	"crypto/elliptic"
	"crypto/tls"
	"testing"

	"github.com/xdg-go/scram"
)

// benchConversation returns the client's two messages of one login, with
// both nonces fixed so the same messages can be replayed to new exchanges.
func benchConversation(b *testing.B, srv *Server, mech Mechanism, conn ConnState, login string, cb *scram.ChannelBinding) (first, final []byte) {
	b.Helper()
	srv.nonce = func() string { return "SNONCE" }
	c := newClient(b, login, alicePassword, "").WithNonceGenerator(func() string { return "cnonce" })
	cc := c.NewConversation()
	if cb != nil {
		cc = c.NewConversationWithChannelBinding(*cb)
	}
	f, _ := cc.Step("")
	x := exchange(b, srv, mech, conn, ExchangeOptions{})
	out, _, err := x.Step(context.Background(), []byte(f))
	if err != nil {
		b.Fatal(err)
	}
	fin, err := cc.Step(string(out))
	if err != nil {
		b.Fatal(err)
	}
	return []byte(f), []byte(fin)
}

// serverSide runs the server's part of one login: a new exchange, the
// client-first and client-final messages.
func serverSide(b *testing.B, srv *Server, mech Mechanism, conn ConnState, first, final []byte, want error) {
	ctx := context.Background()
	for b.Loop() {
		x, err := srv.NewExchange(mech, conn, ExchangeOptions{})
		if err != nil {
			b.Fatal(err)
		}
		if _, _, err := x.Step(ctx, first); err != nil {
			b.Fatal(err)
		}
		if _, _, err := x.Step(ctx, final); err != want {
			b.Fatalf("final: %v, want %v", err, want)
		}
	}
}

// BenchmarkServerExchange is the server's CPU for one SCRAM-SHA-256 login
// at 4096 iterations, lookup in memory: parsing, SASLprep, xdg-go's
// messages, and the proof check (HMACs and hashes: the server never runs
// PBKDF2; the client does, BenchmarkClientKeyDerivation).
func BenchmarkServerExchange(b *testing.B) {
	store := newMemStore(b, map[string]string{alice: alicePassword})
	srv := newTestServer(b, store, Options{})
	first, final := benchConversation(b, srv, SHA256, ConnState{}, alice, nil)
	b.ReportAllocs()
	serverSide(b, srv, SHA256, ConnState{}, first, final, nil)
}

// BenchmarkServerExchangePlus is the same with tls-exporter on TLS 1.3:
// the channel binding adds the export and the offered-types check.
func BenchmarkServerExchangePlus(b *testing.B) {
	store := newMemStore(b, map[string]string{alice: alicePassword})
	srv := newTestServer(b, store, Options{})
	p := newTLSPair(b, ecdsaCert(b, elliptic.P256(), 0), tls.VersionTLS13)
	cs := p.clientState()
	cb, err := scram.NewTLSExporterBinding(&cs)
	if err != nil {
		b.Fatal(err)
	}
	first, final := benchConversation(b, srv, SHA256Plus, p.conn, alice, &cb)
	b.ReportAllocs()
	serverSide(b, srv, SHA256Plus, p.conn, first, final, nil)
}

// BenchmarkServerExchangeUnknownLogin is an unknown login name's exchange,
// made-up keys included: it must cost what a known one does.
func BenchmarkServerExchangeUnknownLogin(b *testing.B) {
	store := newMemStore(b, nil)
	srv := newTestServer(b, store, Options{})
	first, final := benchConversation(b, srv, SHA256, ConnState{}, "mallory#zzzzzzzz", nil)
	b.ReportAllocs()
	ctx := context.Background()
	for b.Loop() {
		x, _ := srv.NewExchange(SHA256, ConnState{}, ExchangeOptions{})
		x.Step(ctx, first)
		if _, _, err := x.Step(ctx, final); Reason(err) != ReasonUnknownUser {
			b.Fatal(err)
		}
	}
}

// BenchmarkClientKeyDerivation is what the client pays per login at 4096
// iterations (PBKDF2-HMAC-SHA-256), for comparison.
func BenchmarkClientKeyDerivation(b *testing.B) {
	for b.Loop() {
		c, _ := scram.SHA256.NewClient(alice, alicePassword, "")
		if _, err := c.GetStoredCredentialsWithError(scram.KeyFactors{Salt: "0123456789abcdef", Iters: MinIterations}); err != nil {
			b.Fatal(err)
		}
	}
}
