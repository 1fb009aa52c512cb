package main

import (
	"sort"
	"strconv"
	"strings"
)

// keyLines maps each full key of a TOML document to the line it is written
// on. Tables are keyed by their header ("tls.acme", "listen[1]"), array
// elements by index ("policy.allow[0]"); keys of tables named only as part
// of a longer key ("tls" in [tls.acme]) are "implicit" and give way to their
// own header.
type keyLines map[string]keyLine

type keyLine struct {
	line     int
	implicit bool
}

// scanKeyLines finds the line of every key in src. BurntSushi/toml knows
// these positions but does not export them; this scanner needs to be good,
// not complete: it is only run on text toml has already parsed, and it
// never panics or loops on any other text (see FuzzParseConfig).
func scanKeyLines(src []byte) keyLines {
	s := &keyScanner{src: string(src), arrays: map[string]int{}, lines: keyLines{}}
	for i, c := range src {
		if c == '\n' {
			s.newlines = append(s.newlines, i)
		}
	}
	s.document()
	return s.lines
}

type keyScanner struct {
	src      string
	i        int
	newlines []int          // offsets of '\n', to turn offsets into lines
	table    string         // key of the current [table]
	arrays   map[string]int // [[array]] key -> elements so far
	lines    keyLines
}

func (s *keyScanner) record(key string, off int, implicit bool) {
	if old, ok := s.lines[key]; ok && (implicit || !old.implicit) {
		return
	}
	s.lines[key] = keyLine{line: sort.SearchInts(s.newlines, off) + 1, implicit: implicit}
}

func (s *keyScanner) eof() bool { return s.i >= len(s.src) }

func (s *keyScanner) peek() byte {
	if s.eof() {
		return 0
	}
	return s.src[s.i]
}

func (s *keyScanner) advance(n int) { s.i = min(s.i+n, len(s.src)) }

func (s *keyScanner) rest() string { return s.src[s.i:] }

func (s *keyScanner) skipSpace() {
	for c := s.peek(); c == ' ' || c == '\t'; c = s.peek() {
		s.i++
	}
}

// skipBlank skips white space, newlines and comments.
func (s *keyScanner) skipBlank() {
	for !s.eof() {
		switch s.src[s.i] {
		case ' ', '\t', '\r', '\n':
			s.i++
		case '#':
			s.skipLine()
		default:
			return
		}
	}
}

// skipLine moves to the '\n' ending this line.
func (s *keyScanner) skipLine() {
	if n := strings.IndexByte(s.rest(), '\n'); n >= 0 {
		s.i += n
	} else {
		s.i = len(s.src)
	}
}

func (s *keyScanner) document() {
	if strings.HasPrefix(s.src, "\xef\xbb\xbf") {
		s.i = 3
	}
	for {
		s.skipBlank()
		if s.eof() {
			return
		}
		start := s.i
		if s.peek() == '[' {
			s.header()
		} else {
			s.keyValue(s.table)
		}
		s.skipLine() // a trailing comment, or junk this scanner does not understand
		if s.i == start {
			s.i++
		}
	}
}

// header reads "[a.b]" or "[[a.b]]" and makes it the current table.
func (s *keyScanner) header() {
	off := s.i
	s.i++
	array := s.peek() == '['
	if array {
		s.i++
	}
	parts := s.keyParts()
	if len(parts) == 0 {
		return
	}
	key := ""
	for n, p := range parts {
		key = joinKey(key, keyPart(p))
		last := n == len(parts)-1
		if count, isArray := s.arrays[key]; isArray && !(last && array) {
			key = elemKey(key, count-1) // [listen.x] after [[listen]]: the latest element
		}
		if last && array {
			s.record(key, off, false) // the array itself: its first element's line
			s.arrays[key]++
			key = elemKey(key, s.arrays[key]-1)
		}
		if !last {
			s.record(key, off, true)
		}
	}
	s.record(key, off, false)
	s.table = key
}

// keyParts reads a dotted key such as a."b.c".d and returns its pieces.
func (s *keyScanner) keyParts() []string {
	var parts []string
	for {
		s.skipSpace()
		switch c := s.peek(); {
		case c == '"' || c == '\'':
			parts = append(parts, s.quoted())
		case isBareKeyChar(c):
			start := s.i
			for isBareKeyChar(s.peek()) {
				s.i++
			}
			parts = append(parts, s.src[start:s.i])
		default:
			return parts
		}
		s.skipSpace()
		if s.peek() != '.' {
			return parts
		}
		s.i++
	}
}

func isBareKeyChar(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-'
}

// quoted reads a one-line "basic" or 'literal' string and returns its text.
func (s *keyScanner) quoted() string {
	q := s.src[s.i]
	start := s.i
	s.i++
	for !s.eof() && s.src[s.i] != '\n' {
		c := s.src[s.i]
		if c == '\\' && q == '"' {
			s.advance(2)
			continue
		}
		s.i++
		if c == q {
			raw := s.src[start:s.i]
			if q == '"' {
				if u, err := strconv.Unquote(raw); err == nil {
					return u
				}
			}
			return raw[1 : len(raw)-1]
		}
	}
	return s.src[start+1 : s.i]
}

// keyValue reads "key = value" inside the table base.
func (s *keyScanner) keyValue(base string) {
	off := s.i
	parts := s.keyParts()
	if len(parts) == 0 {
		return
	}
	s.skipSpace()
	if s.peek() != '=' {
		return
	}
	s.i++
	key := base
	for n, p := range parts {
		key = joinKey(key, keyPart(p))
		s.record(key, off, n < len(parts)-1)
	}
	s.value(key)
}

func (s *keyScanner) value(key string) {
	s.skipSpace()
	switch s.peek() {
	case '"', '\'':
		if strings.HasPrefix(s.rest(), `"""`) || strings.HasPrefix(s.rest(), `'''`) {
			s.multiline()
		} else {
			s.quoted()
		}
	case '[':
		s.array(key)
	case '{':
		s.inlineTable(key)
	default: // number, boolean, date
		for !s.eof() && !strings.ContainsRune(",]}#\n", rune(s.src[s.i])) {
			s.i++
		}
	}
}

func (s *keyScanner) multiline() {
	delim := s.src[s.i : s.i+3]
	s.i += 3
	for !s.eof() {
		if delim[0] == '"' && s.src[s.i] == '\\' {
			s.advance(2)
			continue
		}
		if strings.HasPrefix(s.rest(), delim) {
			s.i += 3
			// Up to two more quotes are part of the string: """a""""".
			for n := 0; n < 2 && s.peek() == delim[0]; n++ {
				s.i++
			}
			return
		}
		s.i++
	}
}

func (s *keyScanner) array(key string) {
	s.i++ // '['
	for n := 0; ; {
		s.skipBlank()
		switch s.peek() {
		case 0:
			if s.eof() {
				return
			}
		case ']':
			s.i++
			return
		case ',':
			s.i++
			continue
		}
		start := s.i
		elem := elemKey(key, n)
		s.record(elem, s.i, false)
		s.value(elem)
		n++
		if s.i == start {
			s.i++
		}
	}
}

func (s *keyScanner) inlineTable(key string) {
	s.i++ // '{'
	for {
		s.skipBlank()
		switch s.peek() {
		case 0:
			if s.eof() {
				return
			}
		case '}':
			s.i++
			return
		case ',':
			s.i++
			continue
		}
		start := s.i
		s.keyValue(key)
		if s.i == start {
			s.i++
		}
	}
}
