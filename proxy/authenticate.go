package proxy

import (
	"crypto/tls"
	"encoding/base64"
	"errors"
	"math/rand/v2"
	"net"
	"strings"
	"time"

	"github.com/imapgate/imapgate/auth"
	"github.com/imapgate/imapgate/policy"
)

// handleAuthenticate runs AUTHENTICATE (RFC 3501 6.2.2) with SASL-IR
// (RFC 4959). Credentials are accepted only over TLS, and only the
// configured mechanisms are offered.
func (s *session) handleAuthenticate(cmd *command) (done, keep bool) {
	if len(cmd.args) < 1 || len(cmd.args) > 2 || cmd.args[0].kind != tokAtom ||
		(len(cmd.args) == 2 && cmd.args[1].kind != tokAtom) {
		return false, s.bad(cmd.tag, "AUTHENTICATE expects a mechanism and an optional initial response")
	}
	mech := strings.ToUpper(cmd.args[0].value)
	ev := s.event(EventAuth)
	ev.Mechanism, ev.ClientID = truncate(mech, 32), s.clientID
	if !s.isTLS {
		ev.Result, ev.Reason = ResultRefused, "tls_required"
		s.cfg.Audit.Log(ev)
		s.reply(cmd.tag + " NO [PRIVACYREQUIRED] Use STARTTLS before authenticating.")
		return false, s.countAuthFailure()
	}
	x, err := auth.Start(mech, s.cfg.Mechanisms, s.connState())
	if err != nil {
		ev.Result, ev.Reason = ResultRefused, "mechanism_not_allowed"
		s.cfg.Audit.Log(ev)
		s.reply(cmd.tag + " NO Unsupported authentication mechanism.")
		return false, true
	}

	var response []byte
	if len(cmd.args) == 2 {
		ir := cmd.args[1].value
		if ir == "=" {
			response = []byte{}
		} else {
			var err error
			if response, err = base64.StdEncoding.DecodeString(ir); err != nil {
				return false, s.bad(cmd.tag, "Invalid base64 in initial response")
			}
		}
	}

	for {
		challenge, done, err := x.Next(response)
		if done {
			return s.login(cmd.tag, x.Result())
		}
		if err != nil {
			ev.Result, ev.Reason = ResultFailure, saslFailureReason(err)
			s.cfg.Audit.Log(ev)
			s.failureDelay()
			s.reply(cmd.tag + " NO [AUTHENTICATIONFAILED] Authentication failed.")
			return false, s.countAuthFailure()
		}
		s.reply("+ " + base64.StdEncoding.EncodeToString(challenge))
		if !s.flush() {
			return false, false
		}
		line, err := readLine(s.r, maxSASLLineLength)
		if err != nil {
			s.readFailed(err)
			return false, false
		}
		if string(line) == "*" {
			ev.Result, ev.Reason = ResultFailure, "client_cancelled"
			s.cfg.Audit.Log(ev)
			s.reply(cmd.tag + " BAD Authentication cancelled.")
			return false, true
		}
		if response, err = base64.StdEncoding.DecodeString(string(line)); err != nil {
			return false, s.bad(cmd.tag, "Invalid base64 in authentication response")
		}
	}
}

// connState is what a SASL mechanism may know of the connection.
func (s *session) connState() auth.ConnState {
	cs := auth.ConnState{Listener: s.l.Name}
	if tc, ok := s.conn.(*tls.Conn); ok {
		st := tc.ConnectionState()
		cs.TLS = &st
	}
	return cs
}

func saslFailureReason(err error) string {
	switch {
	case errors.Is(err, auth.ErrMalformedUser):
		return "malformed_user"
	case errors.Is(err, auth.ErrAuthzidNotAllowed):
		return "authzid_not_allowed"
	case errors.Is(err, auth.ErrEmptyCredentials):
		return "empty_credentials"
	}
	return "malformed_response"
}

