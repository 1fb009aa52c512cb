package auth

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/imapgate/imapgate/auth/oauth"
)

// tokenIssuer is a minimal OpenID Provider on loopback (discovery and
// keys), minting RS256 tokens with its key; the end-to-end tests run
// zitadel's example OP instead.
type tokenIssuer struct {
	t     *testing.T
	srv   *httptest.Server
	key   *rsa.PrivateKey
	down  atomic.Bool
	calls atomic.Int64
}

func startTokenIssuer(t *testing.T) *tokenIssuer {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	ti := &tokenIssuer{t: t, key: key}
	mux := http.NewServeMux()
	mux.HandleFunc("/.well-known/openid-configuration", func(w http.ResponseWriter, r *http.Request) {
		json.NewEncoder(w).Encode(map[string]string{"issuer": ti.srv.URL, "jwks_uri": ti.srv.URL + "/keys"})
	})
	mux.HandleFunc("/keys", func(w http.ResponseWriter, r *http.Request) {
		json.NewEncoder(w).Encode(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: &key.PublicKey, KeyID: "k1", Algorithm: "RS256", Use: "sig"}}})
	})
	ti.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ti.calls.Add(1)
		if ti.down.Load() {
			http.Error(w, "down", http.StatusServiceUnavailable)
			return
		}
		mux.ServeHTTP(w, r)
	}))
	t.Cleanup(ti.srv.Close)
	return ti
}

// mint signs claims over the defaults (alice's mailbox, audience imap, 5
// minutes to live); a nil value removes a default.
func (ti *tokenIssuer) mint(claims map[string]any) string {
	ti.t.Helper()
	return ti.mintWithHeader(claims, nil)
}

// mintWithHeader is mint with more JOSE header parameters.
func (ti *tokenIssuer) mintWithHeader(claims, header map[string]any) string {
	ti.t.Helper()
	c := map[string]any{"iss": ti.srv.URL, "aud": "imap", "sub": "alice", "email": "alice@example.com",
		"exp": time.Now().Add(5 * time.Minute).Unix(), "jti": "tok-1", "client_id": "mailapp"}
	for k, v := range claims {
		if v == nil {
			delete(c, k)
		} else {
			c[k] = v
		}
	}
	payload, _ := json.Marshal(c)
	opts := (&jose.SignerOptions{}).WithType("JWT").WithHeader(jose.HeaderKey("kid"), "k1")
	for k, v := range header {
		opts = opts.WithHeader(jose.HeaderKey(k), v)
	}
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.RS256, Key: ti.key}, opts)
	if err != nil {
		ti.t.Fatal(err)
	}
	jws, err := signer.Sign(payload)
	if err != nil {
		ti.t.Fatal(err)
	}
	s, _ := jws.CompactSerialize()
	return s
}

// validator returns a ready Validator for the issuer, with cfg's settings.
func (ti *tokenIssuer) validator(cfg oauth.Config) *oauth.Validator {
	ti.t.Helper()
	cfg.Issuer = ti.srv.URL
	if cfg.Audiences == nil {
		cfg.Audiences = []string{"imap"}
	}
	cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	v, err := oauth.New(cfg)
	if err != nil {
		ti.t.Fatal(err)
	}
	ti.t.Cleanup(v.Close)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := v.WaitReady(ctx); err != nil {
		ti.t.Fatal(err)
	}
	return v
}

// tokenEnv is a TLS connection's Env with v and an Admit that records the
// users it was asked about.
func tokenEnv(v *oauth.Validator, admitted *[]string) *Env {
	return &Env{
		Conn:      ConnState{TLS: &tls.ConnectionState{}, Listener: "[::]:993"},
		Verifiers: &Verifiers{Tokens: v},
		Admit: func(_ context.Context, user string) error {
			*admitted = append(*admitted, user)
			return nil
		},
	}
}

func oauthBearerMessage(user, token string) []byte {
	gs2 := "n,,"
	if user != "" {
		gs2 = "n,a=" + strings.NewReplacer("=", "=3D", ",", "=2C").Replace(user) + ","
	}
	return []byte(gs2 + "\x01host=imap.example.com\x01port=993\x01auth=Bearer " + token + "\x01\x01")
}

func xoauth2Message(user, token string) []byte {
	return []byte("user=" + user + "\x01auth=Bearer " + token + "\x01\x01")
}

