package main

import (
	"bufio"
	"crypto/tls"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/imapgate/imapgate/proxy/proxytest"
)

// dialTLSWithCert connects with implicit TLS presenting cert whatever CAs
// the server names (Go's client, given Certificates, would send only one
// they issued: the phone's is self-signed).
func (g *gate) dialTLSWithCert(t *testing.T, cert tls.Certificate) *client {
	t.Helper()
	conn, err := tls.Dial("tcp", g.implicit, &tls.Config{RootCAs: g.roots, ServerName: "localhost",
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &cert, nil }})
	if err != nil {
		t.Fatal(err)
	}
	c := &client{t: t, conn: conn, r: bufio.NewReader(conn)}
	t.Cleanup(func() { conn.Close() })
	c.expect("* OK")
	return c
}

// registerWithCLI registers a certificate file with imapgate client-cert
// add and returns the ID it printed.
func registerWithCLI(t *testing.T, config, user, label, file string) string {
	t.Helper()
	code, out, errOut := cli(t, "client-cert", "add", user, "--label", label, file, "--config", config)
	if code != 0 {
		t.Fatalf("client-cert add %s %s: exit %d: %s", user, label, code, errOut)
	}
	m := regexp.MustCompile(`, id ([a-z2-9]+)\n`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("client-cert add printed no id: %q", out)
	}
	return m[1]
}

// TestClientCertCommands: add registers a certificate file's key and
// prints its fingerprint; a file with the private key in it, a key
// registered already, a taken label and a missing file are refused; list
// shows the registration per user and for everyone; revoke by ID and by
// label removes it.
func TestClientCertCommands(t *testing.T) {
	dir := t.TempDir()
	config := writeAppPasswordConfig(t, dir, "address = \"127.0.0.1:1\"\ntls = \"none\"")
	var self *proxytest.ClientCA
	phone := self.Issue(t, proxytest.ClientCertOptions{CommonName: "alice's phone"})
	laptop := self.Issue(t, proxytest.ClientCertOptions{CommonName: "bob's laptop"})
	phoneFile, phoneKey := phone.WriteFiles(t, dir, "phone")
	laptopFile, _ := laptop.WriteFiles(t, dir, "laptop")
	both := filepath.Join(dir, "both.pem")
	os.WriteFile(both, append(append([]byte{}, phone.CertPEM...), phone.KeyPEM...), 0o600)

	phoneID := registerWithCLI(t, config, "alice", "phone", phoneFile)
	laptopID := registerWithCLI(t, config, "bob", "laptop", laptopFile)
	for _, tt := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"add", "alice", "--label", "again", phoneFile}, 1, "already registered"},
		{[]string{"add", "alice", "--label", "phone", laptopFile}, 1, "label already in use"},
		{[]string{"add", "carol", "--label", "x", both}, 1, "private key"},
		{[]string{"add", "carol", "--label", "x", phoneKey}, 1, "private key"},
		{[]string{"add", "carol", "--label", "x", filepath.Join(dir, "none.pem")}, 1, "no such file"},
		{[]string{"add", "carol", "--label", "x", "--expires", "soon", laptopFile}, 1, "--expires"},
		{[]string{"add", "carol", laptopFile}, 2, "--label"},
		{[]string{"frobnicate"}, 2, "unknown command"},
	} {
		code, _, errOut := cli(t, append(append([]string{"client-cert"}, tt.args...), "--config", config)...)
		if code != tt.code || !strings.Contains(errOut, tt.want) {
			t.Errorf("client-cert %q: exit %d: %s; want exit %d and %q", tt.args, code, errOut, tt.code, tt.want)
		}
	}
	code, out, _ := cli(t, "client-cert", "list", "alice", "--config", config)
	if code != 0 || !strings.Contains(out, phoneID) || !strings.Contains(out, "CN=alice's phone") || strings.Contains(out, laptopID) {
		t.Errorf("list alice: exit %d:\n%s", code, out)
	}
	if _, out, _ = cli(t, "client-cert", "list", "--config", config); !strings.Contains(out, laptopID) || !strings.Contains(out, phoneID) {
		t.Errorf("list: %s", out)
	}
	if code, out, errOut := cli(t, "client-cert", "revoke", phoneID, "--config", config); code != 0 || !strings.Contains(out, "revoked client-cert "+phoneID) {
		t.Errorf("revoke ID: exit %d: %s%s", code, out, errOut)
	}
	if code, out, errOut := cli(t, "client-cert", "revoke", "bob", "--label", "laptop", "--config", config); code != 0 || !strings.Contains(out, laptopID) {
		t.Errorf("revoke by label: exit %d: %s%s", code, out, errOut)
	}
	if _, out, _ = cli(t, "client-cert", "list", "--config", config); strings.Contains(out, phoneID) || strings.Contains(out, laptopID) {
		t.Errorf("list after revoking: %s", out)
	}
	if code, _, errOut := cli(t, "client-cert", "revoke", "bob", "--label", "laptop", "--config", config); code != 1 || !strings.Contains(errOut, "no such credential") {
		t.Errorf("revoking twice: exit %d: %s", code, errOut)
	}
}

