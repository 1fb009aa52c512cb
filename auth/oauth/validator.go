package oauth

import (
	"bytes"
	"cmp"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/coreos/go-oidc/v3/oidc"
	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
)

// Defaults and bounds of Config.
const (
	// DefaultMailboxClaim is the claim that names the mailbox.
	DefaultMailboxClaim = "email"
	// DefaultClockSkew is how far the provider's clock may be off.
	DefaultClockSkew = time.Minute
	// MaxClockSkew bounds Config.ClockSkew: more is a broken clock, and
	// would keep expired tokens working.
	MaxClockSkew = 10 * time.Minute
	// DefaultRetryInterval is the first wait after a failed discovery; it
	// doubles up to MaxRetryInterval.
	DefaultRetryInterval = time.Second
	// MaxRetryInterval is the longest wait between two discovery attempts.
	MaxRetryInterval = time.Minute
)

// DefaultAlgorithms are the JWS algorithms accepted when Config names none.
func DefaultAlgorithms() []string { return []string{"RS256", "ES256"} }

// Config configures a Validator. Issuer and Audiences are required; every
// other field has a default.
type Config struct {
	// Issuer is the OpenID Provider's issuer URL, spelt exactly as the
	// tokens' iss claim spells it. Its discovery document is read from
	// Issuer + "/.well-known/openid-configuration" (OpenID Connect
	// Discovery 1.0) and must name the same issuer. It must be https, or
	// http to a loopback address (a provider beside imapgate). Required.
	Issuer string
	// Audiences are the aud values a token must carry, any one of them.
	// Required: without it, a token the provider issued to any other
	// application would open mailboxes.
	Audiences []string
	// MailboxClaim names the claim whose string value is the mailbox:
	// commonly "email", "preferred_username", "upn" or "sub". If empty,
	// DefaultMailboxClaim ("email"). With "email", a token whose
	// email_verified is false is refused (token_email_unverified).
	MailboxClaim string
	// Algorithms are the JWS algorithms accepted (RS256, RS384, RS512,
	// PS256, PS384, PS512, ES256, ES384, ES512, EdDSA). If empty,
	// DefaultAlgorithms (RS256, ES256). "none" and the HMAC algorithms
	// (HS256, HS384, HS512) are refused by New and in every token: with
	// HMAC, anyone who knows the key, the provider's clients included, could
	// mint tokens.
	Algorithms []string
	// ClockSkew is how far the provider's clock may differ from imapgate's
	// when exp, nbf and iat are checked. If zero, DefaultClockSkew (1
	// minute); at most MaxClockSkew.
	ClockSkew time.Duration
	// Introspection, if set, asks the provider's RFC 7662 endpoint about
	// opaque tokens, and about JWTs too if its CheckJWT is set. If nil,
	// opaque tokens are refused (token_malformed) and a JWT is good until
	// its exp, even if the provider revoked it.
	Introspection *Introspection
	// Scope, if set, is the scope the error challenge names (RFC 7628
	// section 3.2.2), so a client can ask the provider for it. If empty,
	// the challenge names none.
	Scope string
	// MatchMailbox reports whether named, the user a SASL message names
	// (a= or user=), is mailbox, the token's claim. If nil, EqualMailbox.
	MatchMailbox func(named, mailbox string) bool
	// HTTPClient makes the requests to the provider. If nil, a client of
	// net/http's default transport. Whatever the client, a request is
	// bounded by RequestTimeout, redirects are never followed (a
	// redirected introspection would resend the token) and a response over
	// MaxResponseSize is an error.
	HTTPClient *http.Client
	// RequestTimeout bounds each request to the provider. If zero,
	// DefaultRequestTimeout (10 s).
	RequestTimeout time.Duration
	// KeyRefreshInterval is the least time between two fetches of the
	// provider's keys; a token signed by a key not yet fetched (a
	// rotation) waits at most this long to be accepted. If zero,
	// DefaultKeyRefreshInterval (30 s).
	KeyRefreshInterval time.Duration
	// MaxKeyAge is how long fetched keys are used before they are fetched
	// again, so a key the provider withdrew stops verifying. If zero,
	// DefaultMaxKeyAge (1 hour).
	MaxKeyAge time.Duration
	// RetryInterval is the first wait after a failed discovery; it doubles
	// up to MaxRetryInterval. If zero, DefaultRetryInterval (1 s).
	RetryInterval time.Duration
	// Logger receives the background discovery's failures and its
	// recovery (never a token). If nil, slog.Default().
	Logger *slog.Logger
	// Now is the clock. If nil, time.Now.
	Now func() time.Time
}

