package main

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/imapgate/imapgate/proxy/proxytest"
)

// TestSIGHUPReloadsTheWholeConfig: a phone in IDLE on a listener that a
// reload removes, while the same reload moves the upstream to another
// port and TLS mode, denies a network and adds a listener, keeps receiving
// updates; the new listener accepts, the removed one refuses, new logins
// use the new upstream, the audit file moved away by logrotate is
// reopened, and a reload whose new listener cannot bind changes nothing.
func TestSIGHUPReloadsTheWholeConfig(t *testing.T) {
	d := proxytest.StartDovecot(t, proxytest.DovecotOptions{})
	bin := imapgateBinary(t)
	dir := t.TempDir()
	certFile, keyFile, certPEM := writeCertFiles(t, dir)
	ports := proxytest.FreePorts(t, 3)
	first, second, metricsAddr := ports[0], ports[1], ports[2]
	auditFile := filepath.Join(dir, "audit.log")
	path := filepath.Join(dir, "imapgate.toml")
	writeConfig := func(listeners []string, upstream, policy string) {
		var b strings.Builder
		b.WriteString("shutdown_timeout = \"3s\"\n")
		for _, l := range listeners {
			fmt.Fprintf(&b, "\n[[listen]]\naddress = %q\n", l)
		}
		fmt.Fprintf(&b, "\n[tls]\ncert_file = %q\nkey_file = %q\n\n[upstream]\n%s\n\n[policy]\nfailure_delay = \"0s\"\n%s\n\n[audit]\noutput = %q\n\n[metrics]\nlisten = %q\n",
			certFile, keyFile, upstream, policy, auditFile, metricsAddr)
		if err := os.WriteFile(path, []byte(b.String()), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	writeConfig([]string{first}, dovecotUpstream(d, "starttls"), "")
	stderr := &lockedBuffer{}
	cmd := exec.Command(bin, "serve", "--config", path)
	cmd.Stderr = stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() { cmd.Process.Kill() })
	waitListening(t, first, exited, stderr)
	reloads := 0
	hup := func(expect string) {
		t.Helper()
		reloads++
		n := strings.Count(stderr.String(), expect)
		cmd.Process.Signal(syscall.SIGHUP)
		waitFor(t, func() bool { return strings.Count(stderr.String(), expect) > n })
	}

	g := &gate{implicit: first, roots: poolOf(certPEM), auditFile: auditFile, stderr: stderr, secrets: secretsOf(d)}
	phone := g.dialTLS(t)
	phone.send("a AUTHENTICATE PLAIN " + plainIR("user1", d.Users["user1"]))
	phone.expect("a OK")
	phone.send("b SELECT INBOX")
	phone.expect("b OK")
	phone.send("i IDLE")
	phone.expect("+")

	// Logrotate moves the audit file away, then the reload.
	if err := os.Rename(auditFile, auditFile+".1"); err != nil {
		t.Fatal(err)
	}
	writeConfig([]string{second}, dovecotUpstream(d, "implicit"), `deny = ["127.0.0.77"]`)
	hup("\"reloaded\"")

	// The new listener serves logins through the new upstream.
	g2 := &gate{implicit: second, roots: g.roots, auditFile: auditFile}
	c := g2.dialTLS(t)
	c.send("a AUTHENTICATE PLAIN " + plainIR("user2", d.Users["user2"]))
	c.expect("a OK")
	c.conn.Close()
	// The removed one refuses connections.
	if conn, err := net.DialTimeout("tcp", first, time.Second); err == nil {
		conn.Close()
		t.Errorf("the removed listener %s still accepts", first)
	}
	// The new deny list applies.
	denied, err := (&net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.77")}}).Dial("tcp", second)
	if err == nil {
		denied.SetReadDeadline(time.Now().Add(5 * time.Second))
		buf := make([]byte, 1)
		if n, _ := denied.Read(buf); n > 0 {
			t.Error("a denied network got bytes after the reload")
		}
		denied.Close()
	}
	var user2 map[string]any
	waitFor(t, func() bool {
		for _, e := range g2.events(t) {
			if e["event"] == "auth" && e["user"] == "user2" {
				user2 = e
			}
		}
		return user2 != nil
	})
	if user2["upstream"] != d.ImplicitAddr {
		t.Errorf("a login after the reload went to %v, want the new upstream %s", user2["upstream"], d.ImplicitAddr)
	}
	// The refusal is written by the audit writer after the connection
	// closed: wait for it as for user2's login, but say what is missing.
	sawDenied := func() bool {
		for _, e := range g2.events(t) {
			if e["client_ip"] == "127.0.0.77" && e["result"] == "refused" {
				return true
			}
		}
		return false
	}
	for deadline := time.Now().Add(10 * time.Second); !sawDenied() && time.Now().Before(deadline); {
		time.Sleep(20 * time.Millisecond)
	}
	if !sawDenied() {
		t.Error("the reopened audit file has no refusal of the newly denied network")
	}

	// A reload whose new listener cannot bind is rejected as a whole.
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	writeConfig([]string{second, taken.Addr().String()}, dovecotUpstream(d, "starttls"), "")
	hup("config rejected")
	c = g2.dialTLS(t)
	c.send("a AUTHENTICATE PLAIN " + plainIR("user2", d.Users["user2"]))
	c.expect("a OK")
	c.conn.Close()
	// The audit writer is asynchronous: the OK can reach the client
	// before its event reaches the file, so wait for the second event (a
	// third would still be counted and fail the test).
	loginsToUpstream := func() int {
		n := 0
		for _, e := range g2.events(t) {
			if e["event"] == "auth" && e["user"] == "user2" && e["upstream"] == d.ImplicitAddr {
				n++
			}
		}
		return n
	}
	deadline := time.Now().Add(5 * time.Second)
	for loginsToUpstream() < 2 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if n := loginsToUpstream(); n != 2 {
		t.Errorf("after a rejected reload %d logins used the upstream in force, want 2", n)
	}

	// The phone's session outlived its listener and both reloads.
	d.Append(t, "user1", "INBOX", []byte("From: a@imapgate.test\r\nSubject: after reload\r\n\r\nhi\r\n"))
	phone.expect("* 1 EXISTS")
	phone.send("DONE")
	phone.expect("i OK")

	_, page := get(t, "http://"+metricsAddr+"/metrics")
	scanSecrets(t, page, g.secrets, "user1", "user2")
	fams := scrape(t, metricsAddr)
	if ok, rej := value(fams, "imapgate_config_reloads_total", "result", "ok"), value(fams, "imapgate_config_reloads_total", "result", "rejected"); ok != 1 || rej != 1 {
		t.Errorf("imapgate_config_reloads_total ok=%v rejected=%v, want 1 and 1", ok, rej)
	}

	cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-exited:
		if err != nil {
			t.Fatalf("serve exited with %v: %s", err, stderr.String())
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("serve did not exit after SIGTERM: %s", stderr.String())
	}
	if old, _ := os.ReadFile(auditFile + ".1"); !strings.Contains(string(old), `"user":"user1"`) {
		t.Error("the rotated audit file lost the events from before the reload")
	}
	g.assertNoSecrets(t)
	g2.secrets, g2.stderr = g.secrets, stderr
	g2.assertNoSecrets(t)
}
