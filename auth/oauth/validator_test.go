package oauth

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
)

func TestNewRefusesConfigsThatWouldAcceptTooMuch(t *testing.T) {
	ok := Config{Issuer: "https://login.example.com", Audiences: []string{"imap"}}
	for _, c := range []struct {
		name string
		edit func(*Config)
		want string
	}{
		{"no issuer", func(c *Config) { c.Issuer = "" }, `issuer "" has no host`},
		{"http issuer on the network", func(c *Config) { c.Issuer = "http://login.example.com" }, "uses http to a host that is not loopback"},
		{"issuer with credentials", func(c *Config) { c.Issuer = "https://u:p@login.example.com" }, "must not carry credentials"},
		{"ftp issuer", func(c *Config) { c.Issuer = "ftp://login.example.com" }, "is not an https URL"},
		{"no audience", func(c *Config) { c.Audiences = nil }, "no audience"},
		{"empty audience", func(c *Config) { c.Audiences = []string{""} }, "empty audience"},
		{"alg none", func(c *Config) { c.Algorithms = []string{"RS256", "none"} }, `algorithm "none" is never accepted`},
		{"HMAC", func(c *Config) { c.Algorithms = []string{"HS256"} }, `algorithm "HS256" is never accepted`},
		{"unknown alg", func(c *Config) { c.Algorithms = []string{"RS1"} }, `unknown algorithm "RS1"`},
		{"negative skew", func(c *Config) { c.ClockSkew = -time.Second }, "negative clock skew"},
		{"huge skew", func(c *Config) { c.ClockSkew = time.Hour }, "clock skew 1h0m0s over 10m0s"},
		{"negative timeout", func(c *Config) { c.RequestTimeout = -1 }, "negative request timeout"},
		{"introspection without secret", func(c *Config) { c.Introspection = &Introspection{ClientID: "imapgate"} }, "needs a client id and a client secret"},
		{"introspection over http", func(c *Config) {
			c.Introspection = &Introspection{ClientID: "i", ClientSecret: "s", Endpoint: "http://idp.example.com/introspect"}
		}, "uses http to a host that is not loopback"},
		{"long cache TTL", func(c *Config) {
			c.Introspection = &Introspection{ClientID: "i", ClientSecret: "s", CacheTTL: time.Hour}
		}, "introspection cache TTL 1h0m0s over 5m0s"},
		{"negative cache size", func(c *Config) {
			c.Introspection = &Introspection{ClientID: "i", ClientSecret: "s", CacheSize: -1}
		}, "negative introspection cache size"},
	} {
		t.Run(c.name, func(t *testing.T) {
			cfg := ok
			c.edit(&cfg)
			v, err := New(cfg)
			if err == nil {
				v.Close()
				t.Fatalf("accepted; want %q", c.want)
			}
			if !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error %q; want %q", err, c.want)
			}
			if cerr := CheckConfig(cfg); cerr == nil || cerr.Error() != err.Error() {
				t.Fatalf("CheckConfig = %v, New = %v", cerr, err)
			}
		})
	}
	for _, issuer := range []string{"http://127.0.0.1:9", "http://[::1]:9", "http://localhost:9"} {
		v, err := New(Config{Issuer: issuer, Audiences: []string{"imap"}})
		if err != nil {
			t.Fatalf("loopback issuer %s: %v", issuer, err)
		}
		v.Close()
	}
}

func TestIntrospectionSecretHiddenFromFmt(t *testing.T) {
	c := Introspection{ClientID: "imapgate", ClientSecret: "s3cr3t-value"}
	asJSON, _ := json.Marshal(c)
	var logged bytes.Buffer
	slog.New(slog.NewJSONHandler(&logged, nil)).Info("config", "introspection", c, "config", Config{Introspection: &c})
	for _, s := range []string{fmt.Sprintf("%v", c), fmt.Sprintf("%+v", c), fmt.Sprintf("%#v", c), fmt.Sprintf("%s", c), string(asJSON), logged.String()} {
		if strings.Contains(s, "s3cr3t-value") {
			t.Fatalf("secret shown: %s", s)
		}
	}
}

func TestEqualMailbox(t *testing.T) {
	for _, c := range []struct {
		a, b string
		want bool
	}{
		{"alice@example.com", "alice@example.com", true},
		{"Alice.Smith@Example.COM", "alice.smith@example.com", true},
		{"alice", "alice@example.com", false},
		{"alice@example.com", "alice@example.org", false},
		{"j\u00fcrgen@example.de", "J\u00fcrgen@example.de", true},
		{"j\u00fcrgen@example.de", "j\u00dcrgen@example.de", false}, // no Unicode folding
		{"kate@example.com", "\u212aate@example.com", false},        // Kelvin sign folds to k in Unicode
		{"", "", true},
	} {
		if got := EqualMailbox(c.a, c.b); got != c.want {
			t.Errorf("EqualMailbox(%q, %q) = %v, want %v", c.a, c.b, got, c.want)
		}
	}
}

