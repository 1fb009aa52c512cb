package proxy

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/pires/go-proxyproto"
)

// trustedProxyAddr is the fuzzed connections' peer: a trusted proxy.
var trustedProxyAddr = &net.TCPAddr{IP: net.IPv4(10, 0, 0, 1), Port: 40000}

// pipeConn is one end of a net.Pipe with TCP addresses, as a listener
// would accept it.
type pipeConn struct {
	net.Conn
	remote, local net.Addr
}

func (c pipeConn) RemoteAddr() net.Addr { return c.remote }
func (c pipeConn) LocalAddr() net.Addr  { return c.local }

// oneConnListener accepts c once, then fails.
type oneConnListener struct {
	c    chan net.Conn
	addr net.Addr
}

func (l *oneConnListener) Accept() (net.Conn, error) {
	if c, ok := <-l.c; ok {
		return c, nil
	}
	return nil, net.ErrClosed
}
func (l *oneConnListener) Close() error   { return nil }
func (l *oneConnListener) Addr() net.Addr { return l.addr }

// FuzzPROXYHeaderFromATrustedProxy feeds arbitrary bytes, as a trusted
// proxy's first bytes, through ProxyProtocolListener and the session's
// readProxyHeader (README "[[listen]]", proxy_protocol). Whatever comes,
// the read ends (the sender closes), the reason is one of the documented
// words, an accepted header names a TCP client (or is LOCAL/UNKNOWN and
// leaves the proxy's own address), and every byte after the header
// reaches the session unchanged: nothing is lost or invented.
func FuzzPROXYHeaderFromATrustedProxy(f *testing.F) {
	tcp := func(ip string, port int) *net.TCPAddr { return &net.TCPAddr{IP: net.ParseIP(ip), Port: port} }
	v2 := func(h *proxyproto.Header) []byte {
		h.Version = 2
		b, _ := h.Format()
		return b
	}
	for _, seed := range [][]byte{
		[]byte("PROXY TCP4 198.51.100.7 192.0.2.1 40000 143\r\na1 CAPABILITY\r\n"),
		[]byte("PROXY TCP6 2001:db8::7 2001:db8::1 40001 143\r\n"),
		[]byte("PROXY TCP6 ::ffff:198.51.100.9 ::ffff:192.0.2.1 40002 143\r\n"),
		[]byte("PROXY UNKNOWN\r\n"),
		[]byte("PROXY TCP4 198.51.100.300 192.0.2.1 1 143\r\n"),
		[]byte("a1 CAPABILITY\r\n"),
		append(v2(&proxyproto.Header{Command: proxyproto.PROXY, TransportProtocol: proxyproto.TCPv6,
			SourceAddr: tcp("2001:db8::8", 50000), DestinationAddr: tcp("2001:db8::1", 143)}), "\x16\x03\x01"...),
		v2(&proxyproto.Header{Command: proxyproto.PROXY, TransportProtocol: proxyproto.TCPv4,
			SourceAddr: tcp("198.51.100.1", 1), DestinationAddr: tcp("192.0.2.1", 993)}),
		v2(&proxyproto.Header{Command: proxyproto.LOCAL}),
		v2(&proxyproto.Header{Command: proxyproto.PROXY, TransportProtocol: proxyproto.UDPv4,
			SourceAddr: &net.UDPAddr{IP: net.ParseIP("198.51.100.7"), Port: 1}, DestinationAddr: &net.UDPAddr{IP: net.ParseIP("192.0.2.1"), Port: 143}}),
		v2(&proxyproto.Header{Command: proxyproto.PROXY, TransportProtocol: proxyproto.UnixStream,
			SourceAddr: &net.UnixAddr{Name: "/run/a", Net: "unix"}, DestinationAddr: &net.UnixAddr{Name: "/run/b", Net: "unix"}}),
		{},
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		client, server := net.Pipe()
		defer client.Close()
		defer server.Close()
		ln := &oneConnListener{c: make(chan net.Conn, 1), addr: trustedProxyAddr}
		ln.c <- pipeConn{Conn: server, remote: trustedProxyAddr, local: &net.TCPAddr{IP: net.IPv4(192, 0, 2, 1), Port: 993}}
		close(ln.c)
		pl := ProxyProtocolListener(ln, []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")})
		conn, err := pl.Accept()
		if err != nil {
			t.Fatal(err)
		}
		pc, ok := conn.(*proxyproto.Conn)
		if !ok {
			t.Fatalf("a trusted proxy's connection is %T, not a *proxyproto.Conn", conn)
		}
		go func() {
			client.Write(data)
			client.Close()
		}()
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		s := &session{raw: pc, start: time.Now(), cfg: &Config{}, ctx: ctx}
		reason := s.readProxyHeader(pc)
		if took := time.Since(s.start); took > 2*time.Second {
			t.Fatalf("the header read took %v (reason %q) though the sender had sent %q and closed", took, reason, data)
		}
		switch reason {
		case "":
		case ReasonProxyHeaderInvalid, ReasonProxyHeaderMissing:
			return
		default:
			t.Fatalf("reason %q for %q: not a word for a sender that sent everything and closed", reason, data)
		}
		pc.SetReadDeadline(time.Now().Add(10 * time.Second))
		rest, err := io.ReadAll(pc)
		if err != nil {
			t.Fatalf("reading after the header: %v", err)
		}
		if !bytes.HasSuffix(data, rest) || len(rest) == len(data) {
			t.Fatalf("after the header the session read %q, not the end of %q", rest, data)
		}
		h := pc.ProxyHeader()
		if h == nil {
			t.Fatalf("accepted %q without a header", data)
		}
		got := addrPortOf(pc.RemoteAddr())
		if h.Command.IsLocal() || h.TransportProtocol == proxyproto.UNSPEC {
			if got != addrPortOf(trustedProxyAddr) {
				t.Fatalf("a LOCAL/UNKNOWN header %q made the client %v, not the proxy's own address", data, got)
			}
			return
		}
		src, ok := h.SourceAddr.(*net.TCPAddr)
		if !ok || !got.IsValid() || got != addrPortOf(src) {
			t.Fatalf("header %q: client %v, header source %v", data, got, h.SourceAddr)
		}
	})
}

