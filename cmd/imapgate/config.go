package main

// The configuration file: its Go form, its defaults, and every check that
// `imapgate check-config` runs. CONTRACT.md ("Config file") is the
// specification; imapgate.example.toml shows every key with its default.
//
// Loading happens in three steps, all in this file:
//
//  1. BurntSushi/toml parses the text into maps (syntax errors stop here,
//     with toml's own line number);
//  2. scanKeyLines finds the line on which every key is written, because the
//     toml package keeps key positions private;
//  3. a decoder walks the maps section by section, filling a Config that
//     already holds the defaults, and collects every problem it sees (wrong
//     type, bad value, unknown key, missing requirement) with its line, so
//     that one run of check-config shows them all.

import (
	"cmp"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"os"
	"os/exec"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/BurntSushi/toml"
	"github.com/imapgate/imapgate/auth"
	"github.com/imapgate/imapgate/policy"
)

// Config is the whole imapgate configuration. LoadConfig returns it with
// every key the file leaves out set to its default, so code that uses a
// *Config never needs to know a default itself.
type Config struct {
	// ShutdownTimeout is how long SIGTERM/SIGINT waits for sessions to end
	// before closing them. Default 30s.
	ShutdownTimeout Duration `toml:"shutdown_timeout"`

	// Listen holds one entry per [[listen]] table. At least one is required.
	Listen []ListenConfig `toml:"listen"`

	// TLS holds the proxy's own certificates: files, ACME, or both kinds of
	// files. One source is required.
	TLS TLSConfig `toml:"tls"`

	// Upstream is the IMAP server imapgate logs users in to. Its address is
	// required.
	Upstream UpstreamConfig `toml:"upstream"`

	// Auth says which ways of logging in clients may use.
	Auth AuthConfig `toml:"auth"`

	// Policy holds the limits and address lists applied before a credential
	// reaches the upstream.
	Policy PolicyConfig `toml:"policy"`

	// Audit says where the audit events go.
	Audit AuditConfig `toml:"audit"`

	// Metrics says where Prometheus metrics are served, if anywhere.
	Metrics MetricsConfig `toml:"metrics"`

	path     string    // file it came from (for messages)
	warnings []Problem // legal but doubtful settings; see Warnings
}

// Path returns the file name the configuration was loaded from, as it was
// given to LoadConfig or ParseConfig.
func (c *Config) Path() string { return c.path }

// Warnings returns settings that are legal but probably not what the
// operator wants (TLS 1.0, a short idle timeout, plaintext to a remote
// upstream, ...), each as "PATH:LINE: key: problem". The caller should log
// them; check-config prints them.
func (c *Config) Warnings() []string {
	w := make([]string, 0, len(c.warnings))
	for _, p := range c.warnings {
		w = append(w, p.format(c.path))
	}
	return w
}

// Duration is a TOML string holding a Go duration such as "90s" or "31m".
// Negative durations are refused.
type Duration struct{ time.Duration }

// UnmarshalText parses a Go duration; the error text is the problem as
// check-config shows it after the key.
func (d *Duration) UnmarshalText(text []byte) error {
	v, err := time.ParseDuration(string(text))
	if err != nil {
		return fmt.Errorf("%q is not a duration (use Go durations like \"90s\", \"31m\")", text)
	}
	if v < 0 {
		return fmt.Errorf("%q is negative", text)
	}
	d.Duration = v
	return nil
}

// MarshalText writes the duration the way time.Duration.String does.
func (d Duration) MarshalText() ([]byte, error) { return []byte(d.String()), nil }

// ListenConfig is one [[listen]] table: an address clients connect to.
type ListenConfig struct {
	// Address is "host:port" to bind, e.g. "0.0.0.0:993" or "[::]:993".
	// Required; two listeners (or the metrics or ACME challenge listener)
	// may not use the same one.
	Address string `toml:"address"`

	// TLS is "implicit" (TLS from the first byte, port 993) or "starttls"
	// (plaintext greeting, then STARTTLS, port 143). Default "implicit".
	TLS string `toml:"tls"`

	// ProxyProtocol accepts PROXY v1/v2 headers, but only from
	// policy.trusted_proxies. Default false.
	ProxyProtocol bool `toml:"proxy_protocol"`

	// MinVersion overrides tls.min_version for this listener only: "1.0",
	// "1.1", "1.2" or "1.3". Default "" (use tls.min_version). "1.0" and
	// "1.1" are accepted with a warning, for old clients on a separate port.
	MinVersion string `toml:"min_version"`
}

// EffectiveMinVersion returns the lowest TLS version this listener accepts:
// its own min_version if set, else tls.min_version.
func (l ListenConfig) EffectiveMinVersion(c *Config) string {
	if l.MinVersion != "" {
		return l.MinVersion
	}
	return c.TLS.MinVersion
}

// TLSConfig is the [tls] table: the proxy's own certificates.
// Exactly one source is required: files (CertFile+KeyFile and/or
// Certificates) or ACME.
type TLSConfig struct {
	// CertFile is a PEM certificate chain (leaf first); KeyFile its private
	// key. Both or neither. Must exist when the config is loaded.
	CertFile string `toml:"cert_file"`
	KeyFile  string `toml:"key_file"`

	// MinVersion is the lowest TLS version accepted: "1.2" or "1.3".
	// Default "1.2". "1.0" and "1.1" are refused here: only a [[listen]]
	// table may lower its own minimum.
	MinVersion string `toml:"min_version"`

	// Certificates are more file pairs, one per [[tls.certificate]] table,
	// served by SNI next to CertFile. Default none.
	Certificates []CertPair `toml:"certificate"`

	// ACME is the [tls.acme] table; nil when the file has none. It cannot
	// be combined with certificate files.
	ACME *ACMEConfig `toml:"acme"`
}

// CertPair is one [[tls.certificate]] table. Both files are required.
type CertPair struct {
	CertFile string `toml:"cert_file"`
	KeyFile  string `toml:"key_file"`
}

