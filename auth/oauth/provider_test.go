package oauth

// A real OpenID Provider for the tests: zitadel/oidc's example OP
// (example/server/exampleop and example/server/storage) on a loopback
// httptest server, issuing real signed tokens through the authorization
// code flow, its login page and its token endpoint. The example's clients
// all issue opaque access tokens and its JWT access tokens carry no email,
// so opStorage wraps the example storage the way an administrator
// configures a provider: chosen clients get JWT access tokens
// (AccessTokenTypeJWT), access tokens carry the user's email (a claims
// mapping), and the signing keys come from a keyRing that can rotate and be
// shared by two issuers (as Microsoft's tenants share theirs).

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/zitadel/oidc/v3/example/server/exampleop"
	"github.com/zitadel/oidc/v3/example/server/storage"
	"github.com/zitadel/oidc/v3/pkg/op"
)

// The example storage's users (storage.NewUserStore).
const (
	aliceLogin = "test-user@127.0.0.1" // id1; Username is "test-user@" + the issuer's host
	aliceMail  = "test-user@zitadel.ch"
	bobLogin   = "test-user2" // id2
	bobMail    = "test-user2@zitadel.ch"
	password   = "verysecure"

	redirectURI  = "http://localhost:9999/auth/callback"
	mailApp      = "mailapp"        // JWT access tokens; the audience imapgate accepts
	otherApp     = "otherapp"       // JWT access tokens for another application
	opaqueApp    = "mailapp-opaque" // opaque access tokens
	clientSecret = "app-secret"
)

// keyRing holds an issuer's RSA signing keys; the last one signs.
type keyRing struct {
	mu   sync.Mutex
	keys []*rsaKey
}

type rsaKey struct {
	id   string
	priv *rsa.PrivateKey
}

func newKeyRing(t testing.TB) *keyRing {
	r := &keyRing{}
	r.rotate(t)
	return r
}

// rotate adds a new signing key; the old ones stay published.
func (r *keyRing) rotate(t testing.TB) *rsaKey {
	priv, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	k := &rsaKey{id: "key-" + rand.Text()[:8], priv: priv}
	r.keys = append(r.keys, k)
	return k
}

func (r *keyRing) current() *rsaKey {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.keys[len(r.keys)-1]
}

type signingKey struct{ *rsaKey }

func (k signingKey) SignatureAlgorithm() jose.SignatureAlgorithm { return jose.RS256 }
func (k signingKey) Key() any                                    { return k.priv }
func (k signingKey) ID() string                                  { return k.id }

type publicKey struct{ *rsaKey }

func (k publicKey) ID() string                         { return k.id }
func (k publicKey) Algorithm() jose.SignatureAlgorithm { return jose.RS256 }
func (k publicKey) Use() string                        { return "sig" }
func (k publicKey) Key() any                           { return &k.priv.PublicKey }

// opStorage is the example storage with the provider settings above.
type opStorage struct {
	*storage.Storage
	users      storage.UserStore
	ring       *keyRing
	jwtClients map[string]bool
}

func (s *opStorage) SigningKey(context.Context) (op.SigningKey, error) {
	return signingKey{s.ring.current()}, nil
}

func (s *opStorage) SignatureAlgorithms(context.Context) ([]jose.SignatureAlgorithm, error) {
	return []jose.SignatureAlgorithm{jose.RS256}, nil
}

func (s *opStorage) KeySet(context.Context) ([]op.Key, error) {
	s.ring.mu.Lock()
	defer s.ring.mu.Unlock()
	var keys []op.Key
	for _, k := range s.ring.keys {
		keys = append(keys, publicKey{k})
	}
	return keys, nil
}

// jwtClient makes a client's access tokens JWTs (RFC 9068 style).
type jwtClient struct{ op.Client }

func (jwtClient) AccessTokenType() op.AccessTokenType { return op.AccessTokenTypeJWT }

func (s *opStorage) GetClientByClientID(ctx context.Context, id string) (op.Client, error) {
	c, err := s.Storage.GetClientByClientID(ctx, id)
	if err == nil && s.jwtClients[id] {
		return jwtClient{c}, nil
	}
	return c, err
}

// GetPrivateClaimsFromScopes adds the user's email to JWT access tokens.
func (s *opStorage) GetPrivateClaimsFromScopes(ctx context.Context, userID, clientID string, scopes []string) (map[string]any, error) {
	claims, err := s.Storage.GetPrivateClaimsFromScopes(ctx, userID, clientID, scopes)
	if err != nil {
		return nil, err
	}
	if u := s.users.GetUserByID(userID); u != nil {
		if claims == nil {
			claims = map[string]any{}
		}
		claims["email"] = u.Email
		claims["email_verified"] = u.EmailVerified
	}
	return claims, nil
}

// testOP is one running provider.
type testOP struct {
	issuer  string
	ring    *keyRing
	storage *opStorage

	keyFetches     atomic.Int64 // GET /keys
	introspections atomic.Int64 // POST /oauth/introspect
	down           atomic.Bool  // every request answers 503
	refused        atomic.Int64 // requests answered 503
	introspectDown atomic.Bool  // the introspection endpoint answers 500
}

