package proxy

import (
	"io"
	"net"
	"net/netip"
	"time"

	"github.com/pires/go-proxyproto"
)

// identify finds out who the client is: the peer, or, on a PROXY protocol
// listener, the client named by a trusted proxy's header, read here in the
// session's goroutine, never in the accept loop (see readProxyHeader). A
// header that is late or bad ends the connection, audited with the proxy's
// address.
func (s *session) identify() bool {
	if pc, ok := s.raw.(*proxyproto.Conn); ok {
		if reason := s.readProxyHeader(pc); reason != "" {
			s.clientAddr = addrPortOf(pc.Raw().RemoteAddr())
			s.refuseConnect(reason)
			return false
		}
	}
	s.clientAddr = addrPortOf(s.raw.RemoteAddr())
	return true
}

// addrPortOf returns an "ip:port" address as a netip.AddrPort, IPv4-mapped
// IPv6 unmapped; anything else gives the zero AddrPort.
func addrPortOf(a net.Addr) netip.AddrPort {
	ap, err := netip.ParseAddrPort(a.String())
	if err != nil {
		return netip.AddrPort{}
	}
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}

// admit applies the access rules and connection limits before any byte of
// IMAP is read, and logs the connect event. It reports whether the client
// may go on.
func (s *session) admit() bool {
	if allowed, reason := s.cfg.Access.Allowed(s.clientAddr.Addr()); !allowed {
		s.refuseConnect(reason)
		return false
	}
	release, reason := s.cfg.Conns.Acquire(s.clientAddr.Addr())
	if release == nil {
		s.refuseConnect(reason)
		// A short, polite refusal costs one write and no TLS handshake.
		if s.l.Mode == TLSStartTLS {
			s.raw.SetWriteDeadline(time.Now().Add(time.Second))
			io.WriteString(s.raw, "* BYE [UNAVAILABLE] Too many connections, try again later.\r\n")
		}
		return false
	}
	ev := s.event(EventConnect)
	ev.Result = ResultAccepted
	s.cfg.Audit.Log(ev)
	s.admitted, s.release = true, release
	return true
}

// refuseConnect logs the connect event of a connection that is not let in.
func (s *session) refuseConnect(reason string) {
	ev := s.event(EventConnect)
	ev.Result, ev.Reason = ResultRefused, reason
	s.cfg.Audit.Log(ev)
}
