package credstore

import (
	"crypto/rand"
	"fmt"
	"log/slog"
	"strings"
	"unicode"

	"github.com/imapgate/imapgate/auth"
)

// The app password format. See the package documentation for why.
const (
	// Alphabet is the 32 symbols app passwords and credential IDs are
	// written in: the digits and lower-case letters without 0, 1, l and o,
	// the ones a person confuses with each other when reading them off a
	// screen. Each symbol carries 5 bits.
	Alphabet = "23456789abcdefghijkmnpqrstuvwxyz"

	// PasswordSymbols is the length of an app password in symbols: 28
	// symbols of 5 bits are 140 random bits.
	PasswordSymbols = 28

	// PasswordGroup is how many symbols are printed between dashes:
	// "abcd-efgh-...", 7 groups.
	PasswordGroup = 4

	// IDSymbols is the length of a credential ID: 8 symbols, 40 random
	// bits, drawn on their own (an ID tells nothing about the secret).
	IDSymbols = 8

	// LoginSeparator joins a user and an app password's ID into the
	// password's own SCRAM login name: "alice#k3f9x2ab". See the package
	// documentation for why '#'.
	LoginSeparator = auth.SCRAMLoginSeparator
)

// maxTyped bounds what NormalizeAppPassword reads: a typed password with
// separators is 34 bytes; anything much longer is not one.
const maxTyped = 256

// Secret is an app password as shown to its owner, once: 28 symbols of
// Alphabet in groups of 4 joined by '-'. Printing it with fmt, %v or
// log/slog gives "[redacted]"; Reveal returns the password itself, for the
// one place that shows it to the person who asked for it.
type Secret struct{ s string }

// Reveal returns the password. Never log it.
func (s Secret) Reveal() string { return s.s }

// String returns "[redacted]": a Secret never prints itself.
func (Secret) String() string { return "[redacted]" }

// GoString returns "[redacted]" for %#v.
func (Secret) GoString() string { return "[redacted]" }

// Format prints "[redacted]" for every verb, %x and %q included.
func (Secret) Format(f fmt.State, _ rune) { _, _ = f.Write([]byte("[redacted]")) }

// LogValue keeps the password out of log/slog.
func (Secret) LogValue() slog.Value { return slog.StringValue("[redacted]") }

// MarshalText keeps the password out of encoding/json and friends.
func (Secret) MarshalText() ([]byte, error) { return []byte("[redacted]"), nil }

// newSecret draws a fresh app password from crypto/rand. It returns the
// canonical form (28 symbols, what is hashed) and the Secret to show.
func newSecret() (canonical string, s Secret) {
	canonical = randomSymbols(PasswordSymbols)
	return canonical, Secret{formatSecret(canonical)}
}

// randomSymbols returns n symbols of Alphabet, 5 uniform bits each: a
// random byte's low 5 bits are uniform because 32 divides 256.
func randomSymbols(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b) // never fails (crypto/rand.Read documents it)
	for i := range b {
		b[i] = Alphabet[b[i]&31]
	}
	return string(b)
}

// formatSecret groups a canonical password for display: "abcd-efgh-...".
func formatSecret(canonical string) string {
	var b strings.Builder
	for i := 0; i < len(canonical); i += PasswordGroup {
		if i > 0 {
			b.WriteByte('-')
		}
		b.WriteString(canonical[i:min(i+PasswordGroup, len(canonical))])
	}
	return b.String()
}

// NormalizeAppPassword turns what a person typed into the canonical form
// that is hashed, and reports whether it is an app password's form at all.
// It forgives what people do when typing a password off a screen: upper
// case (the alphabet has no upper-case symbols, so 'A' can only mean 'a'),
// and separators anywhere or nowhere: ASCII '-' and space, and any Unicode
// dash or space (phones turn "-" into "–" and insert no-break spaces). It
// does not guess at symbols the alphabet lacks (0, 1, l, o): a password
// with one was mistyped, and fails like any wrong password.
//
// The result is exactly PasswordSymbols symbols of Alphabet, or ok is false.
// A real password that happens to have this form is possible but unlikely
// (28 characters from 32 with no other kind); the caller decides what an
// unknown app password falls back to.
func NormalizeAppPassword(typed string) (canonical string, ok bool) {
	if len(typed) > maxTyped {
		return "", false
	}
	b := make([]byte, 0, PasswordSymbols)
	for _, r := range typed {
		switch {
		case r == '-' || r == ' ' || unicode.Is(unicode.Pd, r) || unicode.IsSpace(r):
			continue
		case 'A' <= r && r <= 'Z':
			r += 'a' - 'A'
		}
		if r >= 0x80 || strings.IndexByte(Alphabet, byte(r)) < 0 || len(b) == PasswordSymbols {
			return "", false
		}
		b = append(b, byte(r))
	}
	if len(b) != PasswordSymbols {
		return "", false
	}
	return string(b), true
}

// newID draws a credential ID.
func newID() string { return randomSymbols(IDSymbols) }

// validID reports whether id has the form newID gives.
func validID(id string) bool {
	if len(id) != IDSymbols {
		return false
	}
	for i := 0; i < len(id); i++ {
		if strings.IndexByte(Alphabet, id[i]) < 0 {
			return false
		}
	}
	return true
}

// SCRAMLogin returns the SCRAM login name of the app password id of user:
// user, LoginSeparator, id.
func SCRAMLogin(user, id string) string { return user + LoginSeparator + id }

// SplitSCRAMLogin splits a SCRAM login name at its last LoginSeparator into
// the user and the app password's ID. ok is false when there is no
// separator, the user part is empty or the ID part is not an ID. A user
// name that itself holds '#' still splits right: IDs never contain one.
func SplitSCRAMLogin(login string) (user, id string, ok bool) {
	i := strings.LastIndex(login, LoginSeparator)
	if i <= 0 {
		return "", "", false
	}
	user, id = login[:i], login[i+len(LoginSeparator):]
	if !validID(id) {
		return "", "", false
	}
	return user, id, true
}
