package main

import (
	"bufio"
	"crypto/tls"
	"encoding/base64"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/imapgate/imapgate/proxy/proxytest"
	xdg "github.com/xdg-go/scram"
)

// TestSCRAMPlusThroughServeAgainstDovecot: serve with [auth] mechanisms
// naming SCRAM and an app password store offers both SCRAM mechanisms;
// a client logs in as the app password's user#id with
// SCRAM-SHA-256-PLUS, bound to the certificate serve's listener served
// (tls-server-end-point, through the listener's reloadable TLS config) and
// to its TLS 1.3 keys (tls-exporter), and lands in user1's mailbox on the
// real Dovecot, which serve logged in to as the master user.
func TestSCRAMPlusThroughServeAgainstDovecot(t *testing.T) {
	d := proxytest.StartDovecot(t, proxytest.DovecotOptions{Messages: 4, MasterUsers: map[string]string{e2eMaster: e2eMasterSecret}})
	dir := t.TempDir()
	config := writeAppPasswordConfig(t, dir, dovecotUpstream(d, "starttls"))
	pass, id := addWithCLI(t, config, "user1", "--label", "phone")
	g := startGate(t, gateOptions{
		upstream: dovecotUpstream(d, "starttls") + "\n\n" + masterTable(filepath.Join(dir, "master.secret")),
		auth:     storeKey(dir) + `mechanisms = ["SCRAM-SHA-256-PLUS", "SCRAM-SHA-256", "PLAIN"]` + "\n",
		secrets:  append(secretsOf(d), pass, e2eMasterSecret),
	})
	for i, bind := range []func(*tls.ConnectionState) (xdg.ChannelBinding, error){xdg.NewTLSServerEndpointBinding, xdg.NewTLSExporterBinding} {
		conn, err := tls.Dial("tcp", g.implicit, &tls.Config{RootCAs: g.roots, ServerName: "localhost"})
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		conn.SetDeadline(time.Now().Add(20 * time.Second))
		r := bufio.NewReader(conn)
		line := func() string {
			l, err := r.ReadString('\n')
			if err != nil {
				t.Fatalf("read: %v", err)
			}
			return strings.TrimRight(l, "\r\n")
		}
		if greeting := line(); !strings.Contains(greeting, "AUTH=SCRAM-SHA-256-PLUS") {
			t.Fatalf("greeting %q offers no SCRAM-SHA-256-PLUS", greeting)
		}
		st := conn.ConnectionState()
		cb, err := bind(&st)
		if err != nil {
			t.Fatal(err)
		}
		client, err := xdg.SHA256.NewClient("user1#"+id, pass, "")
		if err != nil {
			t.Fatal(err)
		}
		cc := client.NewConversationWithChannelBinding(cb)
		msg, _ := cc.Step("")
		conn.Write([]byte("a AUTHENTICATE SCRAM-SHA-256-PLUS " + base64.StdEncoding.EncodeToString([]byte(msg)) + "\r\n"))
		answer := line()
		for strings.HasPrefix(answer, "+ ") {
			in, _ := base64.StdEncoding.DecodeString(answer[2:])
			out, err := cc.Step(string(in))
			if err != nil {
				t.Fatalf("client: %v", err)
			}
			conn.Write([]byte(base64.StdEncoding.EncodeToString([]byte(out)) + "\r\n"))
			answer = line()
		}
		if !strings.HasPrefix(answer, "a OK") || !cc.Valid() {
			t.Fatalf("binding %s: %q, server signature accepted %v", cb.Type, answer, cc.Valid())
		}
		conn.Write([]byte("b SELECT INBOX\r\n"))
		var exists string
		for l := line(); !strings.HasPrefix(l, "b "); l = line() {
			if strings.HasSuffix(l, " EXISTS") {
				exists = l
			}
		}
		if exists != "* 4 EXISTS" {
			t.Fatalf("SELECT INBOX: %q, want user1's 4 messages", exists)
		}
		d.WaitAuthAttempts(t, func(c proxytest.AuthCounts) bool {
			return c.MasterLogins[proxytest.MasterUse{Master: e2eMaster, User: "user1"}] == i+1
		})
	}
	var successes int
	for _, e := range g.events(t) {
		if e["event"] == "auth" && e["result"] == "success" && e["mechanism"] == "SCRAM-SHA-256-PLUS" && e["credential_id"] == id {
			successes++
		}
	}
	if successes != 2 {
		t.Errorf("%d SCRAM-SHA-256-PLUS successes naming %s in the audit log, want 2", successes, id)
	}
}
