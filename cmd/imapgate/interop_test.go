package main

import (
	"crypto/sha256"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/imapgate/imapgate/proxy/proxytest"
)

// The interop matrix (README "Per-server notes"): curl, Python's imaplib
// and mbsync, each through imapgate and straight to the server, against
// Dovecot 2.3, Cyrus 3.6, Courier 5 and the Exchange-like server. What a
// client pulls through imapgate must be what it pulls directly: the same
// message bytes and the same flags.

// interopServer is one upstream of the matrix: how imapgate reaches it,
// and how a client reaches it directly.
type interopServer struct {
	name     string
	upstream string // imapgate's [upstream] table body
	secrets  []string
	user     string // what the client types through imapgate
	password string
	// direct access: address, "starttls" or "implicit", CA file, the
	// user name the server itself wants, and the SASL mechanism or
	// "LOGIN" for the LOGIN command.
	addr, tls, caFile, directUser, directMech string
}

const interopMessages = 25

func startInteropServers(t *testing.T) []interopServer {
	t.Helper()
	d := proxytest.StartDovecot(t, proxytest.DovecotOptions{Messages: interopMessages, MessageSize: 3000})
	cy := proxytest.StartCyrus(t, proxytest.CyrusOptions{Messages: interopMessages, MessageSize: 3000})
	co := proxytest.StartCourier(t, proxytest.CourierOptions{Messages: interopMessages, MessageSize: 3000})
	x := proxytest.StartExchangeLike(t, proxytest.ExchangeLikeOptions{Messages: interopMessages})
	return []interopServer{
		{name: "dovecot", upstream: dovecotUpstream(d, "starttls"), secrets: secretsOf(d), user: "user1", password: d.Users["user1"],
			addr: d.Addr, tls: "starttls", caFile: d.CAFile, directUser: "user1", directMech: "PLAIN"},
		{name: "cyrus", upstream: fmt.Sprintf("address = %q\ntls = \"implicit\"\nca_file = %q", cy.ImplicitAddr, cy.CAFile),
			secrets: []string{cy.Users["user1"]}, user: "user1", password: cy.Users["user1"],
			addr: cy.ImplicitAddr, tls: "implicit", caFile: cy.CAFile, directUser: "user1", directMech: "PLAIN"},
		{name: "courier", upstream: fmt.Sprintf("address = %q\ntls = \"starttls\"\nca_file = %q", co.Addr, co.CAFile),
			secrets: []string{co.Users["user1"]}, user: "user1", password: co.Users["user1"],
			addr: co.Addr, tls: "starttls", caFile: co.CAFile, directUser: "user1", directMech: "PLAIN"},
		// The Exchange site's settings: the pin, LOGIN (for builds whose
		// PLAIN is refused), and the DOMAIN\user form from what the
		// client types.
		{name: "exchange-like", upstream: fmt.Sprintf("address = %q\ntls = \"starttls\"\npin_sha256 = %q\nlogin = \"login\"\nuser_template = 'CORP\\{local}'", x.Addr, x.Pin),
			secrets: []string{x.Users["user1"]}, user: "user1@corp.example", password: x.Users["user1"],
			addr: x.Addr, tls: "starttls", caFile: x.CAFile, directUser: "user1@corp.example", directMech: "LOGIN"},
	}
}

// TestInteropMatrix runs every client against every server, through
// imapgate and directly, and compares what each pulled.
func TestInteropMatrix(t *testing.T) {
	for _, tool := range []string{"curl", "python3", "mbsync"} {
		proxytest.RequireTool(t, tool)
	}
	for _, s := range startInteropServers(t) {
		t.Run(s.name, func(t *testing.T) {
			g := startGate(t, gateOptions{upstream: s.upstream, secrets: s.secrets})
			viaGate := interopServer{addr: g.implicit, tls: "implicit", caFile: g.caFile, directUser: s.user, password: s.password, directMech: "PLAIN"}
			t.Run("curl", func(t *testing.T) {
				for _, uid := range []string{"1", "7", fmt.Sprint(interopMessages)} {
					through, direct := curlFetch(t, viaGate, uid), curlFetch(t, s, uid)
					if through != direct || !strings.Contains(direct, "Subject: Test message") {
						t.Fatalf("UID %s: %d bytes through imapgate, %d direct, not the same message", uid, len(through), len(direct))
					}
				}
			})
			t.Run("imaplib", func(t *testing.T) {
				through, direct := imaplibPull(t, viaGate), imaplibPull(t, s)
				if len(direct) != interopMessages || strings.Join(through, "\n") != strings.Join(direct, "\n") {
					t.Fatalf("imaplib pulled %d messages through imapgate, %d direct; differ:\n%s\n--\n%s", len(through), len(direct), strings.Join(through, "\n"), strings.Join(direct, "\n"))
				}
			})
			t.Run("mbsync", func(t *testing.T) {
				through, direct := mbsyncPull(t, viaGate), mbsyncPull(t, s)
				if len(direct) != interopMessages || strings.Join(through, "\n") != strings.Join(direct, "\n") {
					t.Fatalf("mbsync pulled %d messages through imapgate, %d direct; the Maildirs differ", len(through), len(direct))
				}
			})
		})
	}
}

