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

// loginAttempt is one login attempt, from the moment the policy is asked
// (admit) to its answer: what the policy decided, the audit event, and
// whether the decision was settled (Success, Failure or Cancel). Every
// attempt that was admitted is settled exactly once.
type loginAttempt struct {
	tag   string
	start time.Time
	ev    *Event
	a     policy.Attempt
	d     policy.Decision
	// admitted: the policy allowed the attempt; settle it.
	admitted, settled bool
	// refused is what follows an attempt the policy refused: it was
	// answered already.
	refused next
}

// errNotAdmitted is what auth.Env.Admit returns for an attempt the policy
// refused; the refusal was answered already.
var errNotAdmitted = errors.New("proxy: login attempt refused by policy")

// newAttempt begins a login attempt with mechanism, answered with tag.
func (s *session) newAttempt(tag, mechanism string) *loginAttempt {
	return &loginAttempt{tag: tag, start: time.Now(), ev: s.authEvent(mechanism)}
}

// admitAttempt asks the policy whether at, for user, may go on: auth.Env.Admit
// for the mechanisms that judge the client themselves, and the first step
// of every other attempt. Refused, it is answered at once (checkPolicy)
// and admit returns errNotAdmitted; at.refused says what follows. An
// attempt is admitted once: later calls return nil.
func (s *session) admitAttempt(at *loginAttempt, user string) error {
	if at.admitted {
		return nil
	}
	at.start = time.Now() // the tarpit runs from here
	at.ev.User = safeUser(user)
	a, d, ok := s.checkPolicy(at.tag, at.ev, user, at.start)
	if !ok {
		at.refused = stay // the server's state, not the client's failure
		if !d.Busy {
			at.refused = s.countAuthFailure()
		}
		return errNotAdmitted
	}
	at.a, at.d, at.admitted = a, d, true
	return nil
}

// giveBack settles an admitted attempt whose credential never reached a
// judge (the upstream, or imapgate's own checks); it does nothing for an
// attempt not admitted or settled already.
func (s *session) giveBack(at *loginAttempt) {
	if at.admitted && !at.settled {
		at.settled = true
		s.givenBack(at.a, at.d)
	}
}

// fail settles at as a failure and returns its tarpit.
func (s *session) fail(at *loginAttempt) time.Duration {
	at.settled = true
	return s.failed(at.a, at.d)
}

// succeed settles at as a success for the mailbox user.
func (s *session) succeed(at *loginAttempt, user string) {
	at.settled = true
	if s.cfg.Policy != nil {
		if at.a.User == "" {
			at.a.User = user // a token that named the mailbox itself
		}
		s.cfg.Policy.Success(s.ctx, at.a, at.d)
	}
}

// attempt is one login attempt as who, from the LOGIN command or a PLAIN
// exchange: the policy check (admitAttempt), then finishAttempt.
func (s *session) attempt(tag string, who auth.Result) next {
	at := s.newAttempt(tag, who.Mechanism)
	if err := s.admitAttempt(at, who.User); err != nil {
		return at.refused
	}
	return s.finishAttempt(at, who)
}

