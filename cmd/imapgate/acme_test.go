package main

import (
	"bufio"
	"crypto/tls"
	"encoding/base64"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/imapgate/imapgate/proxy/memupstream"
	"github.com/imapgate/imapgate/proxy/proxytest"
	"github.com/imapgate/imapgate/tlsconf"
)

// These tests run `imapgate serve` with [tls.acme] against the real Pebble
// binary, from an empty storage directory, and check the certificate with
// the clients admins use: openssl s_client and curl, both verifying
// against Pebble's root.

const (
	acmeUser     = "ann"
	acmePassword = "acme-test-password"
)

// certmagic keeps some state per name for the whole process (challenges
// in flight, the renewal back-off): tests that run more than once in one
// process (-count) need a name of their own each time.
var nameSeq atomic.Int64

func uniqueName(host, domain string) string {
	return fmt.Sprintf("%s%d.%s", host, nameSeq.Add(1), domain)
}

func startMemUpstream(t *testing.T) string {
	t.Helper()
	up, err := memupstream.Start(map[string]string{acmeUser: acmePassword})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { up.Close() })
	return up.Addr
}

// verifyWithClients checks the proxy's certificate for name with openssl
// s_client -verify_return_error and with curl --cacert (which also logs
// in and lists INBOX through the proxy).
func verifyWithClients(t *testing.T, addr, name, rootFile string) {
	t.Helper()
	proxytest.RequireTool(t, "openssl")
	proxytest.RequireTool(t, "curl")
	out, err := exec.Command("openssl", "s_client", "-connect", addr, "-servername", name,
		"-verify_return_error", "-verify_hostname", name, "-CAfile", rootFile, "-alpn", "imap").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "Verify return code: 0 (ok)") {
		t.Fatalf("openssl s_client did not verify %s: %v\n%s", name, err, tail(string(out), 3000))
	}
	_, port, _ := net.SplitHostPort(addr)
	out, err = exec.Command("curl", "-sS", "--max-time", "20", "--cacert", rootFile,
		"--resolve", name+":"+port+":127.0.0.1", "--login-options", "AUTH=PLAIN",
		"-u", acmeUser+":"+acmePassword, "imaps://"+name+":"+port+"/").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "INBOX") {
		t.Fatalf("curl --cacert did not list INBOX through %s: %v\n%s", name, err, out)
	}
}

// TestACMEIssuesWithEachHTTPChallenge: TLS-ALPN-01 and HTTP-01, validated
// by Pebble for real against imapgate's own responder on loopback.
func TestACMEIssuesWithEachHTTPChallenge(t *testing.T) {
	for _, challenge := range []string{"tls-alpn-01", "http-01"} {
		t.Run(challenge, func(t *testing.T) {
			t.Parallel()
			dns := startChallSrv(t)
			p := startPebble(t, pebbleOptions{DNS: dns})
			port := p.TLSPort
			if challenge == "http-01" {
				port = p.HTTPPort
			}
			// certmagic keeps challenges in memory by name, process-wide:
			// parallel tests use names of their own.
			name, second := "imap."+challenge+".test", "mail."+challenge+".test"
			g := startACMEGate(t, p, fmt.Sprintf(`domains = [%q, %q]
email = "postmaster@example.test"
challenge = %q
challenge_listen = "127.0.0.1:%d"`, name, second, challenge, port), "")
			leaf, took := g.waitVerified(t, g.implicit, name, p.Roots, 60*time.Second)
			t.Logf("%s: first verified handshake %v after serve started", challenge, took.Round(time.Millisecond))
			if !strings.Contains(strings.Join(leaf.DNSNames, " "), name) {
				t.Fatalf("certificate names %v lack %s", leaf.DNSNames, name)
			}
			g.waitVerified(t, g.implicit, second, p.Roots, 30*time.Second)
			verifyWithClients(t, g.implicit, name, p.RootFile)

			// A reload keeps the running certificate manager: the same
			// certificate serves the next handshake at once.
			g.reload <- struct{}{}
			waitLog(t, g, `"msg":"reloaded"`, 10*time.Second)
			again, _ := g.waitVerified(t, g.implicit, name, p.Roots, 2*time.Second)
			if again.SerialNumber.Cmp(leaf.SerialNumber) != 0 {
				t.Errorf("after a reload the certificate changed: serial %v, was %v", again.SerialNumber, leaf.SerialNumber)
			}
			log := g.stderr.String()
			for _, n := range []string{name, second} {
				if want := `"msg":"certificate issued","name":"` + n + `"`; !strings.Contains(log, want) {
					t.Errorf("operational log lacks %s", want)
				}
			}
			fi, err := os.Stat(filepath.Join(g.dir, "acme"))
			if err != nil || fi.Mode().Perm() != 0o700 {
				t.Errorf("storage directory: %v, mode %v; want 0700", err, fi.Mode().Perm())
			}
			assertLogIsJSONOnly(t, g)
		})
	}
}