// opensslClient is openssl s_client with a client certificate, driven
// line by line.
type opensslClient struct {
	t     *testing.T
	in    io.WriteCloser
	lines chan string
	seen  []string
}

// startOpenSSL connects openssl s_client to addr, with implicit TLS or
// -starttls imap, presenting certFile/keyFile (none when "").
func startOpenSSL(t *testing.T, g *gate, starttls bool, certFile, keyFile string) *opensslClient {
	t.Helper()
	addr := g.implicit
	args := []string{"s_client", "-quiet", "-connect", addr, "-servername", "localhost", "-CAfile", g.caFile, "-verify_return_error"}
	if starttls {
		args = append(args, "-starttls", "imap")
		args[3] = g.starttls
	}
	if certFile != "" {
		args = append(args, "-cert", certFile, "-key", keyFile)
	}
	cmd := exec.Command("openssl", args...)
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	o := &opensslClient{t: t, in: in, lines: make(chan string, 100)}
	go readOpenSSL(out, o.lines)
	t.Cleanup(func() {
		in.Close()
		cmd.Process.Kill()
		cmd.Wait()
	})
	if !starttls {
		o.expect("* OK")
	}
	return o
}

// readOpenSSL sends each line openssl prints to lines, then closes it.
func readOpenSSL(r io.Reader, lines chan<- string) {
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		lines <- strings.TrimRight(sc.Text(), "\r")
	}
	close(lines)
}

func (o *opensslClient) send(line string) { io.WriteString(o.in, line+"\r\n") }

// expect reads lines until one starts with prefix and returns it.
func (o *opensslClient) expect(prefix string) string {
	o.t.Helper()
	timeout := time.After(20 * time.Second)
	for {
		select {
		case line, ok := <-o.lines:
			if !ok {
				o.t.Fatalf("openssl ended waiting for %q; it printed %q", prefix, o.seen)
			}
			o.seen = append(o.seen, line)
			if strings.HasPrefix(line, prefix) {
				return line
			}
		case <-timeout:
			o.t.Fatalf("no %q from openssl in 20s; it printed %q", prefix, o.seen)
		}
	}
}

// loginWithOpenSSL logs in with AUTHENTICATE EXTERNAL = and returns the
// number of messages SELECT INBOX reports.
func (o *opensslClient) loginAndSelect() string {
	o.t.Helper()
	o.send("c CAPABILITY")
	if caps := o.expect("* CAPABILITY"); !strings.Contains(caps, "AUTH=EXTERNAL") {
		o.t.Fatalf("capabilities %q: no AUTH=EXTERNAL", caps)
	}
	o.expect("c OK")
	o.send("a AUTHENTICATE EXTERNAL =")
	o.expect("a OK")
	o.send("b SELECT INBOX")
	exists := o.expect("* ") // the first untagged answer may be FLAGS
	for !strings.HasSuffix(exists, " EXISTS") {
		exists = o.expect("* ")
	}
	o.expect("b OK")
	o.send("z LOGOUT")
	o.expect("z OK")
	return exists
}

