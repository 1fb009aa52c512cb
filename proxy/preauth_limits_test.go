package proxy

import (
	"encoding/base64"
	"fmt"
	"strings"
	"testing"
)

// TestIDAtRFC2971sMaximumIsAnswered: RFC 2971 lets a client send 30
// pairs of 30-octet fields and 1,024-octet values; such an ID is about
// 32 KiB on one line, and must get its OK, not a BYE for a long line.
func TestIDAtRFC2971sMaximumIsAnswered(t *testing.T) {
	tp := startProxy(t, nil)
	c := tp.dialImplicit(t)
	var b strings.Builder
	b.WriteString("i ID (")
	for i := range 30 {
		if i > 0 {
			b.WriteByte(' ')
		}
		field := fmt.Sprintf("%-30s", fmt.Sprintf("x-field-%d", i))
		fmt.Fprintf(&b, "%q %q", strings.ReplaceAll(field, " ", "f"), strings.Repeat(string(rune('a'+i%26)), 1024))
	}
	b.WriteString(")")
	if b.Len() < 30*1024 {
		t.Fatalf("the ID line is only %d bytes", b.Len())
	}
	c.send(b.String())
	c.expect("i OK ID completed")
	c.send("n NOOP")
	c.expect("n OK")
}

// TestLargeTokensFitTheAuthenticateLines: an OAUTHBEARER token may pass
// 64 KiB (Microsoft's JWTs passed 4 KiB in 2025); base64 makes 88 KiB of
// it, sent as SASL-IR on the AUTHENTICATE line or as a continuation line.
// Both are read and judged by the mechanism (here PLAIN, which refuses a
// password that long: NO, and the session goes on), not cut with BYE.
func TestLargeTokensFitTheAuthenticateLines(t *testing.T) {
	tp := startProxy(t, nil)
	c := tp.dialImplicit(t)
	huge := base64.StdEncoding.EncodeToString([]byte("\x00" + testUser + "\x00" + strings.Repeat("t", 64<<10)))
	if len(huge) < 85<<10 {
		t.Fatalf("the response is only %d bytes", len(huge))
	}
	c.send("a AUTHENTICATE PLAIN " + huge)
	c.expect("a NO [AUTHENTICATIONFAILED]")
	c.send("b AUTHENTICATE PLAIN")
	c.expect("+ ")
	c.send(huge)
	c.expect("b NO [AUTHENTICATIONFAILED]")
	c.send("n NOOP")
	c.expect("n OK")
}

// TestOtherCommandsKeepTheShortLineLimit: only AUTHENTICATE and ID may be
// long; a NOOP line over 8 KiB still ends the connection.
func TestOtherCommandsKeepTheShortLineLimit(t *testing.T) {
	tp := startProxy(t, nil)
	c := tp.dialImplicit(t)
	c.send("a NOOP " + strings.Repeat("x", maxLineLength+10))
	lines := c.expectClosed()
	if len(lines) == 0 || lines[len(lines)-1] != "* BYE Command line too long." {
		t.Fatalf("got %q, want the BYE for a long line", lines)
	}
}

// TestWhatAClientSendsBeforeLoginIsBoundedInTotal: long lines are allowed
// where a conforming client needs them, so the bound on an attacker is the
// total per connection: past maxPreauthBytes the session ends with BYE,
// audited preauth_too_large.
func TestWhatAClientSendsBeforeLoginIsBoundedInTotal(t *testing.T) {
	tp := startProxy(t, nil)
	c := tp.dialImplicit(t)
	id := `i ID ("x" "` + strings.Repeat("v", 30<<10) + `")`
	sent := 0
	for sent <= maxPreauthBytes {
		c.send(id)
		sent += len(id) + 2
		line, err := c.readLine()
		if err != nil {
			t.Fatalf("after %d bytes: %v", sent, err)
		}
		if strings.HasPrefix(line, "* BYE") {
			if line != "* BYE Too much data before login." {
				t.Fatalf("ended with %q", line)
			}
			waitFor(t, func() bool { return tp.srv.Sessions() == 0 })
			for _, e := range tp.audit.events(t) {
				if e.Event == EventSessionEnd && e.Reason == "preauth_too_large" {
					return
				}
			}
			t.Fatal("no session_end with reason preauth_too_large")
		}
		c.expect("i OK")
	}
	t.Fatalf("%d bytes before login were all read", sent)
}
