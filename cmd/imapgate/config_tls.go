package main

// The [tls] table, with [[tls.certificate]] and [tls.acme]: the proxy's own
// certificates.

import (
	"encoding/base64"
	"net/url"
	"os/exec"
	"strings"
	"time"

	"github.com/imapgate/imapgate/tlsconf"
)

// TLSConfig is the [tls] table: the proxy's own certificates. Exactly one
// source is required: files (CertFile and KeyFile, Certificates, or both)
// or ACME.
type TLSConfig struct {
	// CertFile is a PEM certificate chain (leaf first), and KeyFile its
	// private key; both or neither. They must exist when the config is
	// loaded, and are reloaded when they change.
	// Default: "" (no file pair; then Certificates or ACME).
	CertFile string `toml:"cert_file"`
	KeyFile  string `toml:"key_file"`

	// MinVersion is the lowest TLS version accepted: "1.2" or "1.3". "1.0"
	// and "1.1" are refused here: only a [[listen]] table may lower its own
	// minimum.
	// Default: "1.2".
	MinVersion string `toml:"min_version"`

	// Certificates are more file pairs, one per [[tls.certificate]] table,
	// chosen by SNI beside CertFile.
	// Default: none.
	Certificates []CertPair `toml:"certificate"`

	// ACME is the [tls.acme] table. It cannot be combined with certificate
	// files.
	// Default: nil (the file has no [tls.acme]).
	ACME *ACMEConfig `toml:"acme"`
}

// CertPair is one [[tls.certificate]] table.
type CertPair struct {
	// CertFile is a PEM certificate chain, KeyFile its private key.
	// Default: none, both required.
	CertFile string `toml:"cert_file"`
	KeyFile  string `toml:"key_file"`
}

// ACMEConfig is the [tls.acme] table: certificates obtained and renewed
// automatically.
type ACMEConfig struct {
	// Domains are the names to get certificates for. A wildcard
	// ("*.example.com") needs challenge "dns-01".
	// Default: none, required.
	Domains []string `toml:"domains"`

	// Email is the account contact the CA writes to about expiry.
	// Default: "" (no contact).
	Email string `toml:"email"`

	// CA is the ACME directory URL (https).
	// Default: Let's Encrypt production (letsEncryptProduction).
	CA string `toml:"ca"`

	// CARoot is a PEM bundle to trust for the CA's own HTTPS (a private or
	// test CA).
	// Default: "" (the system roots).
	CARoot string `toml:"ca_root"`

	// Storage is the directory holding accounts, keys and certificates.
	// ("redis" needs [cluster], which this version does not have.)
	// Default: "/var/lib/imapgate".
	Storage string `toml:"storage"`

	// Challenge is "tls-alpn-01", "http-01" or "dns-01" (tlsconf's
	// Challenge names). A public CA checks tls-alpn-01 on port 443 and
	// http-01 on port 80 only.
	// Default: "tls-alpn-01".
	Challenge string `toml:"challenge"`

	// ChallengeListen is where the tls-alpn-01 or http-01 responder binds;
	// unused with dns-01.
	// Default: ":443", or ":80" with http-01.
	ChallengeListen string `toml:"challenge_listen"`

	// EABKeyID and EABMACKey (base64url) are the external account binding
	// for CAs that require one; both or neither.
	// Default: "" (no binding).
	EABKeyID  string `toml:"eab_key_id"`
	EABMACKey string `toml:"eab_mac_key"`

	// DNSProvider is how dns-01 publishes its TXT record: "rfc2136"
	// (dynamic updates) or "exec" (a program).
	// Default: none, required with dns-01.
	DNSProvider string `toml:"dns_provider"`

	// DNSServer ("host:port", the primary that takes dynamic updates) and
	// TSIGKeyName (the name of the TSIG key) configure rfc2136.
	// Default: none, required with rfc2136.
	DNSServer   string `toml:"dns_server"`
	TSIGKeyName string `toml:"tsig_key_name"`

	// TSIGAlgorithm is the TSIG key's algorithm: "hmac-sha256",
	// "hmac-sha384", "hmac-sha512", "hmac-sha224" or "hmac-sha1".
	// Default: "hmac-sha256".
	TSIGAlgorithm string `toml:"tsig_algorithm"`

	// TSIGSecretFile holds the base64 TSIG secret, or is the key file
	// tsig-keygen writes.
	// Default: none, required with rfc2136.
	TSIGSecretFile string `toml:"tsig_secret_file"`

	// DNSExec is the program run as `PROGRAM present|cleanup FQDN VALUE`.
	// Default: none, required with exec.
	DNSExec string `toml:"dns_exec"`

	// DNSResolvers ("host:port") are asked for the TXT record before the CA
	// is.
	// Default: none (the system resolver).
	DNSResolvers []string `toml:"dns_resolvers"`

	// OnDemand obtains a certificate during the handshake for a name not in
	// Domains, if it matches OnDemandAllow.
	// Default: false.
	OnDemand bool `toml:"on_demand"`

	// OnDemandAllow lists the names ("mail.example.com") and suffixes
	// (".example.com" or "*.example.com") On-Demand may get certificates
	// for.
	// Default: none, required with OnDemand.
	OnDemandAllow []string `toml:"on_demand_allow"`

	// OnDemandPerHour caps On-Demand certificate requests per hour; it must
	// be more than 0.
	// Default: 10.
	OnDemandPerHour int `toml:"on_demand_per_hour"`

	// RenewCheckInterval is how often certificates are checked for renewal;
	// it must be more than 0.
	// Default: 10m.
	RenewCheckInterval Duration `toml:"renew_check_interval"`
}

