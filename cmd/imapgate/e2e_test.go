package main

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/imapgate/imapgate/proxy/proxytest"
	"github.com/imapgate/imapgate/tlsconf"
)

// These tests run imapgate as an admin would (`serve` with a config file)
// in front of a real Dovecot, and drive it with real clients.

func dovecotUpstream(d *proxytest.Dovecot, mode string) string {
	switch mode {
	case "none":
		return fmt.Sprintf("address = %q\ntls = \"none\"", d.Addr)
	case "implicit":
		return fmt.Sprintf("address = %q\ntls = \"implicit\"\nca_file = %q", d.ImplicitAddr, d.CAFile)
	}
	return fmt.Sprintf("address = %q\ntls = \"starttls\"\nca_file = %q", d.Addr, d.CAFile)
}

func secretsOf(d *proxytest.Dovecot) []string {
	var s []string
	for _, p := range d.Users {
		s = append(s, p)
	}
	return s
}

func TestUpstreamModesAgainstDovecot(t *testing.T) {
	d := proxytest.StartDovecot(t, proxytest.DovecotOptions{Messages: 3})
	pass := d.Users["user1"]
	pin := dovecotPin(t, d)
	wrongCert, _, _ := tlsconf.SelfSigned(time.Hour, "localhost")
	wrongLeaf, _ := x509.ParseCertificate(wrongCert.Certificate[0])
	tests := []struct {
		name     string
		upstream string
		password string
		want     string
	}{
		{"plaintext", dovecotUpstream(d, "none"), pass, "a OK [CAPABILITY"},
		{"starttls with CA file", dovecotUpstream(d, "starttls"), pass, "a OK [CAPABILITY"},
		{"implicit with CA file", dovecotUpstream(d, "implicit"), pass, "a OK [CAPABILITY"},
		{"implicit with pin", fmt.Sprintf("address = %q\ntls = \"implicit\"\npin_sha256 = %q", d.ImplicitAddr, pin), pass, "a OK [CAPABILITY"},
		{"starttls with pin, login command", fmt.Sprintf("address = %q\ntls = \"starttls\"\npin_sha256 = %q\nlogin = \"login\"", d.Addr, pin), pass, "a OK [CAPABILITY"},
		{"wrong pin refused", fmt.Sprintf("address = %q\ntls = \"implicit\"\npin_sha256 = %q", d.ImplicitAddr, tlsconf.SPKIPin(wrongLeaf)), pass, "a NO [UNAVAILABLE]"},
		{"untrusted certificate refused", fmt.Sprintf("address = %q\ntls = \"starttls\"", d.Addr), pass, "a NO [UNAVAILABLE]"},
		{"bad password", dovecotUpstream(d, "starttls"), "wrong-password", "a NO [AUTHENTICATIONFAILED]"},
		{"upstream down", fmt.Sprintf("address = %q\ntls = \"starttls\"\nca_file = %q\nconnect_timeout = \"2s\"", proxytest.FreePort(t), d.CAFile), pass, "a NO [UNAVAILABLE]"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := startGate(t, gateOptions{upstream: tt.upstream, secrets: secretsOf(d)})
			c := g.dialTLS(t)
			c.send("a AUTHENTICATE PLAIN " + plainIR("user1", tt.password))
			line := c.expect("a ")
			if !strings.HasPrefix(line, tt.want) {
				t.Fatalf("got %q, want %q", line, tt.want)
			}
			if strings.HasPrefix(tt.want, "a OK") {
				for _, hidden := range []string{"AUTH=", "STARTTLS", "SASL-IR", "LOGINDISABLED"} {
					if strings.Contains(line, hidden) {
						t.Errorf("post-login capabilities leak %s: %q", hidden, line)
					}
				}
				c.send("b SELECT INBOX")
				c.expect("* 3 EXISTS")
				c.expect("b OK")
				c.send("c LOGOUT")
				c.expect("c OK")
			}
		})
	}
}

func TestLoginOnlyUpstream(t *testing.T) {
	d := proxytest.StartDovecot(t, proxytest.DovecotOptions{LoginOnly: true})
	g := startGate(t, gateOptions{upstream: dovecotUpstream(d, "starttls"), secrets: secretsOf(d)})
	c := g.dialTLS(t)
	c.send("a AUTHENTICATE PLAIN " + plainIR("user1", d.Users["user1"]))
	c.expect("a OK [CAPABILITY")
	c.send("b SELECT INBOX")
	c.expect("b OK")
	if n := d.AuthAttempts().Success; n != 1 {
		t.Fatalf("Dovecot saw %d successful logins, want 1", n)
	}
}

