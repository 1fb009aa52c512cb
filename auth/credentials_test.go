package auth

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestCredentialsNeverPrintPassword(t *testing.T) {
	c := Credentials{Mechanism: Plain, Username: "bob", Password: "hunter2"}
	if s := c.String(); strings.Contains(s, "hunter2") {
		t.Fatalf("String() leaks the password: %s", s)
	}
}

func TestCredentialsNeverFormatPassword(t *testing.T) {
	c := Credentials{Mechanism: Plain, Username: "bob", Password: "hunter2"}
	for _, s := range []string{fmt.Sprintf("%v", c), fmt.Sprintf("%+v", c), fmt.Sprintf("%#v", c), fmt.Sprint(&c)} {
		if strings.Contains(s, "hunter2") {
			t.Fatalf("formatting leaks the password: %s", s)
		}
	}
	var buf bytes.Buffer
	slog.New(slog.NewJSONHandler(&buf, nil)).Info("x", "creds", c)
	if strings.Contains(buf.String(), "hunter2") {
		t.Fatalf("slog leaks the password: %s", buf.String())
	}
}

func TestPassThroughKeepsTheClaim(t *testing.T) {
	c, err := CheckCredentials("LOGIN", "", "alice", "s3cret")
	if err != nil {
		t.Fatal(err)
	}
	r := c.PassThrough()
	if r.Mechanism != "LOGIN" || r.User != "alice" || r.Password.Reveal() != "s3cret" {
		t.Fatalf("PassThrough() = %v user %q password %q", r.Mechanism, r.User, r.Password.Reveal())
	}
}

func TestCheckUsername(t *testing.T) {
	tests := []struct {
		name    string
		user    string
		wantErr error
	}{
		{"plain ascii", "alice", nil},
		{"address", "alice.smith+tag@example.com", nil},
		{"windows domain", `EXAMPLE\alice`, nil},
		{"inner space", "Alice Smith", nil},
		{"latin", "jürgen", nil},
		{"cyrillic", "андрей@пример.рф", nil},
		{"persian with ZWNJ", "می\u200cخواهم", nil},
		{"devanagari with ZWJ", "क्\u200dष", nil},
		{"longest", strings.Repeat("a", MaxUsernameLength), nil},
		{"empty", "", ErrEmptyCredentials},
		{"too long", strings.Repeat("a", MaxUsernameLength+1), ErrMalformedUser},
		{"NUL", "user1\x00guess1", ErrMalformedUser},
		{"leading NUL", "\x00user1", ErrMalformedUser},
		{"C0", "user1\x01", ErrMalformedUser},
		{"tab", "user1\t", ErrMalformedUser},
		{"CR LF", "user1\r\nA1 OK", ErrMalformedUser},
		{"ESC", "user1\x1b[2J", ErrMalformedUser},
		{"DEL", "user1\x7f", ErrMalformedUser},
		{"C1 NEL", "user1\u0085", ErrMalformedUser},
		{"C1 CSI", "user1\u009b2J", ErrMalformedUser},
		{"line separator", "user1\u2028", ErrMalformedUser},
		{"paragraph separator", "user1\u2029", ErrMalformedUser},
		{"bidi override", "user1\u202egpj.exe", ErrMalformedUser},
		{"bidi isolate", "\u2066user1", ErrMalformedUser},
		{"zero width space", "user\u200b1", ErrMalformedUser},
		{"byte order mark", "\ufeffuser1", ErrMalformedUser},
		{"soft hyphen", "us\u00ader1", ErrMalformedUser},
		{"invalid UTF-8", "user1\xff", ErrMalformedUser},
		{"Latin-1 byte", "j\xfcrgen", ErrMalformedUser},
		{"encoded surrogate", "user\xed\xa0\x80", ErrMalformedUser},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := CheckUsername(tt.user); !errors.Is(err, tt.wantErr) {
				t.Fatalf("CheckUsername(%q) = %v, want %v", tt.user, err, tt.wantErr)
			}
		})
	}
	if !errors.Is(ErrMalformedUser, ErrMalformed) {
		t.Error("ErrMalformedUser does not wrap ErrMalformed")
	}
}