// TestExternalWithRealClientsAgainstDovecot: the whole path as an admin
// runs it, against the real Dovecot's master passdb. A self-signed phone
// certificate registered with the command line and a certificate the
// company CA issued with the user in its subject CN (client_cert_user)
// log in with AUTHENTICATE EXTERNAL from openssl s_client, over implicit
// TLS and after STARTTLS, and from curl (--cert, --login-options
// AUTH=EXTERNAL); each lands in its own mailbox. An unknown certificate is
// not offered EXTERNAL and is refused. A certificate registered while
// serve runs works at once; revoking the phone's through the admin socket
// ends its open session within a second.
func TestExternalWithRealClientsAgainstDovecot(t *testing.T) {
	proxytest.RequireTool(t, "openssl")
	proxytest.RequireTool(t, "curl")
	d := proxytest.StartDovecot(t, proxytest.DovecotOptions{Messages: 4, MasterUsers: map[string]string{e2eMaster: e2eMasterSecret}})
	dir := t.TempDir()
	socket := filepath.Join(dir, "admin.sock")
	config := writeAppPasswordConfig(t, dir, dovecotUpstream(d, "starttls"))
	f, err := os.OpenFile(config, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(f, "\n[admin]\nsocket = %q\n", socket)
	f.Close()

	ca := proxytest.NewClientCA(t, "Example devices CA")
	caFile := filepath.Join(dir, "devices-ca.pem")
	os.WriteFile(caFile, ca.PEM, 0o644)
	var self *proxytest.ClientCA
	phone := self.Issue(t, proxytest.ClientCertOptions{CommonName: "user1's phone"})
	phoneCert, phoneKey := phone.WriteFiles(t, dir, "phone")
	phoneID := registerWithCLI(t, config, "user1", "phone", phoneCert) // on the file: serve is not running yet
	tablet := ca.Issue(t, proxytest.ClientCertOptions{CommonName: "user2"})
	tabletCert, tabletKey := tablet.WriteFiles(t, dir, "tablet")
	stranger := self.Issue(t, proxytest.ClientCertOptions{CommonName: "user2"})
	strangerCert, strangerKey := stranger.WriteFiles(t, dir, "stranger")

	g := startGate(t, gateOptions{
		listen:   fmt.Sprintf("client_certs = \"request\"\nclient_ca_file = %q\nclient_cert_user = \"subject-cn\"\n", caFile),
		upstream: dovecotUpstream(d, "starttls") + "\n\n" + masterTable(filepath.Join(dir, "master.secret")),
		auth:     "mechanisms = [\"PLAIN\", \"EXTERNAL\"]\n" + storeKey(dir),
		tail:     fmt.Sprintf("[admin]\nsocket = %q\n", socket),
		secrets:  []string{e2eMasterSecret, string(phone.KeyPEM), string(tablet.KeyPEM)},
	})

	if got := startOpenSSL(t, g, false, phoneCert, phoneKey).loginAndSelect(); got != "* 4 EXISTS" {
		t.Errorf("openssl, implicit TLS, the phone: %q, want user1's 4 messages", got)
	}
	if got := startOpenSSL(t, g, true, phoneCert, phoneKey).loginAndSelect(); got != "* 4 EXISTS" {
		t.Errorf("openssl, STARTTLS, the phone: %q, want user1's 4 messages", got)
	}
	if got := startOpenSSL(t, g, true, tabletCert, tabletKey).loginAndSelect(); got != "* 0 EXISTS" {
		t.Errorf("openssl, STARTTLS, the CA's tablet: %q, want user2's empty INBOX", got)
	}
	// curl sends the user name as the authzid: AUTHENTICATE EXTERNAL dXNlcjE=.
	out, err := exec.Command("curl", "-sS", "--max-time", "20", "--cacert", g.caFile, "--cert", phoneCert, "--key", phoneKey,
		"--login-options", "AUTH=EXTERNAL", "-u", "user1:", "imaps://"+g.implicit+"/INBOX?ALL").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "SEARCH 1 2 3 4") {
		t.Errorf("curl --cert --login-options AUTH=EXTERNAL: %v: %q", err, out)
	}

	o := startOpenSSL(t, g, false, strangerCert, strangerKey)
	o.send("c CAPABILITY")
	if caps := o.expect("* CAPABILITY"); strings.Contains(caps, "EXTERNAL") {
		t.Errorf("an unknown certificate is offered EXTERNAL: %q", caps)
	}
	o.send("a AUTHENTICATE EXTERNAL =")
	o.expect("a NO")

	// Registered while serve runs (through the admin socket): at once.
	laptop := self.Issue(t, proxytest.ClientCertOptions{CommonName: "user1's laptop"})
	laptopCert, laptopKey := laptop.WriteFiles(t, dir, "laptop")
	registerWithCLI(t, config, "user1", "laptop", laptopCert)
	if got := startOpenSSL(t, g, false, laptopCert, laptopKey).loginAndSelect(); got != "* 4 EXISTS" {
		t.Errorf("openssl, a certificate registered while serve runs: %q", got)
	}

	// The phone in IDLE; its registration revoked through the socket.
	c := g.dialTLSWithCert(t, phone.TLS)
	c.send("a AUTHENTICATE EXTERNAL =")
	c.expect("a OK")
	c.send("b SELECT INBOX")
	c.expect("b OK")
	c.send("c IDLE")
	c.expect("+ ")
	start := time.Now()
	if code, out, errOut := cli(t, "client-cert", "revoke", phoneID, "--config", config); code != 0 {
		t.Fatalf("revoke through the socket: exit %d: %s%s", code, out, errOut)
	}
	c.conn.SetReadDeadline(time.Now().Add(2 * time.Second))
	if _, err := c.r.ReadString('\n'); err == nil {
		t.Fatal("the phone's session is still open after its certificate was revoked")
	}
	took := time.Since(start)
	t.Logf("revoke command to the phone's session closed: %v", took)
	if took > time.Second {
		t.Errorf("the phone's session ended %v after the revoke command, want within a second", took)
	}
	o = startOpenSSL(t, g, false, phoneCert, phoneKey)
	o.send("a AUTHENTICATE EXTERNAL =")
	o.expect("a NO")

	got := d.WaitAuthAttempts(t, func(c proxytest.AuthCounts) bool {
		return c.MasterLogins[proxytest.MasterUse{Master: e2eMaster, User: "user1"}] >= 5 &&
			c.MasterLogins[proxytest.MasterUse{Master: e2eMaster, User: "user2"}] >= 1
	})
	if got.Failure != 0 {
		t.Errorf("Dovecot saw %d failed logins", got.Failure)
	}
	var phoneLogins, tabletLogins, cut int
	for _, e := range g.events(t) {
		switch {
		case e["event"] == "auth" && e["result"] == "success" && e["mechanism"] == "EXTERNAL" && e["credential"] == "client_cert" && e["credential_id"] == phoneID && e["credential_label"] == "phone" && e["user"] == "user1":
			phoneLogins++
		case e["event"] == "auth" && e["result"] == "success" && e["mechanism"] == "EXTERNAL" && e["credential"] == "client_cert" && e["user"] == "user2":
			tabletLogins++
			if id, _ := e["credential_id"].(string); !strings.HasPrefix(id, certKeyPrefix) {
				t.Errorf("the tablet's login names credential %q, want its key", id)
			}
		case e["event"] == "session_end" && e["reason"] == "credential_revoked":
			cut++
		}
	}
	if phoneLogins != 4 || tabletLogins != 1 || cut != 1 {
		t.Errorf("audit: %d phone logins, %d tablet logins, %d sessions ended by revocation; want 4, 1, 1", phoneLogins, tabletLogins, cut)
	}
	if code, out, _ := cli(t, "client-cert", "list", "user1", "--config", config); code != 0 || !strings.Contains(out, "laptop") || strings.Contains(out, phoneID) || !strings.Contains(out, "127.0.0.1") {
		t.Errorf("list through the socket: exit %d:\n%s", code, out)
	}
}
