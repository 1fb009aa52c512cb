// Package imapwire holds the few pieces of IMAP syntax (RFC 3501, RFC 9051)
// that imapgate reads and writes outside a full IMAP library: bounded
// lines, literal headers ({N}, {N+} of RFC 7888's LITERAL+, {N-} of its
// LITERAL-), quoted strings, tagged status responses with their response
// codes, and the characters of atoms and tags.
//
// The proxy's pre-authentication parser, its client for the upstream login
// and the test harness's relay all use it, so the three read the wire the
// same way. Nothing here allocates without a bound: every reader takes the
// limit of what it may hold.
//
// A client of a server, reading a response that may end in a literal:
//
//	line, err := imapwire.ReadLine(r, 64<<10)
//	if err != nil {
//		return err // imapwire.ErrLineTooLong past the limit
//	}
//	if size, _, ok := imapwire.LiteralAtEnd(line); ok && size <= maxLiteral {
//		// the next size bytes of r are the literal, then the line goes on
//	}
//	if status, code, ok := imapwire.ParseStatus(line, "a1"); ok && status == "OK" {
//		caps := imapwire.CapabilitiesFromCode(code) // nil without [CAPABILITY ...]
//	}
//
// and a command that carries a string:
//
//	if q, ok := imapwire.Quote(user); ok {
//		fmt.Fprintf(w, "a2 LOGIN %s ...\r\n", q)
//	} // else send user as a literal: it holds CR, LF or NUL
package imapwire

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"strconv"
	"strings"
)

// ErrLineTooLong is the error of ReadLine for a line over its limit.
var ErrLineTooLong = errors.New("line too long")

// ReadLine reads one CRLF- (or LF-) terminated line and returns it without
// the terminator. A line that takes more than max+2 bytes with its
// terminator (more than max bytes and CRLF) is ErrLineTooLong; the reader
// then stands somewhere inside that line. End of input inside a line is
// io.ErrUnexpectedEOF, at a line's start io.EOF.
//
// The returned slice is only valid until the next read from r; it holds
// more than r's buffer only for a line longer than that buffer.
func ReadLine(r *bufio.Reader, max int) ([]byte, error) {
	return ReadLineLimit(r, func([]byte) int { return max })
}

// ReadLineLimit is ReadLine with a limit chosen by the line's start: limit
// is called once, with the first fragment the reader holds (the whole line
// if it fits r's buffer, else as much as the buffer holds), and returns the
// line's limit. A pre-login parser uses it to let a command that a
// conforming client may send long (AUTHENTICATE with a large initial
// response) have more room than the rest, deciding from the command name
// before the line is gathered.
func ReadLineLimit(r *bufio.Reader, limit func(start []byte) int) ([]byte, error) {
	var long []byte
	max := -1
	for {
		frag, err := r.ReadSlice('\n')
		if max < 0 && (err == nil || errors.Is(err, bufio.ErrBufferFull)) {
			max = limit(frag)
		}
		if err == nil {
			line := frag
			if long != nil {
				long = append(long, frag...)
				line = long
			}
			if len(line) > max+2 {
				return nil, ErrLineTooLong
			}
			line = line[:len(line)-1]
			if n := len(line); n > 0 && line[n-1] == '\r' {
				line = line[:n-1]
			}
			return line, nil
		}
		if errors.Is(err, bufio.ErrBufferFull) {
			if len(long)+len(frag) > max+2 {
				return nil, ErrLineTooLong
			}
			long = append(long, frag...)
			continue
		}
		if errors.Is(err, io.EOF) && len(long)+len(frag) > 0 {
			err = io.ErrUnexpectedEOF
		}
		return nil, err
	}
}

// maxLiteralDigits bounds the digits of a literal's size: ten digits are
// more than any limit imapgate sets, and never overflow an int64.
const maxLiteralDigits = 10

