package scram

// The client's messages are parsed here, before xdg-go/scram sees them,
// because the caller needs the login name and the channel-binding choice
// before the credential lookup (xdg-go parses and looks up in one step),
// and because this parser enforces RFC 5802 section 7's grammar, which
// xdg-go's does not: a printable nonce, UTF-8 names without NUL, a
// cb-name of letters, digits, '.' and '-', base64 that decodes, a proof of
// the hash's size, well-formed extensions. xdg-go parses the messages
// again; whatever this parser accepts, it accepts alike
// (FuzzParseClientFirst checks that).

import (
	"crypto/subtle"
	"encoding/base64"
	"fmt"
	"strings"
	"unicode/utf8"
)

// Limits on what a client may send.
const (
	// MaxMessageLength caps each client message: a client-first message
	// is a GS2 header, a name and a nonce, a client-final one a binding
	// (a header and at most 64 bytes of hash), a nonce and a proof, well
	// under 1 KiB with real names. Longer ones are refused before they are
	// looked at.
	MaxMessageLength = 4096
	// MaxLoginLength caps the login name and authzid after decoding: a
	// user name as long as PLAIN takes (256 bytes) and an app password's
	// "#id" (auth/credstore's SCRAMLogin: '#' and 8 symbols), so that
	// every login name the store hands out fits.
	MaxLoginLength = 256 + 1 + 8
	// proofLength is SCRAM-SHA-256's proof: one SHA-256 (RFC 7677).
	proofLength = 32
)

// clientFirst is a parsed client-first-message (RFC 5802 section 7).
type clientFirst struct {
	flag      byte        // 'n', 'y' or 'p'
	binding   BindingType // with 'p': the cb-name as sent, offered or not
	authzid   string      // decoded; "" when absent
	user      string      // decoded, not yet SASLprep'd
	gs2Header string      // up to and including the second ','
}

// clientFinal is a parsed client-final-message.
type clientFinal struct {
	cbind []byte // c=, decoded: the GS2 header and the binding data
}

// malformed returns ErrMalformed with the rule that was broken. what must
// never hold client data: it names the field only.
func malformed(what string) error { return fmt.Errorf("%w: %s", ErrMalformed, what) }

// parseClientFirst parses
//
//	gs2-header [reserved-mext ","] username "," nonce ["," extensions]
//
// and refuses the reserved m= extension (RFC 5802 section 5.1: a server
// that does not know it must fail).
func parseClientFirst(msg []byte) (clientFirst, error) {
	var m clientFirst
	if len(msg) > MaxMessageLength {
		return m, malformed("client-first message too long")
	}
	if !utf8.Valid(msg) {
		return m, malformed("client-first message is not UTF-8")
	}
	s := string(msg)
	fields := strings.Split(s, ",")
	if len(fields) < 4 {
		return m, malformed("client-first message has too few fields")
	}
	switch f := fields[0]; {
	case f == "n" || f == "y":
		m.flag = f[0]
	case strings.HasPrefix(f, "p="):
		name := f[2:]
		if !validCBName(name) {
			return m, malformed("channel binding name")
		}
		m.flag, m.binding = 'p', BindingType(name)
	default:
		return m, malformed("GS2 channel binding flag")
	}
	if a := fields[1]; a != "" {
		v, ok := strings.CutPrefix(a, "a=")
		if !ok {
			return m, malformed("GS2 authzid")
		}
		if m.authzid, ok = decodeSASLName(v); !ok {
			return m, malformed("authzid encoding")
		}
	}
	m.gs2Header = fields[0] + "," + fields[1] + ","
	if strings.HasPrefix(fields[2], "m=") {
		return m, malformed("mandatory extension m= not supported")
	}
	u, ok := strings.CutPrefix(fields[2], "n=")
	if !ok {
		return m, malformed("username field")
	}
	if m.user, ok = decodeSASLName(u); !ok {
		return m, malformed("username encoding")
	}
	nonce, ok := strings.CutPrefix(fields[3], "r=")
	if !ok || !printable(nonce) {
		return m, malformed("client nonce")
	}
	for _, ext := range fields[4:] {
		if !validExtension(ext) {
			return m, malformed("extension")
		}
	}
	return m, nil
}

