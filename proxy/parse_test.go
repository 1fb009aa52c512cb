package proxy

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
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
	for i := 0; i < 10; i++ {
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
	refuse := func(tag, name string, size int64, sync bool) error {
		return &syntaxError{tag: tag, err: errLiteralRefused}
	}
	_, out, err := parseAll("a LOGIN {5}\r\n", refuse)
	if !errors.Is(err, errLiteralRefused) {
		t.Fatalf("err = %v", err)
	}
	if out != "" {
		t.Fatalf("continuation sent for a refused literal: %q", out)
	}
}

func TestQuote(t *testing.T) {
	tests := []struct {
		in, out string
		ok      bool
	}{
		{"alice", `"alice"`, true},
		{`p"w\`, `"p\"w\\"`, true},
		{"a\r\nb", "", false},
		{"a\x00b", "", false},
	}
	for _, tt := range tests {
		got, ok := quote(tt.in)
		if got != tt.out || ok != tt.ok {
			t.Errorf("quote(%q) = %q %v, want %q %v", tt.in, got, ok, tt.out, tt.ok)
		}
		if ok {
			// Round trip through the parser.
			cmds, _, err := parseAll("t LOGIN "+got+" x\r\n", nil)
			if err != nil || cmds[0].args[0].value != tt.in {
				t.Errorf("round trip of %q failed: %v", tt.in, err)
			}
		}
	}
}

// FuzzCommandReader checks that no input panics, that every accepted
// command has a valid tag and name, and that no token exceeds the limits.
func FuzzCommandReader(f *testing.F) {
	seeds := []string{
		"a1 NOOP\r\n",
		"a AUTHENTICATE PLAIN AGFsaWNlAHB3\r\n",
		"a LOGIN {5}\r\nalice {3+}\r\npw!\r\n",
		`a ID ("name" "Mail" "version" "16.0")` + "\r\n",
		`a LOGIN "al\"ice" "p\\w"` + "\r\n",
		"a ID ({4-}\r\na\r\nb NIL)\r\n",
		"\r\n\r\n* BAD\r\n",
	}
	for _, s := range seeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var out bytes.Buffer
		cr := commandReader{r: bufio.NewReaderSize(bytes.NewReader(data), 64), w: bufio.NewWriter(&out)}
		for i := 0; i < 100; i++ {
			cmd, err := cr.read()
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
			total := 0
			for _, a := range cmd.args {
				total += len(a.value)
			}
			if total > maxCommandSize+maxLineLength {
				t.Fatalf("command of %d bytes accepted", total)
			}
		}
	})
}