// ParseLiteralHeader parses p as exactly one literal header: "{N}" (a
// synchronizing literal: the sender waits for a "+" continuation), or
// "{N+}" / "{N-}" (sent unasked, RFC 7888). ok is false for anything else,
// including a size of more than ten digits.
func ParseLiteralHeader(p []byte) (size int64, sync, ok bool) {
	if len(p) < 3 || p[0] != '{' || p[len(p)-1] != '}' {
		return 0, false, false
	}
	digits := p[1 : len(p)-1]
	sync = true
	if n := len(digits); n > 0 && (digits[n-1] == '+' || digits[n-1] == '-') {
		sync = false
		digits = digits[:n-1]
	}
	if len(digits) == 0 || len(digits) > maxLiteralDigits {
		return 0, false, false
	}
	for _, c := range digits {
		if c < '0' || c > '9' {
			return 0, false, false
		}
	}
	n, err := strconv.ParseInt(string(digits), 10, 64)
	if err != nil {
		return 0, false, false
	}
	return n, sync, true
}

// LiteralAtEnd reports the literal header that ends line (read by ReadLine,
// so without its CRLF), if there is one: the literal's bytes follow the
// line, and then the rest of the command or response.
func LiteralAtEnd(line []byte) (size int64, sync, ok bool) {
	i := bytes.LastIndexByte(line, '{')
	if i < 0 || line[len(line)-1] != '}' {
		return 0, false, false
	}
	return ParseLiteralHeader(line[i:])
}

// Quote renders s as an IMAP quoted string, escaping '"' and '\'. It
// reports false when s holds CR, LF or NUL, which no quoted string may:
// such a string needs a literal.
func Quote(s string) (string, bool) {
	b := make([]byte, 0, len(s)+2)
	b = append(b, '"')
	for i := 0; i < len(s); i++ {
		switch c := s[i]; c {
		case 0, '\r', '\n':
			return "", false
		case '"', '\\':
			b = append(b, '\\', c)
		default:
			b = append(b, c)
		}
	}
	return string(append(b, '"')), true
}

// Unquote parses the quoted string at the start of p (p[0] is '"') and
// returns its value and what follows the closing quote. ok is false for
// an unterminated string, an escape of anything but '"' or '\', or CR, LF
// or NUL inside. Unquote(Quote(s)) gives s back.
func Unquote(p []byte) (s string, rest []byte, ok bool) {
	var b []byte
	for i := 1; i < len(p); i++ {
		switch c := p[i]; c {
		case '"':
			if b == nil {
				return string(p[1:i]), p[i+1:], true
			}
			return string(b), p[i+1:], true
		case '\\':
			if i+1 >= len(p) || (p[i+1] != '\\' && p[i+1] != '"') {
				return "", nil, false
			}
			if b == nil {
				b = append([]byte(nil), p[1:i]...)
			}
			i++
			b = append(b, p[i])
		case 0, '\r', '\n':
			return "", nil, false
		default:
			if b != nil {
				b = append(b, c)
			}
		}
	}
	return "", nil, false
}

// ParseStatus parses a status response, "TAG STATUS [CODE ...] text", for
// the given tag ("*" for an untagged one). ok is false when line does not
// start with the tag and a space. status is the word after the tag,
// upper-cased (OK, NO, BAD, PREAUTH, BYE for a status response); code is
// the response code without its brackets, "" when there is none.
func ParseStatus(line []byte, tag string) (status, code string, ok bool) {
	rest, found := bytes.CutPrefix(line, []byte(tag+" "))
	if !found {
		return "", "", false
	}
	word, rest, _ := bytes.Cut(rest, []byte(" "))
	status = strings.ToUpper(string(word))
	if bytes.HasPrefix(rest, []byte("[")) {
		if end := bytes.IndexByte(rest, ']'); end > 0 {
			code = string(rest[1:end])
		}
	}
	return status, code, true
}

// CapabilitiesFromCode returns the capabilities listed in a response code
// "CAPABILITY IMAP4rev1 ..." (as ParseStatus returns it), or nil for any
// other code.
func CapabilitiesFromCode(code string) []string {
	name, list, _ := strings.Cut(code, " ")
	if !strings.EqualFold(name, "CAPABILITY") {
		return nil
	}
	return strings.Fields(list)
}

// IsAtomChar reports whether c may appear in an atom (RFC 3501 ATOM-CHAR:
// printable ASCII but for the atom-specials).
func IsAtomChar(c byte) bool {
	switch c {
	case '(', ')', '{', ' ', '%', '*', '"', '\\', ']':
		return false
	}
	return c > 0x1f && c < 0x7f
}

// IsTagChar reports whether c may appear in a tag (RFC 3501 tag:
// ASTRING-CHAR except "+").
func IsTagChar(c byte) bool {
	return c != '+' && (IsAtomChar(c) || c == ']')
}