// letsEncryptProduction is the default ACME directory.
const letsEncryptProduction = "https://acme-v02.api.letsencrypt.org/directory"

// The dns_provider words: how dns-01 publishes its TXT record.
const (
	dnsProviderRFC2136 = "rfc2136" // tlsconf.RFC2136, dynamic updates
	dnsProviderExec    = "exec"    // tlsconf.ExecHook, a program
)

func defaultACME() *ACMEConfig {
	return &ACMEConfig{
		CA:              letsEncryptProduction,
		Storage:         "/var/lib/imapgate",
		Challenge:       tlsconf.ChallengeTLSALPN,
		ChallengeListen: ":443",
		TSIGAlgorithm:   "hmac-sha256",

		OnDemandPerHour:    10,
		RenewCheckInterval: Duration{10 * time.Minute},
	}
}

// tls decodes [tls] and returns its acme table.
func (d *decoder) tls(t *table, c *TLSConfig) (acmeTable *table) {
	t.str("cert_file", &c.CertFile)
	t.str("key_file", &c.KeyFile)
	t.str("min_version", &c.MinVersion)
	_, c.Certificates = decodeTables(t, "certificate", "[[tls.certificate]]", d.certPair)
	acmeTable, hasACME := t.sub("acme", "[tls.acme]")
	if !hasACME {
		acmeTable.quiet = true
	}
	acme := d.acme(acmeTable)
	if hasACME {
		c.ACME = acme
	}
	t.done()

	switch v := c.MinVersion; {
	case isOldTLS(v):
		t.problem("min_version", "%q is allowed only on a [[listen]] table dedicated to old clients (its own min_version = %q, with a warning at start); keep \"1.2\" or \"1.3\" here", v, v)
	case !isTLSVersion(v) && t.ok("min_version"):
		t.problem("min_version", "%q is not one of 1.2, 1.3", v)
	}
	t.filePair("cert_file", c.CertFile, "key_file", c.KeyFile)

	hasFiles := c.CertFile != "" || c.KeyFile != "" || len(c.Certificates) > 0
	switch {
	case hasFiles && hasACME:
		t.problem("acme", "cannot be combined with certificate files (cert_file, key_file, [[tls.certificate]]): remove one or the other")
	case !hasFiles && !hasACME && t.ok("cert_file") && t.ok("key_file") && t.ok("certificate") && t.ok("acme"):
		t.problemKey(t.key, "no certificate: set cert_file and key_file, add [[tls.certificate]] tables, or configure [tls.acme]")
	}
	return acmeTable
}

