package main

// The configuration file: its Go form and its defaults. The README's
// "Configuration reference" is the specification; imapgate.example.toml
// shows every key with its default.
//
// Loading happens in three steps:
//
//  1. BurntSushi/toml parses the text into maps (syntax errors stop here,
//     with toml's own line number; config_load.go);
//  2. findKeyLines finds the line on which every key is written, with
//     go-toml's parser, because BurntSushi/toml keeps key positions
//     private (config_keylines.go);
//  3. a decoder (config_decode.go) walks the maps section by section, one
//     file per table (config_listen.go, config_tls.go, ...), filling a
//     Config that already holds the defaults, and collects every problem it
//     sees (wrong type, bad value, unknown key, missing requirement) with
//     its line, so that one run of check-config shows them all.

import (
	"fmt"
	"time"

	"github.com/imapgate/imapgate/auth"
	"github.com/imapgate/imapgate/proxy"
)

// Config is the whole imapgate configuration. LoadConfig returns it with
// every key the file leaves out set to its default, so code that uses a
// *Config never needs to know a default itself.
type Config struct {
	// ShutdownTimeout is how long SIGTERM/SIGINT waits for busy sessions
	// to end before closing them; idle ones get BYE at once.
	// Default: 30s.
	ShutdownTimeout Duration `toml:"shutdown_timeout"`

	// Listen holds one entry per [[listen]] table: where clients connect.
	// Default: none, at least one required.
	Listen []ListenConfig `toml:"listen"`

	// TLS holds the proxy's own certificates: files, ACME, or both kinds of
	// files.
	// Default: no certificate; one source is required.
	TLS TLSConfig `toml:"tls"`

	// Upstream is the IMAP server imapgate logs users in to: the single
	// [upstream] table, or the default one of the [[upstream]] tables
	// (the one named "default", else the first).
	// Default: no address; it is required.
	Upstream UpstreamConfig `toml:"upstream"`

	// Upstreams are every upstream, the default one included, in the
	// order written: the one [upstream] table, or each [[upstream]].
	Upstreams []UpstreamConfig `toml:"-"`

	// Routes are the [[route]] tables: users and domains with the
	// upstream their mailboxes live on (README "Routing").
	// Default: none.
	Routes []RouteConfig `toml:"route"`

	// Routing is the [routing] table: the map file and the LDAP and
	// auth_http lookups.
	// Default: no lookups; every login goes to the default upstream
	// unless a [[route]] names another.
	Routing RoutingConfig `toml:"routing"`

	// Auth says which ways of logging in clients may use.
	// Default: AUTHENTICATE PLAIN only.
	Auth AuthConfig `toml:"auth"`

	// Policy holds the limits and address lists applied before a credential
	// reaches the upstream.
	// Default: the budgets and limits of PolicyConfig's fields.
	Policy PolicyConfig `toml:"policy"`

	// Audit says where the audit events go.
	// Default: standard output, user names in clear.
	Audit AuditConfig `toml:"audit"`

	// Metrics says where Prometheus metrics are served, if anywhere.
	// Default: nowhere.
	Metrics MetricsConfig `toml:"metrics"`

	// Admin is the local admin socket.
	// Default: none.
	Admin AdminConfig `toml:"admin"`

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

// DefaultConfig returns a Config holding every default of the README's
// "Configuration reference". It has no listener, certificate or upstream
// address: those have no safe default.
func DefaultConfig() *Config {
	return &Config{
		ShutdownTimeout: Duration{30 * time.Second},
		TLS:             TLSConfig{MinVersion: "1.2"},
		Upstream: UpstreamConfig{
			TLS:             string(proxy.UpstreamSTARTTLS),
			Login:           string(proxy.LoginAuto),
			ForwardClientIP: string(proxy.ForwardNone),
			ConnectTimeout:  Duration{10 * time.Second},
			LoginTimeout:    Duration{30 * time.Second},
			Balance:         string(proxy.BalanceRoundRobin),
			ProbeInterval:   Duration{proxy.DefaultProbeInterval},
		},
		Routing: defaultRouting(),
		Auth: AuthConfig{
			Mechanisms:   auth.Default(),
			LoginCommand: loginCommandRefuse,
			Passthrough:  true,
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
		Audit: AuditConfig{Output: auditStdout},
	}
}
