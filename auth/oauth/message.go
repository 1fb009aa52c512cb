package oauth

// The OAUTHBEARER (RFC 7628) and XOAUTH2 client messages are parsed here by
// hand rather than through go-sasl's OAUTHBEARER server
// (github.com/emersion/go-sasl v0.0.0-20241020182733-b788ff22d5a6):
//   - its check of the reply to an error challenge,
//     `len(response) != 1 && response[0] != 0x01`, indexes response[0] of an
//     empty reply (a panic: an empty client line is enough), and because of
//     the && it accepts any one-byte reply and any reply that starts with
//     0x01 as the dummy response;
//   - it refuses unknown keys, which RFC 7628 section 3.1 says a server
//     ignores, accepts no "y" channel-binding flag, does not unescape =2C and
//     =3D in the authzid (RFC 5801 section 4), takes duplicate auth keys
//     (the last one wins), and does not check the token against RFC 6750's
//     b64token;
//   - it has no size limit, no XOAUTH2 and no way to say which rule a
//     message broke.

import (
	"bytes"
	"fmt"
	"log/slog"
	"unicode"
	"unicode/utf8"
)

// Mechanism is a SASL mechanism name, upper case as on the wire.
type Mechanism string

// The mechanisms this package parses.
const (
	OAuthBearer Mechanism = "OAUTHBEARER" // RFC 7628
	XOAuth2     Mechanism = "XOAUTH2"     // Google's and Microsoft's format, no RFC
)

// Limits on a client message. A message over MaxMessageLength is refused
// before it is looked at, so nothing here allocates more than the message.
const (
	// MaxTokenLength is the longest bearer token accepted: 64 KiB.
	// Microsoft's JWT access tokens passed 4 KiB in 2025.
	MaxTokenLength = 64 << 10
	// MaxUserLength caps the user a message names, as the PLAIN mechanism
	// caps its user name.
	MaxUserLength = 256
	// MaxHostLength caps OAUTHBEARER's host key (a DNS name is at most 253).
	MaxHostLength = 255
	// MaxMessageLength is the longest client message: a MaxTokenLength
	// token plus room for the GS2 header, host, port and other keys. The
	// AUTHENTICATE line carrying it is base64, 4/3 of this.
	MaxMessageLength = MaxTokenLength + 2048
)

// Token is a bearer token. It hides itself from fmt (every verb), log/slog
// and encoding/json; only Reveal gives the value, to hand to a validator.
type Token struct{ value string }

// NewToken wraps a token value, e.g. one read from a test provider.
func NewToken(value string) Token { return Token{value: value} }

// Reveal returns the token itself. Never log it.
func (t Token) Reveal() string { return t.value }

// Len is the token's length in bytes.
func (t Token) Len() int { return len(t.value) }

const redacted = "oauth.Token(redacted)"

// String hides the token.
func (t Token) String() string { return redacted }

// GoString hides the token from %#v.
func (t Token) GoString() string { return redacted }

// Format hides the token from every fmt verb (%d or %x of a plain struct
// would print its fields).
func (t Token) Format(f fmt.State, _ rune) { _, _ = f.Write([]byte(redacted)) }

// LogValue hides the token from log/slog.
func (t Token) LogValue() slog.Value { return slog.StringValue(redacted) }

// MarshalText hides the token from encoding/json and other text encoders.
func (t Token) MarshalText() ([]byte, error) { return []byte(redacted), nil }

// ClientResponse is what a client's OAUTHBEARER or XOAUTH2 message says.
// It is safe to log: the token hides itself.
type ClientResponse struct {
	Mechanism Mechanism
	// User is the mailbox the client names: OAUTHBEARER's authzid (a=,
	// unescaped) or XOAUTH2's user=. Empty when an OAUTHBEARER message
	// names none; then the token's claim decides.
	User  string
	Token Token
	// Host and Port are OAUTHBEARER's optional host and port keys (where
	// the client thinks it connected); empty and 0 when absent, and always
	// so for XOAUTH2.
	Host string
	Port int
}

