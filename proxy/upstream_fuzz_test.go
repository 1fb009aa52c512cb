package proxy

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"net"
	"strings"
	"sync"
	"testing"
	"time"
)

// fuzzUpstream is a fake upstream on one end of a net.Pipe: it sends
// script, whatever the proxy says, then closes; it records what the
// proxy sent.
type fuzzUpstream struct {
	script []byte
	mu     sync.Mutex
	got    bytes.Buffer
	wg     sync.WaitGroup
}

func (fu *fuzzUpstream) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	client, server := net.Pipe()
	fu.wg.Add(2)
	go fu.speak(server)
	go fu.listen(server)
	return client, nil
}

// speak sends the script, then closes the connection.
func (fu *fuzzUpstream) speak(server net.Conn) {
	defer fu.wg.Done()
	server.Write(fu.script)
	server.Close()
}

// listen records what the proxy sends until the connection closes.
func (fu *fuzzUpstream) listen(server net.Conn) {
	defer fu.wg.Done()
	buf := make([]byte, 4096)
	for {
		n, err := server.Read(buf)
		fu.mu.Lock()
		fu.got.Write(buf[:n])
		fu.mu.Unlock()
		if err != nil {
			return
		}
	}
}

// FuzzUpstreamLoginExchange feeds arbitrary bytes as the upstream's side
// of a login (greeting, CAPABILITY, STARTTLS, ID and login answers) into
// Upstream.Login over a fake connection, with each login method and with
// plaintext or STARTTLS. Whatever the upstream says, Login returns (the
// fake closes after its script), with exactly one of the outcomes the
// session maps (README "When the mail server fails"), and the attempt is
// given back (ErrUnavailable) only if the password never left, or the
// upstream accepted it or said NO [UNAVAILABLE]: otherwise a broken or
// hostile upstream could make guesses free. A password that left before
// STARTTLS, or with a PREAUTH greeting, is a failure of its own.
func FuzzUpstreamLoginExchange(f *testing.F) {
	const (
		caps    = "* OK [CAPABILITY IMAP4rev1 SASL-IR AUTH=PLAIN ID LITERAL+] Dovecot ready.\r\n"
		nocaps  = "* OK hi\r\n"
		capList = "* CAPABILITY IMAP4rev1 AUTH=PLAIN\r\n"
	)
	for _, seed := range []struct {
		script string
		mode   uint8
	}{
		{caps + "ig1 OK [CAPABILITY IMAP4rev1 IDLE MOVE] Logged in\r\n", 0},
		{caps + "ig1 NO [AUTHENTICATIONFAILED] Authentication failed.\r\n", 0},
		{caps + "ig1 NO [UNAVAILABLE] try later\r\n", 0},
		{caps + "ig1 BAD what\r\n", 0},
		{caps + "* BYE shutting down\r\n", 0},
		{nocaps + capList + "ig1 OK done\r\n+ \r\nig2 OK Logged in\r\nig3 OK\r\n" + capList, 1},
		{nocaps + "* CAPABILITY IMAP4rev1 LITERAL+\r\nig1 OK\r\n+ go\r\nig2 OK {5}\r\nhello\r\n", 2},
		{nocaps + "* CAPABILITY IMAP4rev1\r\nig1 OK\r\n+ go\r\n+ again\r\nig2 NO bad\r\n", 2},
		{"* PREAUTH [CAPABILITY IMAP4rev1] logged in\r\n", 0},
		{"* OK [CAPABILITY IMAP4rev1 STARTTLS] hi\r\nig1 OK begin\r\n* CAPABILITY IMAP4rev1 AUTH=PLAIN SASL-IR\r\n", 3},
		{"* OK [CAPABILITY IMAP4rev1 STARTTLS] hi\r\nig1 OK begin\r\n\x16\x03\x03\x00\x02\x02\x28", 3},
		{"* OK {99999999}\r\n", 0},
		{caps + "ig1 OK [CAPABILITY " + strings.Repeat("X ", 1000) + "] ok\r\n", 0},
	} {
		f.Add([]byte(seed.script), seed.mode)
	}
	const user, password = "alice", "Fz-pw-\u00e9-7"
	ir := base64.StdEncoding.EncodeToString([]byte("\x00" + user + "\x00" + password))
	f.Fuzz(func(t *testing.T, script []byte, mode uint8) {
		fu := &fuzzUpstream{script: script}
		u := &Upstream{
			Address: "legacy.internal:143", TLS: UpstreamPlaintext, Dialer: fu.dial,
			Method:         []LoginMethod{LoginAuto, LoginPlain, LoginLogin}[int(mode)%3],
			ConnectTimeout: 2 * time.Second, LoginTimeout: 2 * time.Second,
		}
		if mode%4 == 3 {
			u.TLS, u.TLSConfig = UpstreamSTARTTLS, &tls.Config{InsecureSkipVerify: true}
		}
		start := time.Now()
		uc, err := u.Login(context.Background(), user, password, ClientInfo{Session: "fuzz"})
		took := time.Since(start)
		if uc != nil {
			uc.Conn.Close()
		}
		fu.wg.Wait()
		if took > 3*time.Second {
			t.Fatalf("Login took %v with an upstream that sent %q and closed", took, script)
		}
		sent := bytes.Contains(fu.got.Bytes(), []byte(password)) || bytes.Contains(fu.got.Bytes(), []byte(ir))
		outcomes := 0
		for _, target := range []error{ErrBadCredentials, ErrUnavailable, ErrNoAnswer} {
			if errors.Is(err, target) {
				outcomes++
			}
		}
		switch {
		case err == nil && outcomes != 0, err != nil && outcomes != 1:
			t.Fatalf("Login's error %v is not exactly one outcome", err)
		case err == nil && !sent:
			t.Fatalf("logged in without sending the password; upstream said %q", script)
		case errors.Is(err, ErrBadCredentials) && !sent:
			t.Fatalf("bad credentials without sending them: %v", err)
		case errors.Is(err, ErrUnavailable) && sent &&
			!strings.Contains(err.Error(), "after login") && !strings.Contains(err.Error(), "NO [UNAVAILABLE]"):
			t.Fatalf("the attempt is given back (%v), but the password was sent; upstream said %q", err, script)
		case sent && u.TLS == UpstreamSTARTTLS:
			t.Fatalf("the password went out over a connection whose TLS never started; upstream said %q", script)
		case sent && bytes.HasPrefix(script, []byte("* PREAUTH")):
			t.Fatalf("the password went to a PREAUTH server")
		}
	})
}
