package oauth

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
)

// refusedWith checks that err refuses a token for reason, without the
// token in its text.
func refusedWith(t *testing.T, err error, reason, token string) {
	t.Helper()
	if err == nil {
		t.Fatalf("accepted; want refusal %s", reason)
	}
	if got := Reason(err); got != reason {
		t.Fatalf("refused with %q (%v); want %s", got, err, reason)
	}
	if strings.Contains(err.Error(), token) {
		t.Fatalf("the error shows the token: %v", err)
	}
}

func validate(v *Validator, named, token string) (Identity, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return v.Validate(ctx, named, NewToken(token))
}

// The path of a real login: the mail app logs in at the provider, sends
// OAUTHBEARER with the access token, and imapgate learns the mailbox.
func TestTokenFromTheProviderOpensItsOwnMailbox(t *testing.T) {
	o := startOP(t, nil)
	v, _, logs := newValidator(t, o, Config{})
	token := o.login(t, mailApp, aliceLogin)

	msg, err := ParseOAuthBearer(buildMessage(OAuthBearer, aliceMail, token))
	if err != nil {
		t.Fatal(err)
	}
	id, err := validate(v, msg.User, token)
	if err != nil {
		t.Fatal(err)
	}
	if id.Mailbox != aliceMail || id.Subject != "id1" || id.ClientID != mailApp || id.TokenID == "" || id.Introspected {
		t.Fatalf("identity %+v", id)
	}
	if d := time.Until(id.Expiry); d < 4*time.Minute || d > 6*time.Minute {
		t.Fatalf("expiry in %v, the example provider gives 5 minutes", d)
	}
	// No user in the message: the claim decides. Case of the user differs:
	// still the same mailbox.
	for _, named := range []string{"", "Test-User@Zitadel.CH"} {
		if id, err := validate(v, named, token); err != nil || id.Mailbox != aliceMail {
			t.Fatalf("named %q: %+v, %v", named, id, err)
		}
	}
	// XOAUTH2 carries the same token.
	x, err := ParseXOAuth2(buildMessage(XOAuth2, aliceMail, token))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := validate(v, x.User, x.Token.Reveal()); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(logs.String(), token) {
		t.Fatal("a token in the log")
	}
}

func TestTokenOfAnotherUserDoesNotOpenTheNamedMailbox(t *testing.T) {
	o := startOP(t, nil)
	v, _, _ := newValidator(t, o, Config{})
	bobsToken := o.login(t, mailApp, bobLogin)

	_, err := validate(v, aliceMail, bobsToken)
	refusedWith(t, err, ReasonTokenMailboxMismatch, bobsToken)
	// Unicode folding would make these two one name; the comparison does not.
	_, err = validate(v, "test-user2@zitadel.\u0441h", bobsToken) // Cyrillic es
	refusedWith(t, err, ReasonTokenMailboxMismatch, bobsToken)
	if id, err := validate(v, bobMail, bobsToken); err != nil || id.Mailbox != bobMail {
		t.Fatalf("bob's own mailbox: %+v, %v", id, err)
	}
}

func TestExpiredTokenIsRefusedAndClockSkewIsAllowed(t *testing.T) {
	o := startOP(t, nil)
	v, clk, _ := newValidator(t, o, Config{ClockSkew: time.Minute})
	token := o.login(t, mailApp, aliceLogin)

	clk.Advance(5*time.Minute + 30*time.Second) // exp passed 30 s ago: within the skew
	if _, err := validate(v, aliceMail, token); err != nil {
		t.Fatalf("within the clock skew: %v", err)
	}
	clk.Advance(time.Minute) // 90 s past exp
	_, err := validate(v, aliceMail, token)
	refusedWith(t, err, ReasonTokenExpired, token)
}

func TestTokenIssuedToAnotherApplicationIsRefused(t *testing.T) {
	o := startOP(t, nil)
	v, _, _ := newValidator(t, o, Config{})
	token := o.login(t, otherApp, aliceLogin) // aud is otherapp

	_, err := validate(v, aliceMail, token)
	refusedWith(t, err, ReasonTokenAudience, token)
}

// Two issuers signing with the same keys, as the tenants of one cloud
// provider do: the signature holds, the issuer does not.
func TestTokenFromAnotherIssuerSharingItsKeysIsRefused(t *testing.T) {
	ours := startOP(t, nil)
	theirs := startOP(t, ours.ring)
	v, _, _ := newValidator(t, ours, Config{})
	token := theirs.login(t, mailApp, aliceLogin)

	_, err := validate(v, aliceMail, token)
	refusedWith(t, err, ReasonTokenIssuer, token)
}

