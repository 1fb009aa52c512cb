package proxy

// The PROXY protocol on client listeners (README "[[listen]]",
// proxy_protocol): who may send a header, and how the session reads it.

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"os"
	"time"

	"github.com/pires/go-proxyproto"
)

// ProxyHeaderTimeout is how long a trusted proxy has, from accept, to send
// its PROXY protocol header. HAProxy, nginx and cloud load balancers send it
// with the connection's first bytes; a proxy that has sent nothing by then
// is closed, with a connect event refused as proxy_header_timeout.
const ProxyHeaderTimeout = 5 * time.Second

// errNoTCPSource refuses a PROXY header that names no TCP/IP client.
var errNoTCPSource = errors.New("proxy: PROXY header carries no TCP source address")

// ProxyProtocolListener wraps ln for a listener that takes PROXY protocol
// v1/v2 headers from the trusted prefixes (an empty list trusts nobody).
//
// A connection from anyone else is returned as it is: no header is read or
// waited for, so the session admits (counts and audits) it at once, and a
// header it sends is its first IMAP line (or, on an implicit TLS listener,
// a failed handshake), never believed. A connection from a trusted proxy is
// returned unread too; the session reads its header, which is then
// required, in its own goroutine (readProxyHeader): Accept does no I/O, so
// a slow proxy cannot hold up the accept loop.
func ProxyProtocolListener(ln net.Listener, trusted []netip.Prefix) net.Listener {
	return &proxyproto.Listener{
		Listener: ln,
		// The session bounds the read with its own deadline; this is the
		// library's own bound, in case anything reads the header first.
		ReadHeaderTimeout: ProxyHeaderTimeout,
		ValidateHeader:    validateProxyHeader,
		ConnPolicy: func(o proxyproto.ConnPolicyOptions) (proxyproto.Policy, error) {
			if ta, ok := o.Upstream.(*net.TCPAddr); ok {
				ip := ta.AddrPort().Addr().Unmap()
				for _, p := range trusted {
					if p.Contains(ip) {
						return proxyproto.REQUIRE, nil
					}
				}
			}
			// SKIP, not IGNORE: IGNORE still waits for a header (and
			// RemoteAddr blocks in that wait) before the peer is known.
			return proxyproto.SKIP, nil
		},
	}
}

// validateProxyHeader accepts a LOCAL header (the proxy's own connection,
// such as a health check: the socket's addresses apply) and a PROXY header
// for a TCP connection over IPv4 or IPv6; nothing else names an IMAP client.
func validateProxyHeader(h *proxyproto.Header) error {
	if h.Command.IsLocal() {
		return nil
	}
	if !h.TransportProtocol.IsStream() || !(h.TransportProtocol.IsIPv4() || h.TransportProtocol.IsIPv6()) {
		return errNoTCPSource
	}
	if _, ok := h.SourceAddr.(*net.TCPAddr); !ok {
		return errNoTCPSource
	}
	return nil
}

// readProxyHeader reads the PROXY header of a connection from a trusted
// proxy, within ProxyHeaderTimeout of accept (and never past the pre-auth
// deadline; a shutdown ends the wait). It returns "" when the header was
// read and RemoteAddr is now the client's, or the reason to refuse the
// connection.
func (s *session) readProxyHeader(pc *proxyproto.Conn) (reason string) {
	deadline := s.start.Add(min(ProxyHeaderTimeout, s.cfg.preauthTimeout()))
	s.raw.SetReadDeadline(deadline)
	stop := context.AfterFunc(s.ctx, func() { s.raw.SetReadDeadline(pastDeadline) })
	// go-proxyproto reads and checks the header on the first Read and
	// returns its error from that and every later Read; an empty Read
	// runs it without taking a byte of what follows.
	_, err := pc.Read(nil)
	stop()
	switch {
	case err == nil:
		return ""
	case s.ctx.Err() != nil:
		return endShutdown
	case errors.Is(err, os.ErrDeadlineExceeded),
		errors.Is(err, proxyproto.ErrNoProxyProtocol) && !time.Now().Before(deadline):
		// The library reports its own timeout as "no PROXY header".
		return ReasonProxyHeaderTimeout
	case errors.Is(err, proxyproto.ErrNoProxyProtocol):
		return ReasonProxyHeaderMissing
	}
	s.cfg.log().Debug("PROXY header refused", "session", s.id, "proxy", pc.Raw().RemoteAddr().String(), "err", err)
	return ReasonProxyHeaderInvalid
}
