package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/imapgate/imapgate/proxy/proxytest"
	"github.com/imapgate/imapgate/tlsconf"
)

// gate is an imapgate started in-process with `serve` and a generated
// config, as an admin would run it.
type gate struct {
	implicit, starttls string
	caFile             string
	roots              *x509.CertPool
	auditFile          string
	stderr             *lockedBuffer
	dir                string
	cancel             context.CancelFunc
	exit               chan int
	secrets            []string
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// gateOptions shape the generated config.
type gateOptions struct {
	upstream string // the [upstream] table body
	listen   string // extra lines of both [[listen]] tables
	policy   string // extra [policy] lines
	auth     string // the [auth] table body
	audit    string // extra [audit] lines
	tail     string // appended to the config (more tables)
	secrets  []string
}

// writeCertFiles writes a self-signed certificate for localhost and
// 127.0.0.1 and its key into dir, and returns the files and the
// certificate's PEM, for a client's roots.
func writeCertFiles(t *testing.T, dir string) (certFile, keyFile string, certPEM []byte) {
	t.Helper()
	cert, certPEM, err := tlsconf.SelfSigned(time.Hour, "localhost", "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile, err = tlsconf.WritePEMFiles(dir, cert)
	if err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile, certPEM
}

// startGate writes a config and runs `imapgate serve` until the test ends;
// the cleanup stops it, checks the exit code and scans every log it wrote
// for the given secrets.
func startGate(t *testing.T, o gateOptions) *gate {
	t.Helper()
	dir := t.TempDir()
	certFile, keyFile, certPEM := writeCertFiles(t, dir)
	ports := proxytest.FreePorts(t, 2)
	g := &gate{
		implicit:  ports[0],
		starttls:  ports[1],
		caFile:    filepath.Join(dir, "ca.pem"),
		auditFile: filepath.Join(dir, "audit.log"),
		stderr:    &lockedBuffer{},
		dir:       dir,
		exit:      make(chan int, 1),
		secrets:   o.secrets,
	}
	os.WriteFile(g.caFile, certPEM, 0o644)
	g.roots = x509.NewCertPool()
	g.roots.AppendCertsFromPEM(certPEM)
	cfg := fmt.Sprintf(`shutdown_timeout = "5s"

[[listen]]
address = %q
tls = "implicit"
%s

[[listen]]
address = %q
tls = "starttls"
%s

[tls]
cert_file = %q
key_file = %q

[upstream]
%s

[auth]
%s

[policy]
failure_delay = "0s"
%s

[audit]
output = %q
%s
%s
`, g.implicit, o.listen, g.starttls, o.listen, certFile, keyFile, o.upstream, o.auth, o.policy, g.auditFile, o.audit, o.tail)
	path := filepath.Join(dir, "imapgate.toml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	g.cancel = runServe(t, path, g.starttls, g.stderr, nil, g.exit, 5*time.Second, func() { g.assertNoSecrets(t) })
	return g
}

// assertNoSecrets fails if a secret (password, app password, token, SCRAM
// proof, master secret) in any of its secretForms reached the audit log
// or the operational log.
func (g *gate) assertNoSecrets(t *testing.T) {
	t.Helper()
	audit, _ := os.ReadFile(g.auditFile)
	logs := string(audit) + g.stderr.String()
	for _, leak := range leakedSecrets(logs, g.secrets, []string{"user1", "user2"}) {
		t.Errorf("a secret appears in the logs: %s", leak)
	}
}

// events returns the audit events written so far.
func (g *gate) events(t *testing.T) []map[string]any {
	t.Helper()
	data, _ := os.ReadFile(g.auditFile)
	var out []map[string]any
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatalf("audit line not JSON: %q", sc.Text())
		}
		out = append(out, m)
	}
	return out
}

// sessionsEnded counts the session_end events of connections from ip.
func (g *gate) sessionsEnded(t *testing.T, ip string) int {
	t.Helper()
	n := 0
	for _, e := range g.events(t) {
		if e["event"] == "session_end" && e["client_ip"] == ip {
			n++
		}
	}
	return n
}

// authEvents returns "result/reason" of every auth event.
func (g *gate) authEvents(t *testing.T) []string {
	var out []string
	for _, e := range g.events(t) {
		if e["event"] == "auth" {
			r, _ := e["reason"].(string)
			out = append(out, fmt.Sprintf("%v/%s", e["result"], r))
		}
	}
	return out
}

// client is a raw IMAP text client.
type client struct {
	t    *testing.T
	conn net.Conn
	r    *bufio.Reader
}

func (g *gate) dialTLS(t *testing.T) *client {
	t.Helper()
	return g.dialTLSFrom(t, "")
}

// dialTLSFrom connects from a given loopback source address ("" = any).
func (g *gate) dialTLSFrom(t *testing.T, source string) *client {
	t.Helper()
	d := &net.Dialer{Timeout: 5 * time.Second}
	if source != "" {
		d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(source)}
	}
	conn, err := tls.DialWithDialer(d, "tcp", g.implicit, &tls.Config{RootCAs: g.roots, ServerName: "localhost"})
	if err != nil {
		t.Fatal(err)
	}
	c := &client{t: t, conn: conn, r: bufio.NewReader(conn)}
	t.Cleanup(func() { conn.Close() })
	c.expect("* OK")
	return c
}

func (g *gate) dialPlain(t *testing.T) *client {
	t.Helper()
	conn, err := net.DialTimeout("tcp", g.starttls, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	c := &client{t: t, conn: conn, r: bufio.NewReader(conn)}
	t.Cleanup(func() { conn.Close() })
	c.expect("* OK")
	return c
}

func (c *client) startTLS(roots *x509.CertPool) {
	c.t.Helper()
	c.send("s STARTTLS")
	c.expect("s OK")
	tc := tls.Client(c.conn, &tls.Config{RootCAs: roots, ServerName: "localhost"})
	if err := tc.Handshake(); err != nil {
		c.t.Fatal(err)
	}
	c.conn, c.r = tc, bufio.NewReader(tc)
}

func (c *client) send(line string) {
	c.t.Helper()
	c.conn.SetWriteDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.conn.Write([]byte(line + "\r\n")); err != nil {
		c.t.Fatalf("write: %v", err)
	}
}

// expect reads until a line starting with prefix; a tagged line of the
// same tag that does not match fails the test.
func (c *client) expect(prefix string) string {
	c.t.Helper()
	tag, _, _ := strings.Cut(prefix, " ")
	for {
		c.conn.SetReadDeadline(time.Now().Add(20 * time.Second))
		line, err := c.r.ReadString('\n')
		if err != nil {
			c.t.Fatalf("waiting for %q: %v", prefix, err)
		}
		line = strings.TrimRight(line, "\r\n")
		if strings.HasPrefix(line, prefix) {
			return line
		}
		if tag != "*" && strings.HasPrefix(line, tag+" ") {
			c.t.Fatalf("got %q, want %q", line, prefix)
		}
	}
}

func plainIR(user, pass string) string {
	return base64.StdEncoding.EncodeToString([]byte("\x00" + user + "\x00" + pass))
}