func TestTokenMechanismsAreOfferedOnlyWithAValidatorAndTLS(t *testing.T) {
	v := startTokenIssuer(t).validator(oauth.Config{})
	configured := []string{Plain, OAuthBearer, XOAuth2}
	for _, c := range []struct {
		name string
		env  *Env
		want []string
	}{
		{"TLS and a validator", &Env{Conn: ConnState{TLS: &tls.ConnectionState{}}, Verifiers: &Verifiers{Tokens: v}}, configured},
		{"before TLS", &Env{Verifiers: &Verifiers{Tokens: v}}, []string{Plain}},
		{"no verifiers", &Env{Conn: ConnState{TLS: &tls.ConnectionState{}}}, []string{Plain}},
		{"no token validator", &Env{Conn: ConnState{TLS: &tls.ConnectionState{}}, Verifiers: &Verifiers{}}, []string{Plain}},
	} {
		t.Run(c.name, func(t *testing.T) {
			if got := Offered(context.Background(), configured, c.env); !slices.Equal(got, c.want) {
				t.Fatalf("Offered = %q, want %q", got, c.want)
			}
		})
	}
}

// A good token is a Verified Result for the token's mailbox, and the
// mailbox named was admitted before the token was looked at.
func TestGoodTokenIsVerifiedForItsMailbox(t *testing.T) {
	ti := startTokenIssuer(t)
	v := ti.validator(oauth.Config{})
	token := ti.mint(nil)
	for _, c := range []struct {
		mech, named string
		msg         []byte
		ir          bool // sent as an initial response
	}{
		{OAuthBearer, "alice@example.com", oauthBearerMessage("alice@example.com", token), true},
		{OAuthBearer, "", oauthBearerMessage("", token), true}, // no a=: the claim decides
		{OAuthBearer, "Alice@Example.COM", oauthBearerMessage("Alice@Example.COM", token), false},
		{XOAuth2, "alice@example.com", xoauth2Message("alice@example.com", token), true},
		{XOAuth2, "alice@example.com", xoauth2Message("alice@example.com", token), false},
	} {
		t.Run(c.mech+" "+c.named, func(t *testing.T) {
			var admitted []string
			x, err := Start(context.Background(), strings.ToLower(c.mech), []string{c.mech}, tokenEnv(v, &admitted))
			if err != nil {
				t.Fatal(err)
			}
			if !c.ir {
				ch, done, err := x.Next(context.Background(), nil)
				if err != nil || done || ch == nil || len(ch) != 0 {
					t.Fatalf("Next(nil) = %q, %v, %v; want an empty challenge", ch, done, err)
				}
			}
			ch, done, err := x.Next(context.Background(), c.msg)
			if err != nil || !done || ch != nil {
				t.Fatalf("Next = %q, %v, %v", ch, done, err)
			}
			want := Result{Mechanism: c.mech, User: "alice@example.com", Verified: true,
				Credential: Credential{Kind: CredentialToken, ID: "tok-1", Label: "mailapp"}}
			if got := x.Result(); got != want {
				t.Fatalf("Result = %+v, want %+v", got, want)
			}
			if !slices.Equal(admitted, []string{c.named}) {
				t.Fatalf("admitted %q, want %q", admitted, c.named)
			}
		})
	}
}

