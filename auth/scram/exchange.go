package scram

import (
	"context"
	"errors"
	"fmt"

	"github.com/xdg-go/scram"
)

// Mechanism is a SASL mechanism name, upper case as on the wire.
type Mechanism string

// The mechanisms an Exchange speaks (RFC 7677; the -PLUS variant binds the
// exchange to the TLS connection, RFC 5802 section 6).
const (
	SHA256     Mechanism = "SCRAM-SHA-256"
	SHA256Plus Mechanism = "SCRAM-SHA-256-PLUS"
)

// Identity is what the client-first message says about the client.
type Identity struct {
	// Login is the authcid, decoded (=2C, =3D) and SASLprep'd (RFC 5802
	// section 5.1): the name the Lookup is given, e.g. "alice#k3f9x2ab".
	Login string
	// Authzid is the authorization identity as sent, decoded; "" when
	// none. When set it equals Login (once prepared): anything else is
	// refused.
	Authzid string
	// Binding is the channel binding the client chose; "" when it did not
	// bind.
	Binding BindingType
}

// Admit is called with the client's identity once its first message is
// parsed and checked, before the credential lookup: the place to spend
// the policy budget of the user the login name belongs to. A non-nil error
// ends the exchange; Step returns it unchanged.
type Admit func(ctx context.Context, id Identity) error

// ExchangeOptions says what was offered to the client. The zero value is
// a listener that offers SCRAM-SHA-256-PLUS wherever the connection can
// bind, and admits every identity.
type ExchangeOptions struct {
	// NoPlus says SCRAM-SHA-256-PLUS was not advertised to this client,
	// though the connection could bind (the listener's mechanisms leave it
	// out): a client that says it could bind ("y") is then no downgrade,
	// and a SCRAM-SHA-256-PLUS exchange is refused. False: it was
	// advertised whenever ConnState.OffersPlus.
	NoPlus bool
	// Admit is called before the lookup. Nil: every identity is admitted.
	Admit Admit
	// Lookup, when set, finds this exchange's keys in place of the
	// Server's: a closure over what the exchange knows and the Server does
	// not (the listener, where to put the credential found). Nil: the
	// Server's Lookup.
	Lookup Lookup
}

// Exchange is the server side of one SCRAM-SHA-256 or SCRAM-SHA-256-PLUS
// authentication. It is not safe for concurrent use, and not reusable.
type Exchange struct {
	srv  *Server
	mech Mechanism
	// offered are the connection's binding types and their data, best
	// first; nil on a connection that cannot bind or when -PLUS was not
	// advertised.
	offered []binding
	plus    bool // SCRAM-SHA-256-PLUS was advertised on this connection
	admit   Admit
	lookup  Lookup

	state     exchangeState
	id        Identity
	gs2Header []byte
	cbData    []byte                    // the binding data the client must send; nil when it does not bind
	conv      *scram.ServerConversation // xdg-go's, from the server-first message on
	unknown   error                     // non-nil: the keys are made up; the Lookup's error
}

type exchangeState uint8

const (
	awaitFirst exchangeState = iota
	awaitFirstAfterEmptyChallenge
	awaitFinal
	finished
)

// ErrFinished is returned by Step once the exchange has ended.
var ErrFinished = errors.New("scram: exchange already finished")

// NewExchange starts the server side of mechanism mech, which the client
// named in its AUTHENTICATE, on connection conn. It fails with
// ErrNotOffered for SCRAM-SHA-256-PLUS on a connection that offers no
// channel binding or when opts.NoPlus is set.
func (s *Server) NewExchange(mech Mechanism, conn ConnState, opts ExchangeOptions) (*Exchange, error) {
	x := &Exchange{srv: s, mech: mech, admit: opts.Admit, lookup: opts.Lookup}
	if x.lookup == nil {
		x.lookup = s.lookup
	}
	if !opts.NoPlus {
		x.offered = conn.bindings()
	}
	x.plus = len(x.offered) > 0
	switch mech {
	case SHA256:
	case SHA256Plus:
		if !x.plus {
			return nil, ErrNotOffered
		}
	default:
		return nil, fmt.Errorf("scram: NewExchange: unknown mechanism %q", mech)
	}
	return x, nil
}

// Identity returns what the client-first message said, once Step parsed
// it (also when the exchange was refused after that, for the audit);
// the zero Identity before.
func (x *Exchange) Identity() Identity { return x.id }

