package proxy

import (
	"errors"
	"math/rand/v2"
	"net"
	"strings"
	"time"

	"github.com/imapgate/imapgate/auth"
	"github.com/imapgate/imapgate/policy"
)

// busyWaitMax bounds how long an attempt waits for attempts in flight on
// its budgets to settle before it is answered NO [UNAVAILABLE].
const busyWaitMax = 10 * time.Second

// attempt is one login attempt as who, from AUTHENTICATE or LOGIN: the
// policy check, what the password is (judgePassword: an app password, the
// user's own, or refused), an upstream login slot, the upstream login, and
// the answer.
// On success the client gets the upstream's capabilities and the session
// moves to the relay.
//
// The tarpit runs from the start of the attempt, alongside the upstream
// login: a failure is answered when both the tarpit and the upstream's
// answer are over, and a refused attempt (checkPolicy) when the tarpit
// and a typical upstream failure would be, so the time to NO does not
// tell a guesser which guesses reached the upstream.
func (s *session) attempt(tag string, who auth.Result) next {
	start := time.Now()
	ev := s.authEvent(who.Mechanism)
	ev.User, ev.Upstream = safeUser(who.User), s.cfg.Upstream.Address
	a, decision, allowed := s.checkPolicy(tag, ev, who.User, start)
	if !allowed {
		if decision.Busy {
			return stay // the server's state, not the client's failure
		}
		return s.countAuthFailure()
	}
	v := s.judgePassword(who)
	v.note(ev)
	switch {
	case v.reason != "":
		return s.credentialRefused(tag, ev, a, decision, start, v.reason)
	case v.storeErr != nil:
		s.givenBack(a, decision)
		return s.unavailable(tag, ev, ReasonCredentialStoreError, "app password store failed", v.storeErr)
	}
	release := s.cfg.UpstreamLogins.Acquire(s.ctx)
	if release == nil {
		s.givenBack(a, decision)
		return s.upstreamBusy(tag, ev)
	}
	ci := ClientInfo{Session: s.id}
	ci.Addr, _ = s.raw.RemoteAddr().(*net.TCPAddr)
	ci.Local, _ = s.raw.LocalAddr().(*net.TCPAddr)
	uc, err := s.upstreamLogin(v, who, ci)
	release()
	switch {
	case err != nil && v.app != nil:
		// The client proved itself with an app password: whatever went
		// wrong upstream is not its failure, and nothing is counted.
		s.givenBack(a, decision)
		return s.unavailable(tag, ev, upstreamErrorReason(err), "upstream master login failed", err)
	case err == nil:
		if s.cfg.Policy != nil {
			s.cfg.Policy.Success(s.ctx, a, decision)
		}
		ev.Result = ResultSuccess
		s.cfg.Audit.Log(ev)
		s.user = ev.User
		s.upstream = uc
		if v.app != nil {
			s.srv.mu.Lock()
			s.credentialID = v.app.ID
			s.srv.mu.Unlock()
		}
		s.reply(tag + " OK [CAPABILITY " + strings.Join(clientCapabilities(uc.Capabilities), " ") + "] Logged in")
		return relayNow
	case errors.Is(err, ErrBadCredentials):
		ev.Result, ev.Reason = ResultFailure, ReasonBadCredentials
		s.cfg.Audit.Log(ev)
		s.waitSince(start, withJitter(s.failed(a, decision)))
		s.reply(tag + " NO [AUTHENTICATIONFAILED] Authentication failed.")
		return s.countAuthFailure()
	case errors.Is(err, ErrNoAnswer):
		// The credential was on the wire: the upstream may have judged it
		// (a tarpitting server, or Dovecot's auth penalty past
		// login_timeout), so it is a failure, or every guess would be free.
		// The client is told to try again: the server may be at fault.
		ev.Result, ev.Reason = ResultFailure, upstreamErrorReason(err) // upstream_no_answer, or upstream_protocol_error for an answer it cannot read
		s.cfg.Audit.Log(ev)
		s.cfg.log().Warn("upstream did not answer the login", "session", s.id, "upstream", s.cfg.Upstream.Address, "err", err)
		tarpit := s.failed(a, decision)
		if s.ctx.Err() != nil {
			return s.shutDown()
		}
		s.waitSince(start, withJitter(tarpit))
		s.reply(tag + " NO [UNAVAILABLE] The mail server did not answer in time, try again later.")
		return s.countAuthFailure()
	default:
		s.givenBack(a, decision)
		return s.unavailable(tag, ev, upstreamErrorReason(err), "upstream login failed", err)
	}
}

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
		ev.Result, ev.Reason, ev.Upstream = ResultError, ReasonAttemptsInFlight, ""
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

