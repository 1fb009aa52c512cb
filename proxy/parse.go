package proxy

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"

	"github.com/imapgate/imapgate/proxy/internal/imapwire"
)

// Limits of the pre-auth parser. Nothing a legitimate client sends before
// authentication comes close; anything larger is an attack or a bug.
const (
	// maxLineLength caps one line of a command (between literals).
	maxLineLength = 8 << 10
	// maxLongLineLength caps the first line of the two commands a
	// conforming client may send long: AUTHENTICATE with an initial
	// response (RFC 4959), whose OAUTHBEARER token may pass 64 KiB
	// (base64 makes 88 KiB of it: Microsoft's JWTs passed 4 KiB in 2025),
	// and ID at RFC 2971's maximum (30 pairs of 30-octet fields and
	// 1,024-octet values: about 32 KiB).
	maxLongLineLength = 96 << 10
	// maxSASLLineLength caps one SASL continuation line, for the same
	// tokens sent without SASL-IR; go-imap's 4 KiB cap is too small.
	maxSASLLineLength = 96 << 10
	// maxLiteralSize caps one literal before authentication.
	maxLiteralSize = 8 << 10
	// maxCommandSize caps a whole command, literals included: one long
	// line, or an ID whose 30 values are literals.
	maxCommandSize = maxLongLineLength + 4<<10
	// maxPreauthBytes caps everything a client sends before it is logged
	// in. What bounds an attacker is this total and preauth_timeout, not a
	// line length a conforming client can exceed: a client that needs
	// more than three full-size AUTHENTICATE attempts and an ID is not one.
	maxPreauthBytes = 512 << 10
	// maxTokens caps the number of tokens in one command; every token
	// counts, parentheses included.
	maxTokens = 256
	// maxDepth caps how deeply parenthesized lists nest. Before login only
	// ID takes a list, and its list is flat (RFC 2971).
	maxDepth = 1
)

// Parser errors. errFatal* errors end the connection with BYE; the others
// answer BAD and let the client go on.
var (
	errLineTooLong    = imapwire.ErrLineTooLong
	errLiteralTooBig  = errors.New("literal too large")
	errCommandTooBig  = errors.New("command too large")
	errSyntax         = errors.New("syntax error")
	errLiteralRefused = errors.New("literal refused")
	// errLiteralNotAllowed is a synchronizing literal where the command
	// takes none: answered BAD without the "+" continuation.
	errLiteralNotAllowed = errors.New("literal not allowed")
)

// tokenKind says what a token is.
type tokenKind uint8

const (
	tokAtom    tokenKind = iota // an atom, including NIL and numbers
	tokQuoted                   // a quoted string, unescaped
	tokLiteral                  // a literal's content
	tokLParen                   // "("
	tokRParen                   // ")"
)

// token is one lexical element of a command.
type token struct {
	kind  tokenKind
	value string
}

// isString reports whether t is an IMAP string or atom (an astring).
func (t token) isString() bool {
	return t.kind == tokAtom || t.kind == tokQuoted || t.kind == tokLiteral
}

// command is one parsed client command.
type command struct {
	tag  string
	name string // upper-cased
	args []token
}

// literalFunc is asked before the parser accepts a literal; cmd holds the
// command so far (tag, name and the arguments before the literal), which is
// within every limit. It returns nil to accept the literal. For a
// synchronizing literal a non-nil error refuses it: the client has not sent
// the literal yet, so the command simply ends. sync is false for LITERAL+ /
// LITERAL- literals, which the client sends unasked.
type literalFunc func(cmd *command, size int64, sync bool) error

// commandReader reads pre-auth commands from a client. It never holds more
// than maxCommandSize bytes of one command.
type commandReader struct {
	r *bufio.Reader
	w *bufio.Writer // for "+ " continuation requests
	// onLiteral, if not nil, may refuse a literal before it is read.
	onLiteral literalFunc
	size      int // bytes of the current command so far
}

// syntaxError is a parse failure that still knows the tag, so the answer
// can be "tag BAD ...".
type syntaxError struct {
	tag string
	msg string
	err error
}

func (e *syntaxError) Error() string { return e.msg }
func (e *syntaxError) Unwrap() error { return e.err }

// commandLineLimit is the limit of a command's first line, from its start
// (tag and name are far inside the reader's first fragment): AUTHENTICATE
// and ID may be long, anything else is held to maxLineLength.
func commandLineLimit(start []byte) int {
	_, rest, ok := bytes.Cut(start, []byte(" "))
	if !ok {
		return maxLineLength
	}
	name, _, _ := bytes.Cut(rest, []byte(" "))
	if bytes.EqualFold(name, []byte("AUTHENTICATE")) || bytes.EqualFold(name, []byte("ID")) {
		return maxLongLineLength
	}
	return maxLineLength
}