// Identity is what a validated token proves.
type Identity struct {
	// Mailbox is the value of the mailbox claim: the mailbox to log in to.
	Mailbox string
	// Subject is the token's sub; empty if an introspection answer had
	// none.
	Subject string
	// ClientID is the application the token was issued to: client_id
	// (RFC 9068), azp or appid (Microsoft); empty if none is given. It
	// suits the audit's credential label.
	ClientID string
	// TokenID is jti; empty if the token has none. It suits the audit's
	// credential id (it is not a secret).
	TokenID string
	// Expiry is exp; zero if an introspection answer had none.
	Expiry time.Time
	// Introspected reports that the provider's introspection endpoint
	// vouched for the token, in this call or within CacheTTL.
	Introspected bool
}

// Validator checks bearer tokens against one OpenID Provider. It is safe
// for concurrent use. Discovery runs in the background from New until it
// succeeds; until then Validate returns ErrUnavailable.
type Validator struct {
	issuer     string
	audiences  jwt.Audience
	claim      string
	algs       []jose.SignatureAlgorithm
	skew       time.Duration
	scope      string
	match      func(named, mailbox string) bool
	client     *http.Client
	timeout    time.Duration
	minRefresh time.Duration
	maxKeyAge  time.Duration
	retry      time.Duration
	log        *slog.Logger
	now        func() time.Time
	intro      *introspector // nil without Introspection

	stop  context.CancelFunc
	done  chan struct{} // closed when the discovery goroutine has ended
	ready chan struct{} // closed once discovery succeeded; then keys is set
	keys  *keySet
}

// New checks cfg and starts discovery in the background: a provider that
// is down at start is retried (RetryInterval, doubling to
// MaxRetryInterval), not fatal. Only a bad Config is an error. Close stops
// the background work.
func New(cfg Config) (*Validator, error) {
	v, err := build(cfg)
	if err != nil {
		return nil, err
	}
	ctx, stop := context.WithCancel(context.Background())
	v.stop = stop
	go v.discoverUntilReady(ctx)
	return v, nil
}

// CheckConfig returns the error New would return for cfg, without
// starting anything (nothing is fetched): for a configuration check.
func CheckConfig(cfg Config) error {
	_, err := build(cfg)
	return err
}

// CheckURL returns nil for a URL a provider may be reached at (the issuer,
// an introspection endpoint): https, or http to a loopback address, with
// a host and without credentials.
func CheckURL(raw string) error { return checkURL("", raw) }

// CheckAlgorithm returns nil for a JWS algorithm Config.Algorithms may
// name. "none" and HMAC are never accepted.
func CheckAlgorithm(alg string) error {
	if isSigningAlgorithm(alg) {
		return nil
	}
	if alg == "none" || strings.HasPrefix(alg, "HS") {
		return fmt.Errorf("algorithm %q is never accepted: with it, tokens need no key only the provider holds", alg)
	}
	return fmt.Errorf("unknown algorithm %q (use RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384, ES512 or EdDSA)", alg)
}

