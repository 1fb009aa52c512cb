package proxy

import "testing"

func TestIDIsAnsweredAndAudited(t *testing.T) {
	tp := startProxy(t, nil)
	c := tp.dialImplicit(t)
	c.send(`a1 ID ("name" "Mail" "version" {4}`)
	c.expect("+ ")
	c.conn.Write([]byte("16.0)\r\n"))
	c.expect(`* ID ("name" "imapgate")`)
	c.expect("a1 OK")
	c.send("a2 AUTHENTICATE PLAIN " + plainIR(testUser, testPass))
	c.expect("a2 OK")
	ev := findEvent(tp.audit.events(t), EventAuth)
	if ev.ClientID["name"] != "Mail" || ev.ClientID["version"] != "16.0" {
		t.Fatalf("client_id = %v", ev.ClientID)
	}
}
