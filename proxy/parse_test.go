package proxy

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"runtime"
	"strings"
	"testing"

	"github.com/imapgate/imapgate/proxy/internal/imapwire"
)

// parseAll runs the command reader over input and returns the commands,
// the continuation requests it wrote, and the first error.
func parseAll(input string, onLiteral literalFunc) ([]*command, string, error) {
	var out bytes.Buffer
	cr := commandReader{r: bufio.NewReaderSize(strings.NewReader(input), 64), w: bufio.NewWriter(&out), onLiteral: onLiteral}
	var cmds []*command
	for {
		cmd, err := cr.read()
		if err != nil {
			if errors.Is(err, io.EOF) {
				err = nil
			}
			return cmds, out.String(), err
		}
		cmds = append(cmds, cmd)
	}
}

func TestParseCommands(t *testing.T) {
	tests := []struct {
		name  string
		input string
		tag   string
		cmd   string
		args  []token
		conts int // "+ " continuation requests
	}{
		{"simple", "a1 NOOP\r\n", "a1", "NOOP", nil, 0},
		{"lower case name", "x capability\r\n", "x", "CAPABILITY", nil, 0},
		{"bare LF", "a NOOP\n", "a", "NOOP", nil, 0},
		{"sasl-ir", "a AUTHENTICATE PLAIN AGFsaWNlAHB3\r\n", "a", "AUTHENTICATE",
			[]token{{tokAtom, "PLAIN"}, {tokAtom, "AGFsaWNlAHB3"}}, 0},
		{"sasl-ir empty", "a AUTHENTICATE PLAIN =\r\n", "a", "AUTHENTICATE",
			[]token{{tokAtom, "PLAIN"}, {tokAtom, "="}}, 0},
		{"quoted with escapes", `a LOGIN "al\"ice" "p\\w d"` + "\r\n", "a", "LOGIN",
			[]token{{tokQuoted, `al"ice`}, {tokQuoted, `p\w d`}}, 0},
		{"sync literal", "a LOGIN {5}\r\nalice {3}\r\npw!\r\n", "a", "LOGIN",
			[]token{{tokLiteral, "alice"}, {tokLiteral, "pw!"}}, 2},
		{"literal plus", "a LOGIN {5+}\r\nalice \"pw\"\r\n", "a", "LOGIN",
			[]token{{tokLiteral, "alice"}, {tokQuoted, "pw"}}, 0},
		{"literal minus", "a LOGIN {5-}\r\nalice pw\r\n", "a", "LOGIN",
			[]token{{tokLiteral, "alice"}, {tokAtom, "pw"}}, 0},
		{"literal with CRLF inside", "a ID ({4}\r\na\r\nb NIL)\r\n", "a", "ID",
			[]token{{kind: tokLParen}, {tokLiteral, "a\r\nb"}, {tokAtom, "NIL"}, {kind: tokRParen}}, 1},
		{"id list", `a ID ("name" "Mail" "version" "16.0")` + "\r\n", "a", "ID",
			[]token{{kind: tokLParen}, {tokQuoted, "name"}, {tokQuoted, "Mail"}, {tokQuoted, "version"}, {tokQuoted, "16.0"}, {kind: tokRParen}}, 0},
		{"id nil", "a ID NIL\r\n", "a", "ID", []token{{tokAtom, "NIL"}}, 0},
		{"utf8 quoted", "a LOGIN \"jürgen\" \"pässword\"\r\n", "a", "LOGIN",
			[]token{{tokQuoted, "jürgen"}, {tokQuoted, "pässword"}}, 0},
		{"tag with bracket", "a] NOOP\r\n", "a]", "NOOP", nil, 0},
		{"trailing space", "a NOOP \r\n", "a", "NOOP", nil, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cmds, out, err := parseAll(tt.input, nil)
			if err != nil {
				t.Fatalf("error: %v", err)
			}
			if len(cmds) != 1 {
				t.Fatalf("got %d commands", len(cmds))
			}
			c := cmds[0]
			if c.tag != tt.tag || c.name != tt.cmd {
				t.Fatalf("tag/name = %q %q", c.tag, c.name)
			}
			if len(c.args) != len(tt.args) {
				t.Fatalf("args = %+v, want %+v", c.args, tt.args)
			}
			for i := range c.args {
				if c.args[i] != tt.args[i] {
					t.Fatalf("arg %d = %+v, want %+v", i, c.args[i], tt.args[i])
				}
			}
			if n := strings.Count(out, "+ "); n != tt.conts {
				t.Fatalf("continuations = %d (%q), want %d", n, out, tt.conts)
			}
		})
	}
}