// miniOP is a minimal provider for what zitadel's example cannot be made
// to issue: tokens without exp, with odd claims, a withdrawn key, a
// redirecting or oversized endpoint. Its discovery, JWKS and RFC 7662
// endpoint are real HTTP on loopback; its tokens are signed with its key.
type miniOP struct {
	t   *testing.T
	srv *httptest.Server
	key *rsa.PrivateKey
	kid string

	mu         sync.Mutex
	published  bool                                     // the key is in the JWKS
	jwksPad    int                                      // bytes of padding in the JWKS, to test the size cap
	active     map[string]bool                          // introspection answers by token
	calls      map[string]int                           // introspection requests by token
	introAud   any                                      // aud of introspection answers; nil leaves it out
	introspect func(http.ResponseWriter, *http.Request) // replaces the endpoint if set
}

func startMiniOP(t *testing.T) *miniOP {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	m := &miniOP{t: t, key: key, kid: "k1", published: true, active: map[string]bool{}, calls: map[string]int{}, introAud: "imap"}
	mux := http.NewServeMux()
	mux.HandleFunc("/.well-known/openid-configuration", func(w http.ResponseWriter, r *http.Request) {
		json.NewEncoder(w).Encode(map[string]string{
			"issuer":                 m.srv.URL,
			"jwks_uri":               m.srv.URL + "/keys",
			"introspection_endpoint": m.srv.URL + "/introspect",
		})
	})
	mux.HandleFunc("/keys", func(w http.ResponseWriter, r *http.Request) {
		m.mu.Lock()
		defer m.mu.Unlock()
		var set jose.JSONWebKeySet
		if m.published {
			set.Keys = append(set.Keys, jose.JSONWebKey{Key: &m.key.PublicKey, KeyID: m.kid, Algorithm: "RS256", Use: "sig"})
		}
		b, _ := json.Marshal(set)
		if m.jwksPad > 0 {
			b = append(b[:len(b)-1], []byte(`,"pad":"`+strings.Repeat("x", m.jwksPad)+`"}`)...)
		}
		w.Write(b)
	})
	mux.HandleFunc("/introspect", func(w http.ResponseWriter, r *http.Request) {
		m.mu.Lock()
		h := m.introspect
		m.mu.Unlock()
		if h != nil {
			h(w, r)
			return
		}
		if id, secret, _ := r.BasicAuth(); id != "imapgate" || secret != "pw" {
			http.Error(w, "bad client", http.StatusUnauthorized)
			return
		}
		tok := r.PostFormValue("token")
		m.mu.Lock()
		m.calls[tok]++
		answer := map[string]any{"active": m.active[tok], "email": "alice@example.com", "sub": "alice"}
		if m.introAud != nil {
			answer["aud"] = m.introAud
		}
		m.mu.Unlock()
		json.NewEncoder(w).Encode(answer)
	})
	m.srv = httptest.NewServer(mux)
	t.Cleanup(m.srv.Close)
	return m
}

// mint signs claims with the provider's key; exp defaults to 5 minutes
// ahead unless claims set it (nil removes it).
func (m *miniOP) mint(claims map[string]any) string {
	c := map[string]any{"iss": m.srv.URL, "aud": "imap", "sub": "alice", "email": "alice@example.com", "exp": time.Now().Add(5 * time.Minute).Unix()}
	for k, v := range claims {
		if v == nil {
			delete(c, k)
		} else {
			c[k] = v
		}
	}
	payload, _ := json.Marshal(c)
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.RS256, Key: m.key},
		(&jose.SignerOptions{}).WithType("JWT").WithHeader(jose.HeaderKey("kid"), m.kid))
	if err != nil {
		m.t.Fatal(err)
	}
	jws, err := signer.Sign(payload)
	if err != nil {
		m.t.Fatal(err)
	}
	s, _ := jws.CompactSerialize()
	return s
}

func (m *miniOP) validator(cfg Config) (*Validator, *clock) {
	m.t.Helper()
	clk := &clock{}
	cfg.Issuer = m.srv.URL
	if cfg.Audiences == nil {
		cfg.Audiences = []string{"imap"}
	}
	cfg.Now = clk.Now
	cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	v, err := New(cfg)
	if err != nil {
		m.t.Fatal(err)
	}
	m.t.Cleanup(v.Close)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := v.WaitReady(ctx); err != nil {
		m.t.Fatal(err)
	}
	return v, clk
}