// login logs in to the upstream as user. On success the client gets the
// upstream's capabilities and the session moves to the relay.
//
// The tarpit runs from the start of the attempt, alongside the upstream
// login: a failure is answered when both the tarpit and the upstream's
// answer are over, and a refused attempt (checkPolicy) when the tarpit
// and a typical upstream failure would be, so the time to NO does not
// tell a guesser which guesses reached the upstream.
func (s *session) login(tag string, who auth.Result) (done, keep bool) {
	start := time.Now()
	user := who.User
	ev := s.event(EventAuth)
	ev.Mechanism, ev.User, ev.ClientID = who.Mechanism, safeUser(user), s.clientID
	ev.Upstream = s.cfg.Upstream.Address
	attempt, decision, allowed := s.checkPolicy(tag, ev, user, start)
	if !allowed {
		if decision.Busy {
			return false, true // the server's state, not the client's failure
		}
		return false, s.countAuthFailure()
	}
	release := s.cfg.UpstreamLogins.Acquire(s.ctx)
	if release == nil {
		if s.cfg.Policy != nil {
			s.cfg.Policy.Cancel(s.ctx, attempt, decision)
		}
		return s.upstreamBusy(tag, ev)
	}
	ci := ClientInfo{Session: s.id}
	ci.Addr, _ = s.raw.RemoteAddr().(*net.TCPAddr)
	ci.Local, _ = s.raw.LocalAddr().(*net.TCPAddr)
	uc, err := s.cfg.Upstream.Login(s.ctx, user, who.Password.Reveal(), ci)
	release()
	switch {
	case err == nil:
		if s.cfg.Policy != nil {
			s.cfg.Policy.Success(s.ctx, attempt, decision)
		}
		ev.Result = ResultSuccess
		s.cfg.Audit.Log(ev)
		s.user = ev.User
		s.upstream = uc
		s.reply(tag + " OK [CAPABILITY " + strings.Join(clientCapabilities(uc.Capabilities), " ") + "] Logged in")
		return true, true
	case errors.Is(err, ErrBadCredentials):
		ev.Result, ev.Reason = ResultFailure, "bad_credentials"
		s.cfg.Audit.Log(ev)
		s.waitSince(start, withJitter(s.failed(attempt, decision)))
		s.reply(tag + " NO [AUTHENTICATIONFAILED] Authentication failed.")
		return false, s.countAuthFailure()
	case errors.Is(err, ErrNoAnswer):
		// The credential was on the wire: the upstream may have judged it
		// (a tarpitting server, or Dovecot's auth penalty past
		// login_timeout), so it is a failure, or every guess would be free.
		// The client is told to try again: the server may be at fault.
		ev.Result, ev.Reason = ResultFailure, "upstream_no_answer"
		s.cfg.Audit.Log(ev)
		s.cfg.log().Warn("upstream did not answer the login", "session", s.id, "upstream", s.cfg.Upstream.Address, "err", err)
		tarpit := s.failed(attempt, decision)
		if s.ctx.Err() != nil {
			s.endReason = endShutdown
			s.bye("Server shutting down.")
			return false, false
		}
		s.waitSince(start, withJitter(tarpit))
		s.reply(tag + " NO [UNAVAILABLE] The mail server did not answer in time, try again later.")
		return false, s.countAuthFailure()
	default:
		if s.cfg.Policy != nil {
			s.cfg.Policy.Cancel(s.ctx, attempt, decision)
		}
		ev.Result, ev.Reason = ResultError, "upstream_unavailable"
		if errors.Is(err, ErrUpstreamProtocol) {
			ev.Reason = "upstream_protocol_error"
		}
		s.cfg.Audit.Log(ev)
		s.cfg.log().Warn("upstream login failed", "session", s.id, "upstream", s.cfg.Upstream.Address, "err", err)
		if s.ctx.Err() != nil {
			s.endReason = endShutdown
			s.bye("Server shutting down.")
			return false, false
		}
		s.reply(tag + " NO [UNAVAILABLE] The mail server is not available right now, try again later.")
		return false, true
	}
}

// failureDelay waits before a failed answer, unless the session is ending.
func (s *session) failureDelay() { s.wait(s.cfg.FailureDelay) }

// failed counts an attempt the upstream judged (or may have judged) as a
// failure and returns its tarpit: the Policy's, or FailureDelay without one.
func (s *session) failed(a policy.Attempt, d policy.Decision) time.Duration {
	if s.cfg.Policy == nil {
		return s.cfg.FailureDelay
	}
	return s.cfg.Policy.Failure(s.ctx, a, d)
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

// countAuthFailure counts a failed or refused attempt; false means too
// many on this connection: the session ends with BYE.
func (s *session) countAuthFailure() bool {
	s.authFailures++
	if s.authFailures >= s.cfg.maxAuthFailures() {
		s.endReason = "too_many_auth_failures"
		s.bye("Too many failed authentication attempts.")
		return false
	}
	return true
}

// hiddenCapabilities must not reach the client after login: they describe
// the upstream's pre-login state or would let the client bypass the proxy.
func hiddenCapability(c string) bool {
	u := strings.ToUpper(c)
	return u == "STARTTLS" || u == "SASL-IR" || u == "LOGINDISABLED" || strings.HasPrefix(u, "AUTH=")
}

// clientCapabilities filters the upstream's post-login capabilities.
func clientCapabilities(upstream []string) []string {
	out := make([]string, 0, len(upstream))
	for _, c := range upstream {
		if !hiddenCapability(c) {
			out = append(out, c)
		}
	}
	return out
}
