package proxy

import (
	"errors"

	"github.com/imapgate/imapgate/auth"
	"github.com/imapgate/imapgate/auth/credstore"
)

// verdict is what the credential of an attempt is, before anything
// reaches the upstream (README "App passwords"): one the client proved
// (viaMaster: log in as the master user for user's mailbox; cred names it),
// the user's own password to pass through (nothing set), refused (reason
// set, cred names it when known: nothing reaches the upstream) or
// unjudged (storeErr: the store failed).
type verdict struct {
	viaMaster bool
	user      string
	cred      auth.Credential
	reason    string
	storeErr  error
}

// judge decides what who's credential is. One a mechanism verified (a
// token, a SCRAM proof, a certificate) logs in through the master. A
// password is asked of the app password store first, if there is one: an
// app password of the user logs in through the master; a revoked, expired
// or out-of-scope one is refused with its reason; anything else is the
// user's own password, passed through, or refused as passthrough_disabled
// where pass-through is off.
func (s *session) judge(who auth.Result) verdict {
	if who.Verified {
		return verdict{viaMaster: true, user: who.User, cred: who.Credential}
	}
	passThrough := s.passThrough() && !(who.Mechanism == mechanismLogin && s.cfg.LoginAppPasswordsOnly)
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
		return verdict{viaMaster: true, user: p.User, cred: auth.Credential{Kind: auth.CredentialAppPassword, ID: p.ID, Label: p.Label}}
	case errors.Is(err, credstore.ErrUnknown):
		return unknown
	case errors.As(err, &ce):
		return verdict{reason: ce.Reason(), cred: auth.Credential{Kind: auth.CredentialAppPassword, ID: ce.ID, Label: ce.Label}}
	}
	return verdict{storeErr: err}
}

// upstreamLogin logs in to the upstream up routed to for who: as the
// master user for the mailbox of a credential the client proved, else
// with who's own password.
func (s *session) upstreamLogin(up *UpstreamGroup, ev *Event, v verdict, who auth.Result, ci ClientInfo) (*UpstreamConn, error) {
	return upstreamLoginVia(up, ev, func(u *Upstream) (*UpstreamConn, error) {
		if v.viaMaster {
			return u.LoginAs(s.ctx, v.user, ci)
		}
		return u.Login(s.ctx, who.User, who.Password.Reveal(), ci)
	})
}

// note writes what the verdict knows of the credential into ev.
func (v verdict) note(ev *Event) { noteCredential(ev, v.cred) }

// noteCredential writes c into ev; nothing for the zero Credential.
func noteCredential(ev *Event, c auth.Credential) {
	if c.Kind != "" {
		ev.Credential, ev.CredentialID, ev.CredentialLabel = c.Kind, c.ID, c.Label
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