func TestLoginNeverReachesUpstream(t *testing.T) {
	d := proxytest.StartDovecot(t, proxytest.DovecotOptions{})
	g := startGate(t, gateOptions{upstream: dovecotUpstream(d, "starttls"), policy: "", secrets: secretsOf(d)})
	pass := d.Users["user1"]

	c := g.dialPlain(t)
	c.send("a1 LOGIN user1 " + pass)
	c.expect("a1 NO [PRIVACYREQUIRED]")
	c.send("a2 AUTHENTICATE PLAIN " + plainIR("user1", pass))
	c.expect("a2 NO [PRIVACYREQUIRED]")
	c2 := g.dialPlain(t)
	c2.startTLS(g.roots)
	c2.send("b1 LOGIN user1 " + pass)
	c2.expect("b1 NO [CANNOT]")
	c3 := g.dialTLS(t)
	c3.send(`c1 LOGIN "user1" {` + fmt.Sprint(len(pass)) + `}`)
	c3.expect("c1 NO [CANNOT]") // refused before the literal is asked for

	// Give Dovecot's log a moment, then count: nothing may have arrived.
	time.Sleep(200 * time.Millisecond)
	if got := d.AuthAttempts(); got.Success+got.Failure != 0 || len(got.ByUser) != 0 {
		t.Fatalf("refused logins reached Dovecot: %+v", got)
	}
	want := "refused/plaintext_login_refused refused/tls_required refused/login_command_disabled refused/login_command_disabled"
	if got := strings.Join(g.authEvents(t), " "); got != want {
		t.Fatalf("auth events = %s, want %s", got, want)
	}
}

func TestBadPasswordReachesDovecotOnceAndAudits(t *testing.T) {
	d := proxytest.StartDovecot(t, proxytest.DovecotOptions{})
	g := startGate(t, gateOptions{upstream: dovecotUpstream(d, "starttls"), secrets: append(secretsOf(d), "Wr0ng-Guess!")})
	c := g.dialTLS(t)
	c.send("a AUTHENTICATE PLAIN " + plainIR("user1", "Wr0ng-Guess!"))
	c.expect("a NO [AUTHENTICATIONFAILED]")
	c.send("b AUTHENTICATE PLAIN " + plainIR("user1", d.Users["user1"]))
	c.expect("b OK")
	got := d.WaitAuthAttempts(t, func(a proxytest.AuthCounts) bool { return a.Failure >= 1 && a.Success >= 1 })
	if got.Failure != 1 || got.Success != 1 {
		t.Fatalf("Dovecot saw %+v, want one failure and one success", got)
	}
	// The audit writer is asynchronous: wait for the second event (a
	// third would still fail the comparison).
	waitFor(t, func() bool { return len(g.authEvents(t)) >= 2 })
	if ev := strings.Join(g.authEvents(t), " "); ev != "failure/bad_credentials success/" {
		t.Fatalf("auth events = %s", ev)
	}
}

func TestForwardClientIPWithID(t *testing.T) {
	d := proxytest.StartDovecot(t, proxytest.DovecotOptions{TrustedNetworks: "127.0.0.0/8"})
	g := startGate(t, gateOptions{upstream: dovecotUpstream(d, "starttls") + "\nforward_client_ip = \"id\"", secrets: secretsOf(d)})
	c := g.dialTLSFrom(t, "127.0.0.77")
	c.send("a AUTHENTICATE PLAIN " + plainIR("user1", d.Users["user1"]))
	c.expect("a OK")
	got := d.WaitAuthAttempts(t, func(a proxytest.AuthCounts) bool { return a.Success >= 1 })
	if got.ByIP["127.0.0.77"] != 1 {
		t.Fatalf("Dovecot did not see the client's address: %+v", got.ByIP)
	}
}

