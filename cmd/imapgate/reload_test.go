package main

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
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

// TestSIGHUPReloadKeepsSessions runs the built binary as an admin would:
// a SIGHUP applies a changed config to new sessions while a session in
// IDLE keeps receiving updates, a broken config is rejected and the old one
// stays in force, and SIGTERM ends the process with status 0.
func TestSIGHUPReloadKeepsSessions(t *testing.T) {
	d := proxytest.StartDovecot(t, proxytest.DovecotOptions{})
	dir := t.TempDir()
	bin := imapgateBinary(t)
	certFile, keyFile, certPEM := writeCertFiles(t, dir)
	addr := proxytest.FreePort(t)
	path := filepath.Join(dir, "imapgate.toml")
	writeConfig := func(loginCommand string) {
		cfg := fmt.Sprintf("shutdown_timeout = \"3s\"\n\n[[listen]]\naddress = %q\n\n[tls]\ncert_file = %q\nkey_file = %q\n\n[upstream]\n%s\n\n[auth]\nlogin_command = %q\n\n[policy]\nfailure_delay = \"0s\"\n\n[audit]\noutput = %q\n",
			addr, certFile, keyFile, dovecotUpstream(d, "starttls"), loginCommand, filepath.Join(dir, "audit.log"))
		if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	writeConfig("refuse")
	stderr := &lockedBuffer{}
	cmd := exec.Command(bin, "serve", "--config", path)
	cmd.Stderr = stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		cmd.Process.Kill()
	})
	waitListening(t, addr, exited, stderr)

	g := &gate{implicit: addr}
	g.roots = poolOf(certPEM)
	capabilities := func() string {
		c := g.dialTLS(t)
		c.send("c CAPABILITY")
		caps := c.expect("* CAPABILITY")
		c.conn.Close()
		return caps
	}
	if !strings.Contains(capabilities(), "LOGINDISABLED") {
		t.Fatal("LOGINDISABLED missing before the reload")
	}

	// A phone in IDLE.
	phone := g.dialTLS(t)
	phone.send("a AUTHENTICATE PLAIN " + plainIR("user1", d.Users["user1"]))
	phone.expect("a OK")
	phone.send("b SELECT INBOX")
	phone.expect("b OK")
	phone.send("i IDLE")
	phone.expect("+")

	writeConfig("allow-over-tls")
	cmd.Process.Signal(syscall.SIGHUP)
	waitFor(t, func() bool { return strings.Contains(stderr.String(), "reloaded") })
	if caps := capabilities(); strings.Contains(caps, "LOGINDISABLED") {
		t.Fatalf("the reload did not reach new sessions: %q", caps)
	}
	c := g.dialTLS(t)
	c.send(fmt.Sprintf("l LOGIN user1 %q", d.Users["user1"]))
	c.expect("l OK")

	// A broken config is rejected; the proxy keeps serving with the old one.
	os.WriteFile(path, []byte("[[listen]]\naddress = \n"), 0o600)
	cmd.Process.Signal(syscall.SIGHUP)
	waitFor(t, func() bool { return strings.Contains(stderr.String(), "config rejected") })
	if caps := capabilities(); strings.Contains(caps, "LOGINDISABLED") {
		t.Fatalf("a rejected config changed the running one: %q", caps)
	}

	// The phone's session survived both reloads.
	d.Append(t, "user1", "INBOX", []byte("From: a@imapgate.test\r\nSubject: after reload\r\n\r\nhi\r\n"))
	phone.expect("* 1 EXISTS")
	phone.send("DONE")
	phone.expect("i OK")

	cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-exited:
		if err != nil {
			t.Fatalf("serve exited with %v after SIGTERM: %s", err, stderr.String())
		}
	case <-time.After(10 * time.Second):
		cmd.Process.Signal(syscall.SIGQUIT)
		time.Sleep(time.Second)
		t.Fatalf("serve did not exit after SIGTERM: %s", stderr.String())
	}
	g.secrets = secretsOf(d)
	g.auditFile = filepath.Join(dir, "audit.log")
	g.stderr = stderr
	g.assertNoSecrets(t)
}

func waitListening(t *testing.T, addr string, exited chan error, stderr *lockedBuffer) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := tls.DialWithDialer(&net.Dialer{Timeout: time.Second}, "tcp", addr, &tls.Config{InsecureSkipVerify: true})
		if err == nil {
			bufio.NewReader(c).ReadString('\n')
			c.Close()
			return
		}
		select {
		case err := <-exited:
			t.Fatalf("serve exited: %v: %s", err, stderr.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("serve is not listening: %s", stderr.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met in 10s")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func poolOf(pem []byte) *x509.CertPool {
	p := x509.NewCertPool()
	p.AppendCertsFromPEM(pem)
	return p
}

// TestReloadMustKeepTheMasterWhileTheStoreIsOpen: app passwords log in
// through the master user, and the store stays open across reloads, so a
// reload that drops [upstream.master] is refused rather than breaking
// every app-password login.
func TestReloadMustKeepTheMasterWhileTheStoreIsOpen(t *testing.T) {
	noMaster := DefaultConfig()
	if err := keepsMaster(noMaster, true); err == nil || !strings.Contains(err.Error(), "[upstream.master]") {
		t.Fatalf("dropping the master with the store open: %v", err)
	}
	if err := keepsMaster(noMaster, false); err != nil {
		t.Fatalf("no store, no master: %v", err)
	}
	withMaster := DefaultConfig()
	withMaster.Upstream.Master = &MasterConfig{}
	if err := keepsMaster(withMaster, true); err != nil {
		t.Fatalf("master kept: %v", err)
	}
}
