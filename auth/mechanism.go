package auth

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
)

// ErrUnsupportedMechanism is Start's answer for a mechanism the connection
// does not offer.
var ErrUnsupportedMechanism = errors.New("auth: unsupported mechanism")

// ConnState is what a mechanism may know of the connection it runs on.
type ConnState struct {
	// TLS is the state of the client's TLS connection; nil before TLS.
	// Channel binding (RFC 5929, RFC 9266) and a client certificate are
	// read from it.
	TLS *tls.ConnectionState
	// Certificate is the leaf certificate the server presented in this
	// connection's handshake (crypto/tls reports only the peer's), for
	// tls-server-end-point channel binding (RFC 5929 section 4). Nil when
	// unknown, and after a resumed handshake, which serves none.
	Certificate *x509.Certificate
	// Listener is the name of the listener the client connected to, as in
	// audit events.
	Listener string
	// ClientAddr is the client's address (after a PROXY header), recorded
	// as a credential's last use. The zero Addr when unknown.
	ClientAddr netip.Addr
	// CertCache is where EXTERNAL keeps what the connection's client
	// certificate maps to, from the CAPABILITY that offered it to the
	// AUTHENTICATE that uses it: one per connection. Nil: it maps the
	// certificate anew each time it is asked.
	CertCache *CertCache
}

// Env is what one connection gives the mechanisms: its facts, the
// verifiers of the credentials imapgate judges itself, and the policy
// check.
type Env struct {
	Conn ConnState
	// Verifiers check what the client proves. Nil: only pass-through
	// mechanisms (PLAIN) can run.
	Verifiers *Verifiers
	// Admit is the policy check. A mechanism that judges the client
	// itself calls it once it knows which mailbox the client claims
	// (user; "" when the message names none, as an OAUTHBEARER message
	// without a=), before it looks at any credential, so that every
	// mechanism's guesses spend the same budgets. A non-nil error ends
	// the exchange: Next returns it unchanged. Nil: everything is
	// admitted.
	Admit func(ctx context.Context, user string) error

	// offered is what the connection offers (Offered), set by Start for
	// the exchange: SCRAM-SHA-256's downgrade check depends on whether
	// SCRAM-SHA-256-PLUS was offered beside it.
	offered []string
}

// admit calls Env.Admit if there is one.
func (e *Env) admit(ctx context.Context, user string) error {
	if e.Admit == nil {
		return nil
	}
	return e.Admit(ctx, user)
}

// Exchange is the server side of one SASL exchange (RFC 4422 section 3):
// the caller carries the client's decoded responses and the challenges, and
// reads the Result once the exchange is done.
type Exchange interface {
	// Next takes the client's response: nil when the client sent no
	// initial response, empty when it sent an empty one. It returns the
	// challenge to send, or done once the exchange has succeeded. An error
	// ends the exchange. It is one of:
	//   - Env.Admit's error, unchanged;
	//   - a *Refusal: the client's credential was judged and refused
	//     (counted like a wrong password);
	//   - an error wrapping ErrUnavailable: a verifier failed, not the
	//     client (answered NO [UNAVAILABLE], not counted);
	//   - an error wrapping ErrMalformed, ErrEmptyCredentials or
	//     ErrAuthzidNotAllowed: something no conforming client sends.
	Next(ctx context.Context, response []byte) (challenge []byte, done bool, err error)
	// Result says who the client is; it is valid once Next said done.
	Result() Result
}

// Secret is a password or token on its way to the upstream. It hides
// itself: fmt (every verb), log/slog and encoding/json never see it; Reveal
// returns it to the one place that sends it.
type Secret struct{ value string }

// NewSecret wraps s.
func NewSecret(s string) Secret { return Secret{s} }

// Reveal returns the secret itself.
func (s Secret) Reveal() string { return s.value }

const hidden = "[secret]"

// String hides the secret.
func (Secret) String() string { return hidden }

// Format hides the secret from every fmt verb, %#v and %x included.
func (Secret) Format(f fmt.State, _ rune) { io.WriteString(f, hidden) }

// LogValue hides the secret from log/slog.
func (Secret) LogValue() slog.Value { return slog.StringValue(hidden) }

// mechanism is one SASL mechanism this package implements. Each lives in a
// file of its own (plain.go) and is listed in implemented (names.go).
type mechanism struct {
	name string
	// offered reports whether the mechanism can run in env: one that binds
	// to the TLS channel needs TLS, one that checks tokens a token
	// verifier, EXTERNAL a client certificate that maps to a user. Nil
	// means everywhere.
	offered func(ctx context.Context, env *Env) bool
	// start begins one exchange in env.
	start func(env *Env) Exchange
}

func lookup(name string) (mechanism, bool) {
	for _, m := range implemented {
		if m.name == name {
			return m, true
		}
	}
	return mechanism{}, false
}

// Offered returns the mechanisms a connection offers (its AUTH=
// capabilities): those of configured (Default when it is empty) that this
// build implements and that can run in env, upper case, in configured's
// order.
func Offered(ctx context.Context, configured []string, env *Env) []string {
	if len(configured) == 0 {
		configured = Default()
	}
	var offered []string
	for _, name := range configured {
		name = strings.ToUpper(name)
		m, ok := lookup(name)
		if ok && !slices.Contains(offered, name) && (m.offered == nil || m.offered(ctx, env)) {
			offered = append(offered, name)
		}
	}
	return offered
}

// Start begins the server side of mechanism name (any case) in env. The
// mechanism must be one Offered(ctx, configured, env) lists, or Start
// returns ErrUnsupportedMechanism: this is the one place a mechanism is
// checked.
func Start(ctx context.Context, name string, configured []string, env *Env) (Exchange, error) {
	name = strings.ToUpper(name)
	offered := Offered(ctx, configured, env)
	if !slices.Contains(offered, name) {
		return nil, fmt.Errorf("%w: %q", ErrUnsupportedMechanism, name)
	}
	m, _ := lookup(name)
	e := *env
	e.offered = offered
	return m.start(&e), nil
}
