package main

// The [auth.oauth] table: the identity provider whose OAuth 2.0 bearer
// tokens open mailboxes through OAUTHBEARER and XOAUTH2 (README "OAuth
// tokens").

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"reflect"
	"slices"
	"strings"
	"time"

	"github.com/imapgate/imapgate/auth"
	"github.com/imapgate/imapgate/auth/oauth"
)

// OAuthConfig is the [auth.oauth] table (oauth.Config).
type OAuthConfig struct {
	// Issuer is the OpenID Provider's issuer URL, exactly as the tokens'
	// iss spells it; its discovery document is Issuer +
	// "/.well-known/openid-configuration". https, or http to loopback.
	// Default: none, required.
	Issuer string `toml:"issuer"`

	// Audience are the aud values a token must carry, any one of them:
	// the application ID the provider issues mail tokens for.
	// Default: none, required.
	Audience []string `toml:"audience"`

	// MailboxClaim is the claim whose value is the mailbox ("email",
	// "preferred_username", "upn", "sub").
	// Default: "email" (a token whose email_verified is false is refused).
	MailboxClaim string `toml:"mailbox_claim"`

	// Algorithms are the JWS algorithms accepted; never none or HMAC.
	// Default: ["RS256", "ES256"].
	Algorithms []string `toml:"algorithms"`

	// ClockSkew is how far the provider's clock may be off for exp, nbf
	// and iat; at most 10m.
	// Default: "1m".
	ClockSkew Duration `toml:"clock_skew"`

	// Scope is the scope the OAUTHBEARER/XOAUTH2 error challenge names,
	// so a client can ask the provider for it.
	// Default: "" (none named).
	Scope string `toml:"scope"`

	// ClientID and ClientSecretFile authenticate imapgate to the
	// provider's RFC 7662 introspection endpoint; setting ClientID turns
	// introspection on (opaque tokens, and JWTs with
	// CheckJWTWithIntrospection). The secret file holds the whole secret
	// but one final newline; keep it 0600. Never logged.
	// Default: "" (no introspection: opaque tokens are refused, a JWT is
	// good until its exp even if revoked at the provider).
	ClientID         string `toml:"client_id"`
	ClientSecretFile string `toml:"client_secret_file"`

	// IntrospectionURL is the introspection endpoint.
	// Default: "" (the discovery document's introspection_endpoint).
	IntrospectionURL string `toml:"introspection_url"`

	// IntrospectionCacheTTL is how long an introspection answer is reused:
	// a token revoked at the provider works for at most this long; at most
	// 5m.
	// Default: "1m".
	IntrospectionCacheTTL Duration `toml:"introspection_cache_ttl"`

	// CheckJWTWithIntrospection also introspects JWTs, so that a revoked
	// one is refused within IntrospectionCacheTTL; needs ClientID.
	// Default: false (JWTs are checked locally only).
	CheckJWTWithIntrospection bool `toml:"check_jwt_with_introspection"`
}

func defaultOAuth() *OAuthConfig {
	return &OAuthConfig{
		MailboxClaim:          oauth.DefaultMailboxClaim,
		Algorithms:            oauth.DefaultAlgorithms(),
		ClockSkew:             Duration{oauth.DefaultClockSkew},
		IntrospectionCacheTTL: Duration{oauth.DefaultIntrospectionCacheTTL},
	}
}

func (d *decoder) oauth(t *table, a *AuthConfig) {
	o := defaultOAuth()
	t.str("issuer", &o.Issuer)
	t.strings("audience", &o.Audience)
	t.str("mailbox_claim", &o.MailboxClaim)
	t.strings("algorithms", &o.Algorithms)
	t.duration("clock_skew", &o.ClockSkew)
	t.str("scope", &o.Scope)
	t.str("client_id", &o.ClientID)
	t.str("client_secret_file", &o.ClientSecretFile)
	t.str("introspection_url", &o.IntrospectionURL)
	t.duration("introspection_cache_ttl", &o.IntrospectionCacheTTL)
	t.boolean("check_jwt_with_introspection", &o.CheckJWTWithIntrospection)
	t.done()
	if t.quiet {
		return
	}
	a.OAuth = o

	switch {
	case o.Issuer == "":
		t.missing("issuer", "is required: the identity provider's issuer URL, as its tokens' iss claim spells it")
	case t.ok("issuer"):
		if err := oauth.CheckURL(o.Issuer); err != nil {
			t.problem("issuer", "%s", err)
		}
	}
	if len(o.Audience) == 0 && t.ok("audience") {
		t.missing("audience", "is required: without it a token the provider issued to any other application would open mailboxes")
	}
	for i, aud := range o.Audience {
		if aud == "" {
			t.problemKey(elemKey(t.keyOf("audience"), i), "is empty")
		}
	}
	if o.MailboxClaim == "" && t.ok("mailbox_claim") {
		t.problem("mailbox_claim", "is empty: name the claim that holds the mailbox, e.g. \"email\"")
	}
	if len(o.Algorithms) == 0 && t.ok("algorithms") {
		t.problem("algorithms", "is empty: no token could be accepted")
	}
	for i, alg := range o.Algorithms {
		if err := oauth.CheckAlgorithm(alg); err != nil {
			t.problemKey(elemKey(t.keyOf("algorithms"), i), "%s", err)
		}
	}
	maxDuration(t, "clock_skew", o.ClockSkew.Duration, oauth.MaxClockSkew)
	maxDuration(t, "introspection_cache_ttl", o.IntrospectionCacheTTL.Duration, oauth.MaxIntrospectionCacheTTL)
	if o.IntrospectionURL != "" && t.ok("introspection_url") {
		if err := oauth.CheckURL(o.IntrospectionURL); err != nil {
			t.problem("introspection_url", "%s", err)
		}
	}

	if o.ClientID == "" {
		for k, v := range map[string]string{"client_secret_file": o.ClientSecretFile, "introspection_url": o.IntrospectionURL} {
			if v != "" {
				t.problem(k, "is set without client_id: introspection needs imapgate's client id at the provider")
			}
		}
		if o.CheckJWTWithIntrospection && t.ok("check_jwt_with_introspection") {
			t.problem("check_jwt_with_introspection", "is true without client_id: introspection needs imapgate's client id at the provider")
		}
		return
	}
	switch {
	case o.ClientSecretFile == "":
		t.missing("client_secret_file", "is required with client_id: a file (mode 0600) holding imapgate's client secret at the provider")
	case t.d.checkFiles:
		if _, err := readClientSecret(o.ClientSecretFile); err != nil {
			t.problem("client_secret_file", "%s", err)
		} else if fi, err := os.Stat(o.ClientSecretFile); err == nil && fi.Mode().Perm()&0o077 != 0 {
			t.warn("client_secret_file", "%s may be read by others than its owner: chmod 600 it", o.ClientSecretFile)
		}
	}
}