// build checks cfg and returns the Validator New starts.
func build(cfg Config) (*Validator, error) {
	if err := checkURL("issuer", cfg.Issuer); err != nil {
		return nil, fmt.Errorf("oauth: %w", err)
	}
	if len(cfg.Audiences) == 0 {
		return nil, errors.New("oauth: no audience: a token issued to any application of the provider would be accepted")
	}
	for _, a := range cfg.Audiences {
		if a == "" {
			return nil, errors.New("oauth: empty audience")
		}
	}
	v := &Validator{
		issuer:    cfg.Issuer,
		audiences: jwt.Audience(append([]string(nil), cfg.Audiences...)),
		claim:     cmp.Or(cfg.MailboxClaim, DefaultMailboxClaim),
		scope:     cfg.Scope,
		match:     cfg.MatchMailbox,
		log:       cfg.Logger,
		now:       cfg.Now,
		ready:     make(chan struct{}),
		done:      make(chan struct{}),
	}
	if v.match == nil {
		v.match = EqualMailbox
	}
	if v.log == nil {
		v.log = slog.Default()
	}
	if v.now == nil {
		v.now = time.Now
	}
	algs := cfg.Algorithms
	if len(algs) == 0 {
		algs = DefaultAlgorithms()
	}
	for _, a := range algs {
		if err := CheckAlgorithm(a); err != nil {
			return nil, fmt.Errorf("oauth: %w", err)
		}
		v.algs = append(v.algs, jose.SignatureAlgorithm(a))
	}
	var err error
	if v.skew, err = duration("clock skew", cfg.ClockSkew, DefaultClockSkew, MaxClockSkew); err != nil {
		return nil, err
	}
	if v.timeout, err = duration("request timeout", cfg.RequestTimeout, DefaultRequestTimeout, 0); err != nil {
		return nil, err
	}
	if v.minRefresh, err = duration("key refresh interval", cfg.KeyRefreshInterval, DefaultKeyRefreshInterval, 0); err != nil {
		return nil, err
	}
	if v.maxKeyAge, err = duration("key age", cfg.MaxKeyAge, DefaultMaxKeyAge, 0); err != nil {
		return nil, err
	}
	if v.retry, err = duration("retry interval", cfg.RetryInterval, DefaultRetryInterval, MaxRetryInterval); err != nil {
		return nil, err
	}
	if cfg.Introspection != nil {
		if v.intro, err = newIntrospector(*cfg.Introspection); err != nil {
			return nil, err
		}
	}
	v.client = newHTTPClient(cfg.HTTPClient, v.timeout)
	return v, nil
}

// duration applies a default to zero and refuses negative values and
// values over max (when max is not zero).
func duration(what string, d, def, max time.Duration) (time.Duration, error) {
	switch {
	case d < 0:
		return 0, fmt.Errorf("oauth: negative %s %v", what, d)
	case d == 0:
		return def, nil
	case max > 0 && d > max:
		return 0, fmt.Errorf("oauth: %s %v over %v", what, d, max)
	}
	return d, nil
}

// isSigningAlgorithm reports whether alg is an asymmetric JWS algorithm
// this package accepts in a Config.
func isSigningAlgorithm(alg string) bool {
	switch jose.SignatureAlgorithm(alg) {
	case jose.RS256, jose.RS384, jose.RS512, jose.PS256, jose.PS384, jose.PS512,
		jose.ES256, jose.ES384, jose.ES512, jose.EdDSA:
		return true
	}
	return false
}

// Close stops the background discovery, waits for it to end and closes
// idle connections to the provider.
func (v *Validator) Close() {
	v.stop()
	<-v.done
	v.client.CloseIdleConnections()
}

// Ready is closed once discovery has succeeded and tokens can be checked.
func (v *Validator) Ready() <-chan struct{} { return v.ready }

// WaitReady waits until discovery has succeeded or ctx is done.
func (v *Validator) WaitReady(ctx context.Context) error {
	select {
	case <-v.ready:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("%w: discovery of %s has not succeeded: %w", ErrUnavailable, v.issuer, ctx.Err())
	}
}

