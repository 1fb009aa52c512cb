package scram

import (
	"bufio"
	"context"
	"crypto/elliptic"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/xdg-go/scram"
)

// A valid first message per mechanism, for the client-final cases of
// testdata/messages.txt (the server nonce is fixed to "SNONCE").
var validFirst = map[Mechanism]string{
	SHA256:     "n,,n=" + alice + ",r=cnonce",
	SHA256Plus: "p=tls-exporter,,n=" + alice + ",r=cnonce",
}

type messageCase struct {
	line   int
	mech   Mechanism
	step   string // "first" or "final"
	reason string
	msg    []byte
}

func readMessageCases(t testing.TB) []messageCase {
	t.Helper()
	f, err := os.Open("testdata/messages.txt")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var cases []messageCase
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		fields := strings.Split(line, "\t")
		if len(fields) != 4 {
			t.Fatalf("testdata/messages.txt:%d: %d fields, want 4", n, len(fields))
		}
		msg, err := strconv.Unquote(fields[3])
		if err != nil {
			t.Fatalf("testdata/messages.txt:%d: message: %v", n, err)
		}
		cases = append(cases, messageCase{n, Mechanism(fields[0]), fields[1], fields[2], []byte(msg)})
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return cases
}

func TestMalformedAndMismatchedClientMessagesAreRefused(t *testing.T) {
	store := newMemStore(t, map[string]string{alice: alicePassword, "alice": alicePassword})
	srv := newTestServer(t, store, Options{})
	srv.nonce = func() string { return "SNONCE" }
	conn := newTLSPair(t, ecdsaCert(t, elliptic.P256(), 0), tls.VersionTLS13).conn

	cases := readMessageCases(t)
	long := "n,,n=alice,r=" + strings.Repeat("x", MaxMessageLength)
	cases = append(cases,
		messageCase{0, SHA256, "first", ReasonMalformedResponse, []byte(long[:MaxMessageLength+1])},
		messageCase{0, SHA256, "first", ReasonMalformedResponse, []byte("n,,n=" + strings.Repeat("a", MaxLoginLength+1) + ",r=abc")},
		messageCase{0, SHA256, "final", ReasonMalformedResponse, []byte("c=biws,r=cnonceSNONCE,e=" + strings.Repeat("x", MaxMessageLength) + ",p=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=")},
	)
	for _, tc := range cases {
		t.Run(strconv.Itoa(tc.line)+"/"+string(tc.mech)+"/"+tc.step, func(t *testing.T) {
			x := exchange(t, srv, tc.mech, conn, ExchangeOptions{})
			msg := tc.msg
			if tc.step == "final" {
				if _, _, err := x.Step(context.Background(), []byte(validFirst[tc.mech])); err != nil {
					t.Fatalf("valid first message refused: %v", err)
				}
			}
			out, done, err := x.Step(context.Background(), msg)
			if Reason(err) != tc.reason || !done || out != nil {
				t.Fatalf("testdata/messages.txt:%d: %q: Step = %q, %v, %v (reason %q); want reason %q", tc.line, msg, out, done, err, Reason(err), tc.reason)
			}
		})
	}
}

// The messages in testdata/messages.txt with the valid ones, for the fuzz
// targets' corpus.
func fuzzSeeds(t testing.TB, step string) [][]byte {
	seeds := [][]byte{[]byte(validFirst[SHA256]), []byte(validFirst[SHA256Plus]), []byte("y,a=alice,n=alice,r=abc,ext=1")}
	if step == "final" {
		seeds = [][]byte{[]byte("c=biws,r=cnonceSNONCE,p=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=")}
	}
	for _, tc := range readMessageCases(t) {
		if tc.step == step {
			seeds = append(seeds, tc.msg)
		}
	}
	return seeds
}

// FuzzParseClientFirst checks that the parser never panics, that what it
// accepts xdg-go accepts alike with the same names, and that an exchange
// fed anything ends with one of this package's errors or a server-first
// message.
func FuzzParseClientFirst(f *testing.F) {
	for _, s := range fuzzSeeds(f, "first") {
		f.Add(s)
	}
	creds := StoredCredentials{KeyFactors: scram.KeyFactors{Salt: "0123456789abcdef", Iters: MinIterations}, StoredKey: make([]byte, 32), ServerKey: make([]byte, 32)}
	srv, err := NewServer(func(context.Context, string) (StoredCredentials, error) { return creds, nil }, Options{})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, msg []byte) {
		m, err := parseClientFirst(msg)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("%q: %v does not wrap ErrMalformed", msg, err)
			}
		} else {
			xs, _ := scram.SHA256.NewServer(func(string) (StoredCredentials, error) { return creds, nil })
			conv := xs.NewConversation()
			switch m.binding {
			case TLSExporter, TLSServerEndPoint, TLSUnique:
				conv = xs.NewConversationWithChannelBindingRequired(scram.ChannelBinding{Type: scram.ChannelBindingType(m.binding), Data: []byte{1}})
			case "":
			default:
				return // a type xdg-go does not know; the exchange refuses it first
			}
			if _, err := conv.Step(string(msg)); err != nil {
				t.Fatalf("%q: parsed (%+v), xdg-go refused: %v", msg, m, err)
			}
			if conv.Username() != m.user || conv.AuthzID() != m.authzid {
				t.Fatalf("%q: parsed user %q authzid %q, xdg-go %q %q", msg, m.user, m.authzid, conv.Username(), conv.AuthzID())
			}
		}
		x, err := srv.NewExchange(SHA256, ConnState{}, ExchangeOptions{})
		if err != nil {
			t.Fatal(err)
		}
		out, done, err := x.Step(context.Background(), msg)
		switch {
		case len(msg) == 0:
		case err != nil && (Reason(err) == "" || out != nil || !done):
			t.Fatalf("%q: Step = %q, %v, %v", msg, out, done, err)
		case err == nil && (done || !strings.HasPrefix(string(out), "r=")):
			t.Fatalf("%q: Step = %q, %v", msg, out, done)
		}
	})
}

// FuzzParseClientFinal feeds a client-final message to an exchange that
// accepted a valid first message: it must end, with success impossible
// (nobody knows the keys) and every failure one of this package's errors.
func FuzzParseClientFinal(f *testing.F) {
	for _, s := range fuzzSeeds(f, "final") {
		f.Add(s)
	}
	store := newMemStore(f, map[string]string{alice: alicePassword})
	srv := newTestServer(f, store, Options{})
	srv.nonce = func() string { return "SNONCE" }
	f.Fuzz(func(t *testing.T, msg []byte) {
		if m, err := parseClientFinal(msg); err == nil && len(m.cbind) == 0 {
			t.Fatalf("%q: parsed with an empty binding", msg)
		} else if err != nil && !errors.Is(err, ErrMalformed) {
			t.Fatalf("%q: %v does not wrap ErrMalformed", msg, err)
		}
		x, err := srv.NewExchange(SHA256, ConnState{}, ExchangeOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if _, _, err := x.Step(context.Background(), []byte(validFirst[SHA256])); err != nil {
			t.Fatal(err)
		}
		out, done, err := x.Step(context.Background(), msg)
		if err == nil || Reason(err) == "" || out != nil || !done {
			t.Fatalf("%q: Step = %q, %v, %v", msg, out, done, err)
		}
	})
}

func hexString(b []byte) string { return hex.EncodeToString(b) }

func containsFold(s, sub string) bool {
	return strings.Contains(strings.ToLower(s), strings.ToLower(sub))
}
