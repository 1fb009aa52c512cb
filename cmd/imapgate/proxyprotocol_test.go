package main

import (
	"bufio"
	"crypto/tls"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/pires/go-proxyproto"

	"github.com/imapgate/imapgate/proxy/proxytest"
)

// proxyGate is a gate with two more listeners that take PROXY headers from
// 127.0.0.2 only: one STARTTLS, one implicit TLS.
type proxyGate struct {
	*gate
	plain, implicit string // the proxy_protocol listeners
}

func startProxyGate(t *testing.T, policy string) *proxyGate {
	t.Helper()
	ports := proxytest.FreePorts(t, 2)
	g := startGate(t, gateOptions{
		upstream: fmt.Sprintf("address = %q\ntls = \"none\"", startMemUpstream(t)),
		policy:   "trusted_proxies = [\"127.0.0.2\"]\npreauth_timeout = \"30s\"\n" + policy,
		tail: fmt.Sprintf(`
[[listen]]
address = %q
tls = "starttls"
proxy_protocol = true

[[listen]]
address = %q
tls = "implicit"
proxy_protocol = true
`, ports[0], ports[1]),
	})
	g.waitNoSessions(t)
	return &proxyGate{gate: g, plain: ports[0], implicit: ports[1]}
}

// dialFrom connects to addr from a loopback source address.
func dialFrom(t *testing.T, source, addr string) net.Conn {
	t.Helper()
	d := &net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(source)}}
	conn, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// connectEvents returns the connect events of one listener, waiting up to
