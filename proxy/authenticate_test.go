package proxy

import (
	"encoding/base64"
	"strings"
	"testing"
)

func plainIR(user, pass string) string {
	return base64.StdEncoding.EncodeToString([]byte("\x00" + user + "\x00" + pass))
}

func TestAuthenticatePlainSASLIRThenRelay(t *testing.T) {
	tp := startProxy(t, nil)
	c := tp.dialImplicit(t)
	c.send("a1 CAPABILITY")
	caps := c.expect("* CAPABILITY")
	for _, want := range []string{"AUTH=PLAIN", "SASL-IR", "LOGINDISABLED", "ID"} {
		if !strings.Contains(caps, want) {
			t.Errorf("capabilities %q lack %s", caps, want)
		}
	}
	c.expect("a1 OK")
	c.send("a2 AUTHENTICATE PLAIN " + plainIR(testUser, testPass))
	ok := c.expect("a2 OK")
	if !strings.Contains(ok, "[CAPABILITY ") || strings.Contains(ok, "AUTH=") || strings.Contains(ok, "SASL-IR") {
		t.Fatalf("post-login capabilities not filtered: %q", ok)
	}
	if !strings.Contains(ok, "IDLE") {
		t.Fatalf("upstream capability IDLE missing: %q", ok)
	}
	c.send("a3 SELECT INBOX")
	c.expect("a3 OK")
	c.send("a4 LOGOUT")
	c.expect("* BYE")
	c.expect("a4 OK")
	c.expectClosed()

	waitFor(t, func() bool { return hasEvent(tp.audit.events(t), EventSessionEnd, "") })
	evs := tp.audit.events(t)
	auth := findEvent(evs, EventAuth)
	if auth == nil || auth.Result != ResultSuccess || auth.User != testUser || auth.Mechanism != "PLAIN" || auth.Upstream != tp.upstreamA {
		t.Fatalf("auth event = %+v", auth)
	}
	end := findEvent(evs, EventSessionEnd)
	if end.User != testUser || end.BytesIn == nil || *end.BytesIn == 0 || *end.BytesOut == 0 {
		t.Fatalf("session_end = %+v", end)
	}
	tlsEv := findEvent(evs, EventTLS)
	if tlsEv == nil || tlsEv.Result != "ok" || tlsEv.TLSVersion == "" || tlsEv.TLSCipher == "" {
		t.Fatalf("tls event = %+v", tlsEv)
	}
	if strings.Contains(tp.audit.String(), testPass) || strings.Contains(tp.audit.String(), plainIR(testUser, testPass)) {
		t.Fatal("audit log contains the password or the SASL payload")
	}
}

func TestAuthenticatePlainWithContinuation(t *testing.T) {
	tp := startProxy(t, nil)
	c := tp.dialImplicit(t)
	c.send("a1 AUTHENTICATE PLAIN")
	if line := c.expect("+"); line != "+ " {
		t.Fatalf("empty challenge must be %q, got %q", "+ ", line)
	}
	c.send(plainIR(testUser, testPass))
	c.expect("a1 OK [CAPABILITY")
	c.send("a2 NOOP")
	c.expect("a2 OK")
}

func TestAuthenticateCancelAndBadBase64(t *testing.T) {
	tp := startProxy(t, nil)
	c := tp.dialImplicit(t)
	c.send("a1 AUTHENTICATE PLAIN")
	c.expect("+ ")
	c.send("*")
	c.expect("a1 BAD")
	c.send("a2 AUTHENTICATE PLAIN")
	c.expect("+ ")
	c.send("!!!not-base64")
	c.expect("a2 BAD")
	c.send("a3 AUTHENTICATE PLAIN %%%")
	c.expect("a3 BAD")
	c.send("a4 AUTHENTICATE PLAIN =")
	c.expect("a4 NO [AUTHENTICATIONFAILED]")
	// Still usable.
	c.send("a5 AUTHENTICATE PLAIN " + plainIR(testUser, testPass))
	c.expect("a5 OK")
}
