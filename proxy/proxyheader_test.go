package proxy

import (
	"bufio"
	"context"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/pires/go-proxyproto"

	"github.com/imapgate/imapgate/tlsconf"
)

// serveProxyProtocol adds a STARTTLS listener named name that takes PROXY
// headers from trusted, and returns its address.
func (tp *testProxy) serveProxyProtocol(t *testing.T, name string, trusted ...netip.Prefix) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	store, err := tlsconf.LoadCertStore()
	if err != nil {
		t.Fatal(err)
	}
	go tp.srv.Serve(ProxyProtocolListener(ln, trusted), Listener{Name: name, Mode: TLSStartTLS, TLSConfig: tlsconf.ServerConfig(store, 0)})
	return ln.Addr().String()
}

// connectEvent waits for the connect event of a listener.
func (tp *testProxy) connectEvent(t *testing.T, listener string) Event {
	t.Helper()
	var ev Event
	waitFor(t, func() bool {
		for _, e := range tp.audit.events(t) {
			if e.Event == EventConnect && e.Listener == listener {
				ev = e
				return true
			}
		}
		return false
	})
	return ev
}

func proxyV2(t *testing.T, h *proxyproto.Header) string {
	t.Helper()
	h.Version = 2
	b, err := h.Format()
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestPROXYHeadersFromATrustedProxy: what each kind of header, or its
// absence, makes of a connection from a trusted proxy (here: loopback).
func TestPROXYHeadersFromATrustedProxy(t *testing.T) {
	tp := startProxy(t, nil)
	tcp := func(ip string, port int) *net.TCPAddr { return &net.TCPAddr{IP: net.ParseIP(ip), Port: port} }
	for _, tc := range []struct {
		name   string
		send   string // then the client half-closes
		ip     string // the connect event's client_ip
		port   int    // and client_port; 0: the socket's (the proxy's own)
		reason string // "" = accepted and greeted
	}{
		{"v1 TCP4", "PROXY TCP4 198.51.100.7 192.0.2.1 40000 143\r\n", "198.51.100.7", 40000, ""},
		{"v1 TCP6", "PROXY TCP6 2001:db8::7 2001:db8::1 40001 143\r\n", "2001:db8::7", 40001, ""},
		{"v1 IPv4-mapped", "PROXY TCP6 ::ffff:198.51.100.9 ::ffff:192.0.2.1 40002 143\r\n", "198.51.100.9", 40002, ""},
		{"v2 TCP6", proxyV2(t, &proxyproto.Header{Command: proxyproto.PROXY, TransportProtocol: proxyproto.TCPv6,
			SourceAddr: tcp("2001:db8::8", 50000), DestinationAddr: tcp("2001:db8::1", 143)}), "2001:db8::8", 50000, ""},
		{"v2 LOCAL (a health check)", proxyV2(t, &proxyproto.Header{Command: proxyproto.LOCAL}), "127.0.0.1", 0, ""},
		{"v1 UNKNOWN", "PROXY UNKNOWN\r\n", "127.0.0.1", 0, ""},
		{"v2 UDP", proxyV2(t, &proxyproto.Header{Command: proxyproto.PROXY, TransportProtocol: proxyproto.UDPv4,
			SourceAddr: &net.UDPAddr{IP: net.ParseIP("198.51.100.7"), Port: 1}, DestinationAddr: &net.UDPAddr{IP: net.ParseIP("192.0.2.1"), Port: 143}}),
			"127.0.0.1", 0, ReasonProxyHeaderInvalid},
		{"v2 unix socket", proxyV2(t, &proxyproto.Header{Command: proxyproto.PROXY, TransportProtocol: proxyproto.UnixStream,
			SourceAddr: &net.UnixAddr{Name: "/run/a", Net: "unix"}, DestinationAddr: &net.UnixAddr{Name: "/run/b", Net: "unix"}}),
			"127.0.0.1", 0, ReasonProxyHeaderInvalid},
		{"v1 bad address", "PROXY TCP4 198.51.100.300 192.0.2.1 1 143\r\n", "127.0.0.1", 0, ReasonProxyHeaderInvalid},
		{"IMAP instead of a header", "a1 CAPABILITY\r\n", "127.0.0.1", 0, ReasonProxyHeaderMissing},
		{"closed before a header", "", "127.0.0.1", 0, ReasonProxyHeaderMissing},
	} {
		t.Run(tc.name, func(t *testing.T) {
			addr := tp.serveProxyProtocol(t, tc.name, netip.MustParsePrefix("127.0.0.0/8"))
			conn, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			conn.Write([]byte(tc.send))
			if tc.reason != "" {
				conn.(*net.TCPConn).CloseWrite()
			}
			conn.SetReadDeadline(time.Now().Add(3 * time.Second))
			line, err := bufio.NewReader(conn).ReadString('\n')
			switch {
			case tc.reason == "" && !strings.HasPrefix(line, "* OK "):
				t.Errorf("read %q, %v; want the greeting", line, err)
			case tc.reason != "" && (line != "" || err == nil || strings.Contains(err.Error(), "timeout")):
				t.Errorf("read %q, %v; want the connection closed unanswered", line, err)
			}
			ev := tp.connectEvent(t, tc.name)
			port := tc.port
			if port == 0 {
				port = conn.LocalAddr().(*net.TCPAddr).Port
			}
			wantResult := "accepted"
			if tc.reason != "" {
				wantResult = ResultRefused
			}
			if ev.ClientIP != tc.ip || ev.ClientPort != port || ev.Result != wantResult || ev.Reason != tc.reason {
				t.Errorf("connect event %s:%d %s/%s, want %s:%d %s/%s", ev.ClientIP, ev.ClientPort, ev.Result, ev.Reason, tc.ip, port, wantResult, tc.reason)
			}
		})
	}
}

// TestShutdownDoesNotWaitForAPROXYHeader: a silent trusted proxy does not
// hold up a shutdown for the header bound.
func TestShutdownDoesNotWaitForAPROXYHeader(t *testing.T) {
	tp := startProxy(t, nil)
	addr := tp.serveProxyProtocol(t, "pp", netip.MustParsePrefix("127.0.0.0/8"))
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	waitFor(t, func() bool { return tp.srv.Sessions() == 1 })
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := tp.srv.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("shutdown took %v with a proxy connection waiting for its header", d)
	}
	if ev := tp.connectEvent(t, "pp"); ev.Result != ResultRefused || ev.Reason != endShutdown {
		t.Errorf("connect event %s/%s, want refused/shutdown", ev.Result, ev.Reason)
	}
}