// FuzzProxyV2HeaderToTheUpstream: the header imapgate sends its upstream
// (forward_client_ip = "proxy-v2") reads back, with go-proxyproto, as
// the client's address and port, for any pair of addresses, one family
// or two; without both it is a LOCAL header.
func FuzzProxyV2HeaderToTheUpstream(f *testing.F) {
	f.Add([]byte{198, 51, 100, 7}, uint16(40000), []byte{192, 0, 2, 1}, uint16(143))
	f.Add([]byte(net.ParseIP("2001:db8::7").To16()), uint16(1), []byte{192, 0, 2, 1}, uint16(993))
	f.Add([]byte{}, uint16(0), []byte{127, 0, 0, 1}, uint16(143))
	f.Fuzz(func(t *testing.T, src []byte, srcPort uint16, dst []byte, dstPort uint16) {
		ci := ClientInfo{}
		if len(src) == 4 || len(src) == 16 {
			ci.Addr = &net.TCPAddr{IP: net.IP(src), Port: int(srcPort)}
		}
		if len(dst) == 4 || len(dst) == 16 {
			ci.Local = &net.TCPAddr{IP: net.IP(dst), Port: int(dstPort)}
		}
		b := proxyV2Header(ci)
		h, err := proxyproto.Read(bufio.NewReader(bytes.NewReader(b)))
		if err != nil {
			t.Fatalf("our header %x does not parse: %v", b, err)
		}
		if ci.Addr == nil || ci.Local == nil {
			if !h.Command.IsLocal() {
				t.Fatalf("without both addresses the header is %v, want LOCAL", h.Command)
			}
			return
		}
		if err := validateProxyHeader(h); err != nil {
			t.Fatalf("our own header is refused by our own check: %v", err)
		}
		got, ok := h.SourceAddr.(*net.TCPAddr)
		want := addrPortOf(ci.Addr)
		if !ok || addrPortOf(got) != want {
			t.Fatalf("the upstream reads client %v, want %v", h.SourceAddr, want)
		}
	})
}