// read reads and tokenizes one command. Syntax errors come back as
// *syntaxError (the connection can continue); I/O errors and size limits
// are returned as they are (the connection should end).
func (cr *commandReader) read() (*command, error) {
	cr.size = 0
	line, err := imapwire.ReadLineLimit(cr.r, commandLineLimit)
	if err != nil {
		return nil, err
	}
	cr.size += len(line)
	cmd := &command{}
	p := line
	// Tag.
	i := 0
	for i < len(p) && imapwire.IsTagChar(p[i]) {
		i++
	}
	if i == 0 || i >= len(p) || p[i] != ' ' {
		if len(bytes.TrimSpace(p)) == 0 {
			return nil, &syntaxError{msg: "Empty command line", err: errSyntax}
		}
		return nil, &syntaxError{msg: "Error in IMAP command: missing or invalid tag", err: errSyntax}
	}
	cmd.tag = string(p[:i])
	p = p[i+1:]
	// Command name.
	i = 0
	for i < len(p) && imapwire.IsAtomChar(p[i]) {
		i++
	}
	if i == 0 {
		return nil, &syntaxError{tag: cmd.tag, msg: "Error in IMAP command: missing command name", err: errSyntax}
	}
	cmd.name = upperASCII(p[:i])
	p = p[i:]
	depth := 0 // open parentheses
	for {
		if len(p) == 0 {
			return cr.end(cmd, depth)
		}
		if p[0] != ' ' {
			return nil, cr.badSyntax(cmd, "expected a space between arguments")
		}
		// Be lenient with a trailing or doubled space.
		for len(p) > 0 && p[0] == ' ' {
			p = p[1:]
		}
		if len(p) == 0 {
			return cr.end(cmd, depth)
		}
		// Parentheses may be glued to their neighbours: "(a b)".
		for len(p) > 0 && p[0] == '(' {
			if depth >= maxDepth {
				return nil, cr.badSyntax(cmd, "lists nested too deeply")
			}
			if err := cr.add(cmd, token{kind: tokLParen}); err != nil {
				return nil, err
			}
			depth++
			p = p[1:]
		}
		if len(p) == 0 {
			return cr.end(cmd, depth)
		}
		switch c := p[0]; {
		case c == '"':
			s, rest, ok := imapwire.Unquote(p)
			if !ok {
				return nil, cr.badSyntax(cmd, "invalid quoted string")
			}
			if err := cr.add(cmd, token{kind: tokQuoted, value: s}); err != nil {
				return nil, err
			}
			p = rest
		case c == '{':
			size, sync, ok := imapwire.ParseLiteralHeader(p)
			if !ok {
				return nil, cr.badSyntax(cmd, "invalid literal")
			}
			// The literal is a token: refuse it before asking for it.
			if len(cmd.args) >= maxTokens {
				return nil, cr.tooManyTokens(cmd)
			}
			lit, err := cr.readLiteral(cmd, size, sync)
			if err != nil {
				return nil, err
			}
			cmd.args = append(cmd.args, token{kind: tokLiteral, value: lit})
			// The command goes on after the literal.
			line, err := imapwire.ReadLine(cr.r, maxLineLength)
			if err != nil {
				return nil, err
			}
			cr.size += len(line)
			if cr.size > maxCommandSize {
				return nil, errCommandTooBig
			}
			p = line
		case c == ')':
			// handled below
		default:
			i := 0
			for i < len(p) && imapwire.IsAtomChar(p[i]) || i < len(p) && p[i] == ']' {
				i++
			}
			if i == 0 {
				return nil, cr.badSyntax(cmd, fmt.Sprintf("unexpected character %q", c))
			}
			if err := cr.add(cmd, token{kind: tokAtom, value: string(p[:i])}); err != nil {
				return nil, err
			}
			p = p[i:]
		}
		for len(p) > 0 && p[0] == ')' {
			if depth == 0 {
				return nil, cr.badSyntax(cmd, "unbalanced parenthesis")
			}
			if err := cr.add(cmd, token{kind: tokRParen}); err != nil {
				return nil, err
			}
			depth--
			p = p[1:]
		}
	}
}

// add appends t to the command's arguments, or refuses the command once it
// has maxTokens of them: every token counts, parentheses included.
func (cr *commandReader) add(cmd *command, t token) error {
	if len(cmd.args) >= maxTokens {
		return cr.tooManyTokens(cmd)
	}
	cmd.args = append(cmd.args, t)
	return nil
}

func (cr *commandReader) tooManyTokens(cmd *command) error {
	return cr.badSyntax(cmd, "too many arguments")
}

// end finishes a command at the end of its last line: every list must be
// closed.
func (cr *commandReader) end(cmd *command, depth int) (*command, error) {
	if depth != 0 {
		return nil, cr.badSyntax(cmd, "unbalanced parenthesis")
	}
	return cmd, nil
}

func (cr *commandReader) badSyntax(cmd *command, msg string) error {
	return &syntaxError{tag: cmd.tag, msg: "Error in IMAP command " + truncate(cmd.name, 20) + ": " + msg, err: errSyntax}
}

// readLiteral handles a literal announced at the end of a line.
func (cr *commandReader) readLiteral(cmd *command, size int64, sync bool) (string, error) {
	tooBig := size > maxLiteralSize || int64(cr.size)+size > maxCommandSize
	if sync {
		if tooBig {
			// The client waits for "+" and sends nothing more: answer and go on.
			return "", &syntaxError{tag: cmd.tag, msg: "Literal too large", err: errLiteralTooBig}
		}
		if cr.onLiteral != nil {
			if err := cr.onLiteral(cmd, size, true); err != nil {
				return "", err
			}
		}
		if _, err := cr.w.WriteString("+ Ready for literal data\r\n"); err != nil {
			return "", err
		}
		if err := cr.w.Flush(); err != nil {
			return "", err
		}
	} else {
		if tooBig {
			// The client sends the literal unasked; we cannot tell where the
			// next command starts without reading it. End the connection.
			return "", errLiteralTooBig
		}
		if cr.onLiteral != nil {
			if err := cr.onLiteral(cmd, size, false); err != nil {
				return "", err
			}
		}
	}
	buf := make([]byte, size)
	if _, err := io.ReadFull(cr.r, buf); err != nil {
		return "", err
	}
	cr.size += int(size)
	return string(buf), nil
}

func upperASCII(b []byte) string {
	out := make([]byte, len(b))
	for i, c := range b {
		if 'a' <= c && c <= 'z' {
			c -= 'a' - 'A'
		}
		out[i] = c
	}
	return string(out)
}
