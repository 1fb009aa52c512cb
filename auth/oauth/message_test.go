package oauth

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"testing"
)

// messageCase is one line of testdata/oauthbearer.json or xoauth2.json: a
// client message and what it must parse to, or the exact error it must
// give.
type messageCase struct {
	Name   string `json:"name"`
	Msg    string `json:"msg"`
	MsgB64 string `json:"msg_b64"` // for bytes JSON strings cannot hold
	User   string `json:"user"`
	Token  string `json:"token"`
	Host   string `json:"host"`
	Port   int    `json:"port"`
	Err    string `json:"err"`
}

func (c messageCase) message(t testing.TB) []byte {
	if c.MsgB64 == "" {
		return []byte(c.Msg)
	}
	b, err := base64.StdEncoding.DecodeString(c.MsgB64)
	if err != nil {
		t.Fatalf("%s: msg_b64: %v", c.Name, err)
	}
	return b
}

func loadCases(t testing.TB, file string) []messageCase {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	var cases []messageCase
	if err := json.Unmarshal(b, &cases); err != nil {
		t.Fatalf("%s: %v", file, err)
	}
	return cases
}

func TestParseClientMessagesFromTestdata(t *testing.T) {
	for _, f := range []struct {
		mech Mechanism
		file string
	}{
		{OAuthBearer, "testdata/oauthbearer.json"},
		{XOAuth2, "testdata/xoauth2.json"},
	} {
		for _, c := range loadCases(t, f.file) {
			t.Run(string(f.mech)+"/"+c.Name, func(t *testing.T) {
				r, err := ParseClientResponse(f.mech, c.message(t))
				if c.Err != "" {
					if err == nil {
						t.Fatalf("parsed %+v, want error %q", r, c.Err)
					}
					if err.Error() != c.Err {
						t.Fatalf("error %q, want %q", err, c.Err)
					}
					if !errors.Is(err, ErrMalformedMessage) {
						t.Fatalf("error %q does not wrap ErrMalformedMessage", err)
					}
					if w := Reason(err); w != ReasonMalformedResponse && w != ReasonMalformedUser {
						t.Fatalf("reason %q for a malformed message", w)
					}
					return
				}
				if err != nil {
					t.Fatalf("error %q, want user %q token %q", err, c.User, c.Token)
				}
				if r.Mechanism != f.mech || r.User != c.User || r.Token.Reveal() != c.Token || r.Host != c.Host || r.Port != c.Port {
					t.Fatalf("parsed mech %s user %q token %q host %q port %d; want user %q token %q host %q port %d",
						r.Mechanism, r.User, r.Token.Reveal(), r.Host, r.Port, c.User, c.Token, c.Host, c.Port)
				}
			})
		}
	}
}

// A Microsoft JWT of 64 KiB goes through; one byte more does not, and a
// message over MaxMessageLength is refused before it is read.
func TestTokenOf64KiBIsAcceptedAndOneByteMoreIsNot(t *testing.T) {
	big := strings.Repeat("A", MaxTokenLength)
	for _, mech := range []Mechanism{OAuthBearer, XOAuth2} {
		ok := buildMessage(mech, "alice@example.com", big)
		r, err := ParseClientResponse(mech, ok)
		if err != nil || r.Token.Len() != MaxTokenLength {
			t.Fatalf("%s: a %d-byte token: len %d, err %v", mech, MaxTokenLength, r.Token.Len(), err)
		}
		_, err = ParseClientResponse(mech, buildMessage(mech, "alice@example.com", big+"A"))
		if want := fmt.Sprintf("oauth: malformed SASL message: %s: bearer token over %d bytes", mech, MaxTokenLength); err == nil || err.Error() != want {
			t.Fatalf("%s: a %d-byte token: err %v, want %q", mech, MaxTokenLength+1, err, want)
		}
		huge := make([]byte, MaxMessageLength+1)
		_, err = ParseClientResponse(mech, huge)
		if want := fmt.Sprintf("oauth: malformed SASL message: %s: message over %d bytes", mech, MaxMessageLength); err == nil || err.Error() != want {
			t.Fatalf("%s: a %d-byte message: err %v, want %q", mech, len(huge), err, want)
		}
	}
}

func TestLongestUserIsAcceptedAndOneByteMoreIsNot(t *testing.T) {
	for _, mech := range []Mechanism{OAuthBearer, XOAuth2} {
		user := strings.Repeat("u", MaxUserLength)
		if _, err := ParseClientResponse(mech, buildMessage(mech, user, "abc")); err != nil {
			t.Fatalf("%s: %d-byte user: %v", mech, MaxUserLength, err)
		}
		_, err := ParseClientResponse(mech, buildMessage(mech, user+"u", "abc"))
		if !errors.Is(err, ErrMalformedUser) || Reason(err) != ReasonMalformedUser {
			t.Fatalf("%s: %d-byte user: err %v (reason %q), want ErrMalformedUser", mech, MaxUserLength+1, err, Reason(err))
		}
	}
}

func TestHostOver255BytesIsRefused(t *testing.T) {
	msg := "n,,\x01host=" + strings.Repeat("h", MaxHostLength+1) + "\x01auth=Bearer abc\x01\x01"
	_, err := ParseOAuthBearer([]byte(msg))
	if err == nil || err.Error() != "oauth: malformed SASL message: OAUTHBEARER: host over 255 bytes" {
		t.Fatalf("err %v", err)
	}
}