func TestClaimsAJWTMustCarry(t *testing.T) {
	m := startMiniOP(t)
	v, _ := m.validator(Config{})
	upn, _ := m.validator(Config{MailboxClaim: "upn"})
	for _, c := range []struct {
		name   string
		v      *Validator
		claims map[string]any
		reason string
	}{
		{"no exp", v, map[string]any{"exp": nil}, ReasonTokenMalformed},
		{"nbf ahead", v, map[string]any{"nbf": time.Now().Add(10 * time.Minute).Unix()}, ReasonTokenExpired},
		{"iat ahead", v, map[string]any{"iat": time.Now().Add(10 * time.Minute).Unix()}, ReasonTokenExpired},
		{"aud list without ours", v, map[string]any{"aud": []string{"crm", "hr"}}, ReasonTokenAudience},
		{"no email", v, map[string]any{"email": nil}, ReasonTokenMalformed},
		{"email not a string", v, map[string]any{"email": []string{"a@example.com"}}, ReasonTokenMalformed},
		{"email with a newline", v, map[string]any{"email": "alice@example.com\nbob"}, ReasonTokenMalformed},
		{"email_verified false", v, map[string]any{"email_verified": false}, ReasonTokenEmailUnverified},
		{"email_verified \"false\" (Cognito)", v, map[string]any{"email_verified": "false"}, ReasonTokenEmailUnverified},
		{"upn claim missing", upn, nil, ReasonTokenMalformed},
	} {
		t.Run(c.name, func(t *testing.T) {
			tok := m.mint(c.claims)
			_, err := validate(c.v, "", tok)
			refusedWith(t, err, c.reason, tok)
		})
	}
	if id, err := validate(v, "alice@example.com", m.mint(map[string]any{"aud": []string{"crm", "imap"}, "email_verified": true})); err != nil || id.Mailbox != "alice@example.com" {
		t.Fatalf("aud list with ours: %+v, %v", id, err)
	}
	if id, err := validate(upn, "Alice@Example.com", m.mint(map[string]any{"upn": "alice@example.com"})); err != nil || id.Mailbox != "alice@example.com" {
		t.Fatalf("upn: %+v, %v", id, err)
	}
	tok := m.mint(nil)
	for _, garbage := range []string{"a.b.c", "eyJhbGciOiJSUzI1NiJ9.!!!.c", tok[:len(tok)-5]} {
		_, err := validate(v, "", garbage)
		if r := Reason(err); r != ReasonTokenMalformed && r != ReasonTokenSignature {
			t.Fatalf("%q: %v", garbage, err)
		}
	}
}

// A key the provider withdrew (compromised, say) stops verifying once the
// cached key set is MaxKeyAge old.
func TestWithdrawnKeyStopsVerifyingAfterMaxKeyAge(t *testing.T) {
	m := startMiniOP(t)
	v, clk := m.validator(Config{MaxKeyAge: 10 * time.Minute})
	tok := m.mint(map[string]any{"exp": time.Now().Add(time.Hour).Unix()})
	if _, err := validate(v, "", tok); err != nil {
		t.Fatal(err)
	}
	m.mu.Lock()
	m.published = false
	m.mu.Unlock()
	clk.Advance(11 * time.Minute)
	// This login starts the refresh and still uses the old set; the
	// refresh ends with no usable key, which fails and keeps the old set.
	_, _ = validate(v, "", tok)
	m.mu.Lock()
	m.published = true
	m.kid = "k2" // the provider now publishes the same key material under another id
	m.mu.Unlock()
	// Each login past the refresh interval starts a refresh unless one is
	// under way; the one started above may still be fetching the empty
	// set, so go on until a refresh has fetched only k2.
	waitFor(t, func() bool {
		clk.Advance(DefaultKeyRefreshInterval)
		_, _ = validate(v, "", tok)
		keys, _ := v.keys.snapshot()
		return len(keys) == 1 && keys[0].KeyID == "k2"
	})
	_, err := validate(v, "", tok) // signed under k1
	refusedWith(t, err, ReasonTokenSignature, tok)
}

