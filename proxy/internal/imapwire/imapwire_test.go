package imapwire

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"slices"
	"strconv"
	"strings"
	"testing"
)

func TestReadLine(t *testing.T) {
	tests := []struct {
		name  string
		input string
		max   int
		want  []string // lines read before err
		err   error
	}{
		{"CRLF", "a1 NOOP\r\nb\r\n", 100, []string{"a1 NOOP", "b"}, io.EOF},
		{"bare LF", "a NOOP\nb\n", 100, []string{"a NOOP", "b"}, io.EOF},
		{"CR inside is kept", "a\rb\r\n", 100, []string{"a\rb"}, io.EOF},
		{"empty lines", "\r\n\n", 100, []string{"", ""}, io.EOF},
		{"exactly max", "12345\r\n", 5, []string{"12345"}, io.EOF},
		{"max with bare LF", "123456\n", 5, []string{"123456"}, io.EOF}, // the CR's byte of room
		{"over max", "123456\r\n", 5, nil, ErrLineTooLong},
		{"over max past the buffer", strings.Repeat("x", 100) + "\r\n", 50, nil, ErrLineTooLong},
		{"longer than the buffer within max", strings.Repeat("x", 100) + "\r\n", 200, []string{strings.Repeat("x", 100)}, io.EOF},
		{"no terminator", "a NOOP", 100, nil, io.ErrUnexpectedEOF},
		{"nothing", "", 100, nil, io.EOF},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := bufio.NewReaderSize(strings.NewReader(tt.input), 16)
			var got []string
			for {
				line, err := ReadLine(r, tt.max)
				if err != nil {
					if !errors.Is(err, tt.err) {
						t.Fatalf("err = %v, want %v", err, tt.err)
					}
					break
				}
				got = append(got, string(line))
			}
			if !slices.Equal(got, tt.want) {
				t.Fatalf("lines = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestLiteralHeaders(t *testing.T) {
	tests := []struct {
		line     string
		size     int64
		sync, ok bool
	}{
		{"{5}", 5, true, true},
		{"{0}", 0, true, true},
		{"{5+}", 5, false, true},
		{"{5-}", 5, false, true},
		{"{9999999999}", 9999999999, true, true},
		{"{99999999999}", 0, false, false}, // eleven digits
		{"{}", 0, false, false},
		{"{+}", 0, false, false},
		{"{5a}", 0, false, false},
		{"{-5}", 0, false, false},
		{"{5+-}", 0, false, false},
		{"{5", 0, false, false},
		{"5}", 0, false, false},
		{"{5} ", 0, false, false},
	}
	for _, tt := range tests {
		size, sync, ok := ParseLiteralHeader([]byte(tt.line))
		if size != tt.size || sync != tt.sync || ok != tt.ok {
			t.Errorf("ParseLiteralHeader(%q) = %d %v %v, want %d %v %v", tt.line, size, sync, ok, tt.size, tt.sync, tt.ok)
		}
		// At the end of a line it reads the same.
		line := "a LOGIN alice " + tt.line
		size, sync, ok = LiteralAtEnd([]byte(line))
		if size != tt.size || sync != tt.sync || ok != tt.ok {
			t.Errorf("LiteralAtEnd(%q) = %d %v %v, want %d %v %v", line, size, sync, ok, tt.size, tt.sync, tt.ok)
		}
	}
	for _, line := range []string{"", "}", "a NOOP", "* 1 FETCH (BODY[] {12}", "{5} x"} {
		size, sync, ok := LiteralAtEnd([]byte(line))
		want := strings.HasSuffix(line, "{12}")
		if ok != want || (ok && (size != 12 || !sync)) {
			t.Errorf("LiteralAtEnd(%q) = %d %v %v", line, size, sync, ok)
		}
	}
}

func TestQuote(t *testing.T) {
	tests := []struct {
		in, out string
		ok      bool
	}{
		{"alice", `"alice"`, true},
		{"", `""`, true},
		{`p"w\`, `"p\"w\\"`, true},
		{"jürgen", `"jürgen"`, true},
		{"a\r\nb", "", false},
		{"a\x00b", "", false},
	}
	for _, tt := range tests {
		got, ok := Quote(tt.in)
		if got != tt.out || ok != tt.ok {
			t.Errorf("Quote(%q) = %q %v, want %q %v", tt.in, got, ok, tt.out, tt.ok)
		}
	}
}

func TestUnquote(t *testing.T) {
	tests := []struct {
		in, s, rest string
		ok          bool
	}{
		{`"alice" x`, "alice", " x", true},
		{`"al\"ice"`, `al"ice`, "", true},
		{`"p\\w"`, `p\w`, "", true},
		{`""`, "", "", true},
		{`"abc`, "", "", false},
		{`"a\b"`, "", "", false},
		{"\"a\r\"", "", "", false},
		{"\"a\x00\"", "", "", false},
		{`"a\`, "", "", false},
	}
	for _, tt := range tests {
		s, rest, ok := Unquote([]byte(tt.in))
		if s != tt.s || string(rest) != tt.rest || ok != tt.ok {
			t.Errorf("Unquote(%q) = %q %q %v, want %q %q %v", tt.in, s, rest, ok, tt.s, tt.rest, tt.ok)
		}
	}
}

func TestParseStatus(t *testing.T) {
	tests := []struct {
		line, tag    string
		status, code string
		ok           bool
	}{
		{"a1 OK done", "a1", "OK", "", true},
		{"a1 ok [CAPABILITY IMAP4rev1 IDLE] Logged in", "a1", "OK", "CAPABILITY IMAP4rev1 IDLE", true},
		{"a1 NO [AUTHENTICATIONFAILED] Authentication failed.", "a1", "NO", "AUTHENTICATIONFAILED", true},
		{"* PREAUTH [CAPABILITY IMAP4rev1] hi", "*", "PREAUTH", "CAPABILITY IMAP4rev1", true},
		{"* BYE", "*", "BYE", "", true},
		{"a1 NO [UNAVAILABLE", "a1", "NO", "", true}, // an unclosed code is no code
		{"a10 OK done", "a1", "", "", false},
		{"* CAPABILITY IMAP4rev1", "a1", "", "", false},
		{"a1", "a1", "", "", false},
	}
	for _, tt := range tests {
		status, code, ok := ParseStatus([]byte(tt.line), tt.tag)
		if status != tt.status || code != tt.code || ok != tt.ok {
			t.Errorf("ParseStatus(%q, %q) = %q %q %v, want %q %q %v", tt.line, tt.tag, status, code, ok, tt.status, tt.code, tt.ok)
		}
	}
}

func TestCapabilitiesFromCode(t *testing.T) {
	tests := []struct {
		code string
		want []string
	}{
		{"CAPABILITY IMAP4rev1 IDLE  MOVE", []string{"IMAP4rev1", "IDLE", "MOVE"}},
		{"capability IMAP4rev1", []string{"IMAP4rev1"}},
		{"CAPABILITY", []string{}},
		{"AUTHENTICATIONFAILED", nil},
		{"", nil},
		{"CAPABILITYX IMAP4rev1", nil},
	}
	for _, tt := range tests {
		got := CapabilitiesFromCode(tt.code)
		if !slices.Equal(got, tt.want) || (got == nil) != (tt.want == nil) {
			t.Errorf("CapabilitiesFromCode(%q) = %#v, want %#v", tt.code, got, tt.want)
		}
	}
}

func TestCharacterClasses(t *testing.T) {
	for c := 0; c < 256; c++ {
		b := byte(c)
		special := strings.IndexByte(`(){ %*"\]`, b) >= 0
		wantAtom := b > 0x1f && b < 0x7f && !special
		if got := IsAtomChar(b); got != wantAtom {
			t.Errorf("IsAtomChar(%q) = %v", b, got)
		}
		wantTag := (wantAtom || b == ']') && b != '+'
		if got := IsTagChar(b); got != wantTag {
			t.Errorf("IsTagChar(%q) = %v", b, got)
		}
	}
}

// FuzzReadLine checks ReadLine against a plain split of the input at LF:
// each line comes back whole and without its terminator while it takes at
// most max+2 bytes with it, the first one over is ErrLineTooLong, and
// input that ends without LF is io.ErrUnexpectedEOF (or ErrLineTooLong
// once it is long); whatever the size of the reader's buffer.
func FuzzReadLine(f *testing.F) {
	f.Add([]byte("a1 NOOP\r\nb\n\r\n"), 8, 16)
	f.Add([]byte(strings.Repeat("x", 100)+"\r\n"), 99, 16)
	f.Add([]byte("no end"), 100, 16)
	f.Add([]byte("\r\r\n\n"), 0, 16)
	f.Fuzz(func(t *testing.T, data []byte, max, bufSize int) {
		max = max & 0xfff
		r := bufio.NewReaderSize(bytes.NewReader(data), bufSize&0xfff)
		rest := data
		for {
			line, err := ReadLine(r, max)
			i := bytes.IndexByte(rest, '\n')
			switch {
			case len(rest) == 0:
				if !errors.Is(err, io.EOF) {
					t.Fatalf("at the end: %q, %v; want io.EOF", line, err)
				}
				return
			case i < 0:
				if !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, ErrLineTooLong) {
					t.Fatalf("unterminated %q: %q, %v", rest, line, err)
				}
				return
			}
			if len(rest[:i]) > max+1 {
				if !errors.Is(err, ErrLineTooLong) {
					t.Fatalf("line of %d bytes, limit %d: %q, %v", i, max, line, err)
				}
				return
			}
			if err != nil {
				t.Fatalf("line %q within the limit %d: %v", rest[:i], max, err)
			}
			if want := bytes.TrimSuffix(rest[:i], []byte("\r")); !bytes.Equal(line, want) {
				t.Fatalf("got %q, want %q", line, want)
			}
			rest = rest[i+1:]
		}
	})
}

// FuzzLiteralHeader checks that a literal header parses only when it is
// "{" digits, an optional "+" or "-", "}", that it prints back as itself,
// and that LiteralAtEnd agrees with ParseLiteralHeader on the line's last
// "{".
func FuzzLiteralHeader(f *testing.F) {
	for _, s := range []string{"{5}", "{5+}", "{5-}", "{0}", "{9999999999}", "{99999999999}", "{}", "a LOGIN {5}", "{5} x", "{{5}"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, p []byte) {
		size, sync, ok := ParseLiteralHeader(p)
		if ok {
			if size < 0 {
				t.Fatalf("%q: size %d", p, size)
			}
			// The only other spelling is leading zeros.
			s := string(p)
			suffix := ""
			if !sync {
				suffix = s[len(s)-2 : len(s)-1]
			}
			digits := strings.TrimLeft(s[1:len(s)-1-len(suffix)], "0")
			if digits == "" {
				digits = "0"
			}
			if digits != strconv.FormatInt(size, 10) || (suffix != "" && suffix != "+" && suffix != "-") {
				t.Fatalf("%q parsed as %d sync=%v", p, size, sync)
			}
		} else if size != 0 || sync {
			t.Fatalf("%q: not ok, yet %d %v", p, size, sync)
		}
		atEnd, atEndSync, atEndOK := LiteralAtEnd(p)
		i := bytes.LastIndexByte(p, '{')
		if i < 0 {
			if atEndOK {
				t.Fatalf("%q: a literal without '{'", p)
			}
			return
		}
		s, ss, sok := ParseLiteralHeader(p[i:])
		if atEnd != s || atEndSync != ss || atEndOK != sok {
			t.Fatalf("%q: LiteralAtEnd %d %v %v, ParseLiteralHeader of its end %d %v %v", p, atEnd, atEndSync, atEndOK, s, ss, sok)
		}
	})
}

// FuzzQuote checks that Quote refuses exactly the strings with CR, LF or
// NUL, and that Unquote gives every quoted string back, leaving what
// follows it.
func FuzzQuote(f *testing.F) {
	for _, s := range []string{"alice", `p"w\`, "", "a\r\nb", "jürgen", `\\"`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		q, ok := Quote(s)
		if ok == strings.ContainsAny(s, "\r\n\x00") {
			t.Fatalf("Quote(%q) ok=%v", s, ok)
		}
		if !ok {
			return
		}
		got, rest, ok := Unquote([]byte(q + " tail"))
		if !ok || got != s || string(rest) != " tail" {
			t.Fatalf("Unquote(Quote(%q)) = %q %q %v", s, got, rest, ok)
		}
	})
}

// FuzzUnquote checks that Unquote never panics, and that whatever it
// accepts quotes back to the text it consumed.
func FuzzUnquote(f *testing.F) {
	for _, s := range []string{`"alice" x`, `"al\"ice"`, `"abc`, `"a\b"`, `"\\\""`, `""`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, p []byte) {
		if len(p) == 0 || p[0] != '"' {
			return
		}
		s, rest, ok := Unquote(p)
		if !ok {
			return
		}
		q, qok := Quote(s)
		if !qok || q != string(p[:len(p)-len(rest)]) {
			t.Fatalf("Unquote(%q) = %q, which quotes as %q %v", p, s, q, qok)
		}
	})
}

// FuzzParseStatus checks that ParseStatus never panics, matches only its
// tag followed by a space, and returns an upper-case status and a code
// found inside the line.
func FuzzParseStatus(f *testing.F) {
	for _, s := range []string{"a1 OK [CAPABILITY IMAP4rev1] hi", "* BYE", "a1 no", "a1 NO [", "[]"} {
		f.Add([]byte(s), "a1")
	}
	f.Fuzz(func(t *testing.T, line []byte, tag string) {
		status, code, ok := ParseStatus(line, tag)
		if ok != bytes.HasPrefix(line, []byte(tag+" ")) {
			t.Fatalf("ParseStatus(%q, %q) ok=%v", line, tag, ok)
		}
		if status != strings.ToUpper(status) {
			t.Fatalf("status %q not upper-cased", status)
		}
		if code != "" && !bytes.Contains(line, []byte("["+code+"]")) {
			t.Fatalf("code %q not in %q", code, line)
		}
		_ = CapabilitiesFromCode(code)
	})
}

// TestReadLineLimitChoosesFromTheStart: the limit comes from the line's
// first fragment, so a long line is allowed or refused by how it begins.
func TestReadLineLimitChoosesFromTheStart(t *testing.T) {
	limit := func(start []byte) int {
		if bytes.HasPrefix(start, []byte("long ")) {
			return 10_000
		}
		return 100
	}
	for _, tt := range []struct {
		line string
		ok   bool
	}{
		{"long " + strings.Repeat("x", 5000), true},
		{"short " + strings.Repeat("x", 5000), false},
		{"short " + strings.Repeat("x", 50), true},
		{"long " + strings.Repeat("x", 20_000), false},
	} {
		r := bufio.NewReaderSize(strings.NewReader(tt.line+"\r\n"), 64)
		line, err := ReadLineLimit(r, limit)
		if tt.ok && (err != nil || string(line) != tt.line) {
			t.Errorf("%.10q...: %v", tt.line, err)
		}
		if !tt.ok && !errors.Is(err, ErrLineTooLong) {
			t.Errorf("%.10q... of %d bytes: err %v, want ErrLineTooLong", tt.line, len(tt.line), err)
		}
	}
}