// parseClientFinal parses
//
//	channel-binding "," nonce ["," extensions] "," proof
//
// The nonce is checked against the server's by xdg-go.
func parseClientFinal(msg []byte) (clientFinal, error) {
	var m clientFinal
	if len(msg) > MaxMessageLength {
		return m, malformed("client-final message too long")
	}
	if !utf8.Valid(msg) {
		return m, malformed("client-final message is not UTF-8")
	}
	fields := strings.Split(string(msg), ",")
	if len(fields) < 3 {
		return m, malformed("client-final message has too few fields")
	}
	c, ok := strings.CutPrefix(fields[0], "c=")
	if !ok {
		return m, malformed("channel binding field")
	}
	cbind, err := base64.StdEncoding.Strict().DecodeString(c)
	if err != nil || len(cbind) == 0 {
		return m, malformed("channel binding base64")
	}
	if nonce, ok := strings.CutPrefix(fields[1], "r="); !ok || !printable(nonce) {
		return m, malformed("nonce")
	}
	for _, ext := range fields[2 : len(fields)-1] {
		if !validExtension(ext) {
			return m, malformed("extension")
		}
	}
	p, ok := strings.CutPrefix(fields[len(fields)-1], "p=")
	if !ok {
		return m, malformed("proof field")
	}
	proof, err := base64.StdEncoding.Strict().DecodeString(p)
	if err != nil || len(proof) != proofLength {
		return m, malformed("proof")
	}
	m.cbind = cbind
	return m, nil
}

// decodeSASLName decodes a saslname: 1*(value-safe-char / "=2C" / "=3D"),
// where value-safe-char is any UTF-8 character but NUL, '=' and ','.
// The caller has checked the message is UTF-8 and split it at ','.
func decodeSASLName(s string) (string, bool) {
	if s == "" || len(s) > 3*MaxLoginLength || strings.IndexByte(s, 0) >= 0 {
		return "", false
	}
	if strings.IndexByte(s, '=') < 0 {
		return s, true
	}
	var b strings.Builder
	for s != "" {
		i := strings.IndexByte(s, '=')
		if i < 0 {
			b.WriteString(s)
			break
		}
		b.WriteString(s[:i])
		switch {
		case strings.HasPrefix(s[i:], "=2C"):
			b.WriteByte(',')
		case strings.HasPrefix(s[i:], "=3D"):
			b.WriteByte('=')
		default:
			return "", false
		}
		s = s[i+3:]
	}
	return b.String(), true
}

// printable is RFC 5802's c-nonce: 1*(%x21-2B / %x2D-7E), ',' excluded.
func printable(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x21 || c > 0x7e || c == ',' {
			return false
		}
	}
	return true
}

// validCBName is RFC 5802's cb-name: 1*(ALPHA / DIGIT / "." / "-").
func validCBName(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !isAlpha(c) && (c < '0' || c > '9') && c != '.' && c != '-' {
			return false
		}
	}
	return true
}

// validExtension is RFC 5802's attr-val: ALPHA "=" 1*value-char, where a
// value-char is any UTF-8 character but NUL and ','. Unknown extensions
// are then ignored (RFC 5802 section 7).
func validExtension(s string) bool {
	return len(s) >= 3 && isAlpha(s[0]) && s[1] == '=' && strings.IndexByte(s, 0) < 0
}

func isAlpha(c byte) bool { return (c|0x20) >= 'a' && (c|0x20) <= 'z' }

// equalBinding compares the client's c= with what this connection expects,
// in constant time: binding data is derived from the TLS secrets.
func equalBinding(got, gs2Header, data []byte) bool {
	want := make([]byte, 0, len(gs2Header)+len(data))
	want = append(append(want, gs2Header...), data...)
	return subtle.ConstantTimeCompare(got, want) == 1
}
