package main

// The [policy] table, its [[policy.rule]] tables and the user name keys of
// the budgets.

import (
	"strings"
	"time"

	"github.com/imapgate/imapgate/policy"
)

// PolicyConfig is the [policy] table: the limits and address lists applied
// before a credential reaches the upstream. Numbers are never negative.
// Every network list holds canonical prefixes, as policy.ParsePrefix writes
// them ("192.0.2.7" in the file becomes "192.0.2.7/32",
// "::ffff:192.0.2.0/120" becomes "192.0.2.0/24"), so policy.ParsePrefixes
// cannot fail on them.
type PolicyConfig struct {
	// MaxConnections is the client connections open at once, in total;
	// more are refused at accept. 0 means no limit.
	// Default: 20000.
	MaxConnections int `toml:"max_connections"`

	// MaxConnectionsPerIP is the client connections open at once from one
	// address: an IPv4 address, or an IPv6 /64. 0 means no limit.
	// Default: 50.
	MaxConnectionsPerIP int `toml:"max_connections_per_ip"`

	// AuthFailuresPerIP is the failures allowed per client address within
	// FailureWindow: the IPv4 /32, and the IPv6 /128 and its /64. For every
	// auth_failures_* key, 0 means no limit.
	// Default: 10.
	AuthFailuresPerIP int `toml:"auth_failures_per_ip"`

	// AuthFailuresPerUser is the failures allowed per user from networks
	// that are not its known devices.
	// Default: 20.
	AuthFailuresPerUser int `toml:"auth_failures_per_user"`

	// FailureWindow is how long failures count: a budget's window opens at
	// its first failure. It must be more than 0.
	// Default: 15m.
	FailureWindow Duration `toml:"failure_window"`

	// FailureDelay is the wait before answering a failed login (the
	// tarpit), doubled with the failures of the busiest budget up to
	// policy.MaxDelayFactor times. 0 means no wait.
	// Default: 2s.
	FailureDelay Duration `toml:"failure_delay"`

	// MaxUpstreamLogins is the logins in flight to the upstream at once.
	// 0 means no cap.
	// Default: 64.
	MaxUpstreamLogins int `toml:"max_upstream_logins"`

	// TrustedProxies are the networks whose PROXY headers are believed.
	// Default: none.
	TrustedProxies []string `toml:"trusted_proxies"`

	// Allow are the networks clients may connect from.
	// Default: none (everyone).
	Allow []string `toml:"allow"`

	// Deny are the networks clients may not connect from; checked before
	// Allow.
	// Default: none.
	Deny []string `toml:"deny"`

	// PreauthTimeout is the time from accept to a finished login. It must
	// be more than 0.
	// Default: 60s.
	PreauthTimeout Duration `toml:"preauth_timeout"`

	// IdleTimeout closes a logged-in session after this long without bytes
	// either way. It must be more than 0; below 29m it is accepted with a
	// warning, as IDLE clients re-issue IDLE only every 29 minutes.
	// Default: 31m.
	IdleTimeout Duration `toml:"idle_timeout"`

	// MaxConnectionsPerNetwork is the connections open at once from one
	// client network, an IPv4 /24 or IPv6 /48, so that one network cannot
	// fill max_connections (max_connections_per_ip counts an IPv4 address
	// and an IPv6 /64). 0 means no limit.
	// Default: 1000.
	MaxConnectionsPerNetwork int `toml:"max_connections_per_network"`

	// AuthFailuresPerNetwork is the failures allowed per IPv4 /24 and per
	// IPv6 /48 within FailureWindow.
	// Default: 50.
	AuthFailuresPerNetwork int `toml:"auth_failures_per_network"`

	// AuthFailuresPerDevice is the failures allowed per (user, network):
	// the user from one IPv4 /24 or IPv6 /64. A known device (see
	// KnownDeviceFor) is judged by this budget only.
	// Default: 10.
	AuthFailuresPerDevice int `toml:"auth_failures_per_device"`

	// KnownDeviceFor is how long a successful login keeps its (user,
	// network) a known device. It must be more than 0.
	// Default: 720h (30 days).
	KnownDeviceFor Duration `toml:"known_device_for"`

	// UserDomain is the mail domain bare user names belong to: budgets and
	// known devices are kept under "user@domain", so "jdoe", "JDoe" and
	// "jdoe@example.com" are one user (see policy.UserNames). What is sent
	// to the upstream is not changed.
	// Default: "" (names are compared as typed, case-insensitively).
	UserDomain string `toml:"user_domain"`

	// UserRealms are other domains that mean UserDomain: NetBIOS domains
	// (EXAMPLE\jdoe) and UPN suffixes (jdoe@example.local). They need
	// UserDomain.
	// Default: none.
	UserRealms []string `toml:"user_realms"`

	// UpstreamLoginQueue is how many logins may wait for one of the
	// max_upstream_logins slots; beyond it, NO [UNAVAILABLE] at once.
	// Default: 0 (no bound of its own: every connection may wait, and
	// max_connections bounds the connections).
	UpstreamLoginQueue int `toml:"upstream_login_queue"`

	// UpstreamLoginWait is how long a login waits in that queue with no
	// login finishing at the upstream before NO [UNAVAILABLE]: while
	// logins keep finishing, the waiters keep their places. It must be
	// more than 0.
	// Default: 2s.
	UpstreamLoginWait Duration `toml:"upstream_login_wait"`

	// Rules are the [[policy.rule]] tables: other budgets for some networks
	// or listeners. The first rule that matches a client applies.
	// Default: none (the budgets above for everyone).
	Rules []PolicyRule `toml:"rule"`
}