// ACMEConfig is the [tls.acme] table: certificates obtained and renewed
// automatically.
type ACMEConfig struct {
	// Domains are the names to get certificates for. Required. A wildcard
	// ("*.example.com") needs challenge "dns-01".
	Domains []string `toml:"domains"`

	// Email is the account contact the CA warns about expiry. Default "".
	Email string `toml:"email"`

	// CA is the ACME directory URL (https). Default Let's Encrypt
	// production.
	CA string `toml:"ca"`

	// CARoot is a PEM bundle to trust for the CA's own HTTPS (a private or
	// test CA). Default "" (system roots).
	CARoot string `toml:"ca_root"`

	// Storage is the directory holding accounts, keys and certificates.
	// Default "/var/lib/imapgate". ("redis" needs [cluster], which this
	// version does not have.)
	Storage string `toml:"storage"`

	// Challenge is "tls-alpn-01", "http-01" or "dns-01". Default
	// "tls-alpn-01". A public CA checks tls-alpn-01 on port 443 and http-01
	// on port 80 only.
	Challenge string `toml:"challenge"`

	// ChallengeListen is where the tls-alpn-01 or http-01 responder binds.
	// Default ":443", or ":80" with http-01. Unused with dns-01.
	ChallengeListen string `toml:"challenge_listen"`

	// EABKeyID and EABMACKey (base64url) are the external account binding
	// for CAs that require one. Both or neither. Default "".
	EABKeyID  string `toml:"eab_key_id"`
	EABMACKey string `toml:"eab_mac_key"`

	// DNSProvider is how dns-01 publishes its TXT record: "rfc2136" or
	// "exec". Required with dns-01.
	DNSProvider string `toml:"dns_provider"`

	// DNSServer ("host:port"), TSIGKeyName, TSIGAlgorithm and TSIGSecretFile
	// configure rfc2136 dynamic updates. All but the algorithm (default
	// "hmac-sha256") are required with rfc2136.
	DNSServer      string `toml:"dns_server"`
	TSIGKeyName    string `toml:"tsig_key_name"`
	TSIGAlgorithm  string `toml:"tsig_algorithm"`
	TSIGSecretFile string `toml:"tsig_secret_file"`

	// DNSExec is the program run as `PROGRAM present|cleanup FQDN VALUE`.
	// Required with exec.
	DNSExec string `toml:"dns_exec"`

	// DNSResolvers ("host:port") are asked for the TXT record before the CA
	// is. Default none: the system resolver.
	DNSResolvers []string `toml:"dns_resolvers"`

	// OnDemand obtains a certificate during the handshake for a name not
	// in Domains, if it matches OnDemandAllow. Default false.
	OnDemand bool `toml:"on_demand"`

	// OnDemandAllow lists the names ("mail.example.com") and suffixes
	// (".example.com" or "*.example.com") On-Demand may get certificates
	// for. Required with OnDemand.
	OnDemandAllow []string `toml:"on_demand_allow"`

	// OnDemandPerHour caps On-Demand certificate requests per hour.
	// Default 10; must be more than 0.
	OnDemandPerHour int `toml:"on_demand_per_hour"`

	// RenewCheckInterval is how often certificates are checked for
	// renewal. Default 10m; must be more than 0.
	RenewCheckInterval Duration `toml:"renew_check_interval"`
}

// UpstreamConfig is the [upstream] table: the real IMAP server.
type UpstreamConfig struct {
	// Address is "host:port" of the upstream. Required.
	Address string `toml:"address"`

	// TLS is "none", "starttls" or "implicit". Default "starttls". "none"
	// sends passwords in clear text: only for a trusted network.
	TLS string `toml:"tls"`

	// ServerName is the name the upstream certificate is verified against.
	// Default: the host of Address (LoadConfig fills it in when TLS is on).
	ServerName string `toml:"server_name"`

	// CAFile is a PEM bundle of roots for the upstream certificate.
	// Default "" (system roots).
	CAFile string `toml:"ca_file"`

	// PinSHA256 is the base64 SHA-256 of the upstream certificate's
	// SubjectPublicKeyInfo; when set, that key is required. Default "".
	PinSHA256 string `toml:"pin_sha256"`

	// Login is "auto" (AUTHENTICATE PLAIN if offered, else LOGIN), "plain"
	// or "login". Default "auto".
	Login string `toml:"login"`

	// ForwardClientIP is "none", "id" (ID x-originating-ip) or "proxy-v2".
	// Default "none".
	ForwardClientIP string `toml:"forward_client_ip"`

	// ConnectTimeout bounds everything before the credential is sent:
	// connect, TLS, greeting, STARTTLS, CAPABILITY, ID. Default 10s; must
	// be more than 0.
	ConnectTimeout Duration `toml:"connect_timeout"`

	// LoginTimeout bounds the wait for the upstream's answer once the
	// credential is sent; running out counts as a failed attempt
	// (upstream_no_answer). Default 30s: more than Dovecot 2.3's longest
	// auth penalty (15s) plus its auth_failure_delay (2s). Must be more
	// than 0.
	LoginTimeout Duration `toml:"login_timeout"`

	// SourceAddresses are local IP addresses to dial the upstream from.
	// Default none: the system chooses.
	SourceAddresses []string `toml:"source_addresses"`
}

// AuthConfig is the [auth] table.
type AuthConfig struct {
	// Mechanisms are the SASL mechanisms offered, upper case. Default
	// ["PLAIN"]. Known: PLAIN, OAUTHBEARER, EXTERNAL, SCRAM-SHA-256; only
	// PLAIN is implemented today.
	Mechanisms []string `toml:"mechanisms"`

	// LoginCommand is "refuse" or "allow-over-tls" (the IMAP LOGIN command,
	// only on a TLS connection). Default "refuse".
	LoginCommand string `toml:"login_command"`
}

// PolicyConfig is the [policy] table. Numbers are never negative.
// Every CIDR list holds canonical prefixes ("192.0.2.7" in the file becomes
// "192.0.2.7/32", "::ffff:192.0.2.0/120" becomes "192.0.2.0/24"), so
// policy.ParsePrefixes cannot fail on them.
type PolicyConfig struct {
	MaxConnections      int `toml:"max_connections"`        // default 20000
	MaxConnectionsPerIP int `toml:"max_connections_per_ip"` // default 50
	AuthFailuresPerIP   int `toml:"auth_failures_per_ip"`   // default 10
	AuthFailuresPerUser int `toml:"auth_failures_per_user"` // default 20

	// FailureWindow is how long failures count. Default 15m; must be more
	// than 0.
	FailureWindow Duration `toml:"failure_window"`

	// FailureDelay is added before answering any failed AUTHENTICATE.
	// Default 2s.
	FailureDelay Duration `toml:"failure_delay"`

	// MaxUpstreamLogins is the number of logins in flight to the upstream.
	// Default 64.
	MaxUpstreamLogins int `toml:"max_upstream_logins"`

	TrustedProxies []string `toml:"trusted_proxies"` // default none
	Allow          []string `toml:"allow"`           // default none: everyone
	Deny           []string `toml:"deny"`            // default none; checked first

	// PreauthTimeout is the time to finish authenticating. Default 60s;
	// must be more than 0.
	PreauthTimeout Duration `toml:"preauth_timeout"`

	// IdleTimeout closes a logged-in session after this long without bytes
	// either way. Default 31m; must be more than 0. Below 29m is accepted
	// with a warning: IDLE clients re-issue IDLE only every 29 minutes.
	IdleTimeout Duration `toml:"idle_timeout"`

	// MaxConnectionsPerNetwork is the connections open at once from one
	// client network, an IPv4 /24 or IPv6 /48, so that one network cannot
	// fill max_connections (max_connections_per_ip counts an IPv4 address
	// and an IPv6 /64). Default 1000; 0 means no limit.
	MaxConnectionsPerNetwork int `toml:"max_connections_per_network"`

	// AuthFailuresPerNetwork is the failures allowed per IPv4 /24 and per
	// IPv6 /48 within failure_window (auth_failures_per_ip counts the IPv4
	// /32 and the IPv6 /128 and /64). Default 50. For every auth_failures_*
	// key, 0 means no limit.
	AuthFailuresPerNetwork int `toml:"auth_failures_per_network"`

	// AuthFailuresPerDevice is the failures allowed per (user, network):
	// the user from one IPv4 /24 or IPv6 /64. A known device (see
	// KnownDeviceFor) is judged by this budget only. Default 10.
	AuthFailuresPerDevice int `toml:"auth_failures_per_device"`

	// KnownDeviceFor is how long a successful login keeps its (user,
	// network) a known device. Default 720h (30 days); must be more than 0.
	KnownDeviceFor Duration `toml:"known_device_for"`

	// UserDomain is the mail domain bare user names belong to: budgets and
	// known devices are kept under "user@domain", so "jdoe", "JDoe" and
	// "jdoe@example.com" are one user (see policy.UserNames). What is
	// sent to the upstream is not changed. Default "": names are compared
	// as typed, case-insensitively.
	UserDomain string `toml:"user_domain"`

	// UserRealms are other domains that mean UserDomain: NetBIOS domains
	// (EXAMPLE\jdoe) and UPN suffixes (jdoe@example.local). Default none;
	// needs user_domain.
	UserRealms []string `toml:"user_realms"`

	// UpstreamLoginQueue is how many logins may wait for one of the
	// max_upstream_logins slots. Default 0: as many as max_upstream_logins.
	UpstreamLoginQueue int `toml:"upstream_login_queue"`

	// UpstreamLoginWait is how long a login waits in that queue before
	// NO [UNAVAILABLE]. Default 2s; must be more than 0.
	UpstreamLoginWait Duration `toml:"upstream_login_wait"`

	// Rules are [[policy.rule]] tables: other budgets for some networks or
	// listeners. The first rule that matches a client applies.
	Rules []PolicyRule `toml:"rule"`
}