func (d *decoder) certPair(t *table) CertPair {
	var p CertPair
	t.str("cert_file", &p.CertFile)
	t.str("key_file", &p.KeyFile)
	t.done()
	if p.CertFile == "" && p.KeyFile == "" {
		t.problemKey(t.key, "needs cert_file and key_file")
	}
	t.filePair("cert_file", p.CertFile, "key_file", p.KeyFile)
	return p
}

// filePair checks two files that go together, such as cert_file and
// key_file.
func (t *table) filePair(aName, a, bName, b string) {
	t.pair(aName, a, bName, b)
	t.file(aName, a)
	t.file(bName, b)
}

// pair checks that two keys are set together or not at all.
func (t *table) pair(aName, a, bName, b string) {
	switch {
	case a != "" && b == "" && t.ok(bName):
		t.problem(aName, "is set without %s", t.keyOf(bName))
	case a == "" && b != "" && t.ok(aName):
		t.problem(bName, "is set without %s", t.keyOf(aName))
	}
}

func (d *decoder) acme(t *table) *ACMEConfig {
	a := defaultACME()
	t.strings("domains", &a.Domains)
	t.str("email", &a.Email)
	t.str("ca", &a.CA)
	t.str("ca_root", &a.CARoot)
	t.str("storage", &a.Storage)
	t.str("challenge", &a.Challenge)
	t.str("challenge_listen", &a.ChallengeListen)
	t.str("eab_key_id", &a.EABKeyID)
	t.str("eab_mac_key", &a.EABMACKey)
	t.str("dns_provider", &a.DNSProvider)
	t.str("dns_server", &a.DNSServer)
	t.str("tsig_key_name", &a.TSIGKeyName)
	t.str("tsig_algorithm", &a.TSIGAlgorithm)
	t.str("tsig_secret_file", &a.TSIGSecretFile)
	t.str("dns_exec", &a.DNSExec)
	t.strings("dns_resolvers", &a.DNSResolvers)
	t.boolean("on_demand", &a.OnDemand)
	t.strings("on_demand_allow", &a.OnDemandAllow)
	t.count("on_demand_per_hour", &a.OnDemandPerHour)
	t.duration("renew_check_interval", &a.RenewCheckInterval)
	t.done()

	oneOf(t, "challenge", a.Challenge, tlsconf.ChallengeTLSALPN, tlsconf.ChallengeHTTP, tlsconf.ChallengeDNS)
	dns01 := a.Challenge == tlsconf.ChallengeDNS
	if _, set := t.m["challenge_listen"]; !set && a.Challenge == tlsconf.ChallengeHTTP {
		a.ChallengeListen = ":80" // where a CA checks http-01
	}

	if len(a.Domains) == 0 {
		t.missing("domains", "is required: the names to get certificates for, e.g. [\"imap.example.com\"]")
	}
	for i, dom := range a.Domains {
		key := elemKey(t.keyOf("domains"), i)
		switch {
		case !isDomainName(dom):
			t.problemKey(key, "%q is not a domain name like \"imap.example.com\"", dom)
		case strings.HasPrefix(dom, "*.") && !dns01 && t.ok("challenge"):
			t.problemKey(key, "%q is a wildcard, which only challenge %q can prove", dom, tlsconf.ChallengeDNS)
		}
	}
	if a.Email != "" && (!strings.Contains(a.Email, "@") || strings.ContainsAny(a.Email, " \t<>")) {
		t.problem("email", "%q is not an e-mail address like \"postmaster@example.com\"", a.Email)
	}
	if u, err := url.Parse(a.CA); err != nil || u.Scheme != "https" || u.Host == "" {
		t.problem("ca", "%q is not an https:// URL of an ACME directory", a.CA)
	}
	t.file("ca_root", a.CARoot)
	switch a.Storage {
	case "":
		t.problem("storage", "is empty: name the directory for ACME accounts and certificates, e.g. \"/var/lib/imapgate\"")
	case "redis":
		t.problem("storage", "\"redis\" needs a [cluster] table, which this version does not support")
	}
	if !dns01 {
		if a.ChallengeListen == "" {
			t.problem("challenge_listen", "is empty: challenge %q needs a listener, e.g. \":443\"", a.Challenge)
		} else if err := checkHostPort(a.ChallengeListen, ":443", true); err != nil {
			t.problem("challenge_listen", "%s", err)
		}
	}
	t.pair("eab_key_id", a.EABKeyID, "eab_mac_key", a.EABMACKey)
	if a.EABMACKey != "" {
		if _, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(a.EABMACKey, "=")); err != nil {
			t.problem("eab_mac_key", "is not base64url (as the CA hands it out)")
		}
	}

	if dns01 {
		d.dnsProvider(t, a)
	} else if t.ok("challenge") {
		for _, name := range []string{"dns_provider", "dns_server", "tsig_key_name", "tsig_secret_file", "dns_exec"} {
			if v, _ := t.m[name].(string); v != "" {
				t.warn(name, "is ignored: challenge is %q, not %q", a.Challenge, tlsconf.ChallengeDNS)
			}
		}
	}
	for i, r := range a.DNSResolvers {
		if err := checkHostPort(r, "192.0.2.53:53", false); err != nil {
			t.problemKey(elemKey(t.keyOf("dns_resolvers"), i), "%s", err)
		}
	}
	d.onDemand(t, a)
	t.positive("renew_check_interval", a.RenewCheckInterval)
	return a
}