// DiscoveryURL is the provider's discovery document, the
// openid-configuration an OAUTHBEARER error challenge names.
func (v *Validator) DiscoveryURL() string {
	return strings.TrimSuffix(v.issuer, "/") + "/.well-known/openid-configuration"
}

// Challenge is ErrorChallenge with the configured scope and DiscoveryURL.
func (v *Validator) Challenge(mech Mechanism, cause error) []byte {
	return ErrorChallenge(mech, cause, v.scope, v.DiscoveryURL())
}

// discoverUntilReady retries discovery until it succeeds or Close; it is a
// named function so that a goroutine dump says what it waits for.
func (v *Validator) discoverUntilReady(ctx context.Context) {
	defer close(v.done)
	wait := v.retry
	failures := 0
	for {
		err := v.discover(ctx)
		if err == nil {
			if failures > 0 {
				v.log.Info("oauth: discovery succeeded", "issuer", v.issuer, "failed_attempts", failures)
			}
			close(v.ready)
			return
		}
		if ctx.Err() != nil {
			return
		}
		failures++
		v.log.Warn("oauth: discovery failed, logins with tokens answer UNAVAILABLE until it succeeds",
			"issuer", v.issuer, "error", err.Error(), "retry_in", wait.String())
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		wait = min(2*wait, MaxRetryInterval)
	}
}

// discover reads the discovery document (go-oidc checks that it names
// Issuer) and fetches the key set once.
func (v *Validator) discover(ctx context.Context) error {
	dctx, cancel := context.WithTimeout(oidc.ClientContext(ctx, v.client), v.timeout)
	defer cancel()
	p, err := oidc.NewProvider(dctx, v.issuer)
	if err != nil {
		return err
	}
	var meta struct {
		JWKSURL       string `json:"jwks_uri"`
		Introspection string `json:"introspection_endpoint"`
	}
	if err := p.Claims(&meta); err != nil {
		return fmt.Errorf("discovery document: %w", err)
	}
	if err := checkURL("jwks_uri", meta.JWKSURL); err != nil {
		return err
	}
	if v.intro != nil && v.intro.endpoint == "" {
		if meta.Introspection == "" {
			return errors.New("introspection is configured without an endpoint, and the discovery document names no introspection_endpoint")
		}
		if err := checkURL("introspection_endpoint", meta.Introspection); err != nil {
			return err
		}
		v.intro.endpoint = meta.Introspection
	}
	ks := &keySet{
		url:        meta.JWKSURL,
		now:        v.now,
		minRefresh: v.minRefresh,
		maxAge:     v.maxKeyAge,
	}
	ks.fetch = func(ctx context.Context) ([]jose.JSONWebKey, error) {
		body, err := v.get(ctx, "key set", ks.url)
		if err != nil {
			return nil, err
		}
		keys, err := parseKeySet(body)
		if err != nil {
			return nil, fmt.Errorf("%w: %s: %w", ErrUnavailable, ks.url, err)
		}
		return keys, nil
	}
	keys, err := ks.fetch(ctx)
	if err != nil {
		return err
	}
	ks.keys, ks.fetchedOK, ks.attempted = keys, v.now(), v.now()
	v.keys = ks
	return nil
}