// The token hides itself wherever a ClientResponse may be printed or logged.
func TestTokenNeverShowsInFmtSlogOrJSON(t *testing.T) {
	const secret = "c2VjcmV0LXRva2VuLXZhbHVl"
	r, err := ParseOAuthBearer([]byte("n,a=alice,\x01auth=Bearer " + secret + "\x01\x01"))
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q", "%x", "%X", "%d"} {
		out = append(out, fmt.Sprintf(verb, r), fmt.Sprintf(verb, r.Token), fmt.Sprintf(verb, &r))
	}
	js, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	out = append(out, string(js), r.Token.String(), r.Token.GoString())
	var logged bytes.Buffer
	slog.New(slog.NewJSONHandler(&logged, nil)).Info("login", "response", r, "token", r.Token)
	slog.New(slog.NewTextHandler(&logged, nil)).Info("login", "response", r, "token", r.Token)
	out = append(out, logged.String())
	hexSecret := fmt.Sprintf("%x", secret)
	for _, s := range out {
		if strings.Contains(s, secret) || strings.Contains(strings.ToLower(s), hexSecret) {
			t.Fatalf("token shown in %q", s)
		}
	}
	if r.Token.Reveal() != secret {
		t.Fatalf("Reveal = %q", r.Token.Reveal())
	}
}

// buildMessage writes the client message a conforming client sends.
func buildMessage(mech Mechanism, user, token string) []byte {
	if mech == XOAuth2 {
		return []byte("user=" + user + "\x01auth=Bearer " + token + "\x01\x01")
	}
	return buildOAuthBearer(ClientResponse{User: user, Token: NewToken(token)})
}

func buildOAuthBearer(r ClientResponse) []byte {
	var b strings.Builder
	b.WriteString("n,")
	if r.User != "" {
		b.WriteString("a=" + strings.NewReplacer("=", "=3D", ",", "=2C").Replace(r.User))
	}
	b.WriteString(",\x01")
	if r.Host != "" {
		b.WriteString("host=" + r.Host + "\x01")
	}
	if r.Port != 0 {
		b.WriteString("port=" + strconv.Itoa(r.Port) + "\x01")
	}
	b.WriteString("auth=Bearer " + r.Token.Reveal() + "\x01\x01")
	return []byte(b.String())
}

// checkParsed holds for every message a parser accepts or refuses.
func checkParsed(t *testing.T, mech Mechanism, msg []byte, r ClientResponse, err error) {
	if err != nil {
		if !errors.Is(err, ErrMalformedMessage) {
			t.Fatalf("error %q does not wrap ErrMalformedMessage", err)
		}
		if len(err.Error()) > 160 {
			t.Fatalf("error of %d bytes: it must be a fixed text, never the client's bytes: %q", len(err.Error()), err)
		}
		return
	}
	tok := r.Token.Reveal()
	if tok == "" || len(tok) > MaxTokenLength || len(r.User) > MaxUserLength || len(r.Host) > MaxHostLength {
		t.Fatalf("accepted token of %d bytes, user of %d, host of %d", len(tok), len(r.User), len(r.Host))
	}
	for i := 0; i < len(tok); i++ {
		if !isB64TokenByte(tok[i]) && tok[i] != '=' {
			t.Fatalf("accepted token with byte %#x", tok[i])
		}
	}
	if err := checkUser(mech, []byte(r.User)); r.User != "" && err != nil {
		t.Fatalf("accepted user %q: %v", r.User, err)
	}
	if !bytes.Contains(msg, []byte(tok)) {
		t.Fatalf("token %q is not from the message", tok)
	}
	// What was accepted, written again the conforming way, parses the same.
	var again ClientResponse
	switch mech {
	case OAuthBearer:
		again, err = ParseOAuthBearer(buildOAuthBearer(r))
	case XOAuth2:
		again, err = ParseXOAuth2(buildMessage(mech, r.User, tok))
	}
	if err != nil || again.User != r.User || again.Token.Reveal() != tok || again.Host != r.Host || again.Port != r.Port {
		t.Fatalf("re-encoded %q/%q parses as %q/%q, %v", r.User, tok, again.User, again.Token.Reveal(), err)
	}
}

func FuzzParseOAuthBearer(f *testing.F) {
	for _, c := range loadCases(f, "testdata/oauthbearer.json") {
		f.Add(c.message(f))
	}
	f.Fuzz(func(t *testing.T, msg []byte) {
		r, err := ParseOAuthBearer(msg)
		checkParsed(t, OAuthBearer, msg, r, err)
	})
}

func FuzzParseXOAuth2(f *testing.F) {
	for _, c := range loadCases(f, "testdata/xoauth2.json") {
		f.Add(c.message(f))
	}
	f.Fuzz(func(t *testing.T, msg []byte) {
		r, err := ParseXOAuth2(msg)
		checkParsed(t, XOAuth2, msg, r, err)
	})
}

func BenchmarkParseOAuthBearer(b *testing.B) {
	msg := buildMessage(OAuthBearer, "alice@example.com", strings.Repeat("eyJhbGciOiJSUzI1NiJ9", 60))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := ParseOAuthBearer(msg); err != nil {
			b.Fatal(err)
		}
	}
}