// credentialRefused answers an attempt whose password imapgate itself
// refused (a revoked, expired or out-of-scope app password, or a real
// password where pass-through is off) exactly like a wrong password:
// counted in the policy's budgets (user = the mailbox named), audited as
// a failure with reason, and NO [AUTHENTICATIONFAILED] once the tarpit
// and a typical upstream failure would be over. Nothing reached the
// upstream.
func (s *session) credentialRefused(tag string, ev *Event, a policy.Attempt, d policy.Decision, start time.Time, reason string) next {
	ev.Result, ev.Reason, ev.Upstream = ResultFailure, reason, ""
	s.cfg.Audit.Log(ev)
	s.waitSince(start, max(withJitter(s.failed(a, d)), s.cfg.Upstream.failureAnswerTime()))
	s.reply(tag + " NO [AUTHENTICATIONFAILED] Authentication failed.")
	return s.countAuthFailure()
}

// unavailable answers an attempt the server could not complete through
// no fault of the client's: audited as result error with reason, logged
// as a warning with err (never a secret: the errors carry none), answered
// NO [UNAVAILABLE] and not counted. The caller gave the attempt back.
func (s *session) unavailable(tag string, ev *Event, reason, msg string, err error) next {
	ev.Result, ev.Reason = ResultError, reason
	s.cfg.Audit.Log(ev)
	s.cfg.log().Warn(msg, "session", s.id, "upstream", s.cfg.Upstream.Address, "reason", reason, "err", err)
	if s.ctx.Err() != nil {
		return s.shutDown()
	}
	s.reply(tag + " NO [UNAVAILABLE] The mail server is not available right now, try again later.")
	return stay
}

// upstreamBusy answers an attempt that found every upstream login slot
// taken and the queue full (or waited too long): NO [UNAVAILABLE] (RFC
// 5530: a temporary failure), audited as result error, reason
// upstream_busy; it is the server's state, not the client's doing, so it
// does not count towards the connection's failures.
func (s *session) upstreamBusy(tag string, ev *Event) next {
	ev.Result, ev.Reason = ResultError, ReasonUpstreamBusy
	s.cfg.Audit.Log(ev)
	if s.ctx.Err() != nil {
		return s.shutDown()
	}
	s.reply(tag + " NO [UNAVAILABLE] The mail server is busy, try again later.")
	return stay
}

// claimRefused answers a claim auth refused before any attempt (a
// malformed SASL exchange or LOGIN arguments: see auth.CheckCredentials):
// audited as a failure with the reason, answered NO [AUTHENTICATIONFAILED]
// after FailureDelay, and counted; it spends no budget.
func (s *session) claimRefused(tag string, ev *Event, err error) next {
	ev.Result, ev.Reason = ResultFailure, claimFailureReason(err)
	s.cfg.Audit.Log(ev)
	s.wait(s.cfg.FailureDelay)
	s.reply(tag + " NO [AUTHENTICATIONFAILED] Authentication failed.")
	return s.countAuthFailure()
}

// claimFailureReason is the audit reason for an error of auth's checks.
func claimFailureReason(err error) string {
	switch {
	case errors.Is(err, auth.ErrMalformedUser):
		return ReasonMalformedUser
	case errors.Is(err, auth.ErrAuthzidNotAllowed):
		return ReasonAuthzidNotAllowed
	case errors.Is(err, auth.ErrEmptyCredentials):
		return ReasonEmptyCredentials
	}
	return ReasonMalformedResponse
}

// givenBack tells the policy the credentials never reached the upstream.
func (s *session) givenBack(a policy.Attempt, d policy.Decision) {
	if s.cfg.Policy != nil {
		s.cfg.Policy.Cancel(s.ctx, a, d)
	}
}

// failed counts an attempt the upstream judged (or may have judged) as a
// failure and returns its tarpit: the Policy's, or FailureDelay without one.
func (s *session) failed(a policy.Attempt, d policy.Decision) time.Duration {
	if s.cfg.Policy == nil {
		return s.cfg.FailureDelay
	}
	return s.cfg.Policy.Failure(s.ctx, a, d)
}

// countAuthFailure counts a failed or refused attempt; too many on this
// connection end the session with BYE.
func (s *session) countAuthFailure() next {
	s.authFailures++
	if s.authFailures >= s.cfg.maxAuthFailures() {
		return s.endWith(endTooManyAuthFailures, "Too many failed authentication attempts.")
	}
	return stay
}

// waitSince waits until d has passed since start (at once if it has).
func (s *session) waitSince(start time.Time, d time.Duration) {
	s.wait(d - time.Since(start))
}

// withJitter adds up to a tenth of d, at random, so that no two answers
// after one tarpit come at exactly the same time.
func withJitter(d time.Duration) time.Duration {
	if d <= 0 {
		return 0
	}
	return d + rand.N(d/10+1)
}

// wait sleeps for d in the session's own goroutine (the tarpit holds
// nothing but the connection), and returns early when the session ends.
func (s *session) wait(d time.Duration) {
	if d <= 0 {
		return
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-s.ctx.Done():
	}
}