// onDemand checks the On-Demand keys of [tls.acme].
func (d *decoder) onDemand(t *table, a *ACMEConfig) {
	for i, s := range a.OnDemandAllow {
		name := strings.TrimPrefix(strings.TrimPrefix(s, "*"), ".")
		if name == "" || !isDomainName(name) || strings.HasPrefix(name, "*.") {
			t.problemKey(elemKey(t.keyOf("on_demand_allow"), i), "%q is not a name (\"mail.example.com\") or a suffix (\".example.com\")", s)
		}
	}
	if !a.OnDemand {
		if len(a.OnDemandAllow) > 0 {
			t.warn("on_demand_allow", "is ignored: on_demand is false")
		}
		return
	}
	if len(a.OnDemandAllow) == 0 && t.ok("on_demand_allow") {
		t.problem("on_demand_allow", "is required with on_demand = true: the names or suffixes a client may ask for, e.g. [\".example.com\"]; without it any name a client sends would be requested from the CA")
	}
	if a.OnDemandPerHour == 0 && t.ok("on_demand_per_hour") {
		t.problem("on_demand_per_hour", "must be more than 0")
	}
}

func (d *decoder) dnsProvider(t *table, a *ACMEConfig) {
	required := func(name, value, what string) bool {
		if value == "" {
			t.missing(name, "is required with dns_provider %q: %s", a.DNSProvider, what)
		}
		return value != ""
	}
	switch a.DNSProvider {
	case "":
		t.missing("dns_provider", "is required with challenge %q: %q or %q", tlsconf.ChallengeDNS, dnsProviderRFC2136, dnsProviderExec)
	case dnsProviderRFC2136:
		if required("dns_server", a.DNSServer, "the primary server that accepts dynamic updates, \"host:port\"") {
			if err := checkHostPort(a.DNSServer, "192.0.2.53:53", false); err != nil {
				t.problem("dns_server", "%s", err)
			}
		}
		required("tsig_key_name", a.TSIGKeyName, "the name of the TSIG key")
		if required("tsig_secret_file", a.TSIGSecretFile, "the file holding the base64 TSIG secret") {
			t.file("tsig_secret_file", a.TSIGSecretFile)
		}
		oneOf(t, "tsig_algorithm", a.TSIGAlgorithm, "hmac-sha256", "hmac-sha384", "hmac-sha512", "hmac-sha224", "hmac-sha1")
	case dnsProviderExec:
		if required("dns_exec", a.DNSExec, "the program to run as `PROGRAM present|cleanup FQDN VALUE`") && t.d.checkFiles {
			if _, err := exec.LookPath(a.DNSExec); err != nil {
				t.problem("dns_exec", "%s", err)
			}
		}
	default:
		oneOf(t, "dns_provider", a.DNSProvider, dnsProviderRFC2136, dnsProviderExec)
	}
}

func isDomainName(s string) bool {
	s = strings.TrimPrefix(s, "*.")
	if s == "" || len(s) > 253 {
		return false
	}
	for label := range strings.SplitSeq(s, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for _, r := range label {
			if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-') {
				return false
			}
		}
	}
	return true
}
