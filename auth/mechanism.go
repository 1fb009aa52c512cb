package auth

import (
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
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
	// Listener is the name of the listener the client connected to, as in
	// audit events.
	Listener string
}

// Exchange is the server side of one SASL exchange (RFC 4422 section 3):
// the caller carries the client's decoded responses and the challenges, and
// reads the Result once the exchange is done.
type Exchange interface {
	// Next takes the client's response: nil when the client sent no
	// initial response, empty when it sent an empty one. It returns the
	// challenge to send, or done once the exchange has succeeded. An error
	// ends the exchange; it wraps ErrMalformed, ErrEmptyCredentials or
	// ErrAuthzidNotAllowed for something no conforming client sends.
	Next(response []byte) (challenge []byte, done bool, err error)
	// Result says who the client is; it is valid once Next said done.
	Result() Result
}

// Result is who logged in and how: what a finished exchange, or the IMAP
// LOGIN command, which passes the same checks, established.
type Result struct {
	// Mechanism is the SASL mechanism, or "LOGIN" for the IMAP command.
	Mechanism string
	// User is the user to log in as; CheckUsername accepts it.
	User string
	// Password is what a pass-through mechanism took from the client for
	// the upstream login to present: the upstream judges it. It is the
	// zero Secret when the mechanism checked the client itself.
	Password Secret
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
	// runsOn reports whether the mechanism can run on a connection: one
	// that binds to the TLS channel needs TLS, EXTERNAL a client
	// certificate. Nil means on every connection.
	runsOn func(ConnState) bool
	// start begins one exchange on the connection.
	start func(ConnState) Exchange
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
// build implements and that can run on the connection, upper case, in
// configured's order.
func Offered(configured []string, cs ConnState) []string {
	if len(configured) == 0 {
		configured = Default()
	}
	var offered []string
	for _, name := range configured {
		name = strings.ToUpper(name)
		m, ok := lookup(name)
		if ok && (m.runsOn == nil || m.runsOn(cs)) && !slices.Contains(offered, name) {
			offered = append(offered, name)
		}
	}
	return offered
}

// Start begins the server side of mechanism name (any case) on a
// connection whose facts are cs. The mechanism must be one
// Offered(configured, cs) lists, or Start returns ErrUnsupportedMechanism:
// this is the one place a mechanism is checked.
func Start(name string, configured []string, cs ConnState) (Exchange, error) {
	name = strings.ToUpper(name)
	if !slices.Contains(Offered(configured, cs), name) {
		return nil, fmt.Errorf("%w: %q", ErrUnsupportedMechanism, name)
	}
	m, _ := lookup(name)
	return m.start(cs), nil
}
