package proxy

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/base64"
	"io"
	"path/filepath"
	"strings"
	"testing"

	"github.com/imapgate/imapgate/auth"
	"github.com/imapgate/imapgate/auth/credstore"
	xdg "github.com/xdg-go/scram"
)

// BenchmarkSCRAMLogin is one whole login through proxy.Server to an
// upstream that answers the master login at once: TLS (resumed, so the
// handshake's cost stays out of the comparison), greeting, AUTHENTICATE,
// the master login, LOGOUT. SCRAM's client keys are derived once (xdg-go
// caches them per salt), so the figure is the server's side plus HMACs;
// client-PBKDF2 is what a client pays on top, per login, at the store's
// 4096 iterations. PLAIN beside it, passed through and with an app
// password, for comparison:
//
//	go test ./proxy/ -run '^$' -bench 'SCRAMLogin' -benchmem
func BenchmarkSCRAMLogin(b *testing.B) {
	addr := instantUpstream(b)
	store, err := credstore.OpenBolt(filepath.Join(b.TempDir(), "credentials.db"), credstore.Options{})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { store.Close() })
	p, secret, err := store.AddAppPassword(context.Background(), credstore.NewAppPassword{User: "user1", Label: "bench"})
	if err != nil {
		b.Fatal(err)
	}
	pass := secret.Reveal()
	v, err := auth.NewSCRAMVerifier(credstore.SCRAMKeys(store), store.SCRAMOptions())
	if err != nil {
		b.Fatal(err)
	}
	tp := startProxyTo(b, addr, UpstreamPlaintext, nil, func(c *Config) {
		c.Mechanisms = scramMechanisms
		c.Verifiers = &auth.Verifiers{SCRAM: v}
		c.AppPasswords = store
		c.Upstream.Master = &MasterLogin{User: testMasterUser, Secret: NewSecret(testMasterSecret)}
	}, nil)
	client, err := xdg.SHA256.NewClient(p.SCRAMLogin(), pass, "")
	if err != nil {
		b.Fatal(err)
	}
	plain := func(*tls.Conn) *xdg.ClientConversation { return nil }
	for _, bb := range []struct {
		name  string
		mech  string
		ir    string // PLAIN's message
		start func(*tls.Conn) *xdg.ClientConversation
	}{
		{"PLAIN-passthrough", auth.Plain, "\x00user1\x00pass1-Secret!", plain},
		{"PLAIN-app-password", auth.Plain, "\x00user1\x00" + pass, plain},
		{"SCRAM-SHA-256", auth.SCRAMSHA256, "", func(*tls.Conn) *xdg.ClientConversation { return client.NewConversation() }},
		{"SCRAM-SHA-256-PLUS", auth.SCRAMSHA256Plus, "", func(c *tls.Conn) *xdg.ClientConversation {
			st := c.ConnectionState()
			cb, err := xdg.NewTLSExporterBinding(&st)
			if err != nil {
				b.Fatal(err)
			}
			return client.NewConversationWithChannelBinding(cb)
		}},
	} {
		b.Run(bb.name, func(b *testing.B) {
			cfg := &tls.Config{RootCAs: tp.roots, ServerName: "localhost", ClientSessionCache: tls.NewLRUClientSessionCache(1)}
			b.ReportAllocs()
			for b.Loop() {
				benchLogin(b, tp.implicit, cfg, bb.mech, bb.ir, bb.start)
			}
		})
	}
	b.Run("client-PBKDF2", func(b *testing.B) {
		kf := xdg.KeyFactors{Salt: "0123456789abcdef", Iters: credstore.DefaultSCRAMIterations}
		for b.Loop() {
			c, _ := xdg.SHA256.NewClient(p.SCRAMLogin(), pass, "")
			c.GetStoredCredentials(kf)
		}
	})
}

// benchLogin is one login: PLAIN with ir, or SCRAM with the conversation
// start gives, then LOGOUT.
func benchLogin(b *testing.B, addr string, cfg *tls.Config, mech, ir string, start func(*tls.Conn) *xdg.ClientConversation) {
	conn, err := tls.Dial("tcp", addr, cfg)
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close()
	r := bufio.NewReader(conn)
	line := func() string {
		l, err := r.ReadString('\n')
		if err != nil {
			b.Fatal(err)
		}
		return l
	}
	line() // greeting
	cc := start(conn)
	if cc == nil {
		io.WriteString(conn, "a AUTHENTICATE PLAIN "+base64.StdEncoding.EncodeToString([]byte(ir))+"\r\n")
	} else {
		first, _ := cc.Step("")
		io.WriteString(conn, "a AUTHENTICATE "+mech+" "+base64.StdEncoding.EncodeToString([]byte(first))+"\r\n")
	}
	for {
		l := line()
		if strings.HasPrefix(l, "a ") {
			if !strings.HasPrefix(l, "a OK") {
				b.Fatalf("login: %q", l)
			}
			break
		}
		ch, _ := base64.StdEncoding.DecodeString(strings.TrimSpace(strings.TrimPrefix(l, "+")))
		out, err := cc.Step(string(ch))
		if err != nil {
			b.Fatal(err)
		}
		io.WriteString(conn, base64.StdEncoding.EncodeToString([]byte(out))+"\r\n")
	}
	io.WriteString(conn, "z LOGOUT\r\n")
	io.Copy(io.Discard, r)
}
