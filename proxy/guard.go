package proxy

import (
	"time"

	"github.com/imapgate/imapgate/policy"
)

// busyWaitMax bounds how long an attempt waits for attempts in flight on
// its budgets to settle before it is answered NO [UNAVAILABLE].
const busyWaitMax = 10 * time.Second

// checkPolicy asks the configured policy whether user's attempt, begun at
// start, may reach the upstream. A refused attempt is audited (result
// ratelimited or locked, with the budget that was spent as reason) and
// answered exactly like a wrong password, NO [AUTHENTICATIONFAILED]: RFC
// 5530 has no code for a rate limit, AUTHENTICATIONFAILED means "failed
// for some reason on which the server is unwilling to elaborate", and an
// attacker must not learn which guesses were never tried. So it is also
// answered when a wrong password would be: once both its tarpit and a
// draw of the upstream's recent time to answer a wrong password have
// passed since start.
func (s *session) checkPolicy(tag string, ev *Event, user string, start time.Time) (policy.Attempt, policy.Decision, bool) {
	a := policy.Attempt{Addr: s.clientAddr.Addr(), User: user, Listener: s.l.Name}
	if s.cfg.Policy == nil {
		return a, policy.Decision{Allowed: true}, true
	}
	d := s.cfg.Policy.Check(s.ctx, a)
	// Attempts in flight fill a budget no failure has spent (a login
	// storm from one address or network): wait for them to settle rather
	// than refuse a password that may well be right. The wait holds only
	// this session's goroutine, and is bounded.
	pause, deadline := time.Millisecond, time.Now().Add(busyWaitMax)
	for d.Busy && s.ctx.Err() == nil && time.Now().Before(deadline) {
		s.wait(pause)
		pause = min(2*pause, 50*time.Millisecond)
		d = s.cfg.Policy.Check(s.ctx, a)
	}
	if d.Busy {
		ev.Result, ev.Reason, ev.Upstream = ResultError, policy.ReasonAttemptsInFlight, ""
		s.cfg.Audit.Log(ev)
		s.reply(tag + " NO [UNAVAILABLE] Too many logins in progress, try again later.")
		return a, d, false
	}
	if d.Err != nil {
		s.cfg.log().Warn("policy store failed; allowing the attempt", "session", s.id, "err", d.Err)
	}
	if d.Allowed {
		return a, d, true
	}
	ev.Result, ev.Reason, ev.Upstream = d.Result, d.Reason, ""
	s.cfg.Audit.Log(ev)
	s.waitSince(start, max(withJitter(d.Delay), s.cfg.Upstream.failureAnswerTime()))
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
