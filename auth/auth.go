package auth

import (
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"unicode/utf8"

	"github.com/emersion/go-sasl"
)

// Mechanism names.
const (
	Plain = sasl.Plain // "PLAIN", RFC 4616
)

// Errors a mechanism returns for a malformed exchange. They mean the client
// sent something a conforming client never sends; the caller answers BAD or
// NO and logs the reason, never the payload.
var (
	ErrUnsupportedMechanism = errors.New("auth: unsupported mechanism")
	ErrMalformed            = errors.New("auth: malformed response")
	ErrAuthzidNotAllowed    = errors.New("auth: authorization identity differs from the user name")
	ErrEmptyCredentials     = errors.New("auth: empty user name or password")
)

// Limits on what a client may claim.
const (
	// MaxUsernameLength caps a user name: longer ones are refused before any
	// check, so a log line never carries kilobytes of attacker input.
	MaxUsernameLength = 256
	// MaxPasswordLength caps a password.
	MaxPasswordLength = 1024
)

// Credentials are what a client proved or claimed through a mechanism.
type Credentials struct {
	Mechanism string // e.g. "PLAIN"
	Username  string // the user to log in as
	Password  string // secret: never log it
}

// String returns a form safe for logs: the password is never included.
func (c Credentials) String() string {
	return fmt.Sprintf("%s user=%q", c.Mechanism, c.Username)
}

// GoString hides the password from %#v.
func (c Credentials) GoString() string { return "auth.Credentials{" + c.String() + "}" }

// LogValue hides the password from log/slog.
func (c Credentials) LogValue() slog.Value { return slog.StringValue(c.String()) }

// Verifier decides whether credentials are good. Its error is returned
// unchanged from Server.Next, so callers can tell a bad password from an
// unreachable upstream with errors.Is.
type Verifier func(Credentials) error

// Server is one server side of a SASL exchange (go-sasl's interface).
type Server = sasl.Server

// Supported reports whether name is a mechanism this package implements.
func Supported(name string) bool {
	switch strings.ToUpper(name) {
	case Plain:
		return true
	}
	return false
}

// NewServer starts the server side of mechanism name. verify is called once
// the client's credentials are complete.
func NewServer(name string, verify Verifier) (Server, error) {
	switch strings.ToUpper(name) {
	case Plain:
		return sasl.NewPlainServer(func(identity, username, password string) error {
			c, err := checkPlain(identity, username, password)
			if err != nil {
				return err
			}
			return verify(c)
		}), nil
	}
	return nil, fmt.Errorf("%w: %q", ErrUnsupportedMechanism, name)
}

// checkPlain validates the fields of a PLAIN response (RFC 4616).
func checkPlain(identity, username, password string) (Credentials, error) {
	if username == "" || password == "" {
		return Credentials{}, ErrEmptyCredentials
	}
	if len(username) > MaxUsernameLength || len(password) > MaxPasswordLength ||
		!utf8.ValidString(username) || !utf8.ValidString(password) {
		return Credentials{}, ErrMalformed
	}
	// The proxy logs in as the user itself; acting for someone else is an
	// upstream admin feature it must not let the internet reach.
	if identity != "" && identity != username {
		return Credentials{}, ErrAuthzidNotAllowed
	}
	return Credentials{Mechanism: Plain, Username: username, Password: password}, nil
}