// PolicyRule is one [[policy.rule]] table. It matches a client whose
// address is in one of Networks (any address when empty) and who connected
// to one of Listeners ([[listen]] addresses as written; any listener when
// empty); at least one of the two is set. Each budget key left out (nil)
// is taken from [policy].
type PolicyRule struct {
	Networks               []string  `toml:"networks"`
	Listeners              []string  `toml:"listeners"`
	AuthFailuresPerIP      *int      `toml:"auth_failures_per_ip"`
	AuthFailuresPerNetwork *int      `toml:"auth_failures_per_network"`
	AuthFailuresPerUser    *int      `toml:"auth_failures_per_user"`
	AuthFailuresPerDevice  *int      `toml:"auth_failures_per_device"`
	FailureWindow          *Duration `toml:"failure_window"`
	FailureDelay           *Duration `toml:"failure_delay"`
}

// AuditConfig is the [audit] table.
type AuditConfig struct {
	// Output is "stdout", "stderr" or a file path (reopened on SIGHUP).
	// Default "stdout".
	Output string `toml:"output"`

	// UserHashKeyFile, when set, turns on user_hash mode: events carry
	// user_hash, the hex HMAC-SHA256 of the user name under the key in
	// this file (at least 32 bytes; surrounding whitespace is ignored),
	// instead of user. Default "": user names in clear.
	UserHashKeyFile string `toml:"user_hash_key_file"`
}

// MetricsConfig is the [metrics] table.
type MetricsConfig struct {
	// Listen is "host:port" serving /metrics, /healthz and /readyz.
	// Default "": no metrics listener.
	Listen string `toml:"listen"`
}

// Default values that are spelled out in more than one place.
const (
	letsEncryptProduction = "https://acme-v02.api.letsencrypt.org/directory"
	idleTimeoutFloor      = 29 * time.Minute
)

// DefaultConfig returns a Config holding every default of CONTRACT.md. It
// has no listener, certificate or upstream address: those have no safe
// default.
func DefaultConfig() *Config {
	return &Config{
		ShutdownTimeout: Duration{30 * time.Second},
		TLS:             TLSConfig{MinVersion: "1.2"},
		Upstream: UpstreamConfig{
			TLS:             "starttls",
			Login:           "auto",
			ForwardClientIP: "none",
			ConnectTimeout:  Duration{10 * time.Second},
			LoginTimeout:    Duration{30 * time.Second},
		},
		Auth: AuthConfig{
			Mechanisms:   auth.Default(),
			LoginCommand: "refuse",
		},
		Policy: PolicyConfig{
			MaxConnections:      20000,
			MaxConnectionsPerIP: 50,
			AuthFailuresPerIP:   10,
			AuthFailuresPerUser: 20,
			FailureWindow:       Duration{15 * time.Minute},
			FailureDelay:        Duration{2 * time.Second},
			MaxUpstreamLogins:   64,
			PreauthTimeout:      Duration{60 * time.Second},
			IdleTimeout:         Duration{31 * time.Minute},

			AuthFailuresPerNetwork: 50,
			AuthFailuresPerDevice:  10,
			KnownDeviceFor:         Duration{30 * 24 * time.Hour},
			UpstreamLoginWait:      Duration{2 * time.Second},

			MaxConnectionsPerNetwork: 1000,
		},
		Audit: AuditConfig{Output: "stdout"},
	}
}

func defaultListen() ListenConfig { return ListenConfig{TLS: "implicit"} }

func defaultACME() *ACMEConfig {
	return &ACMEConfig{
		CA:              letsEncryptProduction,
		Storage:         "/var/lib/imapgate",
		Challenge:       "tls-alpn-01",
		ChallengeListen: ":443",
		TSIGAlgorithm:   "hmac-sha256",

		OnDemandPerHour:    10,
		RenewCheckInterval: Duration{10 * time.Minute},
	}
}

// Problem is one thing wrong with a configuration file.
type Problem struct {
	Line int    // line of Key in the file; its table's line if Key is missing there; 0 if neither
	Key  string // full dotted key: "upstream.tls", "listen[1].address", "policy.allow[2]"
	Msg  string // what is wrong, and when possible what to write instead
}

func (p Problem) format(path string) string {
	return fmt.Sprintf("%s:%d: %s: %s", path, p.Line, p.Key, p.Msg)
}

// ConfigError is every problem found in one configuration file. Its Error
// text has one "PATH:LINE: key: problem" line per problem, in line order.
type ConfigError struct {
	Path     string
	Problems []Problem
}

func (e *ConfigError) Error() string {
	lines := make([]string, len(e.Problems))
	for i, p := range e.Problems {
		lines[i] = p.format(e.Path)
	}
	return strings.Join(lines, "\n")
}

// LoadConfig reads, decodes and validates the file at path, including that
// every file it names exists. An unreadable file gives the os error; a bad
// one gives a *ConfigError listing every problem.
func LoadConfig(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return parseConfig(path, data, true)
}

