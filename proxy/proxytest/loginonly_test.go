package proxytest

import (
	"bufio"
	"io"
	"net"
	"strings"
	"testing"
	"time"
)

// TestLoginOnlyRelayPassesEveryLiteralForm: a command whose literal the
// client sends unasked, {N+} (LITERAL+) or {N-} (LITERAL-), reaches the
// server whole, and the client gets the server's answer; a synchronizing
// {N} waits for the server's "+". The server here is a script that reads
// the literal the way Dovecot would.
func TestLoginOnlyRelayPassesEveryLiteralForm(t *testing.T) {
	for _, header := range []string{"{3}", "{3+}", "{3-}"} {
		t.Run(header, func(t *testing.T) {
			up, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			defer up.Close()
			got := make(chan string, 1)
			go scriptedLiteralServer(up, header, got)

			certPEM, keyPEM, err := selfSignedCert()
			if err != nil {
				t.Fatal(err)
			}
			f, err := startLoginOnlyFront(up.Addr().String(), up.Addr().String(), certPEM, keyPEM)
			if err != nil {
				t.Fatal(err)
			}
			defer f.close()
			c, err := net.Dial("tcp", f.plainAddr())
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(5 * time.Second))
			r := bufio.NewReader(c)
			if line, err := r.ReadString('\n'); err != nil || !strings.HasPrefix(line, "* OK") {
				t.Fatalf("greeting %q, %v", line, err)
			}
			io.WriteString(c, "a ID ("+header+"\r\n")
			if header == "{3}" {
				if line, err := r.ReadString('\n'); err != nil || !strings.HasPrefix(line, "+") {
					t.Fatalf("synchronizing literal: %q, %v; want the server's +", line, err)
				}
			}
			io.WriteString(c, "abc)\r\n")
			line, err := r.ReadString('\n')
			if err != nil || line != "a OK ID completed\r\n" {
				t.Fatalf("client got %q, %v; want the tagged OK", line, err)
			}
			if cmd := <-got; cmd != "a ID ("+header+"\r\nabc)\r\n" {
				t.Fatalf("server got %q", cmd)
			}
		})
	}
}

// scriptedLiteralServer greets, reads one command with a three-byte
// literal announced by header, sends what it read to got, and answers OK.
func scriptedLiteralServer(ln net.Listener, header string, got chan<- string) {
	conn, err := ln.Accept()
	if err != nil {
		got <- err.Error()
		return
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	r := bufio.NewReader(conn)
	io.WriteString(conn, "* OK [CAPABILITY IMAP4rev1 LITERAL+ LITERAL-] ready\r\n")
	first, err := r.ReadString('\n')
	if err != nil {
		got <- first + err.Error()
		return
	}
	if strings.HasSuffix(first, "{3}\r\n") {
		io.WriteString(conn, "+ OK\r\n")
	}
	lit := make([]byte, 3)
	if _, err := io.ReadFull(r, lit); err != nil {
		got <- first + err.Error()
		return
	}
	rest, err := r.ReadString('\n')
	got <- first + string(lit) + rest
	if err == nil {
		io.WriteString(conn, "a OK ID completed\r\n")
	}
}
