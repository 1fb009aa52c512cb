package main

// The [auth] table: the ways clients may log in.

import (
	"slices"
	"strings"

	"github.com/imapgate/imapgate/auth"
)

// AuthConfig is the [auth] table.
type AuthConfig struct {
	// Mechanisms are the SASL mechanisms offered, upper case: names
	// auth.Known recognises, of which auth.Supported ones only (PLAIN
	// today).
	// Default: auth.Default(), ["PLAIN"].
	Mechanisms []string `toml:"mechanisms"`

	// LoginCommand is "refuse", "allow-over-tls" (the IMAP LOGIN
	// command, only on a TLS connection) or "app-passwords" (LOGIN on a
	// TLS connection with an app password only; needs AppPasswords).
	// Default: "refuse".
	LoginCommand string `toml:"login_command"`

	// AppPasswords is the path of the credential store holding app
	// passwords (created 0600 on first use, with its key file PATH.key);
	// it needs [upstream.master].
	// Default: "" (no app passwords).
	AppPasswords string `toml:"app_passwords"`

	// Passthrough passes the client's own password to the upstream. False
	// accepts only app passwords: any other password is refused
	// (passthrough_disabled) without reaching the upstream.
	// Default: true.
	Passthrough bool `toml:"passthrough"`

	// OAuth is the [auth.oauth] table: the identity provider whose
	// tokens OAUTHBEARER and XOAUTH2 accept (config_oauth.go).
	// Default: none (nil): no tokens.
	OAuth *OAuthConfig `toml:"oauth"`
}

// The login_command words.
const (
	loginCommandRefuse       = "refuse"
	loginCommandAllowOverTLS = "allow-over-tls"
	loginCommandAppPasswords = "app-passwords"
)

func (d *decoder) auth(t *table, a *AuthConfig) {
	t.strings("mechanisms", &a.Mechanisms)
	t.str("login_command", &a.LoginCommand)
	t.str("app_passwords", &a.AppPasswords)
	t.boolean("passthrough", &a.Passthrough)
	ot, hasOAuth := t.sub("oauth", "[auth.oauth]")
	if !hasOAuth {
		ot.quiet = true
	}
	d.oauth(ot, a)
	t.done()

	oneOf(t, "login_command", a.LoginCommand, loginCommandRefuse, loginCommandAllowOverTLS, loginCommandAppPasswords)
	t.mechanisms("mechanisms", a.Mechanisms)
	if len(a.Mechanisms) == 0 && a.LoginCommand == loginCommandRefuse && t.ok("mechanisms") {
		t.problem("mechanisms", "is empty and login_command is %q: no client could log in", loginCommandRefuse)
	}
}

// mechanisms checks a list of SASL mechanism names (t's key name) and
// writes them upper case: each must be one auth.Known recognises and this
// build implements (auth.Supported), and listed once.
func (t *table) mechanisms(name string, list []string) {
	seen := map[string]bool{}
	for i, m := range list {
		key := elemKey(t.keyOf(name), i)
		upper := strings.ToUpper(m)
		list[i] = upper
		switch {
		case !slices.Contains(auth.Known(), upper):
			t.problemKey(key, "%q is not one of %s", m, strings.Join(auth.Known(), ", "))
		case !auth.Supported(upper):
			t.problemKey(key, "%q is not supported yet (supported: %s)", m, strings.Join(auth.Implemented(), ", "))
		case seen[upper]:
			t.problemKey(key, "%q is listed twice", m)
		}
		seen[upper] = true
	}
}

// judgesItself reports whether one of mechs proves the client without
// its own password (every mechanism but PLAIN: a token, a SCRAM key, a
// certificate), so that it works where pass-through is off.
func judgesItself(mechs []string) bool {
	return slices.ContainsFunc(mechs, func(m string) bool { return m != auth.Plain && auth.Supported(m) })
}

// checkAppPasswords checks the [auth] keys that need others: app
// passwords need a master login, and app-passwords LOGIN and passthrough
// = false need app passwords (or, for passthrough, a mechanism that
// judges the client itself), or no client could log in.
func checkAppPasswords(t *table, c *Config) {
	a := &c.Auth
	if a.AppPasswords != "" && c.Upstream.Master == nil && t.ok("app_passwords") {
		t.problem("app_passwords", "needs [upstream.master]: a client with an app password is logged in to the upstream as the master user")
	}
	if a.AppPasswords == "" && t.ok("app_passwords") {
		if a.LoginCommand == loginCommandAppPasswords {
			t.problem("login_command", "is %q but app_passwords is not set: no LOGIN could succeed", loginCommandAppPasswords)
		}
		if !a.Passthrough && !judgesItself(a.Mechanisms) && t.ok("passthrough") {
			t.problem("passthrough", "is false but app_passwords is not set: no client could log in")
		}
		for i, m := range a.Mechanisms {
			if (m == auth.SCRAMSHA256 || m == auth.SCRAMSHA256Plus) && t.ok("mechanisms") {
				t.problemKey(elemKey(t.keyOf("mechanisms"), i), "%q needs app_passwords: SCRAM logs in with an app password's own login name, user#id (README \"SCRAM\")", m)
			}
		}
	}
}