// ParseClientResponse parses msg as mech's client message.
func ParseClientResponse(mech Mechanism, msg []byte) (ClientResponse, error) {
	switch mech {
	case OAuthBearer:
		return ParseOAuthBearer(msg)
	case XOAuth2:
		return ParseXOAuth2(msg)
	}
	return ClientResponse{}, fmt.Errorf("oauth: unknown mechanism %q", mech)
}

const kvsep = 0x01

func malformed(mech Mechanism, text string) error {
	return fmt.Errorf("%w: %s: %s", ErrMalformedMessage, mech, text)
}

func malformedUser(mech Mechanism, text string) error {
	return fmt.Errorf("%w: %s: %s", ErrMalformedUser, mech, text)
}

// ParseOAuthBearer parses an OAUTHBEARER client message (RFC 7628 section
// 3.1):
//
//	client-resp = (gs2-header kvsep *kvpair kvsep) / kvsep
//	kvpair      = key "=" value kvsep
//	key         = 1*(ALPHA)
//	value       = *(VCHAR / SP / HTAB / CR / LF)
//
// The GS2 header (RFC 5801 section 4) is "n," or "y," then an optional
// "a=" authzid, then ",". "p=" (the client requires channel binding, which
// OAUTHBEARER cannot do) and the non-standard "F," are refused. The auth
// key, "Bearer" 1*SP b64token (RFC 6750 section 2.1), is required; host
// and port are read; other keys are ignored, as section 3.1 asks; auth,
// host and port may each appear once. A lone kvsep is the reply to an
// error challenge, not a message. Every error wraps ErrMalformedMessage.
func ParseOAuthBearer(msg []byte) (ClientResponse, error) {
	const mech = OAuthBearer
	r := ClientResponse{Mechanism: mech}
	switch {
	case len(msg) > MaxMessageLength:
		return r, malformed(mech, fmt.Sprintf("message over %d bytes", MaxMessageLength))
	case len(msg) == 0:
		return r, malformed(mech, "empty message")
	case len(msg) == 1 && msg[0] == kvsep:
		return r, malformed(mech, "a lone %x01 answers an error challenge and carries no token")
	}

	flag, rest, ok := bytes.Cut(msg, []byte{','})
	if !ok {
		return r, malformed(mech, "no GS2 header")
	}
	switch {
	case string(flag) == "n", string(flag) == "y":
	case string(flag) == "F":
		return r, malformed(mech, `GS2 non-standard flag "F" is not used with OAUTHBEARER`)
	case bytes.HasPrefix(flag, []byte("p=")):
		return r, malformed(mech, "channel binding (p=) requested, which OAUTHBEARER does not support")
	default:
		return r, malformed(mech, `GS2 channel-binding flag is not "n", "y" or "p="`)
	}

	authzid, rest, ok := bytes.Cut(rest, []byte{','})
	if !ok {
		return r, malformed(mech, "GS2 header does not end with a comma")
	}
	if len(authzid) > 0 {
		name, found := bytes.CutPrefix(authzid, []byte("a="))
		if !found {
			return r, malformed(mech, `GS2 authzid does not start with "a="`)
		}
		user, err := unescapeSASLName(name)
		if err != nil {
			return r, err
		}
		r.User = user
	}

	if len(rest) == 0 || rest[0] != kvsep {
		return r, malformed(mech, "no %x01 after the GS2 header")
	}
	pairs, err := parsePairs(mech, rest[1:])
	if err != nil {
		return r, err
	}
	if pairs.auth == nil {
		return r, malformed(mech, "no auth key")
	}
	tok, err := parseBearer(mech, pairs.auth)
	if err != nil {
		return r, err
	}
	r.Token = tok
	if pairs.host != nil {
		if len(pairs.host) > MaxHostLength {
			return r, malformed(mech, fmt.Sprintf("host over %d bytes", MaxHostLength))
		}
		r.Host = string(pairs.host)
	}
	if pairs.port != nil {
		port, err := parsePort(mech, pairs.port)
		if err != nil {
			return r, err
		}
		r.Port = port
	}
	return r, nil
}

