package main

import (
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/imapgate/imapgate/auth/oauth"
)

// TestEveryOAuthKeyReachesTheValidator: each [auth.oauth] key ends up in
// its field and in the oauth.Config the Validator is built from.
func TestEveryOAuthKeyReachesTheValidator(t *testing.T) {
	c := mustParse(t, "testdata/config/good-oauth.toml")
	want := &OAuthConfig{
		Issuer:                    "https://login.example.com/tenant",
		Audience:                  []string{"api://imap", "imapgate"},
		MailboxClaim:              "upn",
		Algorithms:                []string{"RS256", "PS256", "ES384"},
		ClockSkew:                 Duration{2 * time.Minute},
		Scope:                     "https://outlook.office.com/IMAP.AccessAsUser.All",
		ClientID:                  "imapgate",
		ClientSecretFile:          "testdata/config/files/master.secret",
		IntrospectionURL:          "https://login.example.com/tenant/introspect",
		IntrospectionCacheTTL:     Duration{30 * time.Second},
		CheckJWTWithIntrospection: true,
	}
	if !reflect.DeepEqual(c.Auth.OAuth, want) {
		t.Fatalf("auth.oauth\n got %+v\nwant %+v", c.Auth.OAuth, want)
	}
	if got := c.Auth.Mechanisms; !reflect.DeepEqual(got, []string{"PLAIN", "OAUTHBEARER", "XOAUTH2"}) {
		t.Fatalf("mechanisms %q", got)
	}
	ts, err := newTokenSettings(c.Auth.OAuth)
	if err != nil {
		t.Fatal(err)
	}
	secret, _ := os.ReadFile("testdata/config/files/master.secret")
	got := ts.config(nil)
	wantCfg := oauth.Config{
		Issuer: want.Issuer, Audiences: want.Audience, MailboxClaim: "upn", Algorithms: want.Algorithms,
		ClockSkew: 2 * time.Minute, Scope: want.Scope,
		Introspection: &oauth.Introspection{Endpoint: want.IntrospectionURL, ClientID: "imapgate",
			ClientSecret: strings.TrimSuffix(string(secret), "\n"), CheckJWT: true, CacheTTL: 30 * time.Second},
	}
	if !reflect.DeepEqual(got, wantCfg) {
		t.Fatalf("oauth.Config\n got %#v\nwant %#v", got, wantCfg)
	}
}

// TestOAuthDefaults: a table with only the required keys gets the
// documented defaults, and no introspection.
func TestOAuthDefaults(t *testing.T) {
	c, err := parseConfig("imapgate.toml", []byte(`
[[listen]]
address = ":993"
[tls]
cert_file = "c.pem"
key_file = "k.pem"
[upstream]
address = "mail.internal:143"
[upstream.master]
user = "imapgate"
secret_file = "master.secret"
[auth]
mechanisms = ["OAUTHBEARER"]
[auth.oauth]
issuer = "https://login.example.com"
audience = ["imap"]
`), false)
	if err != nil {
		t.Fatal(err)
	}
	want := defaultOAuth()
	want.Issuer, want.Audience = "https://login.example.com", []string{"imap"}
	if !reflect.DeepEqual(c.Auth.OAuth, want) {
		t.Fatalf("got %+v\nwant %+v", c.Auth.OAuth, want)
	}
	if want.MailboxClaim != "email" || want.ClockSkew.Duration != time.Minute || want.IntrospectionCacheTTL.Duration != time.Minute ||
		!reflect.DeepEqual(want.Algorithms, []string{"RS256", "ES256"}) {
		t.Fatalf("defaults %+v differ from the README's", want)
	}
	ts, err := newTokenSettings(c.Auth.OAuth)
	if err != nil || ts.config(nil).Introspection != nil {
		t.Fatalf("settings %+v, %v; want no introspection", ts, err)
	}
}

