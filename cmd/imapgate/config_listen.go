package main

// The [[listen]] tables: the addresses clients connect to.

import (
	"crypto/tls"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"github.com/imapgate/imapgate/auth"
	"github.com/imapgate/imapgate/proxy"
	"github.com/imapgate/imapgate/tlsconf"
)

// ListenConfig is one [[listen]] table: an address clients connect to.
type ListenConfig struct {
	// Address is the "host:port" to bind, e.g. "0.0.0.0:993" or
	// "[::]:993". Two listeners (or a listener and the metrics or ACME
	// challenge listener) may not bind the same one.
	// Default: none, required.
	Address string `toml:"address"`

	// TLS is "implicit" (TLS from the first byte, port 993) or "starttls"
	// (plaintext greeting, then STARTTLS, port 143).
	// Default: "implicit".
	TLS string `toml:"tls"`

	// ProxyProtocol accepts PROXY v1/v2 headers, but only from
	// policy.trusted_proxies.
	// Default: false.
	ProxyProtocol bool `toml:"proxy_protocol"`

	// MinVersion overrides tls.min_version for this listener only: "1.0",
	// "1.1", "1.2" or "1.3". "1.0" and "1.1" are accepted with a warning,
	// for old clients on a port of their own.
	// Default: "", meaning tls.min_version.
	MinVersion string `toml:"min_version"`

	// ClientCerts, ClientCAFile and ClientCertUser are the client
	// certificates this listener asks for, for EXTERNAL (README "Client
	// certificates"; config_clientcert.go). Default: "" (off), none.
	ClientCerts    string `toml:"client_certs"`
	ClientCAFile   string `toml:"client_ca_file"`
	ClientCertUser string `toml:"client_cert_user"`

	// Mechanisms are the SASL mechanisms this listener offers, as [auth]
	// mechanisms (README "[[listen]] mechanisms and passthrough").
	// Default: none, meaning [auth] mechanisms.
	Mechanisms []string `toml:"mechanisms"`

	// Passthrough is [auth] passthrough for this listener's clients:
	// false refuses the user's own password here (passthrough_disabled);
	// only app passwords, tokens and certificates work. A [[policy.rule]]
	// that matches a client and sets passthrough decides instead.
	// Default: unset, meaning [auth] passthrough.
	Passthrough *bool `toml:"passthrough"`
}

// EffectiveMechanisms returns the mechanisms this listener offers: its
// own if set, else [auth] mechanisms.
func (l ListenConfig) EffectiveMechanisms(c *Config) []string {
	if len(l.Mechanisms) > 0 {
		return l.Mechanisms
	}
	return c.Auth.Mechanisms
}

// EffectivePassthrough returns whether this listener passes the user's
// own password through: its own passthrough if set, else [auth]'s.
func (l ListenConfig) EffectivePassthrough(c *Config) bool {
	if l.Passthrough != nil {
		return *l.Passthrough
	}
	return c.Auth.Passthrough
}

// EffectiveMinVersion returns the lowest TLS version this listener accepts:
// its own min_version if set, else tls.min_version.
func (l ListenConfig) EffectiveMinVersion(c *Config) string {
	if l.MinVersion != "" {
		return l.MinVersion
	}
	return c.TLS.MinVersion
}

func defaultListen() ListenConfig { return ListenConfig{TLS: string(proxy.TLSImplicit)} }

func (d *decoder) listen(t *table) ListenConfig {
	l := defaultListen()
	t.str("address", &l.Address)
	t.str("tls", &l.TLS)
	t.boolean("proxy_protocol", &l.ProxyProtocol)
	t.str("min_version", &l.MinVersion)
	t.strings("mechanisms", &l.Mechanisms)
	t.optBool("passthrough", &l.Passthrough)
	d.listenClientCerts(t, &l)
	t.done()

	t.mechanisms("mechanisms", l.Mechanisms)

	if l.Address == "" {
		t.missing("address", "is required, e.g. \"0.0.0.0:993\"")
	} else if err := checkHostPort(l.Address, "0.0.0.0:993", true); err != nil {
		t.problem("address", "%s", err)
	}
	oneOf(t, "tls", l.TLS, proxy.TLSImplicit, proxy.TLSStartTLS)
	if l.MinVersion == "" {
		return l
	}
	switch v := l.MinVersion; {
	case isOldTLS(v):
		t.warn("min_version", "%q allows TLS %s, deprecated by RFC 8996; keep it to a listener for old clients", v, v)
	case !isTLSVersion(v) && t.ok("min_version"):
		t.problem("min_version", "%q is not one of 1.2, 1.3 (or, for old clients, 1.0, 1.1)", v)
	}
	return l
}

