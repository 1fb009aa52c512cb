package main

// The client certificate keys of [[listen]]: client_certs, client_ca_file
// and client_cert_user (README "Client certificates").

import (
	"slices"

	"github.com/imapgate/imapgate/auth"
	"github.com/imapgate/imapgate/tlsconf"
)

// The client_cert_user words: the subject field a certificate of
// client_ca_file names its user in.
const (
	certUserEmailSAN  = "email-san"  // the one rfc822Name subject alternative name
	certUserSubjectCN = "subject-cn" // the subject's common name
)

// listenClientCerts decodes and checks the client certificate keys of one
// [[listen]] table into l.
//
//   - client_certs is "off", "request" or "require"
//     (tlsconf.ClientCertMode). Default "" (not set): off.
//   - client_ca_file is a PEM file of the CAs that issue the devices'
//     certificates. Default "": any certificate; then only a key
//     registered with `imapgate client-cert add` maps to a user.
//   - client_cert_user is the subject field a certificate of
//     client_ca_file names its user in: "email-san" or "subject-cn".
//     Default "": no certificate maps by a field, only registered keys.
func (d *decoder) listenClientCerts(t *table, l *ListenConfig) {
	t.str("client_certs", &l.ClientCerts)
	t.str("client_ca_file", &l.ClientCAFile)
	t.str("client_cert_user", &l.ClientCertUser)

	if _, set := t.m["client_certs"]; set {
		oneOf(t, "client_certs", l.ClientCerts, tlsconf.ClientCertsOff, tlsconf.ClientCertsRequest, tlsconf.ClientCertsRequire)
	}
	if l.ClientCertUser != "" {
		oneOf(t, "client_cert_user", l.ClientCertUser, certUserEmailSAN, certUserSubjectCN)
	}
	if !l.asksClientCerts() {
		for _, name := range []string{"client_ca_file", "client_cert_user"} {
			if v, _ := t.m[name].(string); v != "" {
				t.warn(name, "is ignored: client_certs is off")
			}
		}
		return
	}
	if l.ClientCertUser != "" && l.ClientCAFile == "" && t.ok("client_cert_user") {
		t.problem("client_cert_user", "needs client_ca_file: a certificate names its own user only when a CA of yours issued it")
	}
	if l.ClientCAFile != "" && d.checkFiles && t.ok("client_ca_file") {
		if _, err := tlsconf.LoadClientCAs(l.ClientCAFile); err != nil {
			t.problem("client_ca_file", "%s", err)
		}
	}
}

// checkClientCerts checks what a listener that asks for client
// certificates needs from the rest of the config: a certificate logs in
// through [upstream.master], maps to a user through the credential store
// (auth.app_passwords) or client_cert_user, and is used by EXTERNAL.
func checkClientCerts(listens []*table, authTable *table, c *Config) {
	asking := false
	for i, l := range c.Listen {
		t := listens[i]
		if !l.asksClientCerts() || !t.ok("client_certs") {
			continue
		}
		asking = true
		switch {
		case c.Upstream.Master == nil:
			t.problem("client_certs", "needs [upstream.master]: a client with a certificate is logged in to the upstream as the master user")
		case c.Auth.AppPasswords == "" && l.ClientCertUser == "" && t.ok("client_cert_user"):
			t.problem("client_certs", "no certificate could map to a user: set auth.app_passwords (the store of keys registered with `imapgate client-cert add`), or client_ca_file and client_cert_user")
		case !slices.Contains(c.Auth.Mechanisms, auth.External):
			t.warn("client_certs", "asks for certificates, but auth.mechanisms does not list %q: no client can log in with one", auth.External)
		}
	}
	if slices.Contains(c.Auth.Mechanisms, auth.External) && !asking {
		authTable.warn("mechanisms", "%q is offered only to a client with a certificate, and no [[listen]] asks for one (client_certs)", auth.External)
	}
}

// asksClientCerts reports whether the listener asks for client
// certificates: client_certs is set and not "off".
func (l ListenConfig) asksClientCerts() bool {
	return l.ClientCerts != "" && l.ClientCerts != string(tlsconf.ClientCertsOff)
}
