package proxy

import (
	"errors"

	"github.com/imapgate/imapgate/auth"
	"github.com/imapgate/imapgate/auth/credstore"
)

// verdict is what a password the client gave is, before anything reaches
// the upstream (README "App passwords"): one of the user's app passwords
// (app set: log in through the master), the user's own password to pass
// through (nothing set), or refused (reason set: nothing reaches the
// upstream) or unjudged (storeErr: the store failed).
type verdict struct {
	app      *credstore.AppPassword
	reason   string
	id       string // the credential refused, when the store named it
	label    string
	storeErr error
}

// judgePassword decides what who's password is. Without a store every
// password is passed through, unless pass-through is off here. With one,
// the store is asked first: an app password of the user logs in through
// the master; a revoked, expired or out-of-scope one is refused with its
// reason; anything else is the user's own password, passed through or
// refused as passthrough_disabled.
func (s *session) judgePassword(who auth.Result) verdict {
	passThrough := !s.cfg.RefusePassThrough && !(who.Mechanism == mechanismLogin && s.cfg.LoginAppPasswordsOnly)
	unknown := verdict{}
	if !passThrough {
		unknown = verdict{reason: ReasonPassthroughDisabled}
	}
	if s.cfg.AppPasswords == nil {
		return unknown
	}
	p, err := s.cfg.AppPasswords.VerifyAppPassword(s.ctx, credstore.AppPasswordAttempt{
		User: who.User, Password: who.Password.Reveal(), Listener: s.l.Name, Addr: s.clientAddr.Addr(),
	})
	var ce *credstore.CredentialError
	switch {
	case err == nil:
		return verdict{app: &p}
	case errors.Is(err, credstore.ErrUnknown):
		return unknown
	case errors.As(err, &ce):
		return verdict{reason: ce.Reason(), id: ce.ID, label: ce.Label}
	}
	return verdict{storeErr: err}
}

// upstreamLogin logs in to the upstream for who: as the master user for
// the mailbox of an app password, else with who's own password.
func (s *session) upstreamLogin(v verdict, who auth.Result, ci ClientInfo) (*UpstreamConn, error) {
	if v.app != nil {
		return s.cfg.Upstream.LoginAs(s.ctx, v.app.User, ci)
	}
	return s.cfg.Upstream.Login(s.ctx, who.User, who.Password.Reveal(), ci)
}

// note writes what the verdict knows of the credential into ev.
func (v verdict) note(ev *Event) {
	switch {
	case v.app != nil:
		ev.Credential, ev.CredentialID, ev.CredentialLabel = CredentialAppPassword, v.app.ID, v.app.Label
	case v.id != "":
		ev.Credential, ev.CredentialID, ev.CredentialLabel = CredentialAppPassword, v.id, v.label
	}
}

// upstreamErrorReason is the audit reason of an upstream login error that
// is not the client's failure: any LoginAs error (the client proved itself
// with an app password), or a pass-through Login that failed before the
// credential was judged; and of a pass-through Login's ErrNoAnswer, which
// counts (upstream_protocol_error when the answer came but could not be
// read).
func upstreamErrorReason(err error) string {
	switch {
	case errors.Is(err, ErrMasterRejected), errors.Is(err, ErrNoMaster), errors.Is(err, ErrMailboxName):
		return ReasonMasterLoginFailed
	case errors.Is(err, ErrMailboxRefused):
		return ReasonMasterMailboxRefused
	case errors.Is(err, ErrUpstreamProtocol):
		return ReasonUpstreamProtocolError
	case errors.Is(err, ErrNoAnswer):
		return ReasonUpstreamNoAnswer
	}
	return ReasonUpstreamUnavailable
}