// Validate checks token and returns the identity it proves. named is the
// user the SASL message names (ClientResponse.User); if not empty it must
// match the token's mailbox (MatchMailbox); if empty, the token's mailbox
// claim decides.
//
// A JWT (three dot-separated parts, a JWS) is verified locally: an accepted
// algorithm, a signature by one of the issuer's keys, then iss, aud, exp
// (required), nbf and iat with ClockSkew, then the mailbox claim; with
// Introspection.CheckJWT the provider must also still call it active. Any
// other token, an encrypted one (JWE) included, is opaque: it is asked
// about through introspection. The signature is
// checked before any claim, so no claim of a forged token decides a reason.
//
// Every error wraps one of the package's sentinels (Reason gives its audit
// word) and never contains the token. ErrUnavailable is the provider's
// failure, not the client's.
func (v *Validator) Validate(ctx context.Context, named string, token Token) (Identity, error) {
	select {
	case <-v.ready:
	default:
		return Identity{}, fmt.Errorf("%w: discovery of %s has not succeeded yet", ErrUnavailable, v.issuer)
	}
	raw := token.value
	var (
		id  Identity
		err error
	)
	switch {
	case raw == "" || len(raw) > MaxTokenLength:
		return Identity{}, fmt.Errorf("%w: empty or over %d bytes", ErrTokenMalformed, MaxTokenLength)
	case strings.Count(raw, ".") == 2:
		id, err = v.validateJWT(ctx, raw)
	case v.intro == nil:
		// An encrypted token (JWE, five parts) is opaque here too: only
		// its issuer can read it.
		return Identity{}, fmt.Errorf("%w: not a JWT, and no introspection is configured for opaque tokens", ErrTokenMalformed)
	default:
		id, err = v.validateOpaque(ctx, raw)
	}
	if err != nil {
		return Identity{}, err
	}
	if named != "" && !v.match(named, id.Mailbox) {
		return Identity{}, fmt.Errorf("%w: the SASL message names another user than the token's %s claim", ErrTokenMailboxMismatch, v.claim)
	}
	return id, nil
}

// tokenClaims are the claims Validate reads besides the mailbox claim.
type tokenClaims struct {
	jwt.Claims
	ClientID string `json:"client_id"` // RFC 9068
	AZP      string `json:"azp"`       // OpenID Connect
	AppID    string `json:"appid"`     // Microsoft v1 tokens
}

func (v *Validator) validateJWT(ctx context.Context, raw string) (Identity, error) {
	if err := v.checkAlgorithm(raw); err != nil {
		return Identity{}, err
	}
	jws, err := jose.ParseSignedCompact(raw, v.algs)
	if err != nil {
		return Identity{}, fmt.Errorf("%w: not a JWS: %w", ErrTokenMalformed, err)
	}
	payload, err := v.keys.verify(ctx, jws)
	if err != nil {
		return Identity{}, err
	}

	var c tokenClaims
	var all map[string]json.RawMessage
	if err := json.Unmarshal(payload, &c); err != nil {
		return Identity{}, fmt.Errorf("%w: claims: %w", ErrTokenMalformed, err)
	}
	if err := json.Unmarshal(payload, &all); err != nil {
		return Identity{}, fmt.Errorf("%w: claims: %w", ErrTokenMalformed, err)
	}
	if c.Expiry == nil {
		return Identity{}, fmt.Errorf("%w: no exp claim", ErrTokenMalformed)
	}
	if err := c.ValidateWithLeeway(jwt.Expected{Issuer: v.issuer, AnyAudience: v.audiences, Time: v.now()}, v.skew); err != nil {
		return Identity{}, claimsError(err)
	}
	mailbox, err := v.mailbox(all)
	if err != nil {
		return Identity{}, err
	}
	id := Identity{
		Mailbox:  mailbox,
		Subject:  c.Subject,
		ClientID: cmp.Or(c.ClientID, c.AZP, c.AppID),
		TokenID:  c.ID,
		Expiry:   c.Expiry.Time(),
	}
	if v.intro != nil && v.intro.checkJWT {
		r, err := v.intro.introspect(ctx, v, raw)
		if err != nil {
			return Identity{}, err
		}
		if !r.active {
			return Identity{}, fmt.Errorf("%w: introspection answered active=false (revoked?)", ErrTokenNotActive)
		}
		id.Introspected = true
	}
	return id, nil
}

