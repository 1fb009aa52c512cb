package proxy

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"net"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/imapgate/imapgate/tlsconf"
)

// TestLoginWritesEachAnswerOnce guards what a login costs in system calls
// (README "Performance"): over implicit TLS, with an upstream whose
// greeting lists its capabilities and SASL-IR, the proxy writes the
// handshake's flight, the greeting and the tagged OK to the client, one
// write each, and sends the upstream one AUTHENTICATE and nothing else
// before the login is done: no CAPABILITY round trip, no answer split
// over two writes.
func TestLoginWritesEachAnswerOnce(t *testing.T) {
	upLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer upLn.Close()
	go acceptInstant(upLn) // greets with CAPABILITY ... SASL-IR, OKs every command
	var upWrites, upDials atomic.Int64
	cfg := &Config{
		Upstream: &Upstream{Address: upLn.Addr().String(), TLS: UpstreamPlaintext,
			Dialer: func(ctx context.Context, network, addr string) (net.Conn, error) {
				upDials.Add(1)
				var d net.Dialer
				c, err := d.DialContext(ctx, network, addr)
				if err != nil {
					return nil, err
				}
				return &writeCountingConn{Conn: c, writes: &upWrites}, nil
			}},
		Audit: NewAuditor(discard{}, nil),
	}
	cert, certPEM, err := tlsconf.SelfSigned(time.Hour, "localhost", "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	store, err := tlsconf.LoadCertStore()
	if err != nil {
		t.Fatal(err)
	}
	store.Add(cert)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var clientWrites atomic.Int64
	srv := NewServer(cfg)
	go srv.Serve(&writeCountingListener{Listener: ln, writes: &clientWrites},
		Listener{Name: "implicit", Mode: TLSImplicit, TLSConfig: tlsconf.ServerConfig(store, 0)})
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
	})

	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(certPEM)
	conn, err := tls.Dial("tcp", ln.Addr().String(), &tls.Config{RootCAs: roots, ServerName: "localhost"})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	c := &textClient{t: t, conn: conn, r: bufio.NewReader(conn)}
	c.expect("* OK [CAPABILITY ")
	if n := clientWrites.Load(); n != 2 {
		t.Errorf("%d writes to the client up to the greeting, want 2 (the handshake's flight with its session ticket, the greeting)", n)
	}
	c.send("a AUTHENTICATE PLAIN " + plainIR(testUser, testPass))
	c.expect("a OK ")
	if n := clientWrites.Load(); n != 3 {
		t.Errorf("%d writes to the client up to the tagged OK, want 3 (flight, greeting, OK)", n)
	}
	if n := upWrites.Load(); n != 1 || upDials.Load() != 1 {
		t.Errorf("%d writes to the upstream over %d connections before the login was done, want 1 (AUTHENTICATE PLAIN with its initial response) over 1",
			n, upDials.Load())
	}
}

// writeCountingListener counts the writes to every connection it accepts:
// each Write of the raw connection is at least one write(2).
type writeCountingListener struct {
	net.Listener
	writes *atomic.Int64
}

func (l *writeCountingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &writeCountingConn{Conn: c, writes: l.writes}, nil
}

type writeCountingConn struct {
	net.Conn
	writes *atomic.Int64
}

func (c *writeCountingConn) Write(b []byte) (int, error) {
	c.writes.Add(1)
	return c.Conn.Write(b)
}

func (c *writeCountingConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return c.Conn.Close()
}

// TestSessionGoroutinesWaitBoundedThenLeave: after a burst of logins
// the goroutines that served them wait for the next connection, at most
// maxWaitingSessionGoroutines of them, and leave within a moment, so
// that an idle proxy holds no session goroutine (README "Performance").
// A login then still works: a waiting goroutine, or a new one, serves it.
func TestSessionGoroutinesWaitBoundedThenLeave(t *testing.T) {
	tp := startProxy(t, nil)
	const logins = 3 * maxWaitingSessionGoroutines
	var wg sync.WaitGroup
	for range logins {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := tp.dialImplicit(t)
			c.send("a AUTHENTICATE PLAIN " + plainIR(testUser, testPass))
			c.expect("a OK ")
			c.send("b LOGOUT")
			c.expectClosed()
		}()
	}
	wg.Wait()
	waitFor(t, func() bool { return tp.srv.Sessions() == 0 })
	if n := sessionGoroutines(); n > maxWaitingSessionGoroutines {
		t.Errorf("%d session goroutines wait after %d logins, want at most %d", n, logins, maxWaitingSessionGoroutines)
	}
	waitFor(t, func() bool { return sessionGoroutines() == 0 })
	c := tp.dialImplicit(t)
	c.send("a AUTHENTICATE PLAIN " + plainIR(testUser, testPass))
	c.expect("a OK ")
}

// sessionGoroutines counts the goroutines waiting in
// Server.awaitSession for a session (blocked in its select; one that
// found enough waiting is on its way out, not counted).
func sessionGoroutines() int {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	n := 0
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(g, "proxy.(*Server).awaitSession(") && strings.Contains(g, " [select") {
			n++
		}
	}
	return n
}
