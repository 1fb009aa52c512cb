package main

// A real OpenID Provider for the end-to-end token tests: zitadel/oidc's
// example OP (example/server/exampleop and example/server/storage) on a
// loopback httptest server, issuing real signed tokens through the
// authorization code flow. Copied in short from auth/oauth's provider test
// (test helpers of another package cannot be imported): the mail client
// gets JWT access tokens, and they carry a "mailbox" claim naming the
// Dovecot user (a claims mapping, as an administrator configures one).

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/zitadel/oidc/v3/example/server/exampleop"
	"github.com/zitadel/oidc/v3/example/server/storage"
	"github.com/zitadel/oidc/v3/pkg/op"
)

// The example storage's users (storage.NewUserStore) and the test's clients.
const (
	opUser1Login = "test-user@127.0.0.1" // id1; Username is "test-user@" + the issuer's host
	opUser2Login = "test-user2"          // id2
	opPassword   = "verysecure"

	opRedirectURI  = "http://localhost:9999/auth/callback"
	opMailApp      = "mailapp"  // JWT access tokens; the audience imapgate accepts
	opOtherApp     = "otherapp" // JWT access tokens for another application
	opClientSecret = "app-secret"
)

// opMailboxes maps the example's user ids to Dovecot users.
var opMailboxes = map[string]string{"id1": "user1", "id2": "user2"}

// opKey is the provider's RSA signing key.
type opKey struct {
	id   string
	priv *rsa.PrivateKey
}

func newOPKey(t testing.TB) *opKey {
	priv, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	return &opKey{id: "key-" + rand.Text()[:8], priv: priv}
}

type opSigningKey struct{ *opKey }

func (k opSigningKey) SignatureAlgorithm() jose.SignatureAlgorithm { return jose.RS256 }
func (k opSigningKey) Key() any                                    { return k.priv }
func (k opSigningKey) ID() string                                  { return k.id }

type opPublicKey struct{ *opKey }

func (k opPublicKey) ID() string                         { return k.id }
func (k opPublicKey) Algorithm() jose.SignatureAlgorithm { return jose.RS256 }
func (k opPublicKey) Use() string                        { return "sig" }
func (k opPublicKey) Key() any                           { return &k.priv.PublicKey }

// opStorage is the example storage with the settings above.
type opStorage struct {
	*storage.Storage
	key *opKey
}

func (s *opStorage) SigningKey(context.Context) (op.SigningKey, error) {
	return opSigningKey{s.key}, nil
}

func (s *opStorage) SignatureAlgorithms(context.Context) ([]jose.SignatureAlgorithm, error) {
	return []jose.SignatureAlgorithm{jose.RS256}, nil
}

func (s *opStorage) KeySet(context.Context) ([]op.Key, error) {
	return []op.Key{opPublicKey{s.key}}, nil
}

type opJWTClient struct{ op.Client }

func (opJWTClient) AccessTokenType() op.AccessTokenType { return op.AccessTokenTypeJWT }

func (s *opStorage) GetClientByClientID(ctx context.Context, id string) (op.Client, error) {
	c, err := s.Storage.GetClientByClientID(ctx, id)
	if err == nil {
		return opJWTClient{c}, nil
	}
	return c, err
}

// GetPrivateClaimsFromScopes adds the mailbox claim to access tokens.
func (s *opStorage) GetPrivateClaimsFromScopes(ctx context.Context, userID, clientID string, scopes []string) (map[string]any, error) {
	claims, err := s.Storage.GetPrivateClaimsFromScopes(ctx, userID, clientID, scopes)
	if err != nil {
		return nil, err
	}
	if claims == nil {
		claims = map[string]any{}
	}
	claims["mailbox"] = opMailboxes[userID]
	return claims, nil
}

// testOP is one running provider.
type testOP struct {
	issuer string
	key    *opKey
	down   atomic.Bool // every request answers 503
}

// startOP runs the example OP on loopback; key may be shared with another
// provider (two tenants of one cloud), nil makes a new one.
func startOP(t testing.TB, key *opKey) *testOP {
	t.Helper()
	if key == nil {
		key = newOPKey(t)
	}
	srv := httptest.NewUnstartedServer(nil)
	issuer := "http://" + srv.Listener.Addr().String()
	users := storage.NewUserStore(issuer)
	clients := map[string]*storage.Client{
		opMailApp:  storage.WebClient(opMailApp, opClientSecret, opRedirectURI),
		opOtherApp: storage.WebClient(opOtherApp, opClientSecret, opRedirectURI),
	}
	st := &opStorage{Storage: storage.NewStorageWithClients(users, clients), key: key}
	o := &testOP{issuer: issuer, key: key}
	router := exampleop.SetupServer(issuer, st, nil, false)
	srv.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if o.down.Load() {
			http.Error(w, "down for maintenance", http.StatusServiceUnavailable)
			return
		}
		router.ServeHTTP(w, r)
	})
	srv.Start()
	t.Cleanup(srv.Close)
	return o
}

// login runs the authorization code flow as a mail app would and returns
// the access token.
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
		"client_id": {clientID}, "redirect_uri": {opRedirectURI}, "response_type": {"code"},
		"scope": {"openid email"}, "state": {"st"},
	}
	loginPage := redirect(c.Get(o.issuer + "/auth?" + authz.Encode()))
	id := loginPage.Query().Get("authRequestID")
	if id == "" {
		t.Fatalf("no authRequestID in %s", loginPage)
	}
	callback := redirect(c.PostForm(o.issuer+"/login/username", url.Values{"id": {id}, "username": {username}, "password": {opPassword}}))
	back := redirect(c.Get(callback.String()))
	code := back.Query().Get("code")
	if code == "" {
		t.Fatalf("no code in %s", back)
	}
	req, _ := http.NewRequest(http.MethodPost, o.issuer+"/oauth/token", strings.NewReader(url.Values{
		"grant_type": {"authorization_code"}, "code": {code}, "redirect_uri": {opRedirectURI},
	}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth(clientID, opClientSecret)
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

// resign returns token with its claims edited by edit (nil: unchanged) and
// signed with key under kid: the provider's own key for a token it could
// have issued (one already expired, say), another key for a forgery.
func resign(t testing.TB, token string, key *rsa.PrivateKey, kid string, edit func(map[string]any)) string {
	t.Helper()
	jws, err := jose.ParseSignedCompact(token, []jose.SignatureAlgorithm{jose.RS256})
	if err != nil {
		t.Fatal(err)
	}
	payload := jws.UnsafePayloadWithoutVerification()
	if edit != nil {
		var claims map[string]any
		if err := json.Unmarshal(payload, &claims); err != nil {
			t.Fatal(err)
		}
		edit(claims)
		payload, _ = json.Marshal(claims)
	}
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.RS256, Key: key},
		(&jose.SignerOptions{}).WithType("JWT").WithHeader(jose.HeaderKey("kid"), kid))
	if err != nil {
		t.Fatal(err)
	}
	signed, err := signer.Sign(payload)
	if err != nil {
		t.Fatal(err)
	}
	s, _ := signed.CompactSerialize()
	return s
}
