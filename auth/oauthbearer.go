package auth

import (
	"context"
	"errors"
	"fmt"

	"github.com/imapgate/imapgate/auth/oauth"
)

// OAuthBearer is the OAUTHBEARER mechanism (RFC 7628): one message
// carrying an OAuth 2.0 bearer token, which imapgate validates itself
// against the configured identity provider (README "OAuth tokens").
const OAuthBearer = string(oauth.OAuthBearer)

var oauthBearer = mechanism{name: OAuthBearer, offered: tokensOffered, start: startTokens(oauth.OAuthBearer)}

// tokensOffered: OAUTHBEARER and XOAUTH2 need a token validator and TLS
// (a bearer token opens the mailbox to whoever reads it; RFC 7628 section
// 5 asks for TLS).
func tokensOffered(_ context.Context, env *Env) bool {
	return env.Verifiers != nil && env.Verifiers.Tokens != nil && env.Conn.TLS != nil
}

func startTokens(mech oauth.Mechanism) func(*Env) Exchange {
	return func(env *Env) Exchange {
		return &tokenExchange{mech: mech, env: env, tokens: env.Verifiers.Tokens}
	}
}

// tokenExchange is one OAUTHBEARER or XOAUTH2 exchange: the client's
// message, and after a refused token the error challenge and the client's
// dummy response (RFC 7628 section 3.2.2).
type tokenExchange struct {
	mech   oauth.Mechanism
	env    *Env
	tokens *oauth.Validator

	state  tokenState
	named  string // the mailbox the message named ("" if none)
	cause  error  // why the token was refused, once the error challenge went out
	result Result
}

type tokenState int

const (
	awaitingMessage tokenState = iota // no message yet
	awaitingDummy                     // the error challenge was sent
	tokenOver                         // done, or failed
)

// Next asks for the message with an empty challenge when the client sent
// no initial response. A message that breaks the format is refused at once
// (ErrMalformed). Otherwise the mailbox it names is admitted (Env.Admit)
// before the token is looked at, then the token is validated: a good token
// whose mailbox claim names a user CheckUsername accepts is a Verified
// Result; the provider's failure is an *Unavailable (oauth_unavailable);
// any other failure sends the error challenge, and the client's next
// response ends the exchange with a *Refusal whose reason is the token's
// (oauth.Reason).
func (x *tokenExchange) Next(ctx context.Context, response []byte) ([]byte, bool, error) {
	switch x.state {
	case awaitingMessage:
		if response == nil {
			return []byte{}, false, nil
		}
		return x.message(ctx, response)
	case awaitingDummy:
		x.state = tokenOver
		return nil, false, &Refusal{
			Reason:     oauth.Reason(x.cause),
			User:       x.named,
			Credential: Credential{Kind: CredentialToken},
			Err:        oauth.FinishFailed(x.mech, response, x.cause),
		}
	}
	return nil, false, errAfterEnd
}

func (x *tokenExchange) message(ctx context.Context, response []byte) ([]byte, bool, error) {
	x.state = tokenOver
	msg, err := oauth.ParseClientResponse(x.mech, response)
	if err != nil {
		if errors.Is(err, oauth.ErrMalformedUser) {
			return nil, false, fmt.Errorf("%w: %s: %w", ErrMalformedUser, x.mech, err)
		}
		return nil, false, fmt.Errorf("%w: %s: %w", ErrMalformed, x.mech, err)
	}
	if msg.User != "" {
		// The same rule as every other user name: one spelling per
		// mailbox in the budgets and upstream (CheckUsername).
		if err := CheckUsername(msg.User); err != nil {
			return nil, false, fmt.Errorf("%s: %w", x.mech, err)
		}
	}
	x.named = msg.User
	if err := x.env.admit(ctx, msg.User); err != nil {
		return nil, false, err
	}
	id, err := x.tokens.Validate(ctx, msg.User, msg.Token)
	if err == nil {
		err = checkMailboxClaim(id.Mailbox)
	}
	switch {
	case err == nil:
		x.result = Result{
			Mechanism:  string(x.mech),
			User:       id.Mailbox,
			Verified:   true,
			Credential: Credential{Kind: CredentialToken, ID: id.TokenID, Label: id.ClientID},
		}
		return nil, true, nil
	case errors.Is(err, oauth.ErrUnavailable):
		return nil, false, &Unavailable{Reason: oauth.ReasonUnavailable, Err: err}
	}
	x.state, x.cause = awaitingDummy, err
	return x.tokens.Challenge(x.mech, err), false, nil
}

// checkMailboxClaim refuses a token whose mailbox claim is not a user name
// CheckUsername accepts (an invisible or format character, say): the
// validator checks only what every claim must be, and the mailbox must
// pass the rule every user name passes before it reaches the policy and
// the upstream.
func checkMailboxClaim(mailbox string) error {
	if err := CheckUsername(mailbox); err != nil {
		return fmt.Errorf("%w: the mailbox claim is not a user name imapgate accepts: %w", oauth.ErrTokenMalformed, err)
	}
	return nil
}

func (x *tokenExchange) Result() Result { return x.result }