// resign returns token's claims signed with key under kid, as a forger
// holding some other key would.
func resign(t *testing.T, token string, alg jose.SignatureAlgorithm, key any, kid string) string {
	t.Helper()
	jws, err := jose.ParseSignedCompact(token, []jose.SignatureAlgorithm{jose.RS256})
	if err != nil {
		t.Fatal(err)
	}
	opts := (&jose.SignerOptions{}).WithType("JWT")
	if kid != "" {
		opts = opts.WithHeader(jose.HeaderKey("kid"), kid)
	}
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: alg, Key: key}, opts)
	if err != nil {
		t.Fatal(err)
	}
	forged, err := signer.Sign(jws.UnsafePayloadWithoutVerification())
	if err != nil {
		t.Fatal(err)
	}
	s, err := forged.CompactSerialize()
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestForgedSignatureIsRefusedWithoutHammeringTheProvider(t *testing.T) {
	o := startOP(t, nil)
	v, _, _ := newValidator(t, o, Config{})
	token := o.login(t, mailApp, aliceLogin)
	other, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	fetches := o.keyFetches.Load()

	sameKid := resign(t, token, jose.RS256, other, o.ring.current().id)
	_, err = validate(v, aliceMail, sameKid)
	refusedWith(t, err, ReasonTokenSignature, sameKid)
	if n := o.keyFetches.Load() - fetches; n != 0 {
		t.Fatalf("a bad signature under a known key id fetched the keys %d times", n)
	}

	// Forged tokens naming keys the provider never had: the first may make
	// imapgate look for a rotated key, the others within
	// KeyRefreshInterval must not.
	for i := 0; i < 20; i++ {
		forged := resign(t, token, jose.RS256, other, "forged-"+rand.Text()[:6])
		_, err = validate(v, aliceMail, forged)
		refusedWith(t, err, ReasonTokenSignature, forged)
	}
	if n := o.keyFetches.Load() - fetches; n > 1 {
		t.Fatalf("20 forged tokens fetched the provider's keys %d times; want at most 1", n)
	}
	if _, err := validate(v, aliceMail, token); err != nil {
		t.Fatalf("the real token after the forgeries: %v", err)
	}
}

