package auth

import (
	"context"
	"errors"
	"strings"
	"testing"
)

func TestPlain(t *testing.T) {
	tests := []struct {
		name     string
		response string
		wantErr  error
		wantUser string
		wantPass string
	}{
		{"good", "\x00alice\x00s3cret", nil, "alice", "s3cret"},
		{"authzid equal to user", "alice\x00alice\x00s3cret", nil, "alice", "s3cret"},
		{"authzid other user", "admin\x00alice\x00s3cret", ErrAuthzidNotAllowed, "", ""},
		{"empty user", "\x00\x00s3cret", ErrEmptyCredentials, "", ""},
		{"empty password", "\x00alice\x00", ErrEmptyCredentials, "", ""},
		{"a wrong password is the upstream's to judge", "\x00alice\x00wrong", nil, "alice", "wrong"},
		{"too long user", "\x00" + strings.Repeat("a", MaxUsernameLength+1) + "\x00x", ErrMalformed, "", ""},
		{"bad utf8", "\x00al\xffice\x00x", ErrMalformed, "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			x, err := Start(context.Background(), "plain", nil, &Env{})
			if err != nil {
				t.Fatal(err)
			}
			_, done, err := x.Next(context.Background(), []byte(tt.response))
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("err = %v, want %v", err, tt.wantErr)
			}
			if tt.wantErr == nil && !done {
				t.Fatal("exchange not done")
			}
			r := x.Result()
			if r.User != tt.wantUser || r.Password.Reveal() != tt.wantPass {
				t.Fatalf("user = %q, password %q; want %q, %q", r.User, r.Password.Reveal(), tt.wantUser, tt.wantPass)
			}
			if tt.wantErr == nil && r.Mechanism != Plain {
				t.Fatalf("mechanism = %q", r.Mechanism)
			}
		})
	}
}

func TestPlainMalformed(t *testing.T) {
	x, _ := Start(context.Background(), Plain, nil, &Env{})
	if _, done, err := x.Next(context.Background(), []byte("no-nuls-here")); err == nil || done {
		t.Fatal("want an error for a response without NULs")
	}
	if x.Result() != (Result{}) {
		t.Fatalf("a malformed response came back with a result")
	}
}

func TestPlainEmptyChallengeFirst(t *testing.T) {
	x, _ := Start(context.Background(), Plain, nil, &Env{})
	ch, done, err := x.Next(context.Background(), nil)
	if err != nil || done || ch == nil || len(ch) != 0 {
		t.Fatalf("Next(nil) = %q, %v, %v; want empty challenge", ch, done, err)
	}
}

func TestPlainRefusesAResponseAfterTheEnd(t *testing.T) {
	x, _ := Start(context.Background(), Plain, nil, &Env{})
	if _, done, err := x.Next(context.Background(), []byte("\x00alice\x00s3cret")); err != nil || !done {
		t.Fatalf("Next = %v, %v", done, err)
	}
	if _, done, err := x.Next(context.Background(), []byte("\x00bob\x00s3cret")); !errors.Is(err, ErrMalformed) || done {
		t.Fatalf("second Next = %v, %v; want ErrMalformed", done, err)
	}
	if x.Result().User != "alice" {
		t.Fatalf("result changed to %q", x.Result().User)
	}
}

// FuzzPlain checks the PLAIN exchange on any response: it never panics,
// and it is done, with a Result, only for credentials CheckCredentials
// accepts, taken unchanged from the response's three NUL-separated fields.
func FuzzPlain(f *testing.F) {
	for _, s := range []string{"\x00alice\x00s3cret", "alice\x00alice\x00pw", "\x00user1\x00guess\x00pw", "\x00user1\x01\x00pw", "\x00\x00", "no-nuls", "\x00\u202e\x00x"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, response []byte) {
		x, err := Start(context.Background(), Plain, nil, &Env{})
		if err != nil {
			t.Fatal(err)
		}
		_, done, err := x.Next(context.Background(), response)
		if response == nil { // no initial response: the empty challenge
			if done || err != nil {
				t.Fatalf("Next(nil): done %v, err %v", done, err)
			}
			return
		}
		if done != (err == nil) {
			t.Fatalf("response %q: done %v, err %v", response, done, err)
		}
		r := x.Result()
		if !done {
			if r != (Result{}) {
				t.Fatalf("response %q refused (%v) with a result", response, err)
			}
			return
		}
		fields := strings.Split(string(response), "\x00")
		if len(fields) != 3 || r.User != fields[1] || r.Password.Reveal() != fields[2] || r.Mechanism != Plain {
			t.Fatalf("result %v user %q from response %q", r.Mechanism, r.User, response)
		}
		if _, err := CheckCredentials(Plain, fields[0], r.User, r.Password.Reveal()); err != nil {
			t.Fatalf("done with %q, which CheckCredentials refuses: %v", response, err)
		}
	})
}
