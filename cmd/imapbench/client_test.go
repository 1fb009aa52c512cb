package main

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"
)

// readerClient is a client reading raw from a string through a read
// buffer of bufSize bytes (bufio's minimum is 16: lines longer than the
// buffer are the case to test).
func readerClient(raw string, bufSize int) *client {
	return &client{br: bufio.NewReaderSize(strings.NewReader(raw), bufSize)}
}

func TestResponseReaderSkipsLiteralsAndFindsTheTaggedLine(t *testing.T) {
	body := "Subject: a1 OK not the end\r\n\r\na1 OK fake\r\n* BYE fake\r\n{5}\r\n"
	tests := []struct {
		name string
		raw  string
		cont bool
		want response // Tag, WireBytes are not compared; WireBytes must be len(raw)
	}{
		{"status only", "* OK still here\r\na1 OK done\r\n", false,
			response{Status: "OK", Text: "done", Untagged: 1, Exists: -1}},
		{"tagged NO keeps its text", "a1 NO [AUTHENTICATIONFAILED] Invalid credentials\r\n", false,
			response{Status: "NO", Text: "[AUTHENTICATIONFAILED] Invalid credentials", Exists: -1}},
		{"status word in lower case", "a1 ok\r\n", false, response{Status: "OK", Exists: -1}},
		{"one literal", "* 1 FETCH (UID 1 BODY[] {11}\r\nhello world)\r\na1 OK UID FETCH completed\r\n", false,
			response{Status: "OK", Text: "UID FETCH completed", BodyBytes: 11, Literals: 1, Untagged: 1, Fetches: 1, Exists: -1}},
		{"a literal holding tagged lines, BYE and a literal size", "* 1 FETCH (BODY[] {" + itoa(len(body)) + "}\r\n" + body + ")\r\na1 OK\r\n", false,
			response{Status: "OK", BodyBytes: int64(len(body)), Literals: 1, Untagged: 1, Fetches: 1, Exists: -1}},
		{"two literals in one response", "* 7 FETCH (BODY[HEADER] {5}\r\nabcde BODY[TEXT] {3}\r\nxyz)\r\n* 8 FETCH (BODY[HEADER] {0}\r\n BODY[TEXT] {1}\r\nz)\r\na1 OK\r\n", false,
			response{Status: "OK", BodyBytes: 9, Literals: 4, Untagged: 2, Fetches: 2, Exists: -1}},
		{"non-synchronizing literal", "* 1 FETCH (BODY[] {4+}\r\nabcd)\r\na1 OK\r\n", false,
			response{Status: "OK", BodyBytes: 4, Literals: 1, Untagged: 1, Fetches: 1, Exists: -1}},
		{"line longer than the read buffer", "* 1 FETCH (UID 1 FLAGS (\\Seen \\Answered \\Flagged) INTERNALDATE \"04-Mar-2024 09:30:00 +0100\" BODY[] {4}\r\nabcd)\r\na1 OK " + strings.Repeat("x", 300) + "\r\n", false,
			response{Status: "OK", Text: strings.Repeat("x", headMax-len("a1 OK ")), BodyBytes: 4, Literals: 1, Untagged: 1, Fetches: 1, Exists: -1}},
		{"status text ending like a literal is text", "* OK [ALERT] see {5}\r\na1 OK\r\n", false,
			response{Status: "OK", Untagged: 1, Exists: -1}},
		{"EXISTS of SELECT", "* 23 EXISTS\r\n* 0 RECENT\r\n* FLAGS (\\Seen)\r\na1 OK [READ-WRITE] SELECT completed\r\n", false,
			response{Status: "OK", Text: "[READ-WRITE] SELECT completed", Untagged: 3, Exists: 23}},
		{"continuation request", "+ idling\r\n", true, response{Continuation: true, Exists: -1}},
		{"bare LF line ends", "* 1 FETCH (BODY[] {2}\nab)\na1 OK\n", false,
			response{Status: "OK", BodyBytes: 2, Literals: 1, Untagged: 1, Fetches: 1, Exists: -1}},
	}
	for _, tt := range tests {
		for _, bufSize := range []int{16, 4096} {
			c := readerClient(tt.raw, bufSize)
			var got response
			if err := c.readResponse("a1", tt.cont, &got); err != nil {
				t.Errorf("%s (buffer %d): %v", tt.name, bufSize, err)
				continue
			}
			if got.WireBytes != int64(len(tt.raw)) {
				t.Errorf("%s (buffer %d): WireBytes = %d, want all %d", tt.name, bufSize, got.WireBytes, len(tt.raw))
			}
			got.WireBytes = 0
			if got != tt.want {
				t.Errorf("%s (buffer %d):\n got %+v\nwant %+v", tt.name, bufSize, got, tt.want)
			}
		}
	}
}