// A refused token gets the RFC 7628 error challenge first; the client's
// dummy response then ends the exchange with a Refusal carrying the
// token's reason, counted like a wrong password.
func TestRefusedTokenGetsTheErrorChallengeThenARefusal(t *testing.T) {
	ti := startTokenIssuer(t)
	v := ti.validator(oauth.Config{Scope: "openid email"})
	other, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	forged := func() string {
		parts := strings.Split(ti.mint(map[string]any{"exp": time.Now().Add(time.Hour).Unix()}), ".")
		signer, _ := jose.NewSigner(jose.SigningKey{Algorithm: jose.RS256, Key: other}, (&jose.SignerOptions{}).WithHeader(jose.HeaderKey("kid"), "k1"))
		payload, _ := jose.ParseSigned(strings.Join(parts, "."), []jose.SignatureAlgorithm{jose.RS256})
		jws, _ := signer.Sign(payload.UnsafePayloadWithoutVerification())
		s, _ := jws.CompactSerialize()
		return s
	}()
	for _, c := range []struct {
		name, mech, named, token, reason, status string
		reply                                    []byte
	}{
		{"expired", OAuthBearer, "alice@example.com", ti.mint(map[string]any{"exp": time.Now().Add(-time.Hour).Unix()}), oauth.ReasonTokenExpired, "invalid_token", []byte{1}},
		{"another audience", OAuthBearer, "alice@example.com", ti.mint(map[string]any{"aud": "crm"}), oauth.ReasonTokenAudience, "invalid_token", []byte{1}},
		{"another issuer", OAuthBearer, "", ti.mint(map[string]any{"iss": "https://elsewhere.example"}), oauth.ReasonTokenIssuer, "invalid_token", []byte{1}},
		{"forged signature", OAuthBearer, "alice@example.com", forged, oauth.ReasonTokenSignature, "invalid_token", []byte{1}},
		{"another mailbox", OAuthBearer, "bob@example.com", ti.mint(nil), oauth.ReasonTokenMailboxMismatch, "invalid_token", []byte{1}},
		{"unverified email", OAuthBearer, "", ti.mint(map[string]any{"email_verified": false}), oauth.ReasonTokenEmailUnverified, "invalid_token", []byte{1}},
		{"mailbox claim with an invisible character", OAuthBearer, "", ti.mint(map[string]any{"email": "alice\u200b@example.com"}), oauth.ReasonTokenMalformed, "invalid_token", []byte{1}},
		{"not the dummy reply", OAuthBearer, "alice@example.com", ti.mint(map[string]any{"aud": "crm"}), oauth.ReasonTokenAudience, "invalid_token", []byte("n,,\x01auth=Bearer x\x01\x01")},
		{"XOAUTH2 expired", XOAuth2, "alice@example.com", ti.mint(map[string]any{"exp": time.Now().Add(-time.Hour).Unix()}), oauth.ReasonTokenExpired, "401", []byte{}},
		{"XOAUTH2 another mailbox", XOAuth2, "bob@example.com", ti.mint(nil), oauth.ReasonTokenMailboxMismatch, "401", []byte{}},
	} {
		t.Run(c.name, func(t *testing.T) {
			var admitted []string
			x, err := Start(context.Background(), c.mech, []string{c.mech}, tokenEnv(v, &admitted))
			if err != nil {
				t.Fatal(err)
			}
			msg := oauthBearerMessage(c.named, c.token)
			if c.mech == XOAuth2 {
				msg = xoauth2Message(c.named, c.token)
			}
			ch, done, err := x.Next(context.Background(), msg)
			if err != nil || done {
				t.Fatalf("Next = %v, %v; want the error challenge", done, err)
			}
			var challenge struct{ Status, Scope string }
			if err := json.Unmarshal(ch, &challenge); err != nil || challenge.Status != c.status || challenge.Scope != "openid email" {
				t.Fatalf("challenge %s (%v), want status %s and the scope", ch, err, c.status)
			}
			if c.mech == OAuthBearer && !strings.Contains(string(ch), `"openid-configuration":"`+ti.srv.URL+`/.well-known/openid-configuration"`) {
				t.Fatalf("challenge %s names no openid-configuration", ch)
			}
			_, done, err = x.Next(context.Background(), c.reply)
			var r *Refusal
			if !errors.As(err, &r) || done {
				t.Fatalf("after the reply: %v, %v; want a *Refusal", done, err)
			}
			if r.Reason != c.reason || r.User != c.named || r.Credential.Kind != CredentialToken {
				t.Fatalf("Refusal %+v, want reason %s for %q", r, c.reason, c.named)
			}
			if strings.Contains(err.Error(), c.token) {
				t.Fatal("the error shows the token")
			}
			if !slices.Equal(admitted, []string{c.named}) {
				t.Fatalf("admitted %q, want %q", admitted, c.named)
			}
			if _, _, err := x.Next(context.Background(), []byte{1}); !errors.Is(err, ErrMalformed) {
				t.Fatalf("a response after the end: %v", err)
			}
		})
	}
}

// What the policy refuses ends the exchange before the token is looked
// at: the error is Admit's, unchanged, and the provider is never asked.
func TestAdmitRefusalComesBeforeTheToken(t *testing.T) {
	ti := startTokenIssuer(t)
	v := ti.validator(oauth.Config{})
	locked := errors.New("locked")
	env := &Env{Conn: ConnState{TLS: &tls.ConnectionState{}}, Verifiers: &Verifiers{Tokens: v},
		Admit: func(context.Context, string) error { return locked }}
	x, _ := Start(context.Background(), OAuthBearer, []string{OAuthBearer}, env)
	before := ti.calls.Load()
	// A token signed by a key the validator has not fetched would make it
	// ask the provider; it must not get that far.
	_, done, err := x.Next(context.Background(), oauthBearerMessage("alice@example.com", ti.mint(nil)))
	if err != locked || done {
		t.Fatalf("Next = %v, %v; want Admit's error unchanged", done, err)
	}
	if n := ti.calls.Load() - before; n != 0 {
		t.Fatalf("%d requests to the provider", n)
	}
}

