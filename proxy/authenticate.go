package proxy

import (
	"context"
	"encoding/base64"
	"strings"

	"github.com/imapgate/imapgate/auth"
	"github.com/imapgate/imapgate/proxy/internal/imapwire"
)

// handleAuthenticate runs AUTHENTICATE (RFC 3501 6.2.2) with SASL-IR
// (RFC 4959): the wire side of the exchange only. Credentials are accepted
// only over TLS; auth.Start decides whether the mechanism is offered and
// runs it; the continuation lines, their base64 and the client's "*" cancel
// are handled here. A mechanism that judges the client itself asks for the
// policy check through auth.Env.Admit; the finished exchange's Result, or
// its error, goes to the attempt.
func (s *session) handleAuthenticate(cmd *command) next {
	if len(cmd.args) < 1 || len(cmd.args) > 2 || cmd.args[0].kind != tokAtom ||
		(len(cmd.args) == 2 && cmd.args[1].kind != tokAtom) {
		return s.bad(cmd.tag, "AUTHENTICATE expects a mechanism and an optional initial response")
	}
	mech := strings.ToUpper(cmd.args[0].value)
	at := s.newAttempt(cmd.tag, truncate(mech, 32))
	ev := at.ev
	if !s.isTLS {
		ev.Result, ev.Reason = ResultRefused, ReasonTLSRequired
		s.cfg.Audit.Log(ev)
		s.reply(cmd.tag + " NO [PRIVACYREQUIRED] Use STARTTLS before authenticating.")
		return s.countAuthFailure()
	}
	env := s.authEnv()
	env.Admit = func(_ context.Context, user string) error { return s.admitAttempt(at, user) }
	x, err := auth.Start(s.ctx, mech, s.mechanisms(), env)
	if err != nil {
		ev.Result, ev.Reason = ResultRefused, ReasonMechanismNotAllowed
		s.cfg.Audit.Log(ev)
		s.reply(cmd.tag + " NO Unsupported authentication mechanism.")
		return stay
	}
	// Whatever ends the exchange early (the client's cancel, a read that
	// fails) gives an admitted attempt back: nothing was judged.
	defer s.giveBack(at)
	var response []byte // nil: no initial response
	if len(cmd.args) == 2 {
		if response, err = decodeResponse(cmd.args[1].value); err != nil {
			return s.bad(cmd.tag, "Invalid base64 in initial response")
		}
	}
	for {
		challenge, done, err := x.Next(s.ctx, response)
		switch {
		case done:
			if !at.admitted {
				if err := s.admitAttempt(at, x.Result().User); err != nil {
					return at.refused
				}
			}
			return s.finishAttempt(at, x.Result())
		case err != nil:
			return s.exchangeFailed(at, err)
		}
		s.reply("+ " + base64.StdEncoding.EncodeToString(challenge))
		if !s.flush() {
			return end
		}
		line, err := imapwire.ReadLine(s.r, maxSASLLineLength)
		if err != nil {
			return s.readFailed(err)
		}
		if string(line) == "*" {
			ev.Result, ev.Reason = ResultFailure, ReasonClientCancelled
			s.cfg.Audit.Log(ev)
			s.reply(cmd.tag + " BAD Authentication cancelled.")
			return stay
		}
		if response, err = base64.StdEncoding.DecodeString(string(line)); err != nil {
			return s.bad(cmd.tag, "Invalid base64 in authentication response")
		}
	}
}

// decodeResponse decodes a SASL-IR initial response: "=" is an empty one
// (RFC 4959 section 3).
func decodeResponse(ir string) ([]byte, error) {
	if ir == "=" {
		return []byte{}, nil
	}
	return base64.StdEncoding.DecodeString(ir)
}

// authEvent returns an auth event for mechanism, with the client's ID
// fields.
func (s *session) authEvent(mechanism string) *Event {
	ev := s.event(EventAuth)
	ev.Mechanism, ev.ClientID = mechanism, s.clientID
	return ev
}
