package proxy

import (
	"github.com/imapgate/imapgate/policy"
)

// checkPolicy asks the configured policy whether user's attempt may reach
// the upstream. A refused attempt is audited (result ratelimited or locked,
// with the budget that was spent as reason) and answered after the tarpit
// exactly like a wrong password, NO [AUTHENTICATIONFAILED]: RFC 5530 has no
// code for a rate limit, AUTHENTICATIONFAILED means "failed for some reason
// on which the server is unwilling to elaborate", and an attacker must not
// learn which guesses were never tried.
func (s *session) checkPolicy(tag string, ev *Event, user string) (policy.Attempt, policy.Decision, bool) {
	a := policy.Attempt{Addr: s.clientAddr.Addr(), User: user, Listener: s.l.Name}
	if s.cfg.Policy == nil {
		return a, policy.Decision{Allowed: true}, true
	}
	d := s.cfg.Policy.Check(s.ctx, a)
	if d.Err != nil {
		s.cfg.log().Warn("policy store failed; allowing the attempt", "session", s.id, "err", d.Err)
	}
	if d.Allowed {
		return a, d, true
	}
	ev.Result, ev.Reason, ev.Upstream = d.Result, d.Reason, ""
	s.cfg.Audit.Log(ev)
	s.wait(d.Delay)
	s.reply(tag + " NO [AUTHENTICATIONFAILED] Authentication failed.")
	return a, d, false
}

// upstreamBusy answers an attempt that found every upstream login slot
// taken and the queue full (or waited too long): NO [UNAVAILABLE] (RFC
// 5530: a temporary failure), audited as result error, reason
// upstream_busy; it is the server's state, not the client's doing, so it
// does not count towards the connection's failures.
func (s *session) upstreamBusy(tag string, ev *Event) (done, keep bool) {
	ev.Result, ev.Reason = ResultError, policy.ReasonUpstreamBusy
	s.cfg.Audit.Log(ev)
	if s.ctx.Err() != nil {
		s.endReason = endShutdown
		s.bye("Server shutting down.")
		return false, false
	}
	s.reply(tag + " NO [UNAVAILABLE] The mail server is busy, try again later.")
	return false, true
}
