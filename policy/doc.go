// Package policy decides who may connect and try to log in: access rules
// (deny, then allow, by CIDR) and connection limits, total and per client
// address.
//
//	acc, err := policy.NewAccess([]string{"10.0.0.0/8"}, []string{"10.6.6.0/24"})
//	if ok, reason := acc.Allowed(addr); !ok {
//		// refuse before the TLS handshake; reason is e.g. "denied_network"
//	}
//	lim := policy.NewConnLimiter(20000, 50)
//	release, reason := lim.Acquire(addr)
//	if release == nil { /* refuse with reason */ }
//	defer release()
//
// Authentication budgets, lockouts and tarpits are added here too, behind
// the same kind of small, zero-allocation decisions.
package policy