// finishAttempt completes an admitted attempt as who: what the credential is
// (judge: a credential a mechanism verified, an app password, the user's
// own password, or refused), an upstream login slot, the upstream login,
// and the answer. On success the client gets the upstream's capabilities
// and the session moves to the relay.
//
// The tarpit runs from admission, alongside the upstream login: a failure
// is answered when both the tarpit and the upstream's answer are over, and
// a refused attempt (checkPolicy) when the tarpit and a typical upstream
// failure would be, so the time to NO does not tell a guesser which
// guesses reached the upstream.
func (s *session) finishAttempt(at *loginAttempt, who auth.Result) next {
	ev := at.ev
	ev.User, ev.Upstream = safeUser(who.User), s.cfg.Upstream.Address
	v := s.judge(who)
	v.note(ev)
	switch {
	case v.reason != "":
		return s.credentialRefused(at, v.reason)
	case v.storeErr != nil:
		s.giveBack(at)
		return s.unavailable(at.tag, ev, ReasonCredentialStoreError, "app password store failed", v.storeErr)
	}
	up, n, routed := s.routeAttempt(at, v, who)
	if !routed {
		return n
	}
	release := s.cfg.UpstreamLogins.Acquire(s.ctx)
	if release == nil {
		s.giveBack(at)
		return s.upstreamBusy(at.tag, ev)
	}
	ci := ClientInfo{Session: s.id}
	ci.Addr, _ = s.raw.RemoteAddr().(*net.TCPAddr)
	ci.Local, _ = s.raw.LocalAddr().(*net.TCPAddr)
	uc, err := s.upstreamLogin(up, ev, v, who, ci)
	release()
	tag := at.tag
	switch {
	case err != nil && v.viaMaster:
		// The client proved itself (an app password, a token, SCRAM, a
		// certificate): whatever went wrong upstream is not its failure,
		// and nothing is counted.
		s.giveBack(at)
		return s.unavailable(tag, ev, upstreamErrorReason(err), "upstream master login failed", err)
	case err == nil:
		s.succeed(at, v.user)
		ev.Result = ResultSuccess
		s.cfg.Audit.Log(ev)
		s.upstream = uc
		s.srv.mu.Lock()
		s.user, s.mechanism, s.credential, s.loggedIn = ev.User, who.Mechanism, v.cred, time.Now()
		s.upstreamAddr = ev.Upstream // the address that answered, after routing and failover
		s.srv.mu.Unlock()
		s.reply(tag + " OK [CAPABILITY " + strings.Join(clientCapabilities(uc.Capabilities), " ") + "] Logged in")
		return relayNow
	case errors.Is(err, ErrBadCredentials):
		ev.Result, ev.Reason = ResultFailure, ReasonBadCredentials
		s.cfg.Audit.Log(ev)
		s.waitSince(at.start, withJitter(s.fail(at)))
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
		tarpit := s.fail(at)
		if s.ctx.Err() != nil {
			return s.shutDown()
		}
		s.waitSince(at.start, withJitter(tarpit))
		s.reply(tag + " NO [UNAVAILABLE] The mail server did not answer in time, try again later.")
		return s.countAuthFailure()
	default:
		s.giveBack(at)
		return s.unavailable(tag, ev, upstreamErrorReason(err), "upstream login failed", err)
	}
}

// exchangeFailed answers a SASL exchange that ended with err (see
// auth.Exchange.Next): a refusal the policy answered already; a
// credential the mechanism refused, counted like a wrong password; a
// verifier's failure, NO [UNAVAILABLE]; or a malformed exchange
// (claimRefused).
func (s *session) exchangeFailed(at *loginAttempt, err error) next {
	var refusal *auth.Refusal
	var unavailable *auth.Unavailable
	switch {
	case errors.Is(err, errNotAdmitted):
		return at.refused
	case errors.As(err, &refusal):
		if err := s.admitAttempt(at, refusal.User); err != nil {
			return at.refused
		}
		if refusal.User != "" {
			at.ev.User = safeUser(refusal.User)
		}
		noteCredential(at.ev, refusal.Credential)
		return s.credentialRefused(at, refusal.Reason)
	case errors.As(err, &unavailable):
		s.giveBack(at)
		return s.unavailable(at.tag, at.ev, unavailable.Reason, "credential check failed", err)
	case errors.Is(err, auth.ErrUnavailable):
		s.giveBack(at)
		return s.unavailable(at.tag, at.ev, ReasonCredentialStoreError, "credential check failed", err)
	}
	s.giveBack(at)
	return s.claimRefused(at.tag, at.ev, err)
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

// credentialRefused answers an attempt whose credential imapgate itself
// refused (a revoked, expired or out-of-scope app password, a real
// password where pass-through is off, a token, SCRAM proof or certificate
// a mechanism refused) exactly like a wrong password: counted in the
// policy's budgets (user = the mailbox named), audited as a failure with
// reason, and NO [AUTHENTICATIONFAILED] once the tarpit and a typical
// upstream failure would be over. Nothing reached the upstream.
func (s *session) credentialRefused(at *loginAttempt, reason string) next {
	ev := at.ev
	ev.Result, ev.Reason, ev.Upstream = ResultFailure, reason, ""
	s.cfg.Audit.Log(ev)
	s.waitSince(at.start, max(withJitter(s.fail(at)), s.cfg.Upstream.failureAnswerTime()))
	s.reply(at.tag + " NO [AUTHENTICATIONFAILED] Authentication failed.")
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