// A message that breaks the format is malformed at once: no error
// challenge, no admission, no validation.
func TestMalformedTokenMessageIsRefusedAtOnce(t *testing.T) {
	v := startTokenIssuer(t).validator(oauth.Config{})
	for _, c := range []struct {
		name, mech string
		msg        []byte
		want       error
	}{
		{"no auth key", OAuthBearer, []byte("n,,\x01host=x\x01\x01"), ErrMalformed},
		{"channel binding required", OAuthBearer, []byte("p=tls-unique,,\x01auth=Bearer abc\x01\x01"), ErrMalformed},
		{"XOAUTH2 without user", XOAuth2, []byte("auth=Bearer abc\x01\x01"), ErrMalformed},
		{"control character in a=", OAuthBearer, oauthBearerMessage("alice\x7f@example.com", "abc"), ErrMalformedUser},
		{"invisible character in user=", XOAuth2, xoauth2Message("alice\u200b@example.com", "abc"), ErrMalformedUser},
	} {
		t.Run(c.name, func(t *testing.T) {
			var admitted []string
			x, _ := Start(context.Background(), c.mech, []string{c.mech}, tokenEnv(v, &admitted))
			ch, done, err := x.Next(context.Background(), c.msg)
			if !errors.Is(err, c.want) || done || ch != nil {
				t.Fatalf("Next = %q, %v, %v; want %v", ch, done, err, c.want)
			}
			var r *Refusal
			if errors.As(err, &r) || len(admitted) != 0 {
				t.Fatalf("a malformed message was judged (%v) or admitted (%q)", err, admitted)
			}
		})
	}
}

// The provider down (here: down since start, so discovery never
// succeeded) is the server's failure: Unavailable, no challenge.
func TestProviderDownIsUnavailableNotARefusal(t *testing.T) {
	ti := startTokenIssuer(t)
	ti.down.Store(true)
	var admitted []string
	notReady, err := oauth.New(oauth.Config{Issuer: ti.srv.URL, Audiences: []string{"imap"}, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	defer notReady.Close()
	x, _ := Start(context.Background(), OAuthBearer, []string{OAuthBearer}, tokenEnv(notReady, &admitted))
	ch, done, err := x.Next(context.Background(), oauthBearerMessage("alice@example.com", ti.mint(nil)))
	var u *Unavailable
	if !errors.As(err, &u) || u.Reason != oauth.ReasonUnavailable || !errors.Is(err, ErrUnavailable) || done || ch != nil {
		t.Fatalf("Next = %q, %v, %v; want *Unavailable oauth_unavailable and no challenge", ch, done, err)
	}
}

// A JWT of exactly oauth.MaxTokenLength (64 KiB) passes: Microsoft's
// tokens passed 4 KiB in 2025, and groups claims make them grow.
func TestTokenOf64KiBPasses(t *testing.T) {
	ti := startTokenIssuer(t)
	v := ti.validator(oauth.Config{})
	// base64url makes 4 bytes of 3, so a part's length is never 1 more
	// than a multiple of 4: a header parameter's length fills the gap.
	base := len(ti.mintWithHeader(map[string]any{"groups": ""}, map[string]any{"x": ""}))
	pad := (oauth.MaxTokenLength - base) * 3 / 4
	var token string
search:
	for p := pad - 4; p <= pad+4; p++ {
		for extra := range 4 {
			token = ti.mintWithHeader(map[string]any{"groups": strings.Repeat("g", p)}, map[string]any{"x": strings.Repeat("x", extra)})
			if len(token) == oauth.MaxTokenLength {
				break search
			}
		}
	}
	if len(token) != oauth.MaxTokenLength {
		t.Fatalf("token of %d bytes, want %d", len(token), oauth.MaxTokenLength)
	}
	var admitted []string
	x, _ := Start(context.Background(), OAuthBearer, []string{OAuthBearer}, tokenEnv(v, &admitted))
	if _, done, err := x.Next(context.Background(), oauthBearerMessage("alice@example.com", token)); err != nil || !done {
		t.Fatalf("64 KiB token: %v, %v", done, err)
	}
}
