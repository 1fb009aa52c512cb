package auth

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"testing"
)

func TestUnsupported(t *testing.T) {
	if _, err := Start(context.Background(), "CRAM-MD5", []string{"CRAM-MD5"}, &Env{}); !errors.Is(err, ErrUnsupportedMechanism) {
		t.Fatalf("err = %v", err)
	}
	if Supported("CRAM-MD5") || !Supported("plain") {
		t.Fatal("Supported is wrong")
	}
}

// TestStartsOnlyWhatTheConnectionOffers: the list AUTH= shows and the
// mechanisms AUTHENTICATE starts are one list.
func TestStartsOnlyWhatTheConnectionOffers(t *testing.T) {
	env := &Env{Conn: ConnState{TLS: &tls.ConnectionState{}, Listener: "[::]:993"}}
	tests := []struct {
		name       string
		configured []string
		want       []string
	}{
		{"empty means the default", nil, Default()},
		{"configured", []string{"PLAIN"}, []string{"PLAIN"}},
		{"any case, once", []string{"plain", "PLAIN"}, []string{"PLAIN"}},
		{"not implemented is not offered", []string{"OAUTHBEARER", "CRAM-MD5"}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := Offered(context.Background(), tt.configured, env)
			if !slices.Equal(got, tt.want) {
				t.Fatalf("Offered(%q) = %q, want %q", tt.configured, got, tt.want)
			}
			for _, name := range append(Known(), "CRAM-MD5") {
				_, err := Start(context.Background(), strings.ToLower(name), tt.configured, env)
				if offered := slices.Contains(got, name); offered != (err == nil) {
					t.Fatalf("Start(%q) with %q offered: err = %v", name, got, err)
				}
				if err != nil && !errors.Is(err, ErrUnsupportedMechanism) {
					t.Fatalf("Start(%q) = %v", name, err)
				}
			}
		})
	}
}

func TestResultNeverShowsThePassword(t *testing.T) {
	r := Credentials{Mechanism: Plain, Username: "bob", Password: "hunter2"}.PassThrough()
	var shown []string
	for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q", "%x", "%d"} {
		shown = append(shown, fmt.Sprintf(verb, r), fmt.Sprintf(verb, r.Password), fmt.Sprintf(verb, &r))
	}
	shown = append(shown, r.Password.String(), fmt.Sprint(r.Password))
	j, _ := json.Marshal(r)
	shown = append(shown, string(j))
	var buf bytes.Buffer
	slog.New(slog.NewJSONHandler(&buf, nil)).Info("x", "result", r, "password", r.Password)
	slog.New(slog.NewTextHandler(&buf, nil)).Info("x", "result", r, "password", r.Password)
	shown = append(shown, buf.String())
	for _, s := range shown {
		if strings.Contains(s, "hunter2") || strings.Contains(s, "68756e74657232") {
			t.Fatalf("the password shows: %s", s)
		}
	}
	if r.Password.Reveal() != "hunter2" {
		t.Fatalf("Reveal() = %q", r.Password.Reveal())
	}
}