// optBool reads a boolean that may be left out (dst stays nil).
func (t *table) optBool(name string, dst **bool) {
	if b, ok := typed[bool](t, name, "true or false"); ok {
		*dst = &b
	}
}

// checkListenAuth checks the [[listen]] mechanisms and passthrough
// against [auth]: a listener on which no client could log in is an error.
func checkListenAuth(listens []*table, c *Config) {
	for i, l := range c.Listen {
		t := listens[i]
		if _, set := t.m["mechanisms"]; set && len(l.Mechanisms) == 0 && c.Auth.LoginCommand == loginCommandRefuse && t.ok("mechanisms") {
			t.problem("mechanisms", "is empty and auth.login_command is %q: no client could log in on this listener (leave it out for [auth] mechanisms)", loginCommandRefuse)
		}
		// A listener's own mechanisms need what [auth] mechanisms would
		// (checkAppPasswords, checkOAuth): else they are never offered.
		for j, m := range l.Mechanisms {
			key := elemKey(t.keyOf("mechanisms"), j)
			switch {
			case !t.ok("mechanisms"):
			case slices.Contains(tokenMechanisms, m) && c.Auth.OAuth == nil:
				t.problemKey(key, "%q needs [auth.oauth]: the identity provider whose tokens it accepts", m)
			case (m == auth.SCRAMSHA256 || m == auth.SCRAMSHA256Plus) && c.Auth.AppPasswords == "":
				t.problemKey(key, "%q needs auth.app_passwords: SCRAM logs in with an app password's own login name, user#id (README \"SCRAM\")", m)
			}
		}
		if l.Passthrough != nil && !*l.Passthrough && c.Auth.AppPasswords == "" && !judgesItself(l.EffectiveMechanisms(c)) && t.ok("passthrough") {
			t.problem("passthrough", "is false but auth.app_passwords is not set and every mechanism here passes the password through: no client could log in on this listener")
		}
	}
}

// isTLSVersion reports whether v is a min_version tlsconf.ParseVersion, the
// parser the listeners use, takes: a version number exactly as written
// ("1.2"; not "" or " 1.2", which it also reads).
func isTLSVersion(v string) bool {
	_, err := tlsconf.ParseVersion(v)
	return err == nil && v != "" && v == strings.TrimSpace(v)
}

// isOldTLS reports whether v is a TLS version RFC 8996 deprecated (1.0,
// 1.1).
func isOldTLS(v string) bool {
	n, _ := tlsconf.ParseVersion(v)
	return isTLSVersion(v) && n < tls.VersionTLS12
}

// bind is an address some listener binds: table t, key name.
type bind struct {
	t          *table
	name, addr string
}

// checkBindsDistinct reports two listeners (client, ACME challenge or
// metrics) that would bind the same address.
func checkBindsDistinct(binds []bind) {
	var used []bind
	for _, b := range binds {
		if b.addr == "" || !b.t.ok(b.name) {
			continue
		}
		clash := slices.IndexFunc(used, func(u bind) bool { return sameBind(u.addr, b.addr) })
		if clash < 0 {
			used = append(used, b)
			continue
		}
		addr := fmt.Sprintf("%q", b.addr)
		if _, written := b.t.d.lines[b.t.keyOf(b.name)]; !written {
			addr += " (the default)"
		}
		other := used[clash]
		if other.addr == b.addr {
			b.t.problem(b.name, "%s is already used by %s", addr, other.t.keyOf(other.name))
		} else {
			b.t.problem(b.name, "%s overlaps %s %q", addr, other.t.keyOf(other.name), other.addr)
		}
	}
}

// sameBind reports whether two valid host:port addresses cannot both be
// bound: same port, and the same host or one of them every address.
func sameBind(a, b string) bool {
	ha, pa, errA := net.SplitHostPort(a)
	hb, pb, errB := net.SplitHostPort(b)
	if errA != nil || errB != nil {
		return false
	}
	na, _ := strconv.Atoi(pa)
	nb, _ := strconv.Atoi(pb)
	if na != nb {
		return false
	}
	wildcard := func(h string) bool { return h == "" || h == "0.0.0.0" || h == "::" }
	if wildcard(ha) || wildcard(hb) {
		return true
	}
	if ia, err := netip.ParseAddr(ha); err == nil {
		if ib, err := netip.ParseAddr(hb); err == nil {
			return ia == ib
		}
	}
	return strings.EqualFold(ha, hb)
}