// ParseXOAuth2 parses an XOAUTH2 client message, Google's and Microsoft's
// format:
//
//	"user=" user %x01 "auth=Bearer " token %x01 %x01
//
// Keys are read like OAUTHBEARER's (any order, unknown ones ignored, as
// Dovecot does); user and auth are required, once each. XOAUTH2 does not
// escape the user, and its values may carry UTF-8 (a non-ASCII mailbox).
// Every error wraps ErrMalformedMessage.
func ParseXOAuth2(msg []byte) (ClientResponse, error) {
	const mech = XOAuth2
	r := ClientResponse{Mechanism: mech}
	switch {
	case len(msg) > MaxMessageLength:
		return r, malformed(mech, fmt.Sprintf("message over %d bytes", MaxMessageLength))
	case len(msg) == 0:
		return r, malformed(mech, "empty message")
	}
	pairs, err := parsePairs(mech, msg)
	if err != nil {
		return r, err
	}
	if pairs.user == nil {
		return r, malformed(mech, "no user key")
	}
	if pairs.auth == nil {
		return r, malformed(mech, "no auth key")
	}
	if err := checkUser(mech, pairs.user); err != nil {
		return r, err
	}
	r.User = string(pairs.user)
	tok, err := parseBearer(mech, pairs.auth)
	if err != nil {
		return r, err
	}
	r.Token = tok
	return r, nil
}

// pairs holds the values of the keys a mechanism reads; nil is absent.
type pairs struct {
	auth, host, port, user []byte
}

// parsePairs reads *kvpair kvsep: key=value pairs each ended by kvsep, then
// one more kvsep that ends the message.
func parsePairs(mech Mechanism, b []byte) (pairs, error) {
	var p pairs
	for {
		if len(b) == 0 {
			return p, malformed(mech, "message does not end with %x01%x01")
		}
		if b[0] == kvsep {
			if len(b) > 1 {
				return p, malformed(mech, "bytes after the closing %x01")
			}
			return p, nil
		}
		kv, rest, ok := bytes.Cut(b, []byte{kvsep})
		if !ok {
			return p, malformed(mech, "key/value pair not ended by %x01")
		}
		b = rest
		key, value, ok := bytes.Cut(kv, []byte{'='})
		if !ok {
			return p, malformed(mech, `key/value pair without "="`)
		}
		if len(key) == 0 {
			return p, malformed(mech, "empty key")
		}
		for _, c := range key {
			if !isAlpha(c) {
				return p, malformed(mech, "key with a byte other than a letter")
			}
		}
		for _, c := range value {
			if !isValueByte(c) && (mech != XOAuth2 || c < 0x80) {
				return p, malformed(mech, "value with a byte RFC 7628 does not allow")
			}
		}
		var slot *[]byte
		switch string(key) {
		case "auth":
			slot = &p.auth
		case "host":
			if mech == OAuthBearer {
				slot = &p.host
			}
		case "port":
			if mech == OAuthBearer {
				slot = &p.port
			}
		case "user":
			if mech == XOAuth2 {
				slot = &p.user
			}
		}
		if slot == nil {
			continue // RFC 7628 section 3.1: unknown keys are ignored
		}
		if *slot != nil {
			return p, malformed(mech, "key "+string(key)+" given twice")
		}
		*slot = value[:len(value):len(value)]
	}
}