// maxDuration reports a duration over max.
func maxDuration(t *table, name string, d, max time.Duration) {
	if d > max && t.ok(name) {
		t.problem(name, "%s is over the most allowed, %s", d, max)
	}
}

// tokenMechanisms are the mechanisms that carry tokens.
var tokenMechanisms = []string{auth.OAuthBearer, auth.XOAuth2}

// checkOAuth checks what [auth.oauth] and the mechanisms need of each
// other and of the rest: a token mechanism needs [auth.oauth], and a
// client with a token is logged in as the master user.
func checkOAuth(t *table, c *Config) {
	a := &c.Auth
	offered := false
	for _, l := range c.Listen {
		for _, m := range l.Mechanisms {
			offered = offered || slices.Contains(tokenMechanisms, m)
		}
	}
	for i, m := range a.Mechanisms {
		if !slices.Contains(tokenMechanisms, m) {
			continue
		}
		offered = true
		if a.OAuth == nil {
			t.problemKey(elemKey(t.keyOf("mechanisms"), i), "%q needs [auth.oauth]: the identity provider whose tokens it accepts", m)
		}
	}
	if a.OAuth == nil {
		return
	}
	if c.Upstream.Master == nil {
		t.problem("oauth", "needs [upstream.master]: a client with a token is logged in to the upstream as the master user")
	}
	if !offered && t.ok("mechanisms") {
		t.warn("oauth", "is set, but neither auth.mechanisms nor any listener's mechanisms list %s: no client can use a token", strings.Join(tokenMechanisms, " or "))
	}
}

// errEmptyClientSecret: a client secret file with nothing in it.
var errEmptyClientSecret = errors.New("is empty: it must hold imapgate's client secret at the provider")

// readClientSecret reads the introspection client secret: the file's
// content without one final newline. The error never holds the secret.
func readClientSecret(path string) (string, error) {
	s, err := readMasterSecret(path)
	switch {
	case errors.Is(err, errEmptySecret):
		return "", fmt.Errorf("%s %w", path, errEmptyClientSecret)
	case err != nil:
		return "", err
	}
	return s.Reveal(), nil
}

// tokenSettings is an [auth.oauth] table with its secret read: what a
// Validator is built from, and what a reload compares to decide whether
// the running one can stay.
type tokenSettings struct {
	cfg    OAuthConfig
	secret string
}

// newTokenSettings reads c's secret file and checks the whole as
// oauth.New would. nil c: nil, no tokens.
func newTokenSettings(c *OAuthConfig) (*tokenSettings, error) {
	if c == nil {
		return nil, nil
	}
	ts := &tokenSettings{cfg: *c}
	if c.ClientID != "" {
		s, err := readClientSecret(c.ClientSecretFile)
		if err != nil {
			return nil, fmt.Errorf("auth.oauth.client_secret_file: %w", err)
		}
		ts.secret = s
	}
	if err := oauth.CheckConfig(ts.config(nil)); err != nil {
		return nil, fmt.Errorf("auth.oauth: %w", err)
	}
	return ts, nil
}

// config is the oauth.Config of ts, logging to log.
func (ts *tokenSettings) config(log *slog.Logger) oauth.Config {
	c := ts.cfg
	cfg := oauth.Config{
		Issuer:       c.Issuer,
		Audiences:    slices.Clone(c.Audience),
		MailboxClaim: c.MailboxClaim,
		Algorithms:   slices.Clone(c.Algorithms),
		ClockSkew:    c.ClockSkew.Duration,
		Scope:        c.Scope,
		Logger:       log,
	}
	if c.ClientID != "" {
		cfg.Introspection = &oauth.Introspection{
			Endpoint:     c.IntrospectionURL,
			ClientID:     c.ClientID,
			ClientSecret: ts.secret,
			CheckJWT:     c.CheckJWTWithIntrospection,
			CacheTTL:     c.IntrospectionCacheTTL.Duration,
		}
	}
	return cfg
}

// same reports whether ts and o would build the same Validator.
func (ts *tokenSettings) same(o *tokenSettings) bool {
	return ts != nil && o != nil && ts.secret == o.secret && reflect.DeepEqual(ts.cfg, o.cfg)
}
