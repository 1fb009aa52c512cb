package proxy

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/imapgate/imapgate/proxy/memupstream"
	"github.com/imapgate/imapgate/tlsconf"
)

const (
	testUser = "alice"
	testPass = "Correct-Horse-9!"
)

// syncBuffer is a goroutine-safe bytes.Buffer for the audit sink.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// events returns the audit events written so far.
func (s *syncBuffer) events(t testing.TB) []Event {
	t.Helper()
	var out []Event
	for _, line := range strings.Split(strings.TrimSpace(s.String()), "\n") {
		if line == "" {
			continue
		}
		var e Event
		if err := json.Unmarshal([]byte(line), &e); err != nil {
			t.Fatalf("audit line is not JSON: %q: %v", line, err)
		}
		out = append(out, e)
	}
	return out
}

// testProxy is a proxy in front of an in-memory upstream.
type testProxy struct {
	srv       *Server
	implicit  string // implicit TLS listener
	starttls  string // STARTTLS listener
	upstream  *memupstream.Server
	roots     *x509.CertPool
	certPEM   []byte // the proxy's certificate, for clients that read a CA file
	audit     *syncBuffer
	upstreamA string
}

// startProxy starts an in-memory upstream and the proxy in front of it.
// mod may change the config before the server starts.
func startProxy(t testing.TB, mod func(*Config)) *testProxy {
	t.Helper()
	up, err := memupstream.Start(map[string]string{testUser: testPass})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { up.Close() })
	return startProxyTo(t, up.Addr, UpstreamPlaintext, nil, mod, up)
}

func startProxyTo(t testing.TB, upAddr string, mode UpstreamTLS, upTLS *tls.Config, mod func(*Config), up *memupstream.Server) *testProxy {
	t.Helper()
	cert, certPEM, err := tlsconf.SelfSigned(time.Hour, "localhost", "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	store, err := tlsconf.LoadCertStore()
	if err != nil {
		t.Fatal(err)
	}
	store.Add(cert)
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(certPEM)
	audit := &syncBuffer{}
	cfg := &Config{
		Upstream: &Upstream{Address: upAddr, TLS: mode, TLSConfig: upTLS, ConnectTimeout: 3 * time.Second},
		Audit:    NewAuditor(audit, nil),
	}
	if mod != nil {
		mod(cfg)
	}
	srv := NewServer(cfg)
	tp := &testProxy{srv: srv, upstream: up, roots: roots, certPEM: certPEM, audit: audit, upstreamA: upAddr}
	for _, mode := range []TLSMode{TLSImplicit, TLSStartTLS} {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		if mode == TLSImplicit {
			tp.implicit = ln.Addr().String()
		} else {
			tp.starttls = ln.Addr().String()
		}
		go srv.Serve(ln, Listener{Name: string(mode), Mode: mode, TLSConfig: tlsconf.ServerConfig(store, 0)})
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
	})
	return tp
}

// textClient speaks raw IMAP lines to the proxy.
type textClient struct {
	t    testing.TB
	conn net.Conn
	r    *bufio.Reader
}

func (tp *testProxy) dialImplicit(t testing.TB) *textClient {
	t.Helper()
	conn, err := tls.Dial("tcp", tp.implicit, &tls.Config{RootCAs: tp.roots, ServerName: "localhost"})
	if err != nil {
		t.Fatal(err)
	}
	c := &textClient{t: t, conn: conn, r: bufio.NewReader(conn)}
	t.Cleanup(func() { conn.Close() })
	c.expect("* OK ")
	return c
}

func (tp *testProxy) dialPlain(t testing.TB) *textClient {
	t.Helper()
	conn, err := net.Dial("tcp", tp.starttls)
	if err != nil {
		t.Fatal(err)
	}
	c := &textClient{t: t, conn: conn, r: bufio.NewReader(conn)}
	t.Cleanup(func() { conn.Close() })
	c.expect("* OK ")
	return c
}

// startTLS upgrades a plaintext client.
func (c *textClient) startTLS(roots *x509.CertPool) {
	c.t.Helper()
	c.send("s1 STARTTLS")
	c.expect("s1 OK")
	tc := tls.Client(c.conn, &tls.Config{RootCAs: roots, ServerName: "localhost"})
	if err := tc.Handshake(); err != nil {
		c.t.Fatal(err)
	}
	c.conn = tc
	c.r = bufio.NewReader(tc)
}

func (c *textClient) send(line string) {
	c.t.Helper()
	c.conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.conn.Write([]byte(line + "\r\n")); err != nil {
		c.t.Fatalf("write %.60q: %v", line, err)
	}
}

// readLine reads one line (without CRLF) with a timeout.
func (c *textClient) readLine() (string, error) {
	c.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	line, err := c.r.ReadString('\n')
	return strings.TrimRight(line, "\r\n"), err
}

// expect reads lines until one starts with prefix and returns it; it fails
// on EOF or on a tagged line of the same tag that does not match.
func (c *textClient) expect(prefix string) string {
	c.t.Helper()
	tag, _, _ := strings.Cut(prefix, " ")
	for {
		line, err := c.readLine()
		if err != nil {
			c.t.Fatalf("waiting for %q: %v", prefix, err)
		}
		if strings.HasPrefix(line, prefix) {
			return line
		}
		if tag != "*" && tag != "+" && strings.HasPrefix(line, tag+" ") {
			c.t.Fatalf("got %q, want prefix %q", line, prefix)
		}
	}
}

// expectClosed reads until EOF, failing if the server keeps the connection.
func (c *textClient) expectClosed() []string {
	c.t.Helper()
	var lines []string
	for {
		line, err := c.readLine()
		if err != nil {
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				c.t.Fatalf("connection still open; read so far: %q", lines)
			}
			return lines
		}
		lines = append(lines, line)
	}
}