// Step takes the client's next message and returns the server's answer.
//
//   - The client-first message (or an empty one when the client sent no
//     initial response: then out is an empty challenge): out is the
//     server-first message, done is false.
//   - The client-final message: on success out is the server-final
//     message ("v=..."), which the client must get (in IMAP, as a "+"
//     challenge, whose empty response precedes the tagged OK), and done
//     is true with a nil error.
//
// On any failure out is nil, done is true and err wraps one of this
// package's sentinels (Reason gives the audit word), or is Admit's error.
// A wrong password and an unknown login name fail alike on the wire, at
// the client-final message (ErrBadProof, ErrUnknownUser).
func (x *Exchange) Step(ctx context.Context, msg []byte) (out []byte, done bool, err error) {
	switch x.state {
	case awaitFirst, awaitFirstAfterEmptyChallenge:
		if len(msg) == 0 && x.state == awaitFirst {
			x.state = awaitFirstAfterEmptyChallenge
			return []byte{}, false, nil
		}
		x.state = finished
		if out, err = x.first(ctx, msg); err != nil {
			return nil, true, err
		}
		x.state = awaitFinal
		return out, false, nil
	case awaitFinal:
		x.state = finished
		if out, err = x.final(msg); err != nil {
			return nil, true, err
		}
		return out, true, nil
	}
	return nil, true, ErrFinished
}

// first handles the client-first message: parse, channel-binding rules,
// authzid, Admit, lookup; then xdg-go writes the server-first message.
func (x *Exchange) first(ctx context.Context, msg []byte) ([]byte, error) {
	m, err := parseClientFirst(msg)
	if err != nil {
		return nil, err
	}
	login, err := x.srv.prep.Prepare(m.user)
	if err != nil || login == "" || len(login) > MaxLoginLength {
		return nil, malformed("username fails SASLprep or is too long")
	}
	x.id = Identity{Login: login, Authzid: m.authzid, Binding: m.binding}

	// RFC 5802 section 6: which flag goes with which mechanism, and the
	// downgrade check.
	switch {
	case x.mech == SHA256Plus && m.flag != 'p':
		return nil, malformed("SCRAM-SHA-256-PLUS without channel binding")
	case x.mech == SHA256 && m.flag == 'p':
		return nil, malformed("channel binding with SCRAM-SHA-256")
	case m.flag == 'y' && x.plus:
		return nil, ErrDowngrade
	case m.flag == 'p':
		for _, b := range x.offered {
			if b.typ == m.binding {
				x.cbData = b.data
			}
		}
		if x.cbData == nil {
			return nil, fmt.Errorf("%w: channel binding type not offered on this connection", ErrBindingMismatch)
		}
	}
	if m.authzid != "" {
		if a, err := x.srv.prep.Prepare(m.authzid); err != nil || a != login {
			return nil, ErrAuthzidNotAllowed
		}
	}
	x.gs2Header = []byte(m.gs2Header)

	if x.admit != nil {
		if err := x.admit(ctx, x.id); err != nil {
			return nil, err
		}
	}
	if x.lookup == nil {
		return nil, fmt.Errorf("%w: no Lookup", ErrUnavailable)
	}
	creds, err := x.lookup(ctx, login)
	switch {
	case errors.Is(err, ErrUnknownUser):
		x.unknown, creds = err, x.srv.fake(login)
	case err != nil:
		return nil, fmt.Errorf("%w: lookup: %w", ErrUnavailable, err)
	default:
		if err := x.srv.usable(creds); err != nil {
			return nil, err
		}
	}

	server, err := scram.SHA256.NewServer(func(string) (StoredCredentials, error) { return creds, nil })
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	if x.srv.nonce != nil {
		server.WithNonceGenerator(x.srv.nonce)
	}
	switch {
	case m.flag == 'p':
		x.conv = server.NewConversationWithChannelBindingRequired(scram.ChannelBinding{Type: scram.ChannelBindingType(m.binding), Data: x.cbData})
	case x.plus:
		// xdg-go refuses "y" here too (checked above already).
		b := x.offered[0]
		x.conv = server.NewConversationWithChannelBinding(scram.ChannelBinding{Type: scram.ChannelBindingType(b.typ), Data: b.data})
	default:
		x.conv = server.NewConversation()
	}
	out, err := x.conv.Step(string(msg))
	if err != nil {
		// This parser accepted what xdg-go refused: never seen
		// (FuzzParseClientFirst), but refused all the same.
		return nil, malformed("client-first message")
	}
	return []byte(out), nil
}

// final handles the client-final message: the channel binding is checked
// here, the nonce and proof by xdg-go.
func (x *Exchange) final(msg []byte) ([]byte, error) {
	m, err := parseClientFinal(msg)
	if err != nil {
		return nil, err
	}
	if !equalBinding(m.cbind, x.gs2Header, x.cbData) {
		return nil, ErrBindingMismatch
	}
	out, err := x.conv.Step(string(msg))
	switch {
	case err == nil && x.conv.Valid() && x.unknown == nil:
		return []byte(out), nil
	case err == nil && x.conv.Valid(), out == scram.ErrInvalidProof && x.unknown != nil:
		// (A proof that matched made-up keys cannot happen without the
		// server's key; refused all the same.)
		return nil, x.unknown
	case out == scram.ErrInvalidProof:
		return nil, ErrBadProof
	case out == scram.ErrChannelBindingsDontMatch:
		return nil, ErrBindingMismatch
	}
	// xdg-go's error text may hold binding data: only the rule is kept.
	return nil, malformed("client-final message (nonce)")
}