// ParseConfig is LoadConfig on data already read; path is used only in
// messages. It checks that the files the configuration names exist.
func ParseConfig(path string, data []byte) (*Config, error) {
	return parseConfig(path, data, true)
}

// parseConfig is ParseConfig with the file checks optional, so tests can
// load a config naming files of another machine (the example's /etc/imapgate).
func parseConfig(path string, data []byte, checkFiles bool) (*Config, error) {
	var raw map[string]any
	if _, err := toml.Decode(string(data), &raw); err != nil {
		p := Problem{Key: "syntax", Msg: err.Error()}
		var pe toml.ParseError
		if errors.As(err, &pe) {
			p.Line, p.Msg = pe.Position.Line, pe.Message
		}
		return nil, &ConfigError{Path: path, Problems: []Problem{p}}
	}

	d := &decoder{
		lines:      scanKeyLines(data),
		checkFiles: checkFiles,
		known:      map[string][]string{},
		failed:     map[string]bool{},
		missing:    map[string]int{},
		children:   map[string]string{},
	}
	c := DefaultConfig()
	c.path = path
	d.config(d.root(raw), c)
	d.reportUnknown()

	if len(d.problems) > 0 {
		sortProblems(d.problems)
		return nil, &ConfigError{Path: path, Problems: d.problems}
	}
	sortProblems(d.warnings)
	c.warnings = d.warnings
	return c, nil
}

func sortProblems(ps []Problem) {
	slices.SortStableFunc(ps, func(a, b Problem) int { return cmp.Compare(a.Line, b.Line) })
}

// The decoder walks the decoded TOML maps, one method per section. Each
// method reads its keys through a *table, which records type problems and
// which keys are known, then checks the values it read.

type decoder struct {
	lines      keyLines
	checkFiles bool

	problems []Problem
	warnings []Problem
	failed   map[string]bool // keys that already have a problem: report one per key
	missing  map[string]int  // required keys not set -> index in problems

	known    map[string][]string // section -> key names it accepts, for hints
	children map[string]string   // section + "." + name -> section of that sub-table
	sections []string            // known's keys in walk order
	unknown  []unknownKey
}

type unknownKey struct {
	key, name, section string
	table              *table
	line               int
	isTable            bool
}

// table is one TOML table being decoded.
type table struct {
	d       *decoder
	key     string // full key: "" for the document, "tls.acme", "listen[0]"
	section string // kind of table, for hints: "", "[tls.acme]", "[[listen]]"
	parent  *table
	m       map[string]any
	quiet   bool // decoded only to learn key names: report nothing
}

func (d *decoder) root(m map[string]any) *table {
	return &table{d: d, m: m}
}

// keyOf returns the full key of name in t.
func (t *table) keyOf(name string) string { return joinKey(t.key, keyPart(name)) }

// line returns the line of key, or of the closest enclosing table that is
// written in the file, or 0.
func (t *table) line(key string) int {
	if l, ok := t.d.lines[key]; ok {
		return l.line
	}
	for p := t; p != nil; p = p.parent {
		if l, ok := t.d.lines[p.key]; ok && p.key != "" {
			return l.line
		}
	}
	return 0
}

// problemKey records a problem for a full key (of t or below it).
func (t *table) problemKey(key, format string, args ...any) {
	if t.quiet || t.d.failed[key] {
		return
	}
	t.d.failed[key] = true
	t.d.problems = append(t.d.problems, Problem{Line: t.line(key), Key: key, Msg: fmt.Sprintf(format, args...)})
}

func (t *table) problem(name, format string, args ...any) {
	t.problemKey(t.keyOf(name), format, args...)
}

// missing records that a required key is not set. If the table has an
// unknown key that is a near miss of it ("adress"), only the near miss is
// reported (see reportUnknown).
func (t *table) missing(name, format string, args ...any) {
	if t.quiet || !t.ok(name) {
		return
	}
	for p := t; p != nil; p = p.parent {
		if p.key != "" && t.d.failed[p.key] {
			return // "upstream: want a table" already says it
		}
	}
	t.problem(name, format, args...)
	t.d.missing[t.keyOf(name)] = len(t.d.problems) - 1
}

// warn records a legal but doubtful setting; see Config.Warnings.
func (t *table) warn(name, format string, args ...any) {
	if t.quiet {
		return
	}
	key := t.keyOf(name)
	t.d.warnings = append(t.d.warnings, Problem{Line: t.line(key), Key: key, Msg: fmt.Sprintf(format, args...)})
}

// ok reports whether name has no problem so far.
func (t *table) ok(name string) bool { return !t.d.failed[t.keyOf(name)] }

// get returns the raw value of name and registers name as a known key.
func (t *table) get(name string) (any, bool) {
	if !slices.Contains(t.d.known[t.section], name) {
		if _, seen := t.d.known[t.section]; !seen {
			t.d.sections = append(t.d.sections, t.section)
		}
		t.d.known[t.section] = append(t.d.known[t.section], name)
	}
	v, ok := t.m[name]
	return v, ok
}

func (t *table) str(name string, dst *string) {
	v, ok := t.get(name)
	if !ok {
		return
	}
	s, ok := v.(string)
	if !ok {
		t.problem(name, "want a string, not %s", describe(v))
		return
	}
	*dst = s
}

func (t *table) boolean(name string, dst *bool) {
	v, ok := t.get(name)
	if !ok {
		return
	}
	b, ok := v.(bool)
	if !ok {
		t.problem(name, "want true or false, not %s", describe(v))
		return
	}
	*dst = b
}

// count reads a whole number that may not be negative.
func (t *table) count(name string, dst *int) {
	v, ok := t.get(name)
	if !ok {
		return
	}
	n, ok := v.(int64)
	switch {
	case !ok:
		t.problem(name, "want a whole number, not %s", describe(v))
	case n < 0:
		t.problem(name, "%d is negative", n)
	case int64(int(n)) != n:
		t.problem(name, "%d is too large", n)
	default:
		*dst = int(n)
	}
}

func (t *table) duration(name string, dst *Duration) {
	v, ok := t.get(name)
	if !ok {
		return
	}
	s, ok := v.(string)
	if !ok {
		if n, isInt := v.(int64); isInt {
			t.problem(name, "%d is not a duration (use Go durations like \"90s\", \"31m\")", n)
		} else {
			t.problem(name, "want a duration like \"90s\" or \"31m\", not %s", describe(v))
		}
		return
	}
	var dur Duration
	if err := dur.UnmarshalText([]byte(s)); err != nil {
		t.problem(name, "%s", err)
		return
	}
	*dst = dur
}

// strings reads a list of strings. Problems with one element are reported
// on that element ("auth.mechanisms[1]"); the list is then left unchanged.
func (t *table) strings(name string, dst *[]string) {
	v, ok := t.get(name)
	if !ok {
		return
	}
	list, ok := v.([]any)
	if !ok {
		if s, isString := v.(string); isString {
			t.problem(name, "want a list of strings like [%q], not the string %q", s, s)
		} else {
			t.problem(name, "want a list of strings, not %s", describe(v))
		}
		return
	}
	out := make([]string, 0, len(list))
	for i, e := range list {
		s, ok := e.(string)
		if !ok {
			t.problemKey(elemKey(t.keyOf(name), i), "want a string, not %s", describe(e))
			continue
		}
		out = append(out, s)
	}
	if len(out) < len(list) {
		t.d.failed[t.keyOf(name)] = true // reported on its elements
		return
	}
	*dst = out
}

