package oauth

import (
	"errors"
	"fmt"
	"testing"

	"github.com/emersion/go-sasl"
)

func TestErrorChallengeJSON(t *testing.T) {
	const conf = "https://login.example.com/.well-known/openid-configuration"
	expired := fmt.Errorf("%w: exp has passed", ErrTokenExpired)
	bad := malformed(OAuthBearer, "no auth key")
	for _, c := range []struct {
		name  string
		mech  Mechanism
		cause error
		scope string
		want  string
	}{
		{"refused token, RFC 7628 section 3.2.2", OAuthBearer, expired, "mail", `{"status":"invalid_token","scope":"mail","openid-configuration":"` + conf + `"}`},
		{"refused token, no scope", OAuthBearer, expired, "", `{"status":"invalid_token","openid-configuration":"` + conf + `"}`},
		{"malformed message", OAuthBearer, bad, "", `{"status":"invalid_request","openid-configuration":"` + conf + `"}`},
		{"XOAUTH2 refused token, Google's form", XOAuth2, expired, "https://mail.google.com/", `{"status":"401","schemes":"Bearer","scope":"https://mail.google.com/"}`},
		{"XOAUTH2 malformed", XOAuth2, malformed(XOAuth2, "no user key"), "", `{"status":"400","schemes":"Bearer"}`},
	} {
		t.Run(c.name, func(t *testing.T) {
			if got := string(ErrorChallenge(c.mech, c.cause, c.scope, conf)); got != c.want {
				t.Fatalf("got  %s\nwant %s", got, c.want)
			}
		})
	}
}

// A provider that is down is not the client's failure: no challenge, the
// mechanism answers NO [UNAVAILABLE] at once.
func TestNoErrorChallengeWhenTheProviderIsUnavailable(t *testing.T) {
	cause := fmt.Errorf("%w: introspection endpoint answered 503", ErrUnavailable)
	if b := ErrorChallenge(OAuthBearer, cause, "", ""); b != nil {
		t.Fatalf("challenge %s for an unavailable provider", b)
	}
}

func TestDummyResponseRule(t *testing.T) {
	for _, c := range []struct {
		mech  Mechanism
		reply string
		dummy bool
	}{
		{OAuthBearer, "\x01", true},
		{OAuthBearer, "", false},
		{OAuthBearer, "x", false},
		{OAuthBearer, "\x01\x01", false},
		{OAuthBearer, "\x01abc", false},
		{OAuthBearer, "n,,\x01auth=Bearer abc\x01\x01", false},
		{XOAuth2, "", true},
		{XOAuth2, "\x01", true},
		{XOAuth2, "x", false},
	} {
		if got := IsDummyResponse(c.mech, []byte(c.reply)); got != c.dummy {
			t.Errorf("IsDummyResponse(%s, %q) = %v, want %v", c.mech, c.reply, got, c.dummy)
		}
	}
}

// After the challenge the exchange always fails, with the token's reason,
// whatever the client replies; a reply that is not the dummy response is
// noted as malformed too.
func TestFinishFailedKeepsTheTokenReason(t *testing.T) {
	cause := fmt.Errorf("%w: key did not verify it", ErrTokenSignature)
	err := FinishFailed(OAuthBearer, []byte{0x01}, cause)
	if err != cause {
		t.Fatalf("after the dummy response: %v, want the cause itself", err)
	}
	for _, reply := range [][]byte{nil, {}, []byte("x"), []byte("\x01x")} {
		err := FinishFailed(OAuthBearer, reply, cause)
		if !errors.Is(err, ErrTokenSignature) || !errors.Is(err, ErrMalformedMessage) || Reason(err) != ReasonTokenSignature {
			t.Fatalf("reply %q: %v (reason %q), want the signature failure joined with a malformed reply", reply, err, Reason(err))
		}
	}
}

// The finding that made this package parse OAUTHBEARER itself: go-sasl's
// server reads response[0] of an empty reply to its error challenge, and
// takes a one-byte reply other than %x01 as the dummy response. If this
// test fails, go-sasl changed: revisit the comment in message.go.
func TestGoSASLOAuthBearerServerIndexesAnEmptyReply(t *testing.T) {
	newServer := func() sasl.Server {
		s := sasl.NewOAuthBearerServer(func(sasl.OAuthBearerOptions) *sasl.OAuthBearerError {
			return &sasl.OAuthBearerError{Status: "invalid_token"}
		})
		if _, _, err := s.Next([]byte("n,,\x01auth=Bearer abc\x01\x01")); err != nil {
			t.Fatalf("first step: %v", err)
		}
		return s
	}
	panicked := func() (p bool) {
		defer func() { p = recover() != nil }()
		_, _, _ = newServer().Next([]byte{})
		return false
	}()
	if !panicked {
		t.Fatal("go-sasl no longer panics on an empty reply to its error challenge")
	}
	if _, done, err := newServer().Next([]byte("x")); !done || err == nil || err.Error() == "sasl: invalid response" {
		t.Fatalf("go-sasl on reply \"x\": done %v err %v; it used to take any one-byte reply as the dummy response", done, err)
	}
}
