package proxy

import (
	"errors"
	"io"
	"net"
	"slices"
	"testing"
	"time"
)

func TestBadPasswordThenRetry(t *testing.T) {
	tp := startProxy(t, nil)
	c := tp.dialImplicit(t)
	c.send("a1 AUTHENTICATE PLAIN " + plainIR(testUser, "wrong"))
	c.expect("a1 NO [AUTHENTICATIONFAILED]")
	c.send("a2 AUTHENTICATE PLAIN " + plainIR(testUser, testPass))
	c.expect("a2 OK")
	ev := findEvent(tp.audit.events(t), EventAuth)
	if ev.Result != ResultFailure || ev.Reason != "bad_credentials" || ev.User != testUser {
		t.Fatalf("first auth event = %+v", ev)
	}
}

func TestTooManyAuthFailuresGetsBYE(t *testing.T) {
	tp := startProxy(t, func(c *Config) { c.MaxAuthFailures = 2 })
	c := tp.dialImplicit(t)
	c.send("a1 AUTHENTICATE PLAIN " + plainIR(testUser, "wrong1"))
	c.expect("a1 NO")
	c.send("a2 AUTHENTICATE PLAIN " + plainIR(testUser, "wrong2"))
	c.expect("a2 NO")
	c.expect("* BYE")
	c.expectClosed()
}

func TestUpstreamDownGivesUnavailable(t *testing.T) {
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	addr := ln.Addr().String()
	ln.Close()
	tp := startProxyTo(t, addr, UpstreamPlaintext, nil, nil, nil)
	c := tp.dialImplicit(t)
	c.send("a1 AUTHENTICATE PLAIN " + plainIR(testUser, testPass))
	c.expect("a1 NO [UNAVAILABLE]")
	ev := findEvent(tp.audit.events(t), EventAuth)
	if ev.Result != ResultError || ev.Reason != "upstream_unavailable" {
		t.Fatalf("auth event = %+v", ev)
	}
}

func TestUpstreamSilentGivesUnavailableWithinTimeout(t *testing.T) {
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			defer c.Close() // accept and say nothing
		}
	}()
	tp := startProxyTo(t, ln.Addr().String(), UpstreamPlaintext, nil, func(c *Config) {
		c.Upstream.ConnectTimeout = 300 * time.Millisecond
	}, nil)
	c := tp.dialImplicit(t)
	start := time.Now()
	c.send("a1 AUTHENTICATE PLAIN " + plainIR(testUser, testPass))
	c.expect("a1 NO [UNAVAILABLE]")
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("took %v", d)
	}
}

// TestPreauthTimeoutDuringTheTarpitEndsWithACleanBYE: a guesser whose
// pre-auth time runs out while it waits in the tarpit still gets the
// answer to the command it sent in time, then "* BYE", then a clean TLS
// close. The pre-auth deadline once bounded writes too: the answer's write
// failed at once, and the close_notify that followed was sealed with the
// next record number, so the client read "bad record MAC" instead of an
// answer.
func TestPreauthTimeoutDuringTheTarpitEndsWithACleanBYE(t *testing.T) {
	tp := startProxy(t, func(c *Config) {
		c.PreauthTimeout = 700 * time.Millisecond
		c.FailureDelay = 1500 * time.Millisecond
	})
	c := tp.dialImplicit(t)
	c.send("a AUTHENTICATE PLAIN " + saslPlain(testUser, "wrong"))
	var lines []string
	for {
		line, err := c.readLine()
		if err != nil {
			if !errors.Is(err, io.EOF) {
				t.Fatalf("after %q the connection failed with %v, want a clean close", lines, err)
			}
			break
		}
		lines = append(lines, line)
	}
	want := []string{"a NO [AUTHENTICATIONFAILED] Authentication failed.", "* BYE Disconnected for inactivity."}
	if !slices.Equal(lines, want) {
		t.Fatalf("got %q, want %q", lines, want)
	}
}