func TestAlgNoneAndHMACTokensAreRefused(t *testing.T) {
	o := startOP(t, nil)
	v, _, _ := newValidator(t, o, Config{})
	token := o.login(t, mailApp, aliceLogin)
	payload := strings.Split(token, ".")[1]

	none := base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"none","typ":"JWT"}`)) + "." + payload + "."
	_, err := validate(v, aliceMail, none)
	refusedWith(t, err, ReasonTokenAlgorithm, none)

	// The classic key confusion: HMAC keyed with the provider's public key.
	pub, err := x509.MarshalPKIXPublicKey(&o.ring.current().priv.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	hs := resign(t, token, jose.HS256, pub, o.ring.current().id)
	_, err = validate(v, aliceMail, hs)
	refusedWith(t, err, ReasonTokenAlgorithm, hs)

	// A real RS256 token where only ES256 is accepted.
	es, _, _ := newValidator(t, o, Config{Algorithms: []string{"ES256"}})
	_, err = validate(es, aliceMail, token)
	refusedWith(t, err, ReasonTokenAlgorithm, token)
}

func TestRotatedSigningKeyIsFetchedAndTheOldOneStillWorks(t *testing.T) {
	o := startOP(t, nil)
	v, clk, _ := newValidator(t, o, Config{})
	before := o.login(t, mailApp, aliceLogin)
	if _, err := validate(v, aliceMail, before); err != nil {
		t.Fatal(err)
	}
	fetches := o.keyFetches.Load()

	o.ring.rotate(t)
	after := o.login(t, mailApp, aliceLogin)
	clk.Advance(DefaultKeyRefreshInterval) // the discovery fetch is that long ago
	id, err := validate(v, aliceMail, after)
	if err != nil {
		t.Fatalf("token signed by the new key: %v", err)
	}
	if id.Mailbox != aliceMail {
		t.Fatalf("identity %+v", id)
	}
	if n := o.keyFetches.Load() - fetches; n != 1 {
		t.Fatalf("the rotation fetched the keys %d times, want 1", n)
	}
	if _, err := validate(v, aliceMail, before); err != nil {
		t.Fatalf("token signed by the old key, still published: %v", err)
	}
}

// A token revoked at the provider (a lost phone) stops working once the
// introspection answer cached for it expires, although its signature and
// exp still hold.
func TestRevokedJWTIsRefusedWhenItsIntrospectionAnswerExpires(t *testing.T) {
	o := startOP(t, nil)
	v, clk, _ := newValidator(t, o, Config{Introspection: &Introspection{
		ClientID: mailApp, ClientSecret: clientSecret, CheckJWT: true,
	}})
	token := o.login(t, mailApp, aliceLogin)

	id, err := validate(v, aliceMail, token)
	if err != nil || !id.Introspected {
		t.Fatalf("before revocation: %+v, %v", id, err)
	}
	o.revoke(t, mailApp, token)
	if _, err := validate(v, aliceMail, token); err != nil {
		t.Fatalf("within the cache TTL: %v", err)
	}
	if n := o.introspections.Load(); n != 1 {
		t.Fatalf("%d introspections within the TTL, want 1", n)
	}
	clk.Advance(DefaultIntrospectionCacheTTL)
	_, err = validate(v, aliceMail, token)
	refusedWith(t, err, ReasonTokenNotActive, token)
	if n := o.introspections.Load(); n != 2 {
		t.Fatalf("%d introspections, want 2", n)
	}
}

func TestOpaqueTokenIsCheckedThroughIntrospection(t *testing.T) {
	o := startOP(t, nil)
	token := o.login(t, opaqueApp, aliceLogin)
	if strings.Count(token, ".") == 2 {
		t.Fatalf("the %s client got a JWT", opaqueApp)
	}

	plain, _, _ := newValidator(t, o, Config{Audiences: []string{opaqueApp}})
	_, err := validate(plain, aliceMail, token)
	refusedWith(t, err, ReasonTokenMalformed, token)

	v, clk, logs := newValidator(t, o, Config{Audiences: []string{opaqueApp}, Introspection: &Introspection{
		ClientID: opaqueApp, ClientSecret: clientSecret, // endpoint from discovery
	}})
	id, err := validate(v, aliceMail, token)
	if err != nil {
		t.Fatal(err)
	}
	if id.Mailbox != aliceMail || id.Subject != "id1" || !id.Introspected {
		t.Fatalf("identity %+v", id)
	}
	_, err = validate(v, bobMail, token)
	refusedWith(t, err, ReasonTokenMailboxMismatch, token)

	o.revoke(t, opaqueApp, token)
	clk.Advance(DefaultIntrospectionCacheTTL)
	_, err = validate(v, aliceMail, token)
	refusedWith(t, err, ReasonTokenNotActive, token)

	unknown := "b3BhcXVlLWJ1dC1mb3JnZWQ"
	_, err = validate(v, "", unknown)
	refusedWith(t, err, ReasonTokenNotActive, unknown)
	if strings.Contains(logs.String(), token) || strings.Contains(logs.String(), clientSecret) {
		t.Fatal("a token or the client secret in the log")
	}
}

// The provider failing is an operational error, not the client's: no
// reason a client could be blamed or banned for, and no error challenge.
func TestProviderFailuresAreUnavailableNotClientFailures(t *testing.T) {
	o := startOP(t, nil)
	v, clk, _ := newValidator(t, o, Config{Introspection: &Introspection{
		ClientID: mailApp, ClientSecret: clientSecret, CheckJWT: true,
	}})
	token := o.login(t, mailApp, aliceLogin)

	o.introspectDown.Store(true)
	_, err := validate(v, aliceMail, token)
	refusedWith(t, err, ReasonUnavailable, token)
	if c := v.Challenge(OAuthBearer, err); c != nil {
		t.Fatalf("challenge %s for an unavailable provider", c)
	}
	o.introspectDown.Store(false)
	if _, err := validate(v, aliceMail, token); err != nil {
		t.Fatalf("the failure was cached: %v", err)
	}

	// The provider refuses imapgate's own client secret.
	wrong, _, logs := newValidator(t, o, Config{Introspection: &Introspection{
		ClientID: mailApp, ClientSecret: "not-the-secret", CheckJWT: true,
	}})
	_, err = validate(wrong, aliceMail, token)
	refusedWith(t, err, ReasonUnavailable, token)
	if !strings.Contains(err.Error(), "refused imapgate's client credentials") || strings.Contains(err.Error(), "not-the-secret") {
		t.Fatalf("error %v", err)
	}
	if strings.Contains(logs.String(), "not-the-secret") {
		t.Fatal("the client secret in the log")
	}

	// Keys unreachable when a new key id turns up.
	o.down.Store(true)
	o.ring.rotate(t)
	o.down.Store(false)
	rotated := o.login(t, mailApp, aliceLogin)
	o.down.Store(true)
	clk.Advance(DefaultKeyRefreshInterval)
	_, err = validate(v, aliceMail, rotated)
	refusedWith(t, err, ReasonUnavailable, rotated)
}

func TestProviderDownAtStartIsRetriedInTheBackground(t *testing.T) {
	o := startOP(t, nil)
	token := o.login(t, mailApp, aliceLogin)
	o.down.Store(true)
	logs := &logBuffer{}
	v, err := New(Config{
		Issuer:        o.issuer,
		Audiences:     []string{mailApp},
		RetryInterval: 10 * time.Millisecond,
		Logger:        slog.New(slog.NewTextHandler(logs, nil)),
	})
	if err != nil {
		t.Fatalf("a provider down at start must not be fatal: %v", err)
	}
	defer v.Close()

	_, err = validate(v, aliceMail, token)
	refusedWith(t, err, ReasonUnavailable, token)
	if !errors.Is(err, ErrUnavailable) {
		t.Fatal(err)
	}

	// Wait for two refused attempts: the first, and one retry.
	deadline := time.Now().Add(10 * time.Second)
	for o.refused.Load() < 2 {
		if time.Now().After(deadline) {
			t.Fatalf("no retry of the discovery within 10 s; log: %s", logs)
		}
		time.Sleep(5 * time.Millisecond)
	}
	o.down.Store(false)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := v.WaitReady(ctx); err != nil {
		t.Fatalf("%v; log: %s", err, logs)
	}
	if _, err := validate(v, aliceMail, token); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(logs.String(), "discovery failed") || !strings.Contains(logs.String(), "discovery succeeded") {
		t.Fatalf("log: %s", logs)
	}
}