func TestResponseReaderErrors(t *testing.T) {
	tests := []struct {
		name, raw, want string
		cont            bool
	}{
		{"literal cut short", "* 1 FETCH (BODY[] {100}\r\nshort", "unexpected EOF", false},
		{"line cut short", "* 1 FETCH (BODY[] {1", "unexpected EOF", false},
		{"no tagged response", "* OK\r\n", "EOF", false},
		{"BYE then close", "* BYE server shutting down\r\n", "BYE server shutting down", false},
		{"unexpected continuation", "+ go ahead\r\n", "unexpected continuation request", false},
		{"another tag", "a10 OK\r\n", `unexpected response line "a10 OK"`, false},
		{"tagged line without status", "a1 PERHAPS\r\n", "malformed tagged response", false},
		{"huge literal", "* 1 FETCH (BODY[] {99999999999999}\r\n", "literal of more than", false},
	}
	for _, tt := range tests {
		c := readerClient(tt.raw, 16)
		var r response
		err := c.readResponse("a1", tt.cont, &r)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: err = %v, want %q", tt.name, err, tt.want)
		}
	}
}

func TestLiteralSize(t *testing.T) {
	tests := []struct {
		end  string
		want int64
	}{
		{"{5}\r\n", 5}, {"BODY[] {0}\r\n", 0}, {"{123+}\r\n", 123}, {"{7}\n", 7},
		{"\r\n", -1}, {"}\r\n", -1}, {"{}\r\n", -1}, {"{+}\r\n", -1}, {"{1a}\r\n", -1},
		{"(FLAGS (\\Seen))\r\n", -1}, {"{5} \r\n", -1}, {"{5}", 5},
	}
	for _, tt := range tests {
		got, err := literalSize([]byte(tt.end))
		if err != nil || got != tt.want {
			t.Errorf("literalSize(%q) = %d, %v; want %d", tt.end, got, err, tt.want)
		}
	}
}

func TestQuote(t *testing.T) {
	for in, want := range map[string]string{
		"user1": `"user1"`, "pass1-Secret!": `"pass1-Secret!"`, `a"b\c`: `"a\"b\\c"`, "": `""`,
	} {
		if got, err := quote(in); err != nil || got != want {
			t.Errorf("quote(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	if _, err := quote("a\r\nb"); err == nil {
		t.Error("quote accepted CRLF")
	}
}

// A server that answers STARTTLS with OK and, in the same write, a line
// meant to be read as if it came over TLS must not get that line read.
func TestSTARTTLSWithInjectedResponseIsRefused(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go injectingServer(ln)

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err = dial(ctx, target{Addr: ln.Addr().String(), TLS: tlsStartTLS, Timeout: 5 * time.Second}, noSource, 4096)
	if err == nil || !strings.Contains(err.Error(), "response injection") {
		t.Fatalf("dial = %v, want the injection refused", err)
	}
}

func injectingServer(ln net.Listener) {
	conn, err := ln.Accept()
	if err != nil {
		return
	}
	defer conn.Close()
	io.WriteString(conn, "* OK [CAPABILITY IMAP4rev1 STARTTLS] ready\r\n")
	line, _ := bufio.NewReader(conn).ReadString('\n')
	tag, _, _ := strings.Cut(line, " ")
	io.WriteString(conn, tag+" OK Begin TLS\r\n* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN] injected\r\n")
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	io.Copy(io.Discard, conn)
}

func TestCancelInterruptsABlockedRead(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go silentServer(ln)

	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(100*time.Millisecond, cancel)
	start := time.Now()
	_, err = dial(ctx, target{Addr: ln.Addr().String(), TLS: tlsNone, Timeout: time.Minute}, noSource, 4096)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("dial = %v, want context.Canceled", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("cancel took %v", d)
	}
}

// silentServer accepts and never greets.
func silentServer(ln net.Listener) {
	conn, err := ln.Accept()
	if err != nil {
		return
	}
	defer conn.Close()
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	io.Copy(io.Discard, conn)
}
