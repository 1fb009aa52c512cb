package auth

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/imapgate/imapgate/auth/scram"
)

// SCRAM-SHA-256 (RFC 7677) and SCRAM-SHA-256-PLUS, which binds the
// exchange to the client's TLS connection (RFC 5802 section 6), on
// auth/scram's server. The client proves it holds an app password without
// sending it; each app password has its own login name (README "SCRAM").

// The SCRAM mechanism names.
const (
	SCRAMSHA256     = string(scram.SHA256)
	SCRAMSHA256Plus = string(scram.SHA256Plus)
)

// SCRAMLoginSeparator joins a user and a credential's ID into the
// credential's SCRAM login name, "alice#k3f9x2ab": the server sends the
// salt before the client proves anything, so the login name alone must
// say which credential the client holds (README "SCRAM"). The user is
// what comes before the last separator.
const SCRAMLoginSeparator = "#"

var (
	scramSHA256 = mechanism{
		name:    SCRAMSHA256,
		offered: func(_ context.Context, env *Env) bool { return env.scram() != nil && env.Conn.TLS != nil },
		start:   func(env *Env) Exchange { return startSCRAM(env, scram.SHA256) },
	}
	scramSHA256Plus = mechanism{
		name: SCRAMSHA256Plus,
		offered: func(_ context.Context, env *Env) bool {
			return env.scram() != nil && scramConn(env.Conn).OffersPlus()
		},
		start: func(env *Env) Exchange { return startSCRAM(env, scram.SHA256Plus) },
	}
)

// SCRAMVerifier checks SCRAM proofs against keys. One per process: it
// holds the key unknown login names' made-up salts are derived from, which
// must not change while guessers watch (auth/scram Options.Key).
type SCRAMVerifier struct {
	keys SCRAMKeys
	srv  *scram.Server
}

// NewSCRAMVerifier returns a verifier of the keys in keys. opts tunes the
// SCRAM server; set UnknownIterations to the store's iteration count and
// Key to a secret that outlives the process (see auth/scram's Options).
func NewSCRAMVerifier(keys SCRAMKeys, opts scram.Options) (*SCRAMVerifier, error) {
	if keys == nil {
		return nil, errors.New("auth: NewSCRAMVerifier: nil SCRAMKeys")
	}
	// Every exchange brings its own lookup (it needs the listener).
	srv, err := scram.NewServer(nil, opts)
	if err != nil {
		return nil, err
	}
	return &SCRAMVerifier{keys: keys, srv: srv}, nil
}

// scram returns env's SCRAM verifier, nil when there is none.
func (e *Env) scram() *SCRAMVerifier {
	if e.Verifiers == nil {
		return nil
	}
	return e.Verifiers.SCRAM
}

func scramConn(cs ConnState) scram.ConnState {
	return scram.ConnState{TLS: cs.TLS, Certificate: cs.Certificate}
}

// scramUser is the user part of a SCRAM login name: what precedes the last
// SCRAMLoginSeparator, or the whole name when it has none (it then names
// no credential, and fails as unknown).
func scramUser(login string) string {
	if i := strings.LastIndex(login, SCRAMLoginSeparator); i > 0 {
		return login[:i]
	}
	return login
}

// scramExchange is one SCRAM exchange: auth/scram's, then the client's
// empty response to the server-final message.
type scramExchange struct {
	env  *Env
	v    *SCRAMVerifier
	name string
	x    *scram.Exchange
	// The lookup's findings: the credential's user and name, or the
	// store's refusal of the login name.
	user    string
	cred    Credential
	refusal *Refusal

	proved bool // the server-final message was sent: an empty response ends it
	over   bool
	result Result
}

