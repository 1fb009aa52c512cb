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

	// LoginCommand is "refuse" or "allow-over-tls" (the IMAP LOGIN
	// command, only on a TLS connection).
	// Default: "refuse".
	LoginCommand string `toml:"login_command"`
}

// The login_command words.
const (
	loginCommandRefuse       = "refuse"
	loginCommandAllowOverTLS = "allow-over-tls"
)

func (d *decoder) auth(t *table, a *AuthConfig) {
	t.strings("mechanisms", &a.Mechanisms)
	t.str("login_command", &a.LoginCommand)
	t.done()

	oneOf(t, "login_command", a.LoginCommand, loginCommandRefuse, loginCommandAllowOverTLS)
	seen := map[string]bool{}
	for i, m := range a.Mechanisms {
		key := elemKey(t.keyOf("mechanisms"), i)
		upper := strings.ToUpper(m)
		a.Mechanisms[i] = upper
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
	if len(a.Mechanisms) == 0 && a.LoginCommand == loginCommandRefuse && t.ok("mechanisms") {
		t.problem("mechanisms", "is empty and login_command is %q: no client could log in", loginCommandRefuse)
	}
}