func isAlpha(c byte) bool { return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' }

// isValueByte is RFC 7628's value: VCHAR / SP / HTAB / CR / LF.
func isValueByte(c byte) bool {
	return 0x21 <= c && c <= 0x7e || c == ' ' || c == '\t' || c == '\r' || c == '\n'
}

// isB64TokenByte is RFC 6750's b64token alphabet, without the trailing "=".
func isB64TokenByte(c byte) bool {
	return isAlpha(c) || '0' <= c && c <= '9' ||
		c == '-' || c == '.' || c == '_' || c == '~' || c == '+' || c == '/'
}

// parseBearer reads "Bearer" 1*SP b64token (RFC 6750 section 2.1); the
// scheme is case-insensitive (RFC 9110 section 11.1).
func parseBearer(mech Mechanism, v []byte) (Token, error) {
	scheme, tok, ok := bytes.Cut(v, []byte{' '})
	if !ok || !bytes.EqualFold(scheme, []byte("Bearer")) {
		return Token{}, malformed(mech, `auth is not "Bearer" and a token`)
	}
	tok = bytes.TrimLeft(tok, " ")
	if len(tok) == 0 {
		return Token{}, malformed(mech, "empty bearer token")
	}
	if len(tok) > MaxTokenLength {
		return Token{}, malformed(mech, fmt.Sprintf("bearer token over %d bytes", MaxTokenLength))
	}
	i := 0
	for i < len(tok) && isB64TokenByte(tok[i]) {
		i++
	}
	if i == 0 {
		return Token{}, malformed(mech, "bearer token is not an RFC 6750 b64token")
	}
	for j := i; j < len(tok); j++ {
		if tok[j] != '=' {
			return Token{}, malformed(mech, "bearer token is not an RFC 6750 b64token")
		}
	}
	return Token{value: string(tok)}, nil
}

// parsePort reads RFC 7628's port: a decimal positive integer without
// leading zeros.
func parsePort(mech Mechanism, v []byte) (int, error) {
	bad := malformed(mech, "port is not a number from 1 to 65535 without leading zeros")
	if len(v) == 0 || len(v) > 5 || v[0] == '0' {
		return 0, bad
	}
	n := 0
	for _, c := range v {
		if c < '0' || c > '9' {
			return 0, bad
		}
		n = n*10 + int(c-'0')
	}
	if n > 65535 {
		return 0, bad
	}
	return n, nil
}

// unescapeSASLName decodes RFC 5801's saslname: "=2C" is ",", "=3D" is "=",
// and no other "=" may appear.
func unescapeSASLName(b []byte) (string, error) {
	const mech = OAuthBearer
	if len(b) == 0 {
		return "", malformedUser(mech, `empty authzid after "a="`)
	}
	if bytes.IndexByte(b, '=') < 0 {
		if err := checkUser(mech, b); err != nil {
			return "", err
		}
		return string(b), nil
	}
	out := make([]byte, 0, len(b))
	for i := 0; i < len(b); i++ {
		if b[i] != '=' {
			out = append(out, b[i])
			continue
		}
		switch {
		case i+2 < len(b) && b[i+1] == '2' && b[i+2] == 'C':
			out = append(out, ',')
		case i+2 < len(b) && b[i+1] == '3' && b[i+2] == 'D':
			out = append(out, '=')
		default:
			return "", malformedUser(mech, `authzid has "=" not followed by 2C or 3D`)
		}
		i += 2
	}
	if err := checkUser(mech, out); err != nil {
		return "", err
	}
	return string(out), nil
}

// checkUser refuses a user no mailbox has: empty, over MaxUserLength,
// invalid UTF-8, or with a control character (NUL included).
func checkUser(mech Mechanism, u []byte) error {
	switch {
	case len(u) == 0:
		return malformedUser(mech, "empty user")
	case len(u) > MaxUserLength:
		return malformedUser(mech, fmt.Sprintf("user over %d bytes", MaxUserLength))
	case !utf8.Valid(u):
		return malformedUser(mech, "user is not UTF-8")
	}
	for _, r := range string(u) {
		if unicode.IsControl(r) {
			return malformedUser(mech, "user with a control character")
		}
	}
	return nil
}
