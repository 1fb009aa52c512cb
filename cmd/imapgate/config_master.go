package main

// The [upstream.master] table: the master user imapgate logs in as for a
// client that proved itself with an app password (README "App
// passwords").

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/imapgate/imapgate/proxy"
)

// MasterConfig is the [upstream.master] table (proxy.MasterLogin).
type MasterConfig struct {
	// User is the master user's name as the upstream knows it.
	// Default: none, required.
	User string `toml:"user"`

	// SecretFile holds the master user's password: the whole file but a
	// final newline. It should be readable by imapgate only (0600); an
	// empty secret is refused. The secret is never logged.
	// Default: none, required.
	SecretFile string `toml:"secret_file"`

	// Form is how the mailbox is named: "sasl-authzid" (AUTHENTICATE
	// PLAIN with the mailbox as authorization identity: Dovecot's master
	// passdb, Cyrus proxyservers), "dovecot-login" ("mailbox*master") or
	// "exchange-delegate" (`domain\master\mailbox`).
	// Default: "sasl-authzid".
	Form string `toml:"form"`

	// Separator joins the parts of dovecot-login and exchange-delegate.
	// Default: "" ("*" for dovecot-login, `\` for exchange-delegate; none
	// for sasl-authzid, where it must stay empty).
	Separator string `toml:"separator"`

	// Domain is the first part of exchange-delegate ("CORP").
	// Default: "" (none: `master\mailbox`).
	Domain string `toml:"domain"`
}

// placeholderSecret stands for the secret when files are not read
// (ParseConfig), so that CheckMaster still checks the rest.
const placeholderSecret = "placeholder"

func (d *decoder) master(t *table, u *UpstreamConfig) {
	m := &MasterConfig{Form: string(proxy.MasterSASLAuthzid)}
	t.str("user", &m.User)
	t.str("secret_file", &m.SecretFile)
	t.str("form", &m.Form)
	t.str("separator", &m.Separator)
	t.str("domain", &m.Domain)
	t.done()
	if t.quiet {
		return
	}
	u.Master = m
	oneOf(t, "form", m.Form, proxy.MasterSASLAuthzid, proxy.MasterDovecotLogin, proxy.MasterExchangeDelegate)
	if m.User == "" && t.ok("user") {
		t.missing("user", "is required: the master user's name as the upstream knows it")
	}
	secret := proxy.NewSecret(placeholderSecret)
	switch {
	case m.SecretFile == "":
		if t.ok("secret_file") {
			t.missing("secret_file", "is required: a file (mode 0600) holding the master user's password")
		}
	case t.d.checkFiles:
		s, err := readMasterSecret(m.SecretFile)
		if err != nil {
			t.problem("secret_file", "%s", err)
			return
		}
		secret = s
		if fi, err := os.Stat(m.SecretFile); err == nil && fi.Mode().Perm()&0o077 != 0 {
			t.warn("secret_file", "%s may be read by others than its owner: the master secret opens every mailbox; chmod 600 it", m.SecretFile)
		}
	}
	if m.User == "" || !t.ok("form") {
		return
	}
	up := &proxy.Upstream{Method: proxy.LoginMethod(u.Login), Master: m.login(secret)}
	if err := up.CheckMaster(); err != nil {
		t.problem(masterProblemKey(err.Error()), "%s", err)
	}
}

// login is the proxy's form of m with secret.
func (m *MasterConfig) login(secret proxy.Secret) *proxy.MasterLogin {
	return &proxy.MasterLogin{User: m.User, Secret: secret, Form: proxy.MasterForm(m.Form), Separator: m.Separator, Domain: m.Domain}
}

// masterProblemKey is the key a proxy.MasterLogin.Check error is about:
// its messages begin "master form", "master user", ... .
func masterProblemKey(msg string) string {
	for _, k := range []string{"form", "user", "secret", "separator", "domain"} {
		if strings.HasPrefix(msg, "master "+k) {
			if k == "secret" {
				return "secret_file"
			}
			return k
		}
	}
	return "form"
}

// errEmptySecret: a master secret file with nothing in it.
var errEmptySecret = errors.New("is empty: it must hold the master user's password")

// readMasterSecret reads a master secret file: its content without one
// final newline ("\n" or "\r\n"). The error never holds the secret.
func readMasterSecret(path string) (proxy.Secret, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return proxy.Secret{}, err
	}
	data = bytes.TrimSuffix(data, []byte("\n"))
	data = bytes.TrimSuffix(data, []byte("\r"))
	if len(data) == 0 {
		return proxy.Secret{}, fmt.Errorf("%s %w", path, errEmptySecret)
	}
	return proxy.NewSecret(string(data)), nil
}