// sub returns the table name of t; an empty table if it is absent (present
// is then false) or not a table.
func (t *table) sub(name, section string) (sub *table, present bool) {
	sub = &table{d: t.d, key: t.keyOf(name), section: section, parent: t, quiet: t.quiet}
	t.d.children[t.section+"."+name] = section
	v, ok := t.get(name)
	if !ok {
		return sub, false
	}
	m, ok := v.(map[string]any)
	if !ok {
		t.problem(name, "want a table (%s), not %s", section, describe(v))
		return sub, false
	}
	sub.m = m
	return sub, true
}

// tables returns the elements of the array of tables name, e.g. [[listen]].
// If there are none it returns one quiet empty table, so that the caller's
// decoding still registers the key names for hints; check len(...) == 1 &&
// quiet before using its result.
func (t *table) tables(name, section string) []*table {
	t.d.children[t.section+"."+name] = section
	v, ok := t.get(name)
	var elems []map[string]any
	switch v := v.(type) {
	case nil:
	case []map[string]any:
		elems = v
	case []any:
		for _, e := range v {
			m, isTable := e.(map[string]any)
			if !isTable {
				t.problem(name, "want one or more %s tables, not a list of %s", section, describe(e))
				elems = nil
				break
			}
			elems = append(elems, m)
		}
	case map[string]any:
		// [listen] where [[listen]] was meant: decode it anyway, to report
		// what else is wrong in it.
		t.problem(name, "write %s (an array of tables), not [%s]", section, strings.Trim(section, "[]"))
		return []*table{{d: t.d, key: t.keyOf(name), section: section, parent: t, m: v, quiet: t.quiet}}
	default:
		t.problem(name, "want one or more %s tables, not %s", section, describe(v))
	}
	if !ok || len(elems) == 0 {
		return []*table{{d: t.d, key: t.keyOf(name), section: section, parent: t, quiet: true}}
	}
	out := make([]*table, len(elems))
	for i, m := range elems {
		out[i] = &table{d: t.d, key: elemKey(t.keyOf(name), i), section: section, parent: t, m: m, quiet: t.quiet}
	}
	return out
}

// done records the keys of t that no decoder asked for.
func (t *table) done() {
	if t.quiet {
		return
	}
	known := t.d.known[t.section]
	for name, v := range t.m {
		if slices.Contains(known, name) {
			continue
		}
		_, isTable := v.(map[string]any)
		key := t.keyOf(name)
		t.d.unknown = append(t.d.unknown, unknownKey{key: key, name: name, section: t.section, table: t, line: t.line(key), isTable: isTable})
	}
}

// reportUnknown turns unknown keys into problems, with a hint when the name
// is a near miss of a key of the same table, or a key of another table.
func (d *decoder) reportUnknown() {
	slices.SortFunc(d.unknown, func(a, b unknownKey) int {
		return cmp.Or(cmp.Compare(a.line, b.line), cmp.Compare(a.key, b.key))
	})
	drop := map[int]bool{}
	for _, u := range d.unknown {
		msg := "unknown key"
		if u.isTable {
			msg = "unknown table"
		}
		if near := closest(u.name, d.known[u.section]); near != "" {
			msg += fmt.Sprintf(" (did you mean %s?)", near)
			if i, ok := d.missing[u.table.keyOf(near)]; ok {
				drop[i] = true // "address: is required" says nothing more than "adress: did you mean address?"
			}
		} else if homes := d.homes(u.name, u.section); len(homes) > 0 {
			msg += fmt.Sprintf(" (%s %s)", u.name, strings.Join(homes, "; or "))
		}
		d.problems = append(d.problems, Problem{Line: u.line, Key: u.key, Msg: msg})
	}
	if len(drop) > 0 {
		kept := d.problems[:0]
		for i, p := range d.problems {
			if !drop[i] {
				kept = append(kept, p)
			}
		}
		d.problems = kept
	}
}

// homes returns where else a key called name is accepted.
func (d *decoder) homes(name, except string) []string {
	var homes []string
	for _, s := range d.sections {
		if s == except || !slices.Contains(d.known[s], name) {
			continue
		}
		switch child, isTable := d.children[s+"."+name]; {
		case isTable:
			homes = append(homes, "is the table "+child+", not a key")
		case s == "":
			homes = append(homes, "belongs at the top, before any table")
		default:
			homes = append(homes, "belongs in "+s)
		}
	}
	return homes
}

// closest returns the known name nearest to name by edit distance, if it is
// near enough to be a typo.
func closest(name string, known []string) string {
	best, bestDist := "", 3
	for _, k := range known {
		if strings.EqualFold(k, name) {
			return k
		}
		dist := editDistance(name, k)
		if dist < bestDist && dist <= len(k)/3 {
			best, bestDist = k, dist
		}
	}
	return best
}

func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// describe names a decoded TOML value for a type problem.
func describe(v any) string {
	switch v := v.(type) {
	case string:
		return fmt.Sprintf("the string %q", v)
	case int64:
		return fmt.Sprintf("the number %d", v)
	case float64:
		return fmt.Sprintf("the number %v", v)
	case bool:
		return fmt.Sprintf("%v", v)
	case []any, []map[string]any:
		return "a list"
	case map[string]any:
		return "a table"
	default:
		return "a date"
	}
}

// The sections, in file order.

func (d *decoder) config(t *table, c *Config) {
	t.duration("shutdown_timeout", &c.ShutdownTimeout)

	listens := t.tables("listen", "[[listen]]")
	for _, lt := range listens {
		l := d.listen(lt)
		if !lt.quiet {
			c.Listen = append(c.Listen, l)
		}
	}
	if len(c.Listen) == 0 && t.ok("listen") {
		t.missing("listen", "at least one [[listen]] table is required, e.g. [[listen]] address = \"0.0.0.0:993\"")
	}
	tt, _ := t.sub("tls", "[tls]")
	acmeTable := d.tls(tt, &c.TLS)
	ut, _ := t.sub("upstream", "[upstream]")
	d.upstream(ut, &c.Upstream)
	at, _ := t.sub("auth", "[auth]")
	d.auth(at, &c.Auth)
	pt, _ := t.sub("policy", "[policy]")
	ruleTables := d.policy(pt, &c.Policy)
	aut, _ := t.sub("audit", "[audit]")
	d.audit(aut, &c.Audit)
	mt, _ := t.sub("metrics", "[metrics]")
	d.metrics(mt, &c.Metrics)
	t.done()

	// Checks that span sections.
	var binds []bind
	for i, l := range c.Listen {
		binds = append(binds, bind{listens[i], "address", l.Address})
	}
	if a := c.TLS.ACME; a != nil && a.Challenge != "dns-01" {
		binds = append(binds, bind{acmeTable, "challenge_listen", a.ChallengeListen})
	}
	binds = append(binds, bind{mt, "listen", c.Metrics.Listen})
	checkBindsDistinct(binds)
	checkRuleListeners(ruleTables, c)

	if len(c.Policy.TrustedProxies) == 0 {
		for i, l := range c.Listen {
			if l.ProxyProtocol {
				listens[i].warn("proxy_protocol", "is true but policy.trusted_proxies is empty, so no PROXY header will be accepted")
			}
		}
	}
}