// PolicyRule is one [[policy.rule]] table. It matches a client whose
// address is in one of Networks and who connected to one of Listeners; at
// least one of the two is set, and at least one budget.
type PolicyRule struct {
	// Networks are the client networks the rule matches.
	// Default: none (any address).
	Networks []string `toml:"networks"`

	// Listeners are [[listen]] addresses, exactly as written there, whose
	// clients the rule matches.
	// Default: none (any listener).
	Listeners []string `toml:"listeners"`

	// The rule's budgets, as the [policy] keys of the same names.
	// Default: nil, the [policy] value.
	AuthFailuresPerIP      *int      `toml:"auth_failures_per_ip"`
	AuthFailuresPerNetwork *int      `toml:"auth_failures_per_network"`
	AuthFailuresPerUser    *int      `toml:"auth_failures_per_user"`
	AuthFailuresPerDevice  *int      `toml:"auth_failures_per_device"`
	FailureWindow          *Duration `toml:"failure_window"`
	FailureDelay           *Duration `toml:"failure_delay"`

	// Passthrough is [auth] passthrough for the clients the rule matches
	// (README "[[listen]] mechanisms and passthrough"): false refuses the
	// user's own password from these networks (passthrough_disabled).
	// Default: nil, the listener's passthrough.
	Passthrough *bool `toml:"passthrough"`
}

// idleTimeoutFloor is how often RFC 2177 clients re-issue IDLE.
const idleTimeoutFloor = 29 * time.Minute

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
	ruleTables, p.Rules = decodeTables(t, "rule", "[[policy.rule]]", d.policyRule)
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

// ruleBudgetKeys are the keys a [[policy.rule]] may override.
var ruleBudgetKeys = []string{
	"auth_failures_per_ip", "auth_failures_per_network", "auth_failures_per_user",
	"auth_failures_per_device", "failure_window", "failure_delay",
}