// TestCheckCredentials: LOGIN and PLAIN go through the same checks, so a
// claim PLAIN refuses is refused in LOGIN's arguments too.
func TestCheckCredentials(t *testing.T) {
	tests := []struct {
		name                string
		identity, user, pwd string
		wantErr             error
	}{
		{"good", "", "alice", "s3cret", nil},
		{"identity equal to user", "alice", "alice", "s3cret", nil},
		{"password with spaces and controls", "", "alice", "p w\td\x01", nil},
		{"longest password", "", "alice", strings.Repeat("p", MaxPasswordLength), nil},
		{"empty user", "", "", "s3cret", ErrEmptyCredentials},
		{"empty password", "", "alice", "", ErrEmptyCredentials},
		{"NUL in user", "", "user1\x00guess1", "s3cret", ErrMalformedUser},
		{"control in identity", "alice\x01", "alice", "s3cret", ErrMalformedUser},
		{"NUL in identity", "user1\x00x", "user1", "s3cret", ErrMalformedUser},
		{"other identity", "admin", "alice", "s3cret", ErrAuthzidNotAllowed},
		{"NUL in password", "", "alice", "s3\x00cret", ErrMalformed},
		{"password not UTF-8", "", "alice", "s3cr\xe9t", ErrMalformed},
		{"password too long", "", "alice", strings.Repeat("p", MaxPasswordLength+1), ErrMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := CheckCredentials("LOGIN", tt.identity, tt.user, tt.pwd)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("err = %v, want %v", err, tt.wantErr)
			}
			if err == nil && (c.Mechanism != "LOGIN" || c.Username != tt.user || c.Password != tt.pwd) {
				t.Fatalf("credentials = %#v", c)
			}
			if err != nil && c != (Credentials{}) {
				t.Fatalf("refused claim came back with credentials %#v", c)
			}
			// PLAIN says the same about the same fields.
			if strings.IndexByte(tt.identity+tt.user+tt.pwd, 0) >= 0 {
				return // PLAIN cannot carry a NUL in a field
			}
			x, _ := Start(context.Background(), Plain, nil, &Env{})
			_, _, perr := x.Next(context.Background(), []byte(tt.identity+"\x00"+tt.user+"\x00"+tt.pwd))
			if !errors.Is(perr, tt.wantErr) {
				t.Fatalf("PLAIN err = %v, want %v like LOGIN", perr, tt.wantErr)
			}
		})
	}
}

// FuzzCheckUsername checks the validator against a byte-level reading of
// its rules: an accepted name is 1 to MaxUsernameLength bytes of UTF-8
// with no C0 control, DEL, C1 control, line or paragraph separator, bidi
// control or zero-width space.
func FuzzCheckUsername(f *testing.F) {
	for _, s := range []string{"alice", "user1\x00guess1", "user1\u0085", "jürgen", "\u202e", "a\u200cb", "\xff", strings.Repeat("a", MaxUsernameLength)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, name string) {
		err := CheckUsername(name)
		if err != nil {
			if !errors.Is(err, ErrMalformedUser) && !(name == "" && errors.Is(err, ErrEmptyCredentials)) {
				t.Fatalf("CheckUsername(%q) = %v", name, err)
			}
			return
		}
		if name == "" || len(name) > MaxUsernameLength || !utf8.ValidString(name) {
			t.Fatalf("accepted %q", name)
		}
		for i := 0; i < len(name); i++ {
			if c := name[i]; c < 0x20 || c == 0x7f {
				t.Fatalf("accepted %q with byte %#x", name, c)
			}
		}
		for _, r := range name {
			if (r >= 0x80 && r <= 0x9f) || r == 0x2028 || r == 0x2029 || (r >= 0x202a && r <= 0x202e) ||
				(r >= 0x2066 && r <= 0x2069) || r == 0x200b || r == 0x200e || r == 0x200f || r == 0xfeff {
				t.Fatalf("accepted %q with %U", name, r)
			}
		}
	})
}
