package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"strings"
)

// How the client reads a server's responses: line by line keeping only
// each line's first and last bytes, literals skipped unread, and the few
// words it parses (tags, status words, numbers).

// maxLiteral bounds a literal size the client accepts (1 TiB): a larger
// one is a broken or hostile server, not a mailbox.
const maxLiteral = 1 << 40

// readResponse reads lines until the tagged response of tag, or a
// continuation request when cont is set, skipping literals. Only a line
// that starts a response is checked for the tag: a literal's content and
// the rest of a line after a literal can never end the command.
func (c *client) readResponse(tag string, cont bool, r *response) error {
	r.Exists = -1
	mid := false // the line continues a response after a literal
	for {
		l, err := c.readLine()
		r.WireBytes += int64(l.n)
		head := l.head
		if err != nil {
			if r.Bye != "" && (err == io.EOF || errors.Is(err, io.ErrUnexpectedEOF)) {
				return &statusError{"BYE", r.Bye}
			}
			return err
		}
		if !mid {
			switch {
			case hasPrefix(head, tag) && len(head) > len(tag) && head[len(tag)] == ' ':
				word, text := splitWord(head[len(tag)+1:])
				switch {
				case isWord(word, "OK"), isWord(word, "NO"), isWord(word, "BAD"):
					r.Status, r.Text = strings.ToUpper(string(word)), string(text)
					return nil
				}
				return fmt.Errorf("malformed tagged response %q", trimCRLF(head))
			case hasPrefix(head, "+"):
				if cont {
					r.Continuation = true
					return nil
				}
				return errors.New("unexpected continuation request")
			case hasPrefix(head, "* "):
				r.Untagged++
				word, rest := splitWord(head[2:])
				switch {
				case isWord(word, "OK"), isWord(word, "NO"), isWord(word, "BAD"), isWord(word, "PREAUTH"):
					continue // resp-text: never a literal
				case isWord(word, "BYE"):
					r.Bye = string(rest)
					continue
				}
				if num, ok := parseNumber(word); ok {
					kind, _ := splitWord(rest)
					switch {
					case isWord(kind, "EXISTS"):
						r.Exists = num
					case isWord(kind, "FETCH"):
						r.Fetches++
					}
				}
			default:
				return fmt.Errorf("unexpected response line %q", trimCRLF(head))
			}
		}
		lit, err := l.literal()
		if err != nil {
			return err
		}
		if lit < 0 {
			mid = false
			continue
		}
		if err := c.skip(lit); err != nil {
			return fmt.Errorf("reading a literal of %d bytes: %w", lit, err)
		}
		r.WireBytes += lit
		r.BodyBytes += lit
		r.Literals++
		mid = true
	}
}

// skip reads and drops n bytes, a literal, through the read buffer:
// nothing is copied out of it, nothing allocated.
func (c *client) skip(n int64) error {
	for n > 0 {
		chunk := int(min(n, 1<<30))
		if _, err := c.br.Discard(chunk); err != nil {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return err
		}
		n -= int64(chunk)
	}
	return nil
}

// A line is what readLine read of one response line.
type line struct {
	head []byte // the first bytes, at most headMax; valid until the next readLine
	n    int    // the length of the whole line
	tail [32]byte
	tn   int // tail[:tn] are the last bytes of the line, where a literal size is
}

// literal returns the size of the literal announced at the end of the
// line, or -1. Only a line that may carry one should be asked: in a
// status response ({OK,NO,BAD,BYE} text) "{5}" is text.
func (l *line) literal() (int64, error) { return literalSize(l.tail[:l.tn]) }

// readLine reads one line through its LF, however long, keeping its
// first and last bytes.
func (c *client) readLine() (line, error) {
	var l line
	for {
		chunk, err := c.br.ReadSlice('\n')
		if len(l.head) < len(c.head) {
			l.head = c.head[:len(l.head)+copy(c.head[len(l.head):], chunk)]
		}
		l.n += len(chunk)
		if len(chunk) >= len(l.tail) {
			l.tn = copy(l.tail[:], chunk[len(chunk)-len(l.tail):])
		} else {
			keep := min(l.tn, len(l.tail)-len(chunk))
			copy(l.tail[:], l.tail[l.tn-keep:l.tn])
			l.tn = keep + copy(l.tail[keep:], chunk)
		}
		if err == bufio.ErrBufferFull {
			continue
		}
		if err == io.EOF && l.n > 0 {
			err = io.ErrUnexpectedEOF
		}
		return l, err
	}
}

// literalSize parses the literal announced at the end of a line: "{N}"
// or "{N+}" before CRLF (or a bare LF). It returns -1 for a line that
// announces none.
func literalSize(end []byte) (int64, error) {
	b := trimCRLF(end)
	if len(b) < 3 || b[len(b)-1] != '}' {
		return -1, nil
	}
	open := -1
	for i := len(b) - 2; i >= 0; i-- {
		if b[i] == '{' {
			open = i
			break
		}
	}
	if open < 0 {
		return -1, nil
	}
	digits := b[open+1 : len(b)-1]
	if len(digits) > 0 && digits[len(digits)-1] == '+' {
		digits = digits[:len(digits)-1]
	}
	if len(digits) == 0 {
		return -1, nil
	}
	var size int64
	for _, d := range digits {
		if d < '0' || d > '9' {
			return -1, nil
		}
		size = size*10 + int64(d-'0')
		if size > maxLiteral {
			return -1, fmt.Errorf("literal of more than %d bytes announced", int64(maxLiteral))
		}
	}
	return size, nil
}

func hasPrefix(b []byte, prefix string) bool {
	return len(b) >= len(prefix) && string(b[:len(prefix)]) == prefix
}

// splitWord returns the first space-separated word of a line and the rest
// of it without the line ending.
func splitWord(b []byte) (word, rest []byte) {
	b = trimCRLF(b)
	if i := bytes.IndexByte(b, ' '); i >= 0 {
		return b[:i], b[i+1:]
	}
	return b, nil
}

func isWord(b []byte, w string) bool { return bytes.EqualFold(b, []byte(w)) }

// parseNumber parses a message number or count: digits only.
func parseNumber(b []byte) (int64, bool) {
	if len(b) == 0 || len(b) > 18 {
		return 0, false
	}
	var n int64
	for _, d := range b {
		if d < '0' || d > '9' {
			return 0, false
		}
		n = n*10 + int64(d-'0')
	}
	return n, true
}

func trimCRLF(b []byte) []byte {
	if len(b) > 0 && b[len(b)-1] == '\n' {
		b = b[:len(b)-1]
	}
	if len(b) > 0 && b[len(b)-1] == '\r' {
		b = b[:len(b)-1]
	}
	return b
}
