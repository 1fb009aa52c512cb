// Package policy decides who may connect and try to log in: access rules
// (deny, then allow, by CIDR), connection limits (total, per client
// address and per client network), authentication budgets against brute force and password
// spraying (Guard), and a cap on concurrent upstream logins (Slots).
//
//	acc, err := policy.NewAccess([]string{"10.0.0.0/8"}, []string{"10.6.6.0/24"})
//	if ok, reason := acc.Allowed(addr); !ok {
//		// refuse before the TLS handshake; reason is e.g. "denied_network"
//	}
//	lim := policy.NewConnLimiter(20000, 50, 1000)
//	release, reason := lim.Acquire(addr)
//	if release == nil { /* refuse with reason */ }
//	defer release()
//
// Before credentials go to the upstream:
//
//	g := policy.NewGuard(nil, policy.Budgets{PerIP: 10, PerNetwork: 50, PerUser: 20, PerDevice: 10,
//		Window: 15 * time.Minute, Delay: 2 * time.Second}, nil)
//	a := policy.Attempt{Addr: addr, User: user, Listener: "0.0.0.0:993"}
//	d := g.Check(ctx, a)
//	if !d.Allowed { /* wait d.Delay, answer NO [AUTHENTICATIONFAILED], audit d.Result, d.Reason */ }
//	release := slots.Acquire(ctx) // nil: NO [UNAVAILABLE]
//	err := upstreamLogin(...)
//	release()
//	if err != nil { wait(g.Failure(ctx, a, d)) } else { g.Success(ctx, a, d) }
//
// User names become policy keys through UserNames (g.SetUserNames), so the
// spellings of one mailbox share its budgets. The Guard's counters live in
// a Store: MemoryStore (bounded, single node; only failures create
// counters, so successes cannot flush it) now, a shared store for clusters
// later, behind the same interface.
package policy