func TestCurlThroughProxy(t *testing.T) {
	proxytest.RequireTool(t, "curl")
	d := proxytest.StartDovecot(t, proxytest.DovecotOptions{Messages: 5})
	g := startGate(t, gateOptions{upstream: dovecotUpstream(d, "starttls"), secrets: secretsOf(d)})
	user := "user1:" + d.Users["user1"]
	curl := func(args ...string) string {
		t.Helper()
		out, err := exec.Command("curl", append([]string{"-sS", "--max-time", "20"}, args...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("curl %v: %v: %s", args, err, out)
		}
		return string(out)
	}
	list := curl("--cacert", g.caFile, "--login-options", "AUTH=PLAIN", "-u", user, "imaps://"+g.implicit+"/")
	if !strings.Contains(list, "INBOX") {
		t.Fatalf("LIST through the proxy: %q", list)
	}
	viaProxy := curl("--cacert", g.caFile, "--login-options", "AUTH=PLAIN", "-u", user, "imaps://"+g.implicit+"/INBOX;UID=3")
	viaSTARTTLS := curl("--ssl-reqd", "--cacert", g.caFile, "--login-options", "AUTH=PLAIN", "-u", user, "imap://"+g.starttls+"/INBOX;UID=3")
	direct := curl("--ssl-reqd", "--cacert", d.CAFile, "-u", user, "imap://"+d.Addr+"/INBOX;UID=3")
	if viaProxy != direct || viaSTARTTLS != direct || len(direct) < 1000 {
		t.Fatalf("message 3 differs: proxy %d bytes, starttls %d bytes, direct %d bytes", len(viaProxy), len(viaSTARTTLS), len(direct))
	}
}

func TestImaplibThroughProxy(t *testing.T) {
	proxytest.RequireTool(t, "python3")
	d := proxytest.StartDovecot(t, proxytest.DovecotOptions{Messages: 2})
	g := startGate(t, gateOptions{upstream: dovecotUpstream(d, "starttls"), secrets: secretsOf(d)})
	for _, mode := range []string{"implicit", "starttls"} {
		t.Run(mode, func(t *testing.T) {
			addr := g.implicit
			if mode == "starttls" {
				addr = g.starttls
			}
			host, port, _ := strings.Cut(addr, ":")
			cmd := exec.Command("python3", "testdata/clients/imaplib_client.py", mode, host, port, g.caFile, "user1", d.Users["user1"])
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
					// A second connection, straight to Dovecot, delivers mail.
					d.Append(t, "user1", "INBOX", []byte("From: other@imapgate.test\r\nSubject: while idling\r\n\r\nhello\r\n"))
				}
			}
			if err := cmd.Wait(); err != nil {
				t.Fatalf("imaplib client failed: %v\nstdout: %q\nstderr: %s", err, out, stderr.String())
			}
			if out[len(out)-1] != "DONE" {
				t.Fatalf("imaplib output: %q", out)
			}
		})
	}
}

func TestMbsyncThroughProxyMatchesDirect(t *testing.T) {
	proxytest.RequireTool(t, "mbsync")
	d := proxytest.StartDovecot(t, proxytest.DovecotOptions{Messages: 500, MessageSize: 4096})
	g := startGate(t, gateOptions{upstream: dovecotUpstream(d, "starttls"), secrets: secretsOf(d)})
	dir := t.TempDir()
	// mbsync checks the certificate against the host name only, not IP SANs.
	_, port, _ := strings.Cut(g.implicit, ":")
	_, dport, _ := strings.Cut(d.Addr, ":")
	host, dhost := "localhost", "localhost"
	conf := fmt.Sprintf(`IMAPAccount proxy
Host %s
Port %s
User user1
Pass %s
SSLType IMAPS
CertificateFile %s
AuthMechs PLAIN

IMAPStore proxy-remote
Account proxy

MaildirStore proxy-local
Path %s/proxy/
Inbox %s/proxy/INBOX

Channel proxy
Far :proxy-remote:
Near :proxy-local:
Patterns INBOX
Create Near
SyncState *

IMAPAccount direct
Host %s
Port %s
User user1
Pass %s
SSLType STARTTLS
CertificateFile %s

IMAPStore direct-remote
Account direct

MaildirStore direct-local
Path %s/direct/
Inbox %s/direct/INBOX

Channel direct
Far :direct-remote:
Near :direct-local:
Patterns INBOX
Create Near
SyncState *
`, host, port, d.Users["user1"], g.caFile, dir, dir, dhost, dport, d.Users["user1"], d.CAFile, dir, dir)
	os.MkdirAll(filepath.Join(dir, "proxy"), 0o700)
	os.MkdirAll(filepath.Join(dir, "direct"), 0o700)
	rc := filepath.Join(dir, "mbsyncrc")
	os.WriteFile(rc, []byte(conf), 0o600)
	for _, ch := range []string{"proxy", "direct"} {
		out, err := exec.Command("mbsync", "-c", rc, ch).CombinedOutput()
		if err != nil {
			t.Fatalf("mbsync %s: %v: %s", ch, err, out)
		}
	}
	viaProxy := maildirDigests(t, filepath.Join(dir, "proxy", "INBOX"))
	direct := maildirDigests(t, filepath.Join(dir, "direct", "INBOX"))
	if len(viaProxy) != 500 || len(direct) != 500 {
		t.Fatalf("synced %d messages through the proxy and %d directly, want 500 each", len(viaProxy), len(direct))
	}
	for i := range direct {
		if viaProxy[i] != direct[i] {
			t.Fatalf("the Maildirs differ (message digest %d)", i)
		}
	}
}