// assertLogIsJSONOnly: everything imapgate (and certmagic through it)
// wrote to stderr is one JSON object per line.
func assertLogIsJSONOnly(t *testing.T, g *acmeGate) {
	t.Helper()
	sc := bufio.NewScanner(strings.NewReader(g.stderr.String()))
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		if line := sc.Text(); !strings.HasPrefix(line, "{") {
			t.Errorf("stderr line is not a JSON log record: %q", line)
		}
	}
}

// TestACMEDNS01 proves names through DNS-01 against a real BIND 9: with
// RFC 2136 updates signed by a TSIG key, and with an exec hook that runs
// nsupdate. Pebble resolves through the same BIND. The rfc2136 case asks
// for a wildcard too.
func TestACMEDNS01(t *testing.T) {
	for _, provider := range []string{"rfc2136", "exec"} {
		t.Run(provider, func(t *testing.T) {
			t.Parallel()
			zone := provider + ".test"
			b := startBIND(t, zone, "imap", "mail")
			p := startPebble(t, pebbleOptions{DNS: b.Addr})
			name := "imap." + zone
			domains := fmt.Sprintf("[%q]", name)
			var keys string
			switch provider {
			case "rfc2136":
				domains = fmt.Sprintf("[%q, %q]", name, "*."+zone)
				keys = fmt.Sprintf("dns_provider = \"rfc2136\"\ndns_server = %q\ntsig_key_name = %q\ntsig_secret_file = %q", b.Addr, b.KeyName, b.KeyFile)
			case "exec":
				proxytest.RequireTool(t, "nsupdate")
				keys = fmt.Sprintf("dns_provider = \"exec\"\ndns_exec = %q", writeNSUpdateHook(t, b, 0))
			}
			g := startACMEGate(t, p, fmt.Sprintf("domains = %s\nchallenge = \"dns-01\"\ndns_resolvers = [%q]\n%s", domains, b.Addr, keys), "")
			_, took := g.waitVerified(t, g.implicit, name, p.Roots, 90*time.Second)
			t.Logf("dns-01 (%s): first verified handshake %v after serve started", provider, took.Round(time.Millisecond))
			if provider == "rfc2136" {
				leaf, _ := g.waitVerified(t, g.implicit, "other."+zone, p.Roots, 60*time.Second)
				if !strings.Contains(strings.Join(leaf.DNSNames, " "), "*."+zone) {
					t.Fatalf("other.%s got %v, want the wildcard", zone, leaf.DNSNames)
				}
			}
			verifyWithClients(t, g.implicit, name, p.RootFile)
			assertLogIsJSONOnly(t, g)
		})
	}
}