// within for at least n of them.
func (g *proxyGate) connectEvents(t *testing.T, listener string, n int, within time.Duration) []map[string]any {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		var out []map[string]any
		for _, e := range g.events(t) {
			if e["event"] == "connect" && e["listener"] == listener {
				out = append(out, e)
			}
		}
		if len(out) >= n || time.Now().After(deadline) {
			return out
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// readUntilClosed reads conn until EOF or the deadline, and returns what it
// read and whether the proxy closed it.
func readUntilClosed(conn net.Conn, deadline time.Time) (string, bool) {
	conn.SetReadDeadline(deadline)
	var b strings.Builder
	buf := make([]byte, 512)
	for {
		n, err := conn.Read(buf)
		b.Write(buf[:n])
		if err != nil {
			ne, ok := err.(net.Error)
			return b.String(), !ok || !ne.Timeout()
		}
	}
}

// TestSilentUntrustedPeersOnAPROXYListenerAreCountedAtOnce: 40 connections
// from one untrusted address that never send a byte, against a limit of 2
// per address. The first two are greeted, the other 38 are refused at once
// with a BYE and a connect event each; nobody waits for a PROXY header that
// an untrusted peer may not send anyway.
func TestSilentUntrustedPeersOnAPROXYListenerAreCountedAtOnce(t *testing.T) {
	g := startProxyGate(t, "max_connections_per_ip = 2")
	start := time.Now()
	conns := make([]net.Conn, 40)
	for i := range conns {
		conns[i] = dialFrom(t, "127.0.0.1", g.plain)
	}
	evs := g.connectEvents(t, g.plain, len(conns), 3*time.Second)
	counts := map[string]int{}
	for _, e := range evs {
		if e["client_ip"] != "127.0.0.1" {
			t.Errorf("connect event for %v, want 127.0.0.1: %v", e["client_ip"], e)
		}
		r, _ := e["reason"].(string)
		counts[fmt.Sprintf("%v/%s", e["result"], r)]++
	}
	if len(evs) != 40 || counts["accepted/"] != 2 || counts["refused/too_many_connections_per_ip"] != 38 {
		t.Fatalf("within 3s of 40 silent connections: %d connect events %v, want 2 accepted and 38 refused/too_many_connections_per_ip", len(evs), counts)
	}
	greeted, refused := 0, 0
	for _, c := range conns {
		got, closed := readUntilClosed(c, time.Now().Add(200*time.Millisecond))
		switch {
		case strings.HasPrefix(got, "* OK ") && !closed:
			greeted++
		case strings.HasPrefix(got, "* BYE [UNAVAILABLE]") && closed:
			refused++
		default:
			t.Errorf("a connection read %q (closed %v)", got, closed)
		}
	}
	if greeted != 2 || refused != 38 {
		t.Errorf("%d greeted and %d refused, want 2 and 38", greeted, refused)
	}
	t.Logf("40 silent connections: admitted and refused in %v", time.Since(start).Round(time.Millisecond))
}

// TestASilentTrustedProxyIsClosedWithinTheHeaderBound: the trusted proxy
// connects and sends no PROXY header. It is closed after the header bound
// (5s, not preauth_timeout), and the connect event says why.
func TestASilentTrustedProxyIsClosedWithinTheHeaderBound(t *testing.T) {
	g := startProxyGate(t, "")
	for _, listener := range []string{g.plain, g.implicit} {
		start := time.Now()
		conn := dialFrom(t, "127.0.0.2", listener)
		got, closed := readUntilClosed(conn, start.Add(8*time.Second))
		took := time.Since(start)
		if !closed || got != "" {
			t.Fatalf("%s: after %v the silent proxy's connection is open=%v and read %q; want it closed, unanswered", listener, took.Round(time.Millisecond), !closed, got)
		}
		if took < 4500*time.Millisecond || took > 7*time.Second {
			t.Errorf("%s: closed after %v, want about 5s", listener, took.Round(time.Millisecond))
		}
		evs := g.connectEvents(t, listener, 1, 2*time.Second)
		if len(evs) != 1 || evs[0]["result"] != "refused" || evs[0]["reason"] != "proxy_header_timeout" || evs[0]["client_ip"] != "127.0.0.2" {
			t.Errorf("%s: connect events %v, want one refused/proxy_header_timeout from 127.0.0.2", listener, evs)
		}
	}
}

// TestTrustedProxyHeadersNameTheClient: a v1 and a v2 header from the
// trusted proxy put the client's address into the audit trail and the
// connection limits; a bad header is refused with its reason; a header from
// anyone else is not believed.
func TestTrustedProxyHeadersNameTheClient(t *testing.T) {
	g := startProxyGate(t, "max_connections_per_ip = 2")
	v1 := func(src string, port int) string {
		return fmt.Sprintf("PROXY TCP4 %s 192.0.2.1 %d 143\r\n", src, port)
	}
	v2 := func(src string, port int) string {
		h := proxyproto.HeaderProxyFromAddrs(2, &net.TCPAddr{IP: net.ParseIP(src), Port: port}, &net.TCPAddr{IP: net.ParseIP("2001:db8::1"), Port: 993})
		b, err := h.Format()
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	send := func(from, listener, header string) net.Conn {
		conn := dialFrom(t, from, listener)
		conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
		if _, err := conn.Write([]byte(header)); err != nil {
			t.Fatal(err)
		}
		return conn
	}
	greeting := func(conn net.Conn) string {
		conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		line, _ := bufio.NewReader(conn).ReadString('\n')
		return line
	}
	lastConnect := func(listener string, n int) map[string]any {
		evs := g.connectEvents(t, listener, n, 5*time.Second)
		if len(evs) < n {
			t.Fatalf("%d connect events on %s, want %d", len(evs), listener, n)
		}
		return evs[n-1]
	}
	check := func(e map[string]any, ip string, port int, result, reason string) {
		t.Helper()
		r, _ := e["reason"].(string)
		if e["client_ip"] != ip || e["client_port"] != float64(port) || e["result"] != result || r != reason {
			t.Errorf("connect event %v, want %s port %d %s/%s", e, ip, port, result, reason)
		}
	}

	// v1 on the STARTTLS listener: two connections for 198.51.100.7, the
	// third is over its limit (the proxy's own address is not what counts).
	for i, want := range []string{"* OK", "* OK", "* BYE [UNAVAILABLE]"} {
		conn := send("127.0.0.2", g.plain, v1("198.51.100.7", 40000+i))
		if got := greeting(conn); !strings.HasPrefix(got, want) {
			t.Fatalf("v1 connection %d: read %q, want %q", i+1, got, want)
		}
	}
	check(lastConnect(g.plain, 1), "198.51.100.7", 40000, "accepted", "")
	check(lastConnect(g.plain, 3), "198.51.100.7", 40002, "refused", "too_many_connections_per_ip")

	// v2 on the implicit TLS listener, then the TLS handshake over it.
	conn := send("127.0.0.2", g.implicit, v2("2001:db8::7", 50000))
	tc := tls.Client(conn, &tls.Config{RootCAs: g.roots, ServerName: "localhost"})
	tc.SetDeadline(time.Now().Add(5 * time.Second))
	if err := tc.Handshake(); err != nil {
		t.Fatalf("TLS after a v2 header: %v", err)
	}
	if got := greeting(tc); !strings.HasPrefix(got, "* OK") {
		t.Fatalf("v2 + TLS: read %q, want the greeting", got)
	}
	check(lastConnect(g.implicit, 1), "2001:db8::7", 50000, "accepted", "")

	// A malformed header from the trusted proxy is refused.
	conn = send("127.0.0.2", g.plain, "PROXY TCP4 198.51.100.300 192.0.2.1 1 143\r\n")
	if got, closed := readUntilClosed(conn, time.Now().Add(5*time.Second)); !closed || got != "" {
		t.Errorf("bad header: read %q, closed %v; want closed unanswered", got, closed)
	}
	bad := lastConnect(g.plain, 4)
	if bad["result"] != "refused" || bad["reason"] != "proxy_header_invalid" || bad["client_ip"] != "127.0.0.2" {
		t.Errorf("bad header: connect event %v, want refused/proxy_header_invalid from 127.0.0.2", bad)
	}

	// A header from an untrusted peer is not believed: it is the peer's
	// first IMAP line, and the peer is who the socket says.
	conn = send("127.0.0.3", g.plain, v1("198.51.100.8", 1))
	if got := greeting(conn); !strings.HasPrefix(got, "* OK") {
		t.Fatalf("untrusted header: read %q, want the greeting", got)
	}
	if e := lastConnect(g.plain, 5); e["client_ip"] != "127.0.0.3" || e["result"] != "accepted" {
		t.Errorf("untrusted header: connect event %v, want accepted from 127.0.0.3", e)
	}
}
