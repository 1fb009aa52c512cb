package main

import (
	"github.com/imapgate/imapgate/policy"
	"github.com/imapgate/imapgate/proxy"
)

// policyBudgets returns the [policy] budgets, for everyone no rule matches.
func policyBudgets(p *PolicyConfig) policy.Budgets {
	return policy.Budgets{
		PerIP:      p.AuthFailuresPerIP,
		PerNetwork: p.AuthFailuresPerNetwork,
		PerUser:    p.AuthFailuresPerUser,
		PerDevice:  p.AuthFailuresPerDevice,
		Window:     p.FailureWindow.Duration,
		Delay:      p.FailureDelay.Duration,
	}
}

// policyRules turns [[policy.rule]] tables into rules; keys a rule leaves
// out come from [policy].
func policyRules(p *PolicyConfig) []policy.Rule {
	def := policyBudgets(p)
	var rules []policy.Rule
	for _, rule := range p.Rules {
		r := policy.Rule{Listeners: rule.Listeners, Budgets: def}
		r.Networks, _ = policy.ParsePrefixes(rule.Networks) // validated with the config
		set := func(dst *int, v *int) {
			if v != nil {
				*dst = *v
			}
		}
		set(&r.Budgets.PerIP, rule.AuthFailuresPerIP)
		set(&r.Budgets.PerNetwork, rule.AuthFailuresPerNetwork)
		set(&r.Budgets.PerUser, rule.AuthFailuresPerUser)
		set(&r.Budgets.PerDevice, rule.AuthFailuresPerDevice)
		if rule.FailureWindow != nil {
			r.Budgets.Window = rule.FailureWindow.Duration
		}
		if rule.FailureDelay != nil {
			r.Budgets.Delay = rule.FailureDelay.Duration
		}
		rules = append(rules, r)
	}
	return rules
}

// policyUserNames is the [policy] user_domain and user_realms as a
// policy.UserNames (nil, folding case only, when user_domain is empty).
func policyUserNames(p *PolicyConfig) *policy.UserNames {
	u, err := policy.NewUserNames(p.UserDomain, p.UserRealms)
	if err != nil {
		return nil // validated with the config
	}
	return u
}

// newAuthPolicy builds the brute-force defence and the upstream login cap.
func newAuthPolicy(p *PolicyConfig) (*policy.Guard, *policy.Slots) {
	g := policy.NewGuard(nil, policyBudgets(p), policyRules(p))
	g.KnownFor = p.KnownDeviceFor.Duration
	g.SetUserNames(policyUserNames(p))
	return g, policy.NewSlots(p.MaxUpstreamLogins, p.UpstreamLoginQueue, p.UpstreamLoginWait.Duration)
}

// reloadPolicy keeps the running Guard and Slots across a SIGHUP reload, so
// failure counters, known devices and logins in flight survive it, and
// gives them the new budgets and limits.
func reloadPolicy(running, next *proxy.Config, p *PolicyConfig) {
	g, ok := running.Policy.(*policy.Guard)
	if !ok || running.UpstreamLogins == nil {
		return
	}
	g.SetBudgets(policyBudgets(p), policyRules(p))
	g.SetUserNames(policyUserNames(p))
	running.UpstreamLogins.SetLimits(p.MaxUpstreamLogins, p.UpstreamLoginQueue, p.UpstreamLoginWait.Duration)
	next.Policy, next.UpstreamLogins = g, running.UpstreamLogins
}