func TestParseErrors(t *testing.T) {
	tests := []struct {
		name    string
		input   string
		wantErr error
		wantTag string // for syntax errors
	}{
		{"empty line", "\r\n", errSyntax, ""},
		{"no command", "a\r\n", errSyntax, ""},
		{"plus in tag", "a+ NOOP\r\n", errSyntax, ""},
		{"star tag", "* NOOP\r\n", errSyntax, ""},
		{"unterminated quote", "a LOGIN \"abc\r\n", errSyntax, "a"},
		{"bad escape", `a LOGIN "a\b"` + "\r\n", errSyntax, "a"},
		{"literal not at end", "a LOGIN {5} x\r\n", errSyntax, "a"},
		{"literal no digits", "a LOGIN {}\r\n", errSyntax, "a"},
		{"literal bad digits", "a LOGIN {5a}\r\n", errSyntax, "a"},
		{"huge sync literal answered", "a LOGIN {99999999}\r\n", errLiteralTooBig, "a"},
		{"huge nonsync literal fatal", "a LOGIN {99999999+}\r\n", errLiteralTooBig, ""},
		{"line too long", "a NOOP " + strings.Repeat("x", maxLineLength+10) + "\r\n", errLineTooLong, ""},
		{"truncated literal", "a LOGIN {10}\r\nabc", io.ErrUnexpectedEOF, ""},
		{"control char", "a NOOP \x01\r\n", errSyntax, "a"},
		{"too many args", "a ID (" + strings.Repeat("x ", maxTokens+2) + ")\r\n", errSyntax, "a"},
		{"nested list", "a ID ((x y))\r\n", errSyntax, "a"},
		{"list never closed", "a ID (x y\r\n", errSyntax, "a"},
		{"list closed twice", "a ID (x y))\r\n", errSyntax, "a"},
		{"list never opened", "a ID x)\r\n", errSyntax, "a"},
		{"list left open over a literal", "a ID ({1}\r\nx\r\n", errSyntax, "a"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := parseAll(tt.input, nil)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("err = %v, want %v", err, tt.wantErr)
			}
			var se *syntaxError
			if errors.As(err, &se) && se.tag != tt.wantTag {
				t.Fatalf("tag = %q, want %q", se.tag, tt.wantTag)
			}
		})
	}
}

func TestParseTotalCommandSize(t *testing.T) {
	// Several literals, each under the literal limit, must not add up past
	// the command limit.
	var b strings.Builder
	b.WriteString("a ID (")
	for i := 0; i <= maxCommandSize/8000; i++ {
		b.WriteString("{8000+}\r\n")
		b.WriteString(strings.Repeat("y", 8000))
		b.WriteString(" ")
	}
	b.WriteString(")\r\n")
	_, _, err := parseAll(b.String(), nil)
	if !errors.Is(err, errCommandTooBig) && !errors.Is(err, errLiteralTooBig) {
		t.Fatalf("err = %v, want a size error", err)
	}
}

func TestLiteralRefusedBeforeItIsSent(t *testing.T) {
	refuse := func(cmd *command, size int64, sync bool) error {
		return &syntaxError{tag: cmd.tag, err: errLiteralRefused}
	}
	_, out, err := parseAll("a LOGIN {5}\r\n", refuse)
	if !errors.Is(err, errLiteralRefused) {
		t.Fatalf("err = %v", err)
	}
	if out != "" {
		t.Fatalf("continuation sent for a refused literal: %q", out)
	}
}

