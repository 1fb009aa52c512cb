package main

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/imapgate/imapgate/proxy/proxytest"
)

const (
	e2eMaster       = "imapgate"
	e2eMasterSecret = "Master-Secret-e2e-7!"
)

// writeAppPasswordConfig writes a config whose store is dir/credentials.db
// and whose master secret is in dir/master.secret, and returns its path.
func writeAppPasswordConfig(t *testing.T, dir, upstream string) string {
	t.Helper()
	certFile, keyFile, _ := writeCertFiles(t, dir)
	secretFile := filepath.Join(dir, "master.secret")
	if err := os.WriteFile(secretFile, []byte(e2eMasterSecret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := fmt.Sprintf("[[listen]]\naddress = \"127.0.0.1:1\"\n\n[tls]\ncert_file = %q\nkey_file = %q\n\n[upstream]\n%s\n\n%s\n[auth]\n%s\n",
		certFile, keyFile, upstream, masterTable(secretFile), storeKey(dir))
	path := filepath.Join(dir, "imapgate.toml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func masterTable(secretFile string) string {
	return fmt.Sprintf("[upstream.master]\nuser = %q\nsecret_file = %q\n", e2eMaster, secretFile)
}

func storeKey(dir string) string {
	return fmt.Sprintf("app_passwords = %q\n", filepath.Join(dir, "credentials.db"))
}

// cli runs the imapgate command line in this process.
func cli(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errOut bytes.Buffer
	code = run(args, &out, &errOut)
	return code, out.String(), errOut.String()
}

var printedPassword = regexp.MustCompile(`(?m)^    ([a-z2-9]{4}(-[a-z2-9]{4}){6})$`)

// addWithCLI adds an app password with imapgate app-password add and
// returns the password it printed once.
func addWithCLI(t *testing.T, config string, args ...string) (password, id string) {
	t.Helper()
	code, out, errOut := cli(t, append([]string{"app-password", "add"}, append(args, "--config", config)...)...)
	if code != 0 {
		t.Fatalf("app-password add %v: exit %d: %s", args, code, errOut)
	}
	m := printedPassword.FindStringSubmatch(out)
	ids := regexp.MustCompile(`id ([a-z2-9]+):`).FindStringSubmatch(out)
	if m == nil || ids == nil {
		t.Fatalf("app-password add printed no password and id: %q", out)
	}
	if !strings.Contains(out, "SCRAM login name: "+args[0]+"#"+ids[1]) {
		t.Errorf("app-password add did not print the SCRAM login name: %q", out)
	}
	return m[1], ids[1]
}

// TestAppPasswordCommands: add prints a password once with its SCRAM
// name, list shows it (never the password) per user and for everyone,
// revoke by ID and by label removes it, and the errors are clear: an
// unknown ID, a taken label, a bad --expires, a config without a store.
func TestAppPasswordCommands(t *testing.T) {
	dir := t.TempDir()
	config := writeAppPasswordConfig(t, dir, "address = \"127.0.0.1:1\"\ntls = \"none\"")
	phone, phoneID := addWithCLI(t, config, "alice", "--label", "phone")
	_, _ = addWithCLI(t, config, "alice", "--label", "laptop", "--expires", "90d", "--scope", "127.0.0.1:993")
	_, bobID := addWithCLI(t, config, "bob", "--label", "printer")

	code, out, _ := cli(t, "app-password", "list", "alice", "--config", config)
	if code != 0 || !strings.Contains(out, phoneID) || !strings.Contains(out, "laptop") || strings.Contains(out, "bob") || strings.Contains(out, phone) {
		t.Errorf("list alice: exit %d:\n%s", code, out)
	}
	if _, out, _ = cli(t, "app-password", "list", "--config", config); !strings.Contains(out, bobID) || !strings.Contains(out, "127.0.0.1:993") {
		t.Errorf("list: %s", out)
	}
	if code, _, errOut := cli(t, "app-password", "add", "alice", "--label", "phone", "--config", config); code != 1 || !strings.Contains(errOut, "label already in use") {
		t.Errorf("a taken label: exit %d: %s", code, errOut)
	}
	if code, _, errOut := cli(t, "app-password", "add", "alice", "--label", "x", "--expires", "soon", "--config", config); code != 1 || !strings.Contains(errOut, "--expires") {
		t.Errorf("a bad --expires: exit %d: %s", code, errOut)
	}
	if code, out, errOut := cli(t, "app-password", "revoke", phoneID, "--config", config); code != 0 || !strings.Contains(out, "revoked app password "+phoneID) {
		t.Errorf("revoke ID: exit %d: %s%s", code, out, errOut)
	}
	if code, out, errOut := cli(t, "app-password", "revoke", "bob", "--label", "printer", "--config", config); code != 0 || !strings.Contains(out, bobID) {
		t.Errorf("revoke by label: exit %d: %s%s", code, out, errOut)
	}
	if code, _, errOut := cli(t, "app-password", "revoke", phoneID, "--config", config); code != 1 || !strings.Contains(errOut, "revoked") {
		t.Errorf("revoking twice: exit %d: %s", code, errOut)
	}
	if _, out, _ = cli(t, "app-password", "list", "--config", config); strings.Contains(out, phoneID) || strings.Contains(out, bobID) || !strings.Contains(out, "laptop") {
		t.Errorf("list after revoking: %s", out)
	}
	if code, _, errOut := cli(t, "app-password", "add", "alice", "--config", config); code != 2 || !strings.Contains(errOut, "--label") {
		t.Errorf("add without --label: exit %d: %s", code, errOut)
	}
	plain := writeServeConfig(t, "127.0.0.1:1")
	if code, _, errOut := cli(t, "app-password", "list", "--config", plain); code != 1 || !strings.Contains(errOut, "auth.app_passwords is not set") {
		t.Errorf("a config without a store: exit %d: %s", code, errOut)
	}
}

// TestAppPasswordThroughServeAgainstDovecot: the whole path as an admin
// runs it. An app password added with the command line logs user1 in
// through `imapgate serve` to the real Dovecot's master passdb, with curl
// (-u user1:APP-PASSWORD) and Python's imaplib (AUTHENTICATE PLAIN): both
// land in user1's own INBOX. Dovecot's log shows the master login and
// neither the app password nor the master secret, nor do imapgate's logs
// (the gate's cleanup scans them). While serve runs, the command line is
// told the store is held, and says what to do.
func TestAppPasswordThroughServeAgainstDovecot(t *testing.T) {
	proxytest.RequireTool(t, "curl")
	proxytest.RequireTool(t, "python3")
	d := proxytest.StartDovecot(t, proxytest.DovecotOptions{Messages: 4, MasterUsers: map[string]string{e2eMaster: e2eMasterSecret}})
	dir := t.TempDir()
	config := writeAppPasswordConfig(t, dir, dovecotUpstream(d, "starttls"))
	pass, id := addWithCLI(t, config, "user1", "--label", "phone")

	g := startGate(t, gateOptions{
		upstream: dovecotUpstream(d, "starttls") + "\n\n" + masterTable(filepath.Join(dir, "master.secret")),
		auth:     storeKey(dir) + "passthrough = false\n",
		secrets:  append(secretsOf(d), pass, strings.ReplaceAll(pass, "-", ""), e2eMasterSecret),
	})
	out, err := exec.Command("curl", "-sS", "--max-time", "20", "--cacert", g.caFile, "-u", "user1:"+pass, "imaps://"+g.implicit+"/INBOX?ALL").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "SEARCH 1 2 3 4") {
		t.Fatalf("curl with the app password: %v: %q", err, out)
	}
	if out, err := exec.Command("curl", "-sS", "--max-time", "20", "--cacert", g.caFile, "-u", "user1:"+d.Users["user1"], "imaps://"+g.implicit+"/").CombinedOutput(); err == nil {
		t.Errorf("curl with the real password, passthrough = false: logged in: %q", out)
	}
	imaplibLogsIn(t, g, d, pass)

	got := d.WaitAuthAttempts(t, func(c proxytest.AuthCounts) bool {
		return c.MasterLogins[proxytest.MasterUse{Master: e2eMaster, User: "user1"}] >= 2
	})
	if got.Failure != 0 {
		t.Errorf("Dovecot saw %d failures: the real password reached it", got.Failure)
	}
	for _, s := range []string{pass, strings.ReplaceAll(pass, "-", ""), e2eMasterSecret} {
		if d.LogContains(s) {
			t.Errorf("Dovecot's log holds a secret")
		}
	}
	var credentials, refused int
	for _, e := range g.events(t) {
		if e["event"] == "auth" && e["credential"] == "app_password" && e["credential_id"] == id && e["credential_label"] == "phone" && e["result"] == "success" {
			credentials++
		}
		if e["event"] == "auth" && e["reason"] == "passthrough_disabled" {
			refused++
		}
	}
	if credentials < 2 || refused != 1 {
		t.Errorf("audit: %d app password successes naming %s, %d passthrough_disabled; want 2 or more and 1", credentials, id, refused)
	}

	code, _, errOut := cli(t, "app-password", "list", "--config", config)
	if code != 1 || !strings.Contains(errOut, "is held by the running imapgate serve") {
		t.Errorf("list while serve runs: exit %d: %s", code, errOut)
	}
}

// imaplibLogsIn runs the imaplib client (AUTHENTICATE PLAIN, SELECT,
// APPEND, FETCH, IDLE) through g with user1's app password.
func imaplibLogsIn(t *testing.T, g *gate, d *proxytest.Dovecot, pass string) {
	t.Helper()
	host, port, _ := strings.Cut(g.implicit, ":")
	cmd := exec.Command("python3", "testdata/clients/imaplib_client.py", "implicit", host, port, g.caFile, "user1", pass)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	var out []string
	sc := bufio.NewScanner(stdout)
	for sc.Scan() {
		out = append(out, sc.Text())
		if sc.Text() == "IDLING" {
			d.Append(t, "user1", "INBOX", []byte("From: other@imapgate.test\r\nSubject: while idling\r\n\r\nhello\r\n"))
		}
	}
	if err := cmd.Wait(); err != nil || len(out) == 0 || out[len(out)-1] != "DONE" {
		t.Fatalf("imaplib with the app password: %v\nstdout: %q\nstderr: %s", err, out, stderr.String())
	}
}

// TestAppPasswordCommandsReachTheRunningServe: with [admin] socket, the
// commands work while serve holds the store: a password added then logs
// in at once, without a restart; list shows it; and revoking the one a
// phone in IDLE logged in with ends that session within a second, while
// the other device's session stays, and its next login fails as
// app_password_revoked. The socket is 0600.
func TestAppPasswordCommandsReachTheRunningServe(t *testing.T) {
	d := proxytest.StartDovecot(t, proxytest.DovecotOptions{MasterUsers: map[string]string{e2eMaster: e2eMasterSecret}})
	dir := t.TempDir()
	socket := filepath.Join(dir, "admin.sock")
	config := writeAppPasswordConfig(t, dir, dovecotUpstream(d, "starttls"))
	f, err := os.OpenFile(config, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(f, "\n[admin]\nsocket = %q\n", socket)
	f.Close()
	phonePass, phoneID := addWithCLI(t, config, "user1", "--label", "phone")

	g := startGate(t, gateOptions{
		upstream: dovecotUpstream(d, "starttls") + "\n\n" + masterTable(filepath.Join(dir, "master.secret")),
		auth:     storeKey(dir),
		tail:     fmt.Sprintf("[admin]\nsocket = %q\n", socket),
		secrets:  []string{phonePass, e2eMasterSecret},
	})
	if fi, err := os.Stat(socket); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("admin socket: %v, mode %v; want 0600", err, fi.Mode())
	}
	tabletPass, _ := addWithCLI(t, config, "user1", "--label", "tablet")
	idle := func(pass string) *client {
		c := g.dialTLS(t)
		c.send("a AUTHENTICATE PLAIN " + plainIR("user1", pass))
		c.expect("a OK")
		c.send("b SELECT INBOX")
		c.expect("b OK")
		c.send("c IDLE")
		c.expect("+ ")
		return c
	}
	phone, tablet := idle(phonePass), idle(tabletPass) // the tablet's was added while serve ran
	if code, out, errOut := cli(t, "app-password", "list", "user1", "--config", config); code != 0 || !strings.Contains(out, "tablet") || !strings.Contains(out, phoneID) {
		t.Fatalf("list through the socket: exit %d: %s%s", code, out, errOut)
	}

	start := time.Now()
	if code, out, errOut := cli(t, "app-password", "revoke", phoneID, "--config", config); code != 0 || !strings.Contains(out, phoneID) {
		t.Fatalf("revoke through the socket: exit %d: %s%s", code, out, errOut)
	}
	phone.conn.SetReadDeadline(time.Now().Add(2 * time.Second))
	if _, err := phone.r.ReadString('\n'); err == nil {
		t.Fatal("the phone's session is still open after its app password was revoked")
	}
	took := time.Since(start)
	t.Logf("revoke command to the phone's session closed: %v", took)
	if took > time.Second {
		t.Errorf("the phone's session ended %v after the revoke command, want within a second", took)
	}
	tablet.send("DONE")
	tablet.expect("c OK")

	again := g.dialTLS(t)
	again.send("a AUTHENTICATE PLAIN " + plainIR("user1", phonePass))
	again.expect("a NO [AUTHENTICATIONFAILED]")
	var revoked, cut int
	count := func() bool { // the audit writer is asynchronous
		revoked, cut = 0, 0
		for _, e := range g.events(t) {
			if e["event"] == "auth" && e["reason"] == "app_password_revoked" && e["credential_id"] == phoneID {
				revoked++
			}
			if e["event"] == "session_end" && e["reason"] == "credential_revoked" {
				cut++
			}
		}
		return revoked >= 1 && cut >= 1
	}
	waitFor(t, count)
	if count(); revoked != 1 || cut != 1 {
		t.Errorf("audit: %d app_password_revoked, %d session_end credential_revoked; want 1 and 1", revoked, cut)
	}
}