// checkAlgorithm reads the JOSE header's alg before anything else, so that
// none and HMAC get their own reason whatever else is wrong.
func (v *Validator) checkAlgorithm(raw string) error {
	seg, _, _ := strings.Cut(raw, ".")
	b, err := base64.RawURLEncoding.DecodeString(seg)
	if err != nil {
		return fmt.Errorf("%w: JOSE header is not base64url", ErrTokenMalformed)
	}
	var h struct {
		Alg string `json:"alg"`
	}
	if err := json.Unmarshal(b, &h); err != nil {
		return fmt.Errorf("%w: JOSE header is not JSON", ErrTokenMalformed)
	}
	for _, a := range v.algs {
		if string(a) == h.Alg {
			return nil
		}
	}
	alg := h.Alg
	if len(alg) > 16 || strings.ContainsFunc(alg, func(r rune) bool { return r > unicode.MaxASCII || !unicode.IsPrint(r) }) {
		alg = "(unprintable)"
	}
	return fmt.Errorf("%w: alg %q", ErrTokenAlgorithm, alg)
}

// claimsError maps go-jose's claim errors to the package's sentinels.
func claimsError(err error) error {
	switch {
	case errors.Is(err, jwt.ErrInvalidIssuer):
		return fmt.Errorf("%w: iss is not the configured issuer", ErrTokenIssuer)
	case errors.Is(err, jwt.ErrInvalidAudience):
		return fmt.Errorf("%w: aud names none of the configured audiences", ErrTokenAudience)
	case errors.Is(err, jwt.ErrExpired):
		return fmt.Errorf("%w: exp has passed", ErrTokenExpired)
	case errors.Is(err, jwt.ErrNotValidYet):
		return fmt.Errorf("%w: nbf is still ahead", ErrTokenExpired)
	case errors.Is(err, jwt.ErrIssuedInTheFuture):
		return fmt.Errorf("%w: iat is ahead", ErrTokenExpired)
	}
	return fmt.Errorf("%w: %w", ErrTokenMalformed, err)
}

// mailbox reads the mailbox claim from claims (a JWT's, or an
// introspection answer's).
func (v *Validator) mailbox(claims map[string]json.RawMessage) (string, error) {
	raw, ok := claims[v.claim]
	if !ok {
		return "", fmt.Errorf("%w: no %s claim", ErrTokenMalformed, v.claim)
	}
	var m string
	if err := json.Unmarshal(raw, &m); err != nil {
		return "", fmt.Errorf("%w: the %s claim is not a string", ErrTokenMalformed, v.claim)
	}
	if m == "" || len(m) > MaxUserLength || !utf8.ValidString(m) || strings.ContainsFunc(m, unicode.IsControl) {
		return "", fmt.Errorf("%w: the %s claim is empty, over %d bytes, or has a control character", ErrTokenMalformed, v.claim, MaxUserLength)
	}
	if v.claim == "email" {
		if ev, ok := claims["email_verified"]; ok && (bytes.Equal(ev, []byte("false")) || bytes.Equal(ev, []byte(`"false"`))) {
			return "", fmt.Errorf("%w: email_verified is false", ErrTokenEmailUnverified)
		}
	}
	return m, nil
}

// EqualMailbox is the default MatchMailbox: named and mailbox are equal
// but for the case of ASCII letters, in the local part as in the domain.
// Domains are case-insensitive (RFC 5321 section 2.4); local parts may in
// theory differ by case, but the servers imapgate fronts (Exchange, and
// Dovecot with its default auth_username_format %Lu) treat them as one
// mailbox, and providers return mixed case ("Alice.Smith@Example.com").
// Other characters must be identical: no Unicode case folding, so no two
// visibly different names match.
func EqualMailbox(named, mailbox string) bool {
	if len(named) != len(mailbox) {
		return false
	}
	for i := 0; i < len(named); i++ {
		a, b := named[i], mailbox[i]
		if 'A' <= a && a <= 'Z' {
			a += 'a' - 'A'
		}
		if 'A' <= b && b <= 'Z' {
			b += 'a' - 'A'
		}
		if a != b {
			return false
		}
	}
	return true
}