// TestQuoteRoundTripsThroughTheParser: what quote writes, the pre-auth
// parser reads back as the same string; what it cannot quote needs a
// literal. (imapwire's tests pin the quoted form itself.)
func TestQuoteRoundTripsThroughTheParser(t *testing.T) {
	for _, s := range []string{"alice", `p"w\`, "jürgen", ""} {
		q, ok := imapwire.Quote(s)
		if !ok {
			t.Fatalf("quote(%q) refused", s)
		}
		cmds, _, err := parseAll("t LOGIN "+q+" x\r\n", nil)
		if err != nil || cmds[0].args[0] != (token{tokQuoted, s}) {
			t.Errorf("round trip of %q through %s failed: %v", s, q, err)
		}
	}
	for _, s := range []string{"a\r\nb", "a\x00b"} {
		if q, ok := imapwire.Quote(s); ok {
			t.Errorf("quote(%q) = %s, want a refusal", s, q)
		}
	}
}

// checkArgs fails unless args stay within the parser's limits: at most
// maxTokens tokens, parentheses balanced so far and nested at most
// maxDepth deep, literals of at most maxLiteralSize, and at most
// maxCommandSize bytes of values in all. complete also wants every list
// closed.
func checkArgs(t *testing.T, args []token, complete bool) {
	t.Helper()
	if len(args) > maxTokens {
		t.Fatalf("%d tokens, limit %d", len(args), maxTokens)
	}
	depth, total := 0, 0
	for _, a := range args {
		switch a.kind {
		case tokLParen:
			if depth++; depth > maxDepth {
				t.Fatalf("lists nested %d deep, limit %d", depth, maxDepth)
			}
		case tokRParen:
			if depth--; depth < 0 {
				t.Fatal("a list closed that was never opened")
			}
		case tokLiteral:
			if len(a.value) > maxLiteralSize {
				t.Fatalf("literal of %d bytes, limit %d", len(a.value), maxLiteralSize)
			}
		}
		total += len(a.value)
	}
	if complete && depth != 0 {
		t.Fatalf("%d lists left open", depth)
	}
	if total > maxCommandSize {
		t.Fatalf("command of %d bytes, limit %d", total, maxCommandSize)
	}
}

// FuzzCommandReader checks that no input panics, that every accepted
// command has a valid tag and name and stays within every limit (tokens,
// nesting, literal and command size), that the parser asks about a
// literal only while the command so far is within them and the literal
// fits, and that it writes a "+" continuation only for a literal the hook
// accepted.
func FuzzCommandReader(f *testing.F) {
	seeds := []string{
		"a1 NOOP\r\n",
		"a AUTHENTICATE PLAIN AGFsaWNlAHB3\r\n",
		"a LOGIN {5}\r\nalice {3+}\r\npw!\r\n",
		`a ID ("name" "Mail" "version" "16.0")` + "\r\n",
		`a LOGIN "al\"ice" "p\\w"` + "\r\n",
		"a ID ({4-}\r\na\r\nb NIL)\r\n",
		"\r\n\r\n* BAD\r\n",
		"a ID " + strings.Repeat("(", 300) + "{1}\r\n",
		"a ID x" + strings.Repeat(")", 300) + "\r\n",
		"a ID " + strings.Repeat("(", 300) + "x" + strings.Repeat(")", 300) + "\r\n",
		"a ID ((\"name\" \"Mail\"))\r\n",
		"a ID (" + strings.Repeat("x ", 255) + "{1}\r\n",
		"a ID (" + strings.Repeat("{1}\r\nx ", 300) + ")\r\n",
		"a ID ({8000}\r\n" + strings.Repeat("y", 8000) + " {8000+}\r\n" + strings.Repeat("y", 8000) + ")\r\n",
	}
	for _, s := range seeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var out bytes.Buffer
		cr := &commandReader{r: bufio.NewReaderSize(bytes.NewReader(data), 64), w: bufio.NewWriter(&out)}
		accepted := 0 // synchronizing literals the hook accepted
		cr.onLiteral = func(cmd *command, size int64, sync bool) error {
			checkArgs(t, cmd.args, false)
			if len(cmd.args) >= maxTokens {
				t.Fatalf("asked about a literal after %d tokens, limit %d", len(cmd.args), maxTokens)
			}
			if size > maxLiteralSize || int64(cr.size)+size > maxCommandSize {
				t.Fatalf("asked about a literal of %d bytes after %d, limits %d and %d", size, cr.size, maxLiteralSize, maxCommandSize)
			}
			if sync && size%3 == 1 {
				// Refuse some, as the session does, to reach that path.
				return &syntaxError{tag: cmd.tag, err: errLiteralNotAllowed}
			}
			if sync {
				accepted++
			}
			return nil
		}
		for i := 0; i < 100; i++ {
			cmd, err := cr.read()
			if n := strings.Count(out.String(), "+ "); n != accepted {
				t.Fatalf("%d continuations for %d literals the hook accepted", n, accepted)
			}
			if err != nil {
				var se *syntaxError
				if errors.As(err, &se) {
					continue
				}
				return
			}
			if cmd.tag == "" || cmd.name == "" || strings.ContainsAny(cmd.tag, " +") {
				t.Fatalf("bad command %+v", cmd)
			}
			checkArgs(t, cmd.args, true)
			if cr.size > maxCommandSize {
				t.Fatalf("command of %d bytes read, limit %d", cr.size, maxCommandSize)
			}
		}
	})
}

// bytesPerRead reports the bytes the command reader allocates, on average,
// to read input once, the way a session reads it (a 2 KiB buffered reader).
func bytesPerRead(t *testing.T, input string) uint64 {
	t.Helper()
	const runs = 20
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	for range runs {
		cr := commandReader{r: bufio.NewReaderSize(strings.NewReader(input), 2048), w: bufio.NewWriter(io.Discard)}
		cr.read()
	}
	runtime.ReadMemStats(&after)
	return (after.TotalAlloc - before.TotalAlloc) / runs
}

// TestParenthesesCannotEscapeTheTokenLimit is the attack of a client that
// has not even started TLS: one line of 8,184 "(" (or ")"), or ending in a
// literal it never sends. The parser must refuse the line at the
// token limit, with BAD and without asking for the literal, and allocate
// no more than a small, fixed amount for it.
func TestParenthesesCannotEscapeTheTokenLimit(t *testing.T) {
	const maxBytes = 64 << 10 // the line itself is 8 KiB; 256 tokens add about 12 KiB
	tests := []struct{ name, line string }{
		{"nested", "a ID " + strings.Repeat("(", 8184)},
		{"nested then literal", "a ID " + strings.Repeat("(", 8181) + "{1}"},
		{"closing", "a ID x" + strings.Repeat(")", 8183)},
		{"glued to atoms", "a ID " + strings.Repeat("((x)) ", 1364)},
		{"side by side then literal", "a ID " + strings.Repeat("() ", 2727) + "{1}"},
		{"literal as token 257", "a ID (" + strings.Repeat("x ", maxTokens-1) + "{1}"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if len(tt.line) > maxLineLength {
				t.Fatalf("test line of %d bytes is over the line limit", len(tt.line))
			}
			n := bytesPerRead(t, tt.line+"\r\n")
			t.Logf("%d bytes allocated to read %d bytes", n, len(tt.line)+2)
			if n > maxBytes {
				t.Errorf("reading the line allocated %d bytes, want at most %d", n, maxBytes)
			}
			cmds, out, err := parseAll(tt.line+"\r\n", nil)
			var se *syntaxError
			if !errors.As(err, &se) || se.tag != "a" {
				t.Fatalf("got %d commands, err %v; want a tagged syntax error", len(cmds), err)
			}
			if out != "" {
				t.Fatalf("the parser asked for a literal on a line over its limits: %q", out)
			}
		})
	}
}
