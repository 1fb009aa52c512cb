package proxy

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"testing"

	"github.com/imapgate/imapgate/proxy/memupstream"
)

// BenchmarkParseAuthenticate parses the command a phone sends to log in.
func BenchmarkParseAuthenticate(b *testing.B) {
	line := []byte("a0001 AUTHENTICATE PLAIN " + plainIR("someone@example.com", "a rather long password 123") + "\r\n")
	benchParse(b, line)
}

// BenchmarkParseIDWithLiteral parses an ID command with a literal, as Apple
// Mail sends before logging in.
func BenchmarkParseIDWithLiteral(b *testing.B) {
	benchParse(b, []byte(`a1 ID ("name" "iPhone Mail" "version" "21A360" "os" "iOS" "os-version" {4+}`+"\r\n17.0)\r\n"))
}

func benchParse(b *testing.B, line []byte) {
	src := bytes.NewReader(nil)
	br := bufio.NewReaderSize(src, 2048)
	cr := commandReader{r: br, w: bufio.NewWriter(io.Discard)}
	b.SetBytes(int64(len(line)))
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		src.Reset(line)
		br.Reset(src)
		if _, err := cr.read(); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkUpstreamLogin is the proxy's side of a login to an in-process
// upstream (go-imap's memory server, plaintext): dial, greeting,
// AUTHENTICATE PLAIN with SASL-IR, capabilities, then LOGOUT and close.
func BenchmarkUpstreamLogin(b *testing.B) {
	up, err := memupstream.Start(map[string]string{testUser: testPass})
	if err != nil {
		b.Fatal(err)
	}
	defer up.Close()
	u := &Upstream{Address: up.Addr, TLS: UpstreamPlaintext}
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		uc, err := u.Login(ctx, testUser, testPass, ClientInfo{Session: "bench"})
		if err != nil {
			b.Fatal(err)
		}
		uc.Conn.Write([]byte("z LOGOUT\r\n"))
		io.Copy(io.Discard, uc.Conn)
		uc.Conn.Close()
	}
}
