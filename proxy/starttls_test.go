package proxy

import "testing"

func TestStartTLSWithPipelinedCommandIsRefused(t *testing.T) {
	tp := startProxy(t, nil)
	c := tp.dialPlain(t)
	c.conn.Write([]byte("a1 STARTTLS\r\na2 AUTHENTICATE PLAIN " + plainIR(testUser, testPass) + "\r\n"))
	c.expect("a1 BAD")
	c.expect("* BYE")
	c.expectClosed()
}

func TestStartTLSOnImplicitListenerIsBad(t *testing.T) {
	tp := startProxy(t, nil)
	c := tp.dialImplicit(t)
	c.send("a1 STARTTLS")
	c.expect("a1 BAD")
}