// startOP runs the example OP on loopback. ring may be shared with
// another provider; nil makes a new one.
func startOP(t testing.TB, ring *keyRing) *testOP {
	t.Helper()
	if ring == nil {
		ring = newKeyRing(t)
	}
	srv := httptest.NewUnstartedServer(nil)
	issuer := "http://" + srv.Listener.Addr().String()
	users := storage.NewUserStore(issuer)
	clients := map[string]*storage.Client{
		mailApp:   storage.WebClient(mailApp, clientSecret, redirectURI),
		otherApp:  storage.WebClient(otherApp, clientSecret, redirectURI),
		opaqueApp: storage.WebClient(opaqueApp, clientSecret, redirectURI),
	}
	st := &opStorage{
		Storage:    storage.NewStorageWithClients(users, clients),
		users:      users,
		ring:       ring,
		jwtClients: map[string]bool{mailApp: true, otherApp: true},
	}
	o := &testOP{issuer: issuer, ring: ring, storage: st}
	router := exampleop.SetupServer(issuer, st, nil, false)
	srv.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case o.down.Load():
			o.refused.Add(1)
			http.Error(w, "down for maintenance", http.StatusServiceUnavailable)
			return
		case r.URL.Path == "/keys":
			o.keyFetches.Add(1)
		case r.URL.Path == "/oauth/introspect":
			o.introspections.Add(1)
			if o.introspectDown.Load() {
				http.Error(w, "introspection broken", http.StatusInternalServerError)
				return
			}
		}
		router.ServeHTTP(w, r)
	})
	srv.Start()
	t.Cleanup(srv.Close)
	return o
}

// login runs the authorization code flow as a mail app would: the
// authorization request, the provider's login page, its callback, and the
// token request with the client's secret. It returns the access token.
func (o *testOP) login(t testing.TB, clientID, username string) string {
	t.Helper()
	c := &http.Client{
		Timeout:       10 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	redirect := func(resp *http.Response, err error) *url.URL {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusFound {
			b, _ := io.ReadAll(resp.Body)
			t.Fatalf("%s %s: %s %s", resp.Request.Method, resp.Request.URL.Path, resp.Status, b)
		}
		loc, err := resp.Request.URL.Parse(resp.Header.Get("Location"))
		if err != nil {
			t.Fatal(err)
		}
		return loc
	}
	authz := url.Values{
		"client_id":     {clientID},
		"redirect_uri":  {redirectURI},
		"response_type": {"code"},
		"scope":         {"openid email"},
		"state":         {"st"},
	}
	loginPage := redirect(c.Get(o.issuer + "/auth?" + authz.Encode()))
	id := loginPage.Query().Get("authRequestID")
	if id == "" {
		t.Fatalf("no authRequestID in %s", loginPage)
	}
	callback := redirect(c.PostForm(o.issuer+"/login/username", url.Values{"id": {id}, "username": {username}, "password": {password}}))
	back := redirect(c.Get(callback.String()))
	code := back.Query().Get("code")
	if code == "" {
		t.Fatalf("no code in %s", back)
	}
	req, _ := http.NewRequest(http.MethodPost, o.issuer+"/oauth/token", strings.NewReader(url.Values{
		"grant_type":   {"authorization_code"},
		"code":         {code},
		"redirect_uri": {redirectURI},
	}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth(clientID, clientSecret)
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var tr struct {
		AccessToken string `json:"access_token"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&tr); err != nil || tr.AccessToken == "" {
		t.Fatalf("token response %s: %v", resp.Status, err)
	}
	return tr.AccessToken
}

// revoke revokes token at the provider (RFC 7009), as a user who reported
// a lost phone would have the administrator do.
func (o *testOP) revoke(t testing.TB, clientID, token string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, o.issuer+"/revoke", strings.NewReader(url.Values{
		"token": {token}, "token_type_hint": {"access_token"},
	}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth(clientID, clientSecret)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("revoke: %s", resp.Status)
	}
}

// clock is the validator's clock in a test; it starts at the real time,
// since the provider stamps tokens with it.
type clock struct {
	mu sync.Mutex
	d  time.Duration
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return time.Now().Add(c.d)
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.d += d
}

// logBuffer collects the validator's log lines, to prove no token is in
// them.
type logBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// newValidator starts a Validator for o and waits until it is ready.
func newValidator(t testing.TB, o *testOP, cfg Config) (*Validator, *clock, *logBuffer) {
	t.Helper()
	clk := &clock{}
	logs := &logBuffer{}
	cfg.Issuer = o.issuer
	if cfg.Audiences == nil {
		cfg.Audiences = []string{mailApp}
	}
	cfg.Now = clk.Now
	cfg.Logger = slog.New(slog.NewTextHandler(logs, nil))
	v, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(v.Close)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := v.WaitReady(ctx); err != nil {
		t.Fatalf("%v; log: %s", err, logs)
	}
	return v, clk, logs
}
