package proxy

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"encoding/base64"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/imapgate/imapgate/auth"
	"github.com/imapgate/imapgate/auth/oauth"
)

// benchIssuer is a minimal OpenID Provider on loopback (discovery and an
// RS256 key) and one token it signed, 2048-bit like the providers'.
func benchIssuer(b *testing.B) (*oauth.Validator, string) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		b.Fatal(err)
	}
	var srv *httptest.Server
	mux := http.NewServeMux()
	mux.HandleFunc("/.well-known/openid-configuration", func(w http.ResponseWriter, r *http.Request) {
		json.NewEncoder(w).Encode(map[string]string{"issuer": srv.URL, "jwks_uri": srv.URL + "/keys"})
	})
	mux.HandleFunc("/keys", func(w http.ResponseWriter, r *http.Request) {
		json.NewEncoder(w).Encode(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: &key.PublicKey, KeyID: "k1", Algorithm: "RS256", Use: "sig"}}})
	})
	srv = httptest.NewServer(mux)
	b.Cleanup(srv.Close)
	payload, _ := json.Marshal(map[string]any{"iss": srv.URL, "aud": "imap", "sub": "u1", "email": "user1",
		"exp": time.Now().Add(time.Hour).Unix(), "jti": "t1", "client_id": "mailapp"})
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.RS256, Key: key}, (&jose.SignerOptions{}).WithType("JWT").WithHeader(jose.HeaderKey("kid"), "k1"))
	if err != nil {
		b.Fatal(err)
	}
	jws, err := signer.Sign(payload)
	if err != nil {
		b.Fatal(err)
	}
	token, _ := jws.CompactSerialize()
	v, err := oauth.New(oauth.Config{Issuer: srv.URL, Audiences: []string{"imap"}, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(v.Close)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := v.WaitReady(ctx); err != nil {
		b.Fatal(err)
	}
	return v, token
}

// BenchmarkLoginOAuthBearer is one whole client login through
// proxy.Server: TLS handshake, greeting, AUTHENTICATE with SASL-IR, the
// upstream login (an upstream that answers at once: the master login for
// the token, the password passed through for PLAIN), OK, LOGOUT. The
// token is an RS256 JWT whose issuer's keys are cached (no introspection).
// PLAIN pass-through beside it is the baseline; the difference is the
// token's cost (auth/oauth's BenchmarkValidateJWT measures it alone):
//
//	go test ./proxy/ -run '^$' -bench 'LoginOAuthBearer' -benchmem
func BenchmarkLoginOAuthBearer(b *testing.B) {
	v, token := benchIssuer(b)
	up := instantUpstream(b)
	tp := startProxyTo(b, up, UpstreamPlaintext, nil, func(c *Config) {
		c.Mechanisms = []string{auth.Plain, auth.OAuthBearer}
		c.Verifiers = &auth.Verifiers{Tokens: v}
		c.Upstream.Master = &MasterLogin{User: testMasterUser, Secret: NewSecret(testMasterSecret)}
		c.Audit = NewAuditor(io.Discard, nil)
	}, nil)
	for _, bb := range []struct{ name, command string }{
		{"PLAIN pass-through", "a AUTHENTICATE PLAIN " + plainIR("user1", "pass1-Secret!")},
		{"OAUTHBEARER", "a AUTHENTICATE OAUTHBEARER " + base64.StdEncoding.EncodeToString([]byte("n,a=user1,\x01auth=Bearer "+token+"\x01\x01"))},
	} {
		b.Run(bb.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				loginOnce(b, tp, bb.command)
			}
		})
	}
}

// loginOnce connects to tp, sends command and wants OK, then logs out.
func loginOnce(b *testing.B, tp *testProxy, command string) {
	conn, err := tls.Dial("tcp", tp.implicit, &tls.Config{RootCAs: tp.roots, ServerName: "localhost"})
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close()
	r := bufio.NewReader(conn)
	if line, err := r.ReadString('\n'); err != nil || line[:4] != "* OK" {
		b.Fatalf("greeting %q: %v", line, err)
	}
	io.WriteString(conn, command+"\r\n")
	if line, err := r.ReadString('\n'); err != nil || line[:4] != "a OK" {
		b.Fatalf("login %q: %v", line, err)
	}
	io.WriteString(conn, "z LOGOUT\r\n")
	io.Copy(io.Discard, r)
}