func startSCRAM(env *Env, mech scram.Mechanism) Exchange {
	x := &scramExchange{env: env, v: env.scram(), name: string(mech)}
	opts := scram.ExchangeOptions{
		// -PLUS left out of the listener's mechanisms: a client that says
		// it could bind ("y") is no downgrade there.
		NoPlus: !slices.Contains(env.offered, SCRAMSHA256Plus),
		Admit: func(ctx context.Context, id scram.Identity) error {
			// The user named is checked as PLAIN checks it, then its
			// budgets are spent before any key is looked up.
			user := scramUser(id.Login)
			if err := CheckUsername(user); err != nil {
				return err
			}
			return env.admit(ctx, user)
		},
		Lookup: x.lookup,
	}
	var err error
	x.x, err = x.v.srv.NewExchange(mech, scramConn(env.Conn), opts)
	if err != nil {
		// Start checked the mechanism is offered; NoPlus keeps -PLUS
		// from being started where it was not.
		x.over = true
	}
	return x
}

// lookup finds the login name's keys on the listener and keeps what the
// store said about its credential.
func (x *scramExchange) lookup(ctx context.Context, login string) (scram.StoredCredentials, error) {
	keys, user, c, err := x.v.keys.LookupSCRAM(ctx, login, x.env.Conn.Listener)
	if errors.As(err, &x.refusal) {
		return keys, fmt.Errorf("%w: %w", scram.ErrUnknownUser, err)
	}
	if err != nil {
		return keys, err
	}
	x.user, x.cred = user, c
	return keys, nil
}

// Next runs auth/scram's steps; its server-final message goes to the
// client as a challenge, whose empty response ends the exchange.
func (x *scramExchange) Next(ctx context.Context, response []byte) ([]byte, bool, error) {
	switch {
	case x.over:
		return nil, false, errAfterEnd
	case x.proved:
		x.over = true
		if len(response) != 0 {
			return nil, false, fmt.Errorf("%w: a response to the server-final message", ErrMalformed)
		}
		x.v.keys.RecordUse(x.cred.ID, x.env.Conn.ClientAddr)
		x.result = Result{Mechanism: x.name, User: x.user, Verified: true, Credential: x.cred}
		return nil, true, nil
	}
	out, done, err := x.x.Step(ctx, response)
	switch {
	case err != nil:
		x.over = true
		return nil, false, x.failed(err)
	case done:
		x.proved = true
	}
	return out, false, nil
}

// failed turns an error of auth/scram's into one Next returns.
func (x *scramExchange) failed(err error) error {
	login := x.x.Identity().Login
	user := scramUser(login)
	refuse := func(reason string, c Credential) error {
		return &Refusal{Reason: reason, User: user, Credential: c, Err: err}
	}
	switch {
	case scram.Reason(err) == "":
		return err // Admit's, unchanged
	case errors.Is(err, scram.ErrUnknownUser) && x.refusal != nil:
		// The store's own word when it has one (app_password_revoked,
		// app_password_expired, ...), naming the credential.
		return refuse(cmp.Or(x.refusal.Reason, scram.ReasonUnknownUser), x.refusal.Credential)
	case errors.Is(err, scram.ErrUnknownUser):
		return refuse(scram.ReasonUnknownUser, Credential{})
	case errors.Is(err, scram.ErrBadProof):
		return refuse(scram.ReasonBadProof, x.cred)
	case errors.Is(err, scram.ErrBindingMismatch):
		return refuse(scram.ReasonChannelBindingMismatch, x.cred)
	case errors.Is(err, scram.ErrDowngrade):
		return refuse(scram.ReasonChannelBindingDowngrade, x.cred)
	case errors.Is(err, scram.ErrUnavailable):
		return &Unavailable{Reason: scram.ReasonUnavailable, Err: err}
	case errors.Is(err, scram.ErrAuthzidNotAllowed):
		return fmt.Errorf("%w: %w", ErrAuthzidNotAllowed, err)
	}
	return fmt.Errorf("%w: %w", ErrMalformed, err)
}

// Result says who proved itself, once Next said done.
func (x *scramExchange) Result() Result { return x.result }