// maildirDigests returns the sorted SHA-256 digests of every message file,
// without the X-TUID header mbsync adds with a random value on every run.
func maildirDigests(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	for _, sub := range []string{"cur", "new"} {
		entries, _ := os.ReadDir(filepath.Join(dir, sub))
		for _, e := range entries {
			data, err := os.ReadFile(filepath.Join(dir, sub, e.Name()))
			if err != nil {
				t.Fatal(err)
			}
			data = xTUID.ReplaceAll(data, nil)
			out = append(out, fmt.Sprintf("%x", sha256.Sum256(data)))
		}
	}
	sort.Strings(out)
	return out
}

func TestShutdownDrainsRelayedSessions(t *testing.T) {
	d := proxytest.StartDovecot(t, proxytest.DovecotOptions{})
	g := startGate(t, gateOptions{upstream: dovecotUpstream(d, "starttls"), secrets: secretsOf(d)})
	c := g.dialTLS(t)
	c.send("a AUTHENTICATE PLAIN " + plainIR("user1", d.Users["user1"]))
	c.expect("a OK")
	waiting := g.dialTLS(t) // not logged in: gets BYE at shutdown
	g.cancel()              // SIGTERM
	waiting.expect("* BYE")
	time.Sleep(100 * time.Millisecond)
	c.send("b NOOP") // the relayed session still works
	c.expect("b OK")
	c.send("c LOGOUT")
	c.expect("c OK")
	select {
	case code := <-g.exit:
		g.exit <- code // for the cleanup's check
	case <-time.After(4 * time.Second):
		t.Fatal("serve did not return after the last session ended")
	}
}

var xTUID = regexp.MustCompile(`(?m)^X-TUID: [^\r\n]*\r?\n`)

func dovecotPin(t *testing.T, d *proxytest.Dovecot) string {
	t.Helper()
	block, _ := pem.Decode(d.CertPEM)
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return tlsconf.SPKIPin(cert)
}

// TestSourceAddressesSpreadUpstreamConnections: upstream.source_addresses
// spreads the proxy's connections to one upstream over several local
// addresses (each has its own ~28,000 ephemeral ports); Dovecot's log shows
// the address each login came from.
func TestSourceAddressesSpreadUpstreamConnections(t *testing.T) {
	d := proxytest.StartDovecot(t, proxytest.DovecotOptions{})
	g := startGate(t, gateOptions{
		upstream: dovecotUpstream(d, "starttls") + "\nsource_addresses = [\"127.0.0.2\", \"127.0.0.3\"]",
		secrets:  secretsOf(d),
	})
	for i := 0; i < 4; i++ {
		c := g.dialTLS(t)
		c.send("a AUTHENTICATE PLAIN " + plainIR("user1", d.Users["user1"]))
		c.expect("a OK")
	}
	got := d.WaitAuthAttempts(t, func(a proxytest.AuthCounts) bool { return a.Success >= 4 })
	if got.ByIP["127.0.0.2"] != 2 || got.ByIP["127.0.0.3"] != 2 {
		t.Fatalf("logins by source address: %v, want 2 from each of 127.0.0.2 and 127.0.0.3", got.ByIP)
	}
}