// TestReloadKeepsTheValidatorOnlyWhileTheSettingsAreTheSame: the
// comparison a reload makes, the secret's content included (a rotated
// client secret needs a new Validator).
func TestReloadKeepsTheValidatorOnlyWhileTheSettingsAreTheSame(t *testing.T) {
	dir := t.TempDir()
	secret := filepath.Join(dir, "client.secret")
	write := func(s string) {
		if err := os.WriteFile(secret, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("one\n")
	base := OAuthConfig{Issuer: "https://login.example.com", Audience: []string{"imap"}, MailboxClaim: "email",
		Algorithms: []string{"RS256"}, ClientID: "imapgate", ClientSecretFile: secret}
	settings := func(c OAuthConfig) *tokenSettings {
		t.Helper()
		ts, err := newTokenSettings(&c)
		if err != nil {
			t.Fatal(err)
		}
		return ts
	}
	running := settings(base)
	if !settings(base).same(running) {
		t.Fatal("the same settings are not the same")
	}
	other := base
	other.Audience = []string{"imap", "mail"}
	if settings(other).same(running) {
		t.Fatal("another audience kept the validator")
	}
	write("two\n")
	if settings(base).same(running) {
		t.Fatal("a rotated client secret kept the validator")
	}
	var none *tokenSettings
	if none.same(running) || running.same(none) {
		t.Fatal("no [auth.oauth] is the same as one")
	}
	write("")
	if _, err := newTokenSettings(&base); err == nil || !strings.Contains(err.Error(), "is empty") {
		t.Fatalf("empty secret: %v", err)
	}
}

// TestExampleOAuthBlockLoads: the commented-out [auth.oauth] block of the
// example (with the [upstream.master] it needs) is valid once uncommented,
// and shows the defaults.
func TestExampleOAuthBlockLoads(t *testing.T) {
	data, err := os.ReadFile("imapgate.example.toml")
	if err != nil {
		t.Fatal(err)
	}
	commentedKey := regexp.MustCompile(`^# ([a-z_]+ = .*|\[upstream\.master\]|\[auth\.oauth\])$`)
	var out []string
	in, uncommented := false, 0
	for _, line := range strings.Split(string(data), "\n") {
		switch {
		case line == "# [upstream.master]" || line == "# [auth.oauth]":
			in = true
		case strings.HasPrefix(line, "["), line == "":
			in = false // a table, or the blank line that ends the commented block
		}
		if in && commentedKey.MatchString(line) {
			line = strings.TrimPrefix(line, "# ")
			uncommented++
		}
		out = append(out, line)
	}
	if uncommented != 6+12 { // [upstream.master] and its 5 keys, [auth.oauth] and its 11
		t.Fatalf("uncommented %d lines, want 18", uncommented)
	}
	c, err := parseConfig("example-oauth.toml", []byte(strings.Join(out, "\n")), false)
	if err != nil {
		t.Fatalf("example with [auth.oauth]: %v", err)
	}
	want := defaultOAuth()
	want.Issuer = "https://login.example.com/realms/corp"
	want.Audience = []string{"imapgate"}
	if !reflect.DeepEqual(c.Auth.OAuth, want) {
		t.Fatalf("auth.oauth\n got %+v\nwant %+v", c.Auth.OAuth, want)
	}
}

// TestReloadKeepsOrReplacesTheRunningValidator: the gateway keeps the
// running Validator (its cached keys) for unchanged [auth.oauth] settings,
// starts a new one for changed settings and closes the old one once the
// new config is in force, and drops it when the table goes.
func TestReloadKeepsOrReplacesTheRunningValidator(t *testing.T) {
	g := &gateway{log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	defer g.closeTokens()
	settings := func(audience string) *runConfig {
		ts, err := newTokenSettings(&OAuthConfig{Issuer: "http://127.0.0.1:9", Audience: []string{audience},
			MailboxClaim: "email", Algorithms: []string{"RS256"}})
		if err != nil {
			t.Fatal(err)
		}
		return &runConfig{tokens: ts}
	}
	apply := func(rc *runConfig) {
		g.useTokens(rc)()
		g.rc = rc
	}
	apply(settings("imap"))
	first := g.tokens
	if first == nil {
		t.Fatal("no validator started")
	}
	apply(settings("imap"))
	if g.tokens != first {
		t.Fatal("unchanged settings replaced the validator")
	}
	apply(settings("mail"))
	if g.tokens == first || g.tokens == nil {
		t.Fatal("changed settings kept the old validator")
	}
	apply(&runConfig{})
	if g.tokens != nil {
		t.Fatal("[auth.oauth] removed, the validator stays")
	}
}