// waitFor waits, at most 10 s, for cond; it awaits a background fetch.
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 10 s")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestIntrospectionCacheIsBoundedAndShortLived(t *testing.T) {
	m := startMiniOP(t)
	v, clk := m.validator(Config{Introspection: &Introspection{ClientID: "imapgate", ClientSecret: "pw", CacheSize: 2}})
	t1, t2, t3 := "opaque-one", "opaque-two", "opaque-three"
	m.mu.Lock()
	m.active[t1], m.active[t2], m.active[t3] = true, true, true
	m.mu.Unlock()
	for _, tok := range []string{t1, t1, t2, t3, t3, t1} {
		if id, err := validate(v, "alice@example.com", tok); err != nil || id.Mailbox != "alice@example.com" {
			t.Fatalf("%s: %+v, %v", tok, id, err)
		}
	}
	m.mu.Lock()
	got := fmt.Sprint(m.calls[t1], m.calls[t2], m.calls[t3])
	m.mu.Unlock()
	if got != "2 1 1" { // t1 was pushed out by t2 and t3
		t.Fatalf("introspection requests per token %s, want 2 1 1", got)
	}
	if n := len(v.intro.entries); n > 2 {
		t.Fatalf("%d cache entries, want at most 2", n)
	}
	clk.Advance(DefaultIntrospectionCacheTTL)
	validate(v, "", t3)
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.calls[t3] != 2 {
		t.Fatalf("after the TTL, %d requests for t3, want 2", m.calls[t3])
	}
}

// An introspection answer without aud (RFC 7662 makes it optional) says
// nothing about whom the token was issued to, unless imapgate asked as one
// of the audiences: the provider then answers active only for tokens that
// caller may use (RFC 7662 section 2.2), as zitadel does. Otherwise a
// token the provider issued to any other application would open
// mailboxes.
func TestIntrospectionAnswerWithoutAudIsRefusedUnlessImapgateIsTheAudience(t *testing.T) {
	m := startMiniOP(t)
	m.mu.Lock()
	m.introAud = nil
	m.active["opaque-for-the-crm"] = true
	m.mu.Unlock()
	intro := &Introspection{ClientID: "imapgate", ClientSecret: "pw"}
	v, _ := m.validator(Config{Introspection: intro}) // audiences: imap
	_, err := validate(v, "alice@example.com", "opaque-for-the-crm")
	refusedWith(t, err, ReasonTokenAudience, "opaque-for-the-crm")

	asAudience, _ := m.validator(Config{Introspection: intro, Audiences: []string{"imap", "imapgate"}})
	if id, err := validate(asAudience, "alice@example.com", "opaque-for-the-crm"); err != nil || id.Mailbox != "alice@example.com" {
		t.Fatalf("introspected as an audience: %+v, %v", id, err)
	}

	m.mu.Lock()
	m.introAud = []string{"crm"}
	m.active["opaque-aud-crm"] = true
	m.mu.Unlock()
	_, err = validate(asAudience, "alice@example.com", "opaque-aud-crm")
	refusedWith(t, err, ReasonTokenAudience, "opaque-aud-crm")
}

// A redirect from the introspection endpoint is not followed: it would
// post the token to wherever the redirect points.
func TestIntrospectionRedirectIsNotFollowed(t *testing.T) {
	m := startMiniOP(t)
	elsewhere := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		t.Errorf("the redirect was followed: %s %s", r.Method, r.URL)
	}))
	defer elsewhere.Close()
	m.mu.Lock()
	m.introspect = func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, elsewhere.URL+"/steal", http.StatusTemporaryRedirect)
	}
	m.mu.Unlock()
	v, _ := m.validator(Config{Introspection: &Introspection{ClientID: "imapgate", ClientSecret: "pw"}})
	_, err := validate(v, "", "opaque-token")
	refusedWith(t, err, ReasonUnavailable, "opaque-token")
}

func TestResponseOverTheCapIsRefused(t *testing.T) {
	big := strings.Repeat("x", MaxResponseSize+1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/chunked" {
			w.Write([]byte(big[:MaxResponseSize/2]))
			w.(http.Flusher).Flush()
			w.Write([]byte(big[MaxResponseSize/2:]))
			return
		}
		w.Write([]byte(big))
	}))
	defer srv.Close()
	c := newHTTPClient(nil, 5*time.Second)
	for _, path := range []string{"/sized", "/chunked"} {
		resp, err := c.Get(srv.URL + path)
		if err == nil {
			_, err = readBody(resp)
		}
		if !errors.Is(err, errResponseTooLarge) {
			t.Fatalf("%s: %v, want errResponseTooLarge", path, err)
		}
	}

	// A key set over the cap keeps discovery failing, with the reason in
	// the log.
	m := startMiniOP(t)
	m.jwksPad = MaxResponseSize
	logs := &logBuffer{}
	v, err := New(Config{Issuer: m.srv.URL, Audiences: []string{"imap"}, Logger: slog.New(slog.NewTextHandler(logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	waitFor(t, func() bool { return strings.Contains(logs.String(), "response over 1048576 bytes") })
	tok := m.mint(nil)
	_, err = validate(v, "", tok)
	refusedWith(t, err, ReasonUnavailable, tok)
}
