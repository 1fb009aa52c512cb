package auth

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestPlain(t *testing.T) {
	errVerify := errors.New("verify said no")
	tests := []struct {
		name     string
		response string
		verify   error
		wantErr  error
		wantUser string
	}{
		{"good", "\x00alice\x00s3cret", nil, nil, "alice"},
		{"authzid equal to user", "alice\x00alice\x00s3cret", nil, nil, "alice"},
		{"authzid other user", "admin\x00alice\x00s3cret", nil, ErrAuthzidNotAllowed, ""},
		{"empty user", "\x00\x00s3cret", nil, ErrEmptyCredentials, ""},
		{"empty password", "\x00alice\x00", nil, ErrEmptyCredentials, ""},
		{"verifier error passes through", "\x00alice\x00wrong", errVerify, errVerify, "alice"},
		{"too long user", "\x00" + strings.Repeat("a", MaxUsernameLength+1) + "\x00x", nil, ErrMalformed, ""},
		{"bad utf8", "\x00al\xffice\x00x", nil, ErrMalformed, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got Credentials
			srv, err := NewServer("plain", func(c Credentials) error {
				got = c
				return tt.verify
			})
			if err != nil {
				t.Fatal(err)
			}
			_, done, err := srv.Next([]byte(tt.response))
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("err = %v, want %v", err, tt.wantErr)
			}
			if tt.wantErr == nil && !done {
				t.Fatal("exchange not done")
			}
			if got.Username != tt.wantUser {
				t.Fatalf("user = %q, want %q", got.Username, tt.wantUser)
			}
		})
	}
}

func TestPlainMalformed(t *testing.T) {
	srv, _ := NewServer(Plain, func(Credentials) error { t.Fatal("verifier called"); return nil })
	if _, _, err := srv.Next([]byte("no-nuls-here")); err == nil {
		t.Fatal("want an error for a response without NULs")
	}
}

func TestPlainEmptyChallengeFirst(t *testing.T) {
	srv, _ := NewServer(Plain, func(Credentials) error { return nil })
	ch, done, err := srv.Next(nil)
	if err != nil || done || len(ch) != 0 {
		t.Fatalf("Next(nil) = %q, %v, %v; want empty challenge", ch, done, err)
	}
}

func TestUnsupported(t *testing.T) {
	if _, err := NewServer("CRAM-MD5", nil); !errors.Is(err, ErrUnsupportedMechanism) {
		t.Fatalf("err = %v", err)
	}
	if Supported("CRAM-MD5") || !Supported("plain") {
		t.Fatal("Supported is wrong")
	}
}

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
			srv, _ := NewServer(Plain, func(Credentials) error { return nil })
			_, _, perr := srv.Next([]byte(tt.identity + "\x00" + tt.user + "\x00" + tt.pwd))
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

// FuzzPlain checks the PLAIN server on any response: it never panics, and
// the verifier is called only with credentials CheckCredentials accepts,
// taken unchanged from the response's three NUL-separated fields.
func FuzzPlain(f *testing.F) {
	for _, s := range []string{"\x00alice\x00s3cret", "alice\x00alice\x00pw", "\x00user1\x00guess\x00pw", "\x00user1\x01\x00pw", "\x00\x00", "no-nuls", "\x00\u202e\x00x"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, response []byte) {
		called := false
		srv, err := NewServer(Plain, func(c Credentials) error {
			called = true
			fields := strings.Split(string(response), "\x00")
			if len(fields) != 3 || c.Username != fields[1] || c.Password != fields[2] || c.Mechanism != Plain {
				t.Fatalf("credentials %#v from response %q", c, response)
			}
			if _, err := CheckCredentials(Plain, fields[0], c.Username, c.Password); err != nil {
				t.Fatalf("verifier called with %q, which CheckCredentials refuses: %v", response, err)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		_, done, err := srv.Next(response)
		if response == nil { // no initial response: the empty challenge
			if called || done || err != nil {
				t.Fatalf("Next(nil): verifier called %v, done %v, err %v", called, done, err)
			}
			return
		}
		if called != (err == nil) || (err == nil && !done) {
			t.Fatalf("response %q: verifier called %v, done %v, err %v", response, called, done, err)
		}
	})
}