// writeNSUpdateHook writes a dns_exec program that publishes the TXT
// record in BIND with nsupdate, or exits with failStatus (not 0) and a
// reason.
func writeNSUpdateHook(t *testing.T, b *bind9, failStatus int) string {
	t.Helper()
	_, port, _ := net.SplitHostPort(b.Addr)
	script := fmt.Sprintf(`#!/bin/sh
set -e
if [ %d -ne 0 ]; then echo "hook: the DNS API refused the token" >&2; exit %d; fi
case "$1" in
present) op="add $2 5 TXT \"$3\"" ;;
cleanup) op="delete $2 TXT \"$3\"" ;;
*) echo "hook: unknown verb $1" >&2; exit 2 ;;
esac
printf 'server 127.0.0.1 %s\nzone %s\nupdate %%s\nsend\n' "$op" | nsupdate -k %q
`, failStatus, failStatus, port, b.Zone, b.KeyFile)
	path := filepath.Join(t.TempDir(), "acme-dns-hook")
	if err := os.WriteFile(path, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestACMERenewsWhileIDLESessionStaysOpen: Pebble issues 30-second
// certificates; imapgate renews when a third is left. A session in IDLE on
// a real Dovecot, opened on the first certificate, stays usable, and the
// next handshake gets the renewed certificate.
func TestACMERenewsWhileIDLESessionStaysOpen(t *testing.T) {
	t.Parallel()
	d := proxytest.StartDovecot(t, proxytest.DovecotOptions{Users: map[string]string{acmeUser: acmePassword}, Messages: 1})
	dns := startChallSrv(t)
	p := startPebble(t, pebbleOptions{DNS: dns, Validity: 30})
	name := uniqueName("imap", "renewal.test")
	g := startACMEGateTo(t, p, fmt.Sprintf(`domains = [%q]
challenge = "tls-alpn-01"
challenge_listen = "127.0.0.1:%d"
renew_check_interval = "1s"`, name, p.TLSPort), "", dovecotUpstream(d, "starttls"))
	first, _ := g.waitVerified(t, g.implicit, name, p.Roots, 60*time.Second)

	conn, err := tls.Dial("tcp", g.implicit, &tls.Config{RootCAs: p.Roots, ServerName: name})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	c := &client{t: t, conn: conn, r: bufio.NewReader(conn)}
	c.expect("* OK")
	c.send("a AUTHENTICATE PLAIN " + plainIR(acmeUser, acmePassword))
	c.expect("a OK")
	c.send("b SELECT INBOX")
	c.expect("* 1 EXISTS")
	c.expect("b OK")
	c.send("i IDLE")
	c.expect("+ ")

	var renewed bool
	deadline := time.Now().Add(60 * time.Second)
	for !renewed && time.Now().Before(deadline) {
		time.Sleep(250 * time.Millisecond)
		renewed = strings.Contains(g.stderr.String(), `"msg":"certificate renewed","name":"`+name+`"`)
	}
	if !renewed {
		t.Fatal("no renewal logged within 60s")
	}
	second, _ := g.waitVerified(t, g.implicit, name, p.Roots, 10*time.Second)
	if second.SerialNumber.Cmp(first.SerialNumber) == 0 {
		t.Fatalf("the handshake after renewal still got serial %v", first.SerialNumber)
	}
	if !second.NotAfter.After(first.NotAfter) {
		t.Fatalf("renewed certificate expires %v, not after the first's %v", second.NotAfter, first.NotAfter)
	}
	// The IDLE session opened on the first certificate is still there.
	c.send("DONE")
	c.expect("i OK")
	c.send("n NOOP")
	c.expect("n OK")
	if got := conn.ConnectionState().PeerCertificates[0].SerialNumber; got.Cmp(first.SerialNumber) != 0 {
		t.Fatalf("open session's certificate changed")
	}
}

// TestACMEOnDemandAllowListAndCap: with on_demand, a name under the
// allowed suffix (which resolves, through dns_resolvers) gets a
// certificate during its first handshake; a second new name is over the
// hourly cap of 1; a name outside the allow-list gets none, and the CA is
// never asked for either.
func TestACMEOnDemandAllowListAndCap(t *testing.T) {
	t.Parallel()
	dns := startChallSrv(t)
	p := startPebble(t, pebbleOptions{DNS: dns})
	g := startACMEGate(t, p, fmt.Sprintf(`domains = ["imap.ondemand.test"]
challenge = "tls-alpn-01"
challenge_listen = "127.0.0.1:%d"
dns_resolvers = [%q]
on_demand = true
on_demand_allow = [".customers.ondemand.test"]
on_demand_per_hour = 1`, p.TLSPort, dns), "")
	g.waitVerified(t, g.implicit, "imap.ondemand.test", p.Roots, 60*time.Second)

	leaf, _ := g.waitVerified(t, g.implicit, "a.customers.ondemand.test", p.Roots, 60*time.Second)
	if leaf.DNSNames[0] != "a.customers.ondemand.test" {
		t.Fatalf("on-demand certificate is for %v", leaf.DNSNames)
	}
	for _, name := range []string{"b.customers.ondemand.test", "evil.example.org"} {
		conn, err := tls.Dial("tcp", g.implicit, &tls.Config{RootCAs: p.Roots, ServerName: name})
		if err == nil {
			conn.Close()
			t.Fatalf("%s got a certificate", name)
		}
	}
	log := g.stderr.String()
	for _, want := range []string{
		`"msg":"on-demand certificate refused","name":"b.customers.ondemand.test","reason":"\"b.customers.ondemand.test\": on-demand issuance cap for this hour reached (1)"`,
		`"msg":"on-demand certificate refused","name":"evil.example.org","reason":"\"evil.example.org\": name not in the on-demand allow-list"`,
	} {
		if !strings.Contains(log, want) {
			t.Errorf("log lacks %s", want)
		}
	}
	for _, never := range []string{`"name":"b.customers.ondemand.test","renewal"`, `"name":"evil.example.org","renewal"`} {
		if strings.Contains(log, never) {
			t.Errorf("the CA was asked for a refused name: %s", never)
		}
	}
}

// TestACMEBadInputNamesDomainAndCause: each way of getting ACME wrong is
// logged with the domain and the cause, and the proxy keeps running.
func TestACMEBadInputNamesDomainAndCause(t *testing.T) {
	type setup func(t *testing.T) (p *pebble, acme string)
	pebbleWithBIND := func(t *testing.T, zone string) (*pebble, *bind9) {
		b := startBIND(t, zone, "imap")
		return startPebble(t, pebbleOptions{DNS: b.Addr}), b
	}
	tests := []struct {
		name  string
		setup setup
		want  []string
	}{
		{"wrong CA URL", func(t *testing.T) (*pebble, string) {
			p := startPebble(t, pebbleOptions{DNS: startChallSrv(t)})
			p.DirURL = strings.TrimSuffix(p.DirURL, "/dir") + "/no-such-directory"
			return p, fmt.Sprintf("domains = [\"imap.wrongurl.test\"]\nchallenge_listen = \"127.0.0.1:%d\"", p.TLSPort)
		}, []string{`"name":"imap.wrongurl.test"`, "no-such-directory", "404"}},
		{"unreachable CA", func(t *testing.T) (*pebble, string) {
			_, certPEM, _ := tlsconf.SelfSigned(time.Hour, "localhost")
			root := filepath.Join(t.TempDir(), "root.pem")
			os.WriteFile(root, certPEM, 0o644)
			ports := proxytest.FreePorts(t, 2)
			p := &pebble{DirURL: "https://" + ports[0] + "/dir", CARoot: root}
			return p, fmt.Sprintf("domains = [\"imap.unreachable.test\"]\nchallenge_listen = %q", ports[1])
		}, []string{`"name":"imap.unreachable.test"`, "connection refused"}},
		{"bad TSIG key", func(t *testing.T) (*pebble, string) {
			p, b := pebbleWithBIND(t, "badtsig.test")
			wrong := filepath.Join(t.TempDir(), "wrong.key")
			os.WriteFile(wrong, []byte("d3Jvbmcgc2VjcmV0IGZvciB0aGUga2V5IGltYXBnYXRl\n"), 0o600)
			return p, fmt.Sprintf("domains = [\"imap.badtsig.test\"]\nchallenge = \"dns-01\"\ndns_resolvers = [%q]\ndns_provider = \"rfc2136\"\ndns_server = %q\ntsig_key_name = %q\ntsig_secret_file = %q", b.Addr, b.Addr, b.KeyName, wrong)
		}, []string{`"name":"imap.badtsig.test"`, "the server did not accept TSIG key imapgate-acme", "NOTAUTH"}},
		{"failing hook", func(t *testing.T) (*pebble, string) {
			proxytest.RequireTool(t, "nsupdate")
			p, b := pebbleWithBIND(t, "badhook.test")
			return p, fmt.Sprintf("domains = [\"imap.badhook.test\"]\nchallenge = \"dns-01\"\ndns_resolvers = [%q]\ndns_provider = \"exec\"\ndns_exec = %q", b.Addr, writeNSUpdateHook(t, b, 3))
		}, []string{`"name":"imap.badhook.test"`, "present _acme-challenge.imap.badhook.test.", "exit status 3", "hook: the DNS API refused the token"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			p, acme := tt.setup(t)
			g := startACMEGate(t, p, acme, "")
			deadline := time.Now().Add(30 * time.Second)
			var line string
			for line == "" && time.Now().Before(deadline) {
				time.Sleep(100 * time.Millisecond)
				for _, l := range strings.Split(g.stderr.String(), "\n") {
					if strings.Contains(l, `"msg":"certificate not obtained`) {
						line = l
					}
				}
			}
			if line == "" {
				t.Fatal("no 'certificate not obtained' error within 30s")
			}
			t.Logf("logged: %s", line)
			for _, w := range tt.want {
				if !strings.Contains(line, w) {
					t.Errorf("error line lacks %q:\n%s", w, line)
				}
			}
			select {
			case code := <-g.exit:
				t.Fatalf("serve exited (%d) after an ACME failure", code)
			default:
			}
			waitTCP(t, g.implicit, "the proxy after an ACME failure")
		})
	}
}

// TestACMEFailedRenewalKeepsServingTheValidCertificate: the CA goes away
// after issuing a 30-second certificate; the renewal fails with the name
// and the cause, and handshakes still get the certificate while it is
// valid.
func TestACMEFailedRenewalKeepsServingTheValidCertificate(t *testing.T) {
	t.Parallel()
	dns := startChallSrv(t)
	p := startPebble(t, pebbleOptions{DNS: dns, Validity: 30})
	name := uniqueName("imap", "cagone.test")
	g := startACMEGate(t, p, fmt.Sprintf(`domains = [%q]
challenge_listen = "127.0.0.1:%d"
renew_check_interval = "1s"`, name, p.TLSPort), "")
	first, _ := g.waitVerified(t, g.implicit, name, p.Roots, 60*time.Second)
	p.cmd.Process.Kill()

	want := `"msg":"certificate not obtained; serving the current one while it is valid, retrying later","name":"` + name + `","renewal":true`
	deadline := time.Now().Add(40 * time.Second)
	for !strings.Contains(g.stderr.String(), want) {
		if time.Now().After(deadline) {
			t.Fatal("no failed renewal logged")
		}
		time.Sleep(200 * time.Millisecond)
	}
	if time.Now().After(first.NotAfter) {
		t.Skipf("too slow: the certificate expired before its renewal failed")
	}
	leaf, _ := g.waitVerified(t, g.implicit, name, p.Roots, 2*time.Second)
	if leaf.SerialNumber.Cmp(first.SerialNumber) != 0 {
		t.Fatalf("got serial %v, want the first certificate %v", leaf.SerialNumber, first.SerialNumber)
	}
	if !strings.Contains(g.stderr.String(), "connection refused") {
		t.Errorf("the failure does not say the CA refused the connection")
	}
}

// TestACMEExternalAccountBinding: against a CA that requires EAB, the
// right key id and MAC key get a certificate; a wrong MAC key gets a clear
// error and none.
func TestACMEExternalAccountBinding(t *testing.T) {
	t.Parallel()
	const kid = "imapgate-kid-1"
	mac := base64.RawURLEncoding.EncodeToString([]byte("0123456789abcdef0123456789abcdef"))
	wrong := base64.RawURLEncoding.EncodeToString([]byte("fedcba9876543210fedcba9876543210"))
	p := startPebble(t, pebbleOptions{DNS: startChallSrv(t), EAB: map[string]string{kid: mac}})

	name := uniqueName("imap", "eab.test")
	g := startACMEGate(t, p, fmt.Sprintf("domains = [%q]\nchallenge_listen = \"127.0.0.1:%d\"\neab_key_id = %q\neab_mac_key = %q", name, p.TLSPort, kid, mac), "")
	g.waitVerified(t, g.implicit, name, p.Roots, 60*time.Second)

	// The wrong key fails at account registration, before any challenge:
	// the second gate's responder port does not matter.
	bad := uniqueName("imap", "eab.test")
	g2 := startACMEGate(t, p, fmt.Sprintf("domains = [%q]\nchallenge_listen = %q\neab_key_id = %q\neab_mac_key = %q", bad, proxytest.FreePorts(t, 1)[0], kid, wrong), "")
	deadline := time.Now().Add(30 * time.Second)
	want := `"msg":"certificate not obtained; serving the current one while it is valid, retrying later","name":"` + bad + `"`
	for !strings.Contains(g2.stderr.String(), want) {
		if time.Now().After(deadline) {
			t.Fatal("no failure logged for a wrong EAB MAC key")
		}
		time.Sleep(100 * time.Millisecond)
	}
	for _, l := range strings.Split(g2.stderr.String(), "\n") {
		if strings.Contains(l, want) {
			t.Logf("logged: %s", l)
			if !strings.Contains(l, "externalAccountBinding") && !strings.Contains(strings.ToLower(l), "external account") {
				t.Errorf("the failure does not name the external account binding: %s", l)
			}
		}
	}
	if strings.Contains(g2.stderr.String(), wrong) || strings.Contains(g.stderr.String(), mac) {
		t.Error("an EAB MAC key appears in the log")
	}
}

// waitLog waits until the operational log holds want.
func waitLog(t *testing.T, g *acmeGate, want string, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !strings.Contains(g.stderr.String(), want) {
		if time.Now().After(deadline) {
			t.Fatalf("operational log lacks %s after %v:\n%s", want, within, tail(g.stderr.String(), 3000))
		}
		time.Sleep(20 * time.Millisecond)
	}
}