func (d *decoder) policyRule(t *table) PolicyRule {
	var r PolicyRule
	t.strings("networks", &r.Networks)
	t.strings("listeners", &r.Listeners)
	t.optCount("auth_failures_per_ip", &r.AuthFailuresPerIP)
	t.optCount("auth_failures_per_network", &r.AuthFailuresPerNetwork)
	t.optCount("auth_failures_per_user", &r.AuthFailuresPerUser)
	t.optCount("auth_failures_per_device", &r.AuthFailuresPerDevice)
	t.optDuration("failure_window", &r.FailureWindow)
	t.optDuration("failure_delay", &r.FailureDelay)
	t.optBool("passthrough", &r.Passthrough)
	t.done()
	if t.quiet {
		return r
	}

	t.prefixes("networks", r.Networks)
	if len(r.Networks) == 0 && len(r.Listeners) == 0 && t.ok("networks") && t.ok("listeners") {
		t.problemKey(t.key, "matches every client: set networks, listeners or both (the budgets for everyone are the [policy] keys themselves)")
	}
	set := false
	for _, k := range append(ruleBudgetKeys, "passthrough") {
		_, ok := t.m[k]
		set = set || ok
	}
	if !set {
		t.problemKey(t.key, "changes nothing: set at least one of %s, passthrough", strings.Join(ruleBudgetKeys, ", "))
	}
	if r.FailureWindow != nil {
		t.positive("failure_window", *r.FailureWindow)
	}
	return r
}

// optCount reads a whole number that may be left out (dst stays nil).
func (t *table) optCount(name string, dst **int) {
	n := -1
	t.count(name, &n)
	if n >= 0 {
		*dst = &n
	}
}

// optDuration reads a duration that may be left out (dst stays nil).
func (t *table) optDuration(name string, dst **Duration) {
	v := Duration{-1}
	t.duration(name, &v)
	if v.Duration >= 0 {
		*dst = &v
	}
}

// checkRuleListeners checks that every listener a rule names is the
// address of a [[listen]] table, as written there.
func checkRuleListeners(ruleTables []*table, c *Config) {
	var addrs []string
	for _, l := range c.Listen {
		addrs = append(addrs, l.Address)
	}
	for i, ruleTable := range ruleTables {
		if ruleTable.quiet || i >= len(c.Policy.Rules) {
			continue
		}
		for j, l := range c.Policy.Rules[i].Listeners {
			found := false
			for _, a := range addrs {
				found = found || a == l
			}
			if !found {
				ruleTable.problemKey(elemKey(ruleTable.keyOf("listeners"), j), "%q is not the address of a [[listen]] table (%s)", l, strings.Join(quoteAll(addrs), ", "))
			}
		}
	}
}

// checkRulePassthrough reports a rule with passthrough = false where no
// client it matches could log in: no app passwords, and no mechanism that
// judges the client itself.
func checkRulePassthrough(ruleTables []*table, c *Config) {
	if c.Auth.AppPasswords != "" || judgesItself(c.Auth.Mechanisms) {
		return
	}
	for _, l := range c.Listen {
		if judgesItself(l.Mechanisms) {
			return
		}
	}
	for i, ruleTable := range ruleTables {
		if ruleTable.quiet || i >= len(c.Policy.Rules) {
			continue
		}
		if p := c.Policy.Rules[i].Passthrough; p != nil && !*p && ruleTable.ok("passthrough") {
			ruleTable.problem("passthrough", "is false but auth.app_passwords is not set and every mechanism passes the password through: no client it matches could log in")
		}
	}
}

func quoteAll(list []string) []string {
	out := make([]string, len(list))
	for i, s := range list {
		out[i] = `"` + s + `"`
	}
	return out
}

// policyUserNames reads user_domain and user_realms, which make the
// spellings of one mailbox one user for the budgets (policy.UserNames).
func (d *decoder) policyUserNames(t *table, p *PolicyConfig) {
	t.str("user_domain", &p.UserDomain)
	t.strings("user_realms", &p.UserRealms)
	if p.UserDomain != "" {
		if err := policy.CheckUserRealm(p.UserDomain); err != nil {
			t.problem("user_domain", "%s", err)
		}
	}
	for i, r := range p.UserRealms {
		if err := policy.CheckUserRealm(r); err != nil {
			t.problemKey(elemKey(t.keyOf("user_realms"), i), "%s", err)
		}
	}
	if p.UserDomain == "" && len(p.UserRealms) > 0 && t.ok("user_domain") {
		t.problem("user_realms", "is set without user_domain: set the mail domain these realms stand for, like user_domain = \"example.com\"")
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
