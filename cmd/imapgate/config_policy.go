package main

// The [[policy.rule]] tables (budgets for some networks or listeners), and
// the user name keys of the budgets.

import (
	"strings"

	"github.com/imapgate/imapgate/policy"
)

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
	t.done()
	if t.quiet {
		return r
	}

	t.prefixes("networks", r.Networks)
	if len(r.Networks) == 0 && len(r.Listeners) == 0 && t.ok("networks") && t.ok("listeners") {
		t.problemKey(t.key, "matches every client: set networks, listeners or both (the budgets for everyone are the [policy] keys themselves)")
	}
	set := false
	for _, k := range ruleBudgetKeys {
		_, ok := t.m[k]
		set = set || ok
	}
	if !set {
		t.problemKey(t.key, "changes nothing: set at least one of %s", strings.Join(ruleBudgetKeys, ", "))
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
	for i, rt := range ruleTables {
		if rt.quiet || i >= len(c.Policy.Rules) {
			continue
		}
		for j, l := range c.Policy.Rules[i].Listeners {
			found := false
			for _, a := range addrs {
				found = found || a == l
			}
			if !found {
				rt.problemKey(elemKey(rt.keyOf("listeners"), j), "%q is not the address of a [[listen]] table (%s)", l, strings.Join(quoteAll(addrs), ", "))
			}
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
