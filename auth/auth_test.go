package auth

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
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