func (d *decoder) listen(t *table) ListenConfig {
	l := defaultListen()
	t.str("address", &l.Address)
	t.str("tls", &l.TLS)
	t.boolean("proxy_protocol", &l.ProxyProtocol)
	t.str("min_version", &l.MinVersion)
	t.done()

	if l.Address == "" {
		t.missing("address", "is required, e.g. \"0.0.0.0:993\"")
	} else if err := checkHostPort(l.Address, "0.0.0.0:993", true); err != nil {
		t.problem("address", "%s", err)
	}
	t.oneOf("tls", l.TLS, "implicit", "starttls")
	if l.MinVersion != "" {
		t.minVersion("min_version", l.MinVersion)
	}
	return l
}

// tls decodes [tls] and returns its acme table.
func (d *decoder) tls(t *table, c *TLSConfig) (acmeTable *table) {
	t.str("cert_file", &c.CertFile)
	t.str("key_file", &c.KeyFile)
	t.str("min_version", &c.MinVersion)
	certs := t.tables("certificate", "[[tls.certificate]]")
	for _, ct := range certs {
		p := d.certPair(ct)
		if !ct.quiet {
			c.Certificates = append(c.Certificates, p)
		}
	}
	acmeTable, hasACME := t.sub("acme", "[tls.acme]")
	if !hasACME {
		acmeTable.quiet = true
	}
	acme := d.acme(acmeTable)
	if hasACME {
		c.ACME = acme
	}
	t.done()

	switch c.MinVersion {
	case "1.2", "1.3":
	case "1.0", "1.1":
		t.problem("min_version", "%q is allowed only on a [[listen]] table dedicated to old clients (its own min_version = %q, with a warning at start); keep \"1.2\" or \"1.3\" here", c.MinVersion, c.MinVersion)
	default:
		if t.ok("min_version") {
			t.problem("min_version", "%q is not one of 1.2, 1.3", c.MinVersion)
		}
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

	t.oneOf("challenge", a.Challenge, "tls-alpn-01", "http-01", "dns-01")
	dns01 := a.Challenge == "dns-01"
	if _, set := t.m["challenge_listen"]; !set && a.Challenge == "http-01" {
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
			t.problemKey(key, "%q is a wildcard, which only challenge \"dns-01\" can prove", dom)
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
				t.warn(name, "is ignored: challenge is %q, not \"dns-01\"", a.Challenge)
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
		t.missing("dns_provider", "is required with challenge \"dns-01\": \"rfc2136\" or \"exec\"")
	case "rfc2136":
		if required("dns_server", a.DNSServer, "the primary server that accepts dynamic updates, \"host:port\"") {
			if err := checkHostPort(a.DNSServer, "192.0.2.53:53", false); err != nil {
				t.problem("dns_server", "%s", err)
			}
		}
		required("tsig_key_name", a.TSIGKeyName, "the name of the TSIG key")
		if required("tsig_secret_file", a.TSIGSecretFile, "the file holding the base64 TSIG secret") {
			t.file("tsig_secret_file", a.TSIGSecretFile)
		}
		t.oneOf("tsig_algorithm", a.TSIGAlgorithm, "hmac-sha256", "hmac-sha384", "hmac-sha512", "hmac-sha224", "hmac-sha1")
	case "exec":
		if required("dns_exec", a.DNSExec, "the program to run as `PROGRAM present|cleanup FQDN VALUE`") && t.d.checkFiles {
			if _, err := exec.LookPath(a.DNSExec); err != nil {
				t.problem("dns_exec", "%s", err)
			}
		}
	default:
		t.oneOf("dns_provider", a.DNSProvider, "rfc2136", "exec")
	}
}

func (d *decoder) upstream(t *table, u *UpstreamConfig) {
	t.str("address", &u.Address)
	t.str("tls", &u.TLS)
	t.str("server_name", &u.ServerName)
	t.str("ca_file", &u.CAFile)
	t.str("pin_sha256", &u.PinSHA256)
	t.str("login", &u.Login)
	t.str("forward_client_ip", &u.ForwardClientIP)
	t.duration("connect_timeout", &u.ConnectTimeout)
	t.duration("login_timeout", &u.LoginTimeout)
	t.strings("source_addresses", &u.SourceAddresses)
	t.done()

	var host string
	if u.Address == "" {
		t.missing("address", "is required: the IMAP server to log users in to, e.g. \"mail.internal:143\"")
	} else if err := checkHostPort(u.Address, "mail.internal:143", false); err != nil {
		t.problem("address", "%s", err)
	} else {
		host, _, _ = net.SplitHostPort(u.Address)
	}
	t.oneOf("tls", u.TLS, "none", "starttls", "implicit")
	t.oneOf("login", u.Login, "auto", "plain", "login")
	t.oneOf("forward_client_ip", u.ForwardClientIP, "none", "id", "proxy-v2")
	t.positive("connect_timeout", u.ConnectTimeout)
	t.positive("login_timeout", u.LoginTimeout)

	if u.PinSHA256 != "" {
		if sum, err := base64.StdEncoding.DecodeString(u.PinSHA256); err != nil || len(sum) != 32 {
			t.problem("pin_sha256", "%q is not the base64 of a SHA-256 (32 bytes); compute it with: "+
				"openssl x509 -in CERT -noout -pubkey | openssl pkey -pubin -outform der | openssl dgst -sha256 -binary | base64", u.PinSHA256)
		}
	}
	if u.TLS == "none" {
		// Settings that only verify TLS would be silently ignored.
		for _, name := range []string{"server_name", "ca_file", "pin_sha256"} {
			if v, _ := t.m[name].(string); v != "" {
				t.problem(name, "is set, but upstream.tls is \"none\": nothing would be verified")
			}
		}
		if host != "" && !isLoopback(host) {
			t.warn("tls", "is \"none\": passwords go to %s in clear text; use this only on a trusted network", u.Address)
		}
	} else {
		t.file("ca_file", u.CAFile)
		if u.ServerName == "" {
			u.ServerName = host
		}
	}
	for i, s := range u.SourceAddresses {
		if a, err := netip.ParseAddr(s); err != nil || a.Zone() != "" {
			t.problemKey(elemKey(t.keyOf("source_addresses"), i), "%q is not an IP address of this host", s)
		}
	}
}

func (d *decoder) auth(t *table, a *AuthConfig) {
	t.strings("mechanisms", &a.Mechanisms)
	t.str("login_command", &a.LoginCommand)
	t.done()

	t.oneOf("login_command", a.LoginCommand, "refuse", "allow-over-tls")
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
	if len(a.Mechanisms) == 0 && a.LoginCommand == "refuse" && t.ok("mechanisms") {
		t.problem("mechanisms", "is empty and login_command is \"refuse\": no client could log in")
	}
}

// policy decodes [policy] and returns its [[policy.rule]] tables.
func (d *decoder) policy(t *table, p *PolicyConfig) (ruleTables []*table) {
	t.count("max_connections", &p.MaxConnections)
	t.count("max_connections_per_ip", &p.MaxConnectionsPerIP)
	t.count("auth_failures_per_ip", &p.AuthFailuresPerIP)
	t.count("auth_failures_per_user", &p.AuthFailuresPerUser)
	t.duration("failure_window", &p.FailureWindow)
	t.duration("failure_delay", &p.FailureDelay)
	t.count("max_upstream_logins", &p.MaxUpstreamLogins)
	t.strings("trusted_proxies", &p.TrustedProxies)
	t.strings("allow", &p.Allow)
	t.strings("deny", &p.Deny)
	t.duration("preauth_timeout", &p.PreauthTimeout)
	t.duration("idle_timeout", &p.IdleTimeout)
	t.count("auth_failures_per_network", &p.AuthFailuresPerNetwork)
	t.count("auth_failures_per_device", &p.AuthFailuresPerDevice)
	t.duration("known_device_for", &p.KnownDeviceFor)
	t.count("upstream_login_queue", &p.UpstreamLoginQueue)
	t.duration("upstream_login_wait", &p.UpstreamLoginWait)
	t.count("max_connections_per_network", &p.MaxConnectionsPerNetwork)
	d.policyUserNames(t, p)
	ruleTables = t.tables("rule", "[[policy.rule]]")
	for _, rt := range ruleTables {
		r := d.policyRule(rt)
		if !rt.quiet {
			p.Rules = append(p.Rules, r)
		}
	}
	t.done()

	t.positive("known_device_for", p.KnownDeviceFor)
	t.positive("upstream_login_wait", p.UpstreamLoginWait)
	t.positive("failure_window", p.FailureWindow)
	t.positive("preauth_timeout", p.PreauthTimeout)
	t.positive("idle_timeout", p.IdleTimeout)
	if p.IdleTimeout.Duration > 0 && p.IdleTimeout.Duration < idleTimeoutFloor {
		t.warn("idle_timeout", "%v is below 29m: clients in IDLE re-issue it every 29 minutes and will be cut off", p.IdleTimeout)
	}
	if n, perIP := p.MaxConnectionsPerNetwork, p.MaxConnectionsPerIP; n > 0 && perIP > n {
		t.warn("max_connections_per_network", "%d is below max_connections_per_ip (%d): no address can reach its own limit", n, perIP)
	}
	t.prefixes("trusted_proxies", p.TrustedProxies)
	t.prefixes("allow", p.Allow)
	t.prefixes("deny", p.Deny)
	return ruleTables
}

func (d *decoder) audit(t *table, a *AuditConfig) {
	t.str("output", &a.Output)
	t.str("user_hash_key_file", &a.UserHashKeyFile)
	t.done()
	if a.Output == "" && t.ok("output") {
		t.problem("output", "is empty: write \"stdout\", \"stderr\" or a file path")
	}
	t.userHashKey("user_hash_key_file", a.UserHashKeyFile)
}

func (d *decoder) metrics(t *table, m *MetricsConfig) {
	t.str("listen", &m.Listen)
	t.done()
	if m.Listen != "" {
		if err := checkHostPort(m.Listen, "127.0.0.1:9143", true); err != nil {
			t.problem("listen", "%s", err)
		}
	}
}

// Value checks.

func (t *table) oneOf(name, value string, allowed ...string) {
	if !slices.Contains(allowed, value) && t.ok(name) {
		t.problem(name, "%q is not one of %s", value, strings.Join(allowed, ", "))
	}
}

func (t *table) positive(name string, d Duration) {
	if d.Duration <= 0 && t.ok(name) {
		t.problem(name, "must be more than 0")
	}
}

func (t *table) minVersion(name, v string) {
	switch v {
	case "1.2", "1.3":
	case "1.0", "1.1":
		t.warn(name, "%q allows TLS %s, deprecated by RFC 8996; keep it to a listener for old clients", v, v)
	default:
		if t.ok(name) {
			t.problem(name, "%q is not one of 1.2, 1.3 (or, for old clients, 1.0, 1.1)", v)
		}
	}
}

// file checks that a file named in the config can be opened, when the
// decoder checks files.
func (t *table) file(name, path string) {
	if path == "" || !t.d.checkFiles || t.quiet {
		return
	}
	f, err := os.Open(path)
	if err != nil {
		t.problem(name, "%s", err)
		return
	}
	defer f.Close()
	if fi, err := f.Stat(); err != nil {
		t.problem(name, "%s", err)
	} else if fi.IsDir() {
		t.problem(name, "%s is a directory, not a file", path)
	}
}

// prefixes checks a CIDR list with policy.ParsePrefix, the one parser of
// every network list (allow, deny, trusted_proxies, [[policy.rule]]
// networks), and rewrites each entry in its canonical form.
func (t *table) prefixes(name string, list []string) {
	for i, s := range list {
		p, err := policy.ParsePrefix(s)
		if err != nil {
			t.problemKey(elemKey(t.keyOf(name), i), "%s", err)
			continue
		}
		list[i] = p.String()
	}
}

// checkHostPort checks a "host:port" address; emptyHost allows ":993"
// (every local address).
func checkHostPort(s, example string, emptyHost bool) error {
	host, port, err := net.SplitHostPort(s)
	if err != nil || (host == "" && !emptyHost) || strings.ContainsAny(host, " \t/") {
		return fmt.Errorf("%q is not host:port like %q", s, example)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return fmt.Errorf("%q: port %q is not a number from 1 to 65535", s, port)
	}
	return nil
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	a, err := netip.ParseAddr(host)
	return err == nil && a.IsLoopback()
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

// Keys.

// keyPart writes one piece of a key as TOML does, quoted unless bare.
func keyPart(name string) string { return toml.Key{name}.String() }

func joinKey(parent, part string) string {
	if parent == "" {
		return part
	}
	return parent + "." + part
}

func elemKey(key string, i int) string { return key + "[" + strconv.Itoa(i) + "]" }

// keyLines maps each full key of a TOML document to the line it is written
// on. Tables are keyed by their header ("tls.acme", "listen[1]"), array
// elements by index ("policy.allow[0]"); keys of tables named only as part
// of a longer key ("tls" in [tls.acme]) are "implicit" and give way to their
// own header.
type keyLines map[string]keyLine

type keyLine struct {
	line     int
	implicit bool
}

// scanKeyLines finds the line of every key in src. BurntSushi/toml knows
// these positions but does not export them; this scanner needs to be good,
// not complete: it is only run on text toml has already parsed, and it
// never panics or loops on any other text (see FuzzParseConfig).
func scanKeyLines(src []byte) keyLines {
	s := &keyScanner{src: string(src), arrays: map[string]int{}, lines: keyLines{}}
	for i, c := range src {
		if c == '\n' {
			s.newlines = append(s.newlines, i)
		}
	}
	s.document()
	return s.lines
}

type keyScanner struct {
	src      string
	i        int
	newlines []int          // offsets of '\n', to turn offsets into lines
	table    string         // key of the current [table]
	arrays   map[string]int // [[array]] key -> elements so far
	lines    keyLines
}

func (s *keyScanner) record(key string, off int, implicit bool) {
	if old, ok := s.lines[key]; ok && (implicit || !old.implicit) {
		return
	}
	s.lines[key] = keyLine{line: sort.SearchInts(s.newlines, off) + 1, implicit: implicit}
}

func (s *keyScanner) eof() bool { return s.i >= len(s.src) }

func (s *keyScanner) peek() byte {
	if s.eof() {
		return 0
	}
	return s.src[s.i]
}

func (s *keyScanner) advance(n int) { s.i = min(s.i+n, len(s.src)) }

func (s *keyScanner) rest() string { return s.src[s.i:] }

func (s *keyScanner) skipSpace() {
	for c := s.peek(); c == ' ' || c == '\t'; c = s.peek() {
		s.i++
	}
}

// skipBlank skips white space, newlines and comments.
func (s *keyScanner) skipBlank() {
	for !s.eof() {
		switch s.src[s.i] {
		case ' ', '\t', '\r', '\n':
			s.i++
		case '#':
			s.skipLine()
		default:
			return
		}
	}
}

// skipLine moves to the '\n' ending this line.
func (s *keyScanner) skipLine() {
	if n := strings.IndexByte(s.rest(), '\n'); n >= 0 {
		s.i += n
	} else {
		s.i = len(s.src)
	}
}

func (s *keyScanner) document() {
	if strings.HasPrefix(s.src, "\xef\xbb\xbf") {
		s.i = 3
	}
	for {
		s.skipBlank()
		if s.eof() {
			return
		}
		start := s.i
		if s.peek() == '[' {
			s.header()
		} else {
			s.keyValue(s.table)
		}
		s.skipLine() // a trailing comment, or junk this scanner does not understand
		if s.i == start {
			s.i++
		}
	}
}

// header reads "[a.b]" or "[[a.b]]" and makes it the current table.
func (s *keyScanner) header() {
	off := s.i
	s.i++
	array := s.peek() == '['
	if array {
		s.i++
	}
	parts := s.keyParts()
	if len(parts) == 0 {
		return
	}
	key := ""
	for n, p := range parts {
		key = joinKey(key, keyPart(p))
		last := n == len(parts)-1
		if count, isArray := s.arrays[key]; isArray && !(last && array) {
			key = elemKey(key, count-1) // [listen.x] after [[listen]]: the latest element
		}
		if last && array {
			s.record(key, off, false) // the array itself: its first element's line
			s.arrays[key]++
			key = elemKey(key, s.arrays[key]-1)
		}
		if !last {
			s.record(key, off, true)
		}
	}
	s.record(key, off, false)
	s.table = key
}

// keyParts reads a dotted key such as a."b.c".d and returns its pieces.
func (s *keyScanner) keyParts() []string {
	var parts []string
	for {
		s.skipSpace()
		switch c := s.peek(); {
		case c == '"' || c == '\'':
			parts = append(parts, s.quoted())
		case isBareKeyChar(c):
			start := s.i
			for isBareKeyChar(s.peek()) {
				s.i++
			}
			parts = append(parts, s.src[start:s.i])
		default:
			return parts
		}
		s.skipSpace()
		if s.peek() != '.' {
			return parts
		}
		s.i++
	}
}

func isBareKeyChar(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-'
}

// quoted reads a one-line "basic" or 'literal' string and returns its text.
func (s *keyScanner) quoted() string {
	q := s.src[s.i]
	start := s.i
	s.i++
	for !s.eof() && s.src[s.i] != '\n' {
		c := s.src[s.i]
		if c == '\\' && q == '"' {
			s.advance(2)
			continue
		}
		s.i++
		if c == q {
			raw := s.src[start:s.i]
			if q == '"' {
				if u, err := strconv.Unquote(raw); err == nil {
					return u
				}
			}
			return raw[1 : len(raw)-1]
		}
	}
	return s.src[start+1 : s.i]
}

// keyValue reads "key = value" inside the table base.
func (s *keyScanner) keyValue(base string) {
	off := s.i
	parts := s.keyParts()
	if len(parts) == 0 {
		return
	}
	s.skipSpace()
	if s.peek() != '=' {
		return
	}
	s.i++
	key := base
	for n, p := range parts {
		key = joinKey(key, keyPart(p))
		s.record(key, off, n < len(parts)-1)
	}
	s.value(key)
}

func (s *keyScanner) value(key string) {
	s.skipSpace()
	switch s.peek() {
	case '"', '\'':
		if strings.HasPrefix(s.rest(), `"""`) || strings.HasPrefix(s.rest(), `'''`) {
			s.multiline()
		} else {
			s.quoted()
		}
	case '[':
		s.array(key)
	case '{':
		s.inlineTable(key)
	default: // number, boolean, date
		for !s.eof() && !strings.ContainsRune(",]}#\n", rune(s.src[s.i])) {
			s.i++
		}
	}
}

func (s *keyScanner) multiline() {
	delim := s.src[s.i : s.i+3]
	s.i += 3
	for !s.eof() {
		if delim[0] == '"' && s.src[s.i] == '\\' {
			s.advance(2)
			continue
		}
		if strings.HasPrefix(s.rest(), delim) {
			s.i += 3
			// Up to two more quotes are part of the string: """a""""".
			for n := 0; n < 2 && s.peek() == delim[0]; n++ {
				s.i++
			}
			return
		}
		s.i++
	}
}

func (s *keyScanner) array(key string) {
	s.i++ // '['
	for n := 0; ; {
		s.skipBlank()
		switch s.peek() {
		case 0:
			if s.eof() {
				return
			}
		case ']':
			s.i++
			return
		case ',':
			s.i++
			continue
		}
		start := s.i
		elem := elemKey(key, n)
		s.record(elem, s.i, false)
		s.value(elem)
		n++
		if s.i == start {
			s.i++
		}
	}
}

func (s *keyScanner) inlineTable(key string) {
	s.i++ // '{'
	for {
		s.skipBlank()
		switch s.peek() {
		case 0:
			if s.eof() {
				return
			}
		case '}':
			s.i++
			return
		case ',':
			s.i++
			continue
		}
		start := s.i
		s.keyValue(key)
		if s.i == start {
			s.i++
		}
	}
}
