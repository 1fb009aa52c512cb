package auth

import (
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Errors a mechanism returns for a malformed exchange. They mean the client
// sent something a conforming client never sends; the caller answers BAD or
// NO and logs the reason, never the payload.
var (
	ErrMalformed         = errors.New("auth: malformed response")
	ErrAuthzidNotAllowed = errors.New("auth: authorization identity differs from the user name")
	ErrEmptyCredentials  = errors.New("auth: empty user name or password")
	// ErrMalformedUser is a user name no mailbox has: over
	// MaxUsernameLength bytes, invalid UTF-8, or with a character
	// AllowedInUsername refuses. It wraps ErrMalformed.
	ErrMalformedUser = fmt.Errorf("%w: user name with a control character, invalid UTF-8 or too long", ErrMalformed)
)

// Limits on what a client may claim.
const (
	// MaxUsernameLength caps a user name: longer ones are refused before any
	// check, so a log line never carries kilobytes of attacker input.
	MaxUsernameLength = 256
	// MaxPasswordLength caps a password.
	MaxPasswordLength = 1024
)

// Credentials are a user name and password a client claimed, through
// PLAIN or the IMAP LOGIN command, once CheckCredentials accepted them.
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

// PassThrough returns the Result of credentials the upstream judges: the
// proxy logs in with them on the client's behalf.
func (c Credentials) PassThrough() Result {
	return Result{Mechanism: c.Mechanism, User: c.Username, Password: NewSecret(c.Password)}
}

// CheckCredentials validates what a client claims, whatever carried it:
// the fields of a PLAIN response (RFC 4616) or the arguments of the IMAP
// LOGIN command, which must pass exactly the same checks. identity is the
// authorization identity ("" when the mechanism has none). It returns the
// credentials to verify, or:
//   - ErrEmptyCredentials for an empty user name or password;
//   - ErrMalformedUser for a user name (or identity) that CheckUsername
//     refuses;
//   - ErrMalformed for a password over MaxPasswordLength bytes, not UTF-8,
//     or holding a NUL (PLAIN cannot carry one, and an upstream that reads
//     C strings would cut the password there);
//   - ErrAuthzidNotAllowed for an identity other than the user name.
//
// A caller checks credentials before anything else sees them: a refused
// user name spends no rate-limit budget and never reaches the upstream.
func CheckCredentials(mechanism, identity, username, password string) (Credentials, error) {
	if username == "" || password == "" {
		return Credentials{}, ErrEmptyCredentials
	}
	if err := CheckUsername(username); err != nil {
		return Credentials{}, err
	}
	if identity != "" {
		if err := CheckUsername(identity); err != nil {
			return Credentials{}, err
		}
	}
	if len(password) > MaxPasswordLength || !utf8.ValidString(password) || strings.IndexByte(password, 0) >= 0 {
		return Credentials{}, ErrMalformed
	}
	// The proxy logs in as the user itself; acting for someone else is an
	// upstream admin feature it must not let the internet reach.
	if identity != "" && identity != username {
		return Credentials{}, ErrAuthzidNotAllowed
	}
	return Credentials{Mechanism: mechanism, Username: username, Password: password}, nil
}

// CheckUsername returns nil for a user name that may be looked up, rate
// limited and sent upstream: 1 to MaxUsernameLength bytes of UTF-8, every
// character allowed by AllowedInUsername. Otherwise it returns
// ErrEmptyCredentials (empty) or ErrMalformedUser.
//
// A name with a NUL or another control character is not a longer spelling
// of a user: an upstream that reads C strings, or trims, may see "user1" in
// "user1\x00guess", while every such spelling would be a rate-limit key of
// its own.
func CheckUsername(name string) error {
	if name == "" {
		return ErrEmptyCredentials
	}
	if len(name) > MaxUsernameLength || !utf8.ValidString(name) {
		return ErrMalformedUser
	}
	for _, r := range name {
		if !AllowedInUsername(r) {
			return ErrMalformedUser
		}
	}
	return nil
}

// AllowedInUsername reports whether r may appear in a user name. Refused
// are the characters that no mail system's account names use and that
// change how a name reads in a log or what an upstream makes of it:
//   - controls (Unicode Cc): C0 including NUL, TAB, CR and LF; DEL; C1
//     (U+0080 to U+009F, where U+009B is a terminal's CSI);
//   - the line and paragraph separators U+2028 and U+2029 (Zl, Zp);
//   - format characters (Cf), which are invisible or reorder text: bidi
//     controls such as U+202E, zero-width spaces, U+FEFF, the soft
//     hyphen; except U+200C and U+200D (ZERO WIDTH NON-JOINER and JOINER),
//     which some scripts need within words (IDNA2008 allows them in
//     context, RFC 5892 appendix A).
//
// Everything else is allowed, spaces and any script included: whether a
// name exists is the upstream's to say.
func AllowedInUsername(r rune) bool {
	switch {
	case r == '\u200c' || r == '\u200d':
		return true
	case unicode.In(r, unicode.Cc, unicode.Cf, unicode.Zl, unicode.Zp):
		return false
	}
	return true
}