// curlFetch fetches one message by UID with curl.
func curlFetch(t *testing.T, s interopServer, uid string) string {
	t.Helper()
	args := []string{"-sS", "--max-time", "30", "--cacert", s.caFile, "-u", s.directUser + ":" + s.password}
	// curl 7.88 (Debian 12) cannot be made to send the LOGIN command
	// while a SASL mechanism it knows (Exchange's NTLM) is advertised:
	// AUTH=+LOGIN came in a later curl. So it uses PLAIN, which is why the
	// matrix's Exchange-like server accepts PLAIN; imapgate still logs in
	// to it with LOGIN, as an Exchange site would configure it.
	mech := s.directMech
	if mech == "LOGIN" {
		mech = "PLAIN"
	}
	args = append(args, "--login-options", "AUTH="+mech)
	_, port, _ := strings.Cut(s.addr, ":")
	url := "imaps://localhost:" + port + "/INBOX;UID=" + uid
	if s.tls == "starttls" {
		args = append(args, "--ssl-reqd")
		url = "imap://localhost:" + port + "/INBOX;UID=" + uid
	}
	out, err := exec.Command("curl", append(args, url)...).CombinedOutput()
	if err != nil {
		t.Fatalf("curl %s: %v: %s", url, err, out)
	}
	return string(out)
}

// imaplibScript logs in, selects INBOX read-only and prints, per
// message, its UID, its flags (sorted) and the SHA-256 of its bytes.
const imaplibScript = `
import hashlib, imaplib, ssl, sys
mode, host, port, ca, user, password, mech = sys.argv[1:8]
ctx = ssl.create_default_context(cafile=ca)
if mode == "implicit":
    m = imaplib.IMAP4_SSL(host, int(port), ssl_context=ctx)
else:
    m = imaplib.IMAP4(host, int(port))
    m.starttls(ssl_context=ctx)
if mech == "LOGIN":
    m.login(user, password)
else:
    m.authenticate("PLAIN", lambda _: ("\0" + user + "\0" + password).encode())
m.select("INBOX", readonly=True)
typ, data = m.uid("FETCH", "1:*", "(FLAGS BODY.PEEK[])")
for item in data:
    if not isinstance(item, tuple):
        continue
    head, body = item
    uid = head.split(b"UID ")[1].split()[0].decode()
    flags = sorted(f.decode().lower() for f in imaplib.ParseFlags(head))
    print(uid, ",".join(flags), hashlib.sha256(body).hexdigest())
m.logout()
`

func imaplibPull(t *testing.T, s interopServer) []string {
	t.Helper()
	_, port, _ := strings.Cut(s.addr, ":")
	out, err := exec.Command("python3", "-c", imaplibScript, s.tls, "localhost", port, s.caFile, s.directUser, s.password, s.directMech).CombinedOutput()
	if err != nil {
		t.Fatalf("imaplib against %s: %v: %s", s.addr, err, out)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	sort.Strings(lines)
	return lines
}

// mbsyncPull pulls INBOX into a fresh Maildir and returns, per message,
// the SHA-256 of its bytes (without mbsync's X-TUID) and its Maildir
// flags, sorted.
func mbsyncPull(t *testing.T, s interopServer) []string {
	t.Helper()
	dir := t.TempDir()
	_, port, _ := strings.Cut(s.addr, ":")
	sslType := "IMAPS"
	if s.tls == "starttls" {
		sslType = "STARTTLS"
	}
	conf := fmt.Sprintf(`IMAPAccount a
Host localhost
Port %s
User "%s"
Pass "%s"
SSLType %s
CertificateFile %s
AuthMechs %s

IMAPStore remote
Account a

MaildirStore local
Path %s/
Inbox %s/INBOX

Channel c
Far :remote:
Near :local:
Patterns INBOX
Create Near
Sync Pull
SyncState *
`, port, s.directUser, s.password, sslType, s.caFile, s.directMech, dir, dir)
	rc := filepath.Join(dir, "mbsyncrc")
	if err := os.WriteFile(rc, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mbsync", "-c", rc, "c").CombinedOutput(); err != nil {
		t.Fatalf("mbsync against %s: %v: %s", s.addr, err, out)
	}
	var got []string
	for _, sub := range []string{"cur", "new"} {
		entries, _ := os.ReadDir(filepath.Join(dir, "INBOX", sub))
		for _, e := range entries {
			data, err := os.ReadFile(filepath.Join(dir, "INBOX", sub, e.Name()))
			if err != nil {
				t.Fatal(err)
			}
			_, flags, _ := strings.Cut(e.Name(), ":2,")
			got = append(got, fmt.Sprintf("%x %s", sha256.Sum256(xTUID.ReplaceAll(data, nil)), flags))
		}
	}
	sort.Strings(got)
	return got
}
