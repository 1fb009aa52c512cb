package proxy

import (
	"strconv"
	"strings"
	"testing"
)

// answerWithoutContinuation reads lines up to the tagged answer starting
// with prefix and fails if the proxy asked for a literal on the way: a "+"
// would make the client send what follows, a credential for AUTHENTICATE.
func (c *textClient) answerWithoutContinuation(prefix string) string {
	c.t.Helper()
	tag, _, _ := strings.Cut(prefix, " ")
	for {
		line, err := c.readLine()
		if err != nil {
			c.t.Fatalf("waiting for %q: %v", prefix, err)
		}
		if strings.HasPrefix(line, "+") {
			c.t.Fatalf("the proxy asked for the literal (%q); want %q without a continuation", line, prefix)
		}
		if strings.HasPrefix(line, tag+" ") {
			if !strings.HasPrefix(line, prefix) {
				c.t.Fatalf("got %q, want prefix %q", line, prefix)
			}
			return line
		}
	}
}

// TestAuthenticateWithALiteralNeverAsksForTheCredential: AUTHENTICATE takes
// an atom mechanism and an atom initial response (RFC 3501 6.2.2, RFC
// 4959), so a literal there is a syntax error. It is answered BAD at once,
// before TLS and after, so the client is never invited to send the
// credential it announced; the session goes on.
func TestAuthenticateWithALiteralNeverAsksForTheCredential(t *testing.T) {
	tp := startProxy(t, nil)
	ir := plainIR(testUser, testPass)
	for _, tls := range []bool{false, true} {
		for _, line := range []string{
			"a AUTHENTICATE PLAIN {" + strconv.Itoa(len(ir)) + "}",
			"a AUTHENTICATE {5}",
			"a AUTHENTICATE PLAIN " + ir + " {5}",
		} {
			name := "before TLS: " + line
			if tls {
				name = "after TLS: " + line
			}
			t.Run(name, func(t *testing.T) {
				c := tp.dialPlain(t)
				if tls {
					c.startTLS(tp.roots)
				}
				c.send(line)
				c.answerWithoutContinuation("a BAD")
				c.send("b NOOP")
				c.expect("b OK")
			})
		}
	}
	for _, e := range tp.audit.events(t) {
		if e.Event == EventAuth {
			t.Errorf("an AUTHENTICATE with a literal went as far as an auth decision: %+v", e)
		}
	}
}

// TestLiteralWhereTheCommandTakesNoneIsRefused: only LOGIN's two arguments
// and ID's values may be literals before login; any other literal is
// answered BAD without the continuation, so the proxy never reads bytes it
// has no use for.
func TestLiteralWhereTheCommandTakesNoneIsRefused(t *testing.T) {
	tp := startProxy(t, func(c *Config) { c.AllowLoginOverTLS = true })
	for _, line := range []string{
		"a NOOP {5}",
		"a CAPABILITY {5}",
		"a LOGOUT {5}",
		"a STARTTLS {5}",
		"a SELECT {5}",
		"a LOGIN alice secret {5}",
		"a LOGIN (alice) {5}",
		"a ID {5}",
		`a ID ("name" "Mail") {5}`,
	} {
		t.Run(line, func(t *testing.T) {
			c := tp.dialImplicit(t)
			c.send(line)
			c.answerWithoutContinuation("a BAD")
			c.send("b NOOP")
			c.expect("b OK")
		})
	}
	t.Run("ID and LOGIN still take literals", func(t *testing.T) {
		c := tp.dialImplicit(t)
		c.send(`a ID ("name" {4}`)
		c.expect("+ ")
		c.send(`Mail)`)
		c.expect("a OK")
		c.send("b LOGIN {5}")
		c.expect("+ ")
		c.send(testUser + " {" + strconv.Itoa(len(testPass)) + "}")
		c.expect("+ ")
		c.send(testPass)
		c.expect("b OK [CAPABILITY")
	})
}

// TestDeeplyNestedLineBeforeTLSIsAnsweredAtOnce is the token-limit attack
// on port 143 before TLS: 8,181 "(" and a literal the client never sends.
// The proxy answers BAD at once instead of asking for the literal and
// holding the parsed line until the pre-auth timeout.
func TestDeeplyNestedLineBeforeTLSIsAnsweredAtOnce(t *testing.T) {
	tp := startProxy(t, nil)
	c := tp.dialPlain(t)
	c.send("a ID " + strings.Repeat("(", 8181) + "{1}")
	c.answerWithoutContinuation("a BAD")
	c.send("b NOOP")
	c.expect("b OK")
}
