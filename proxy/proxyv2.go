package proxy

import (
	"net"

	"github.com/pires/go-proxyproto"
)

// proxyV2Header returns a PROXY protocol v2 header that tells the upstream
// the client's real address. Without both addresses it is a LOCAL header.
func proxyV2Header(ci ClientInfo) []byte {
	var h *proxyproto.Header
	if ci.Addr != nil && ci.Local != nil {
		src, dst := net.Addr(ci.Addr), net.Addr(ci.Local)
		// Both ends must be of one family; map v4 into v6 when they differ.
		if (ci.Addr.IP.To4() == nil) != (ci.Local.IP.To4() == nil) {
			src = &net.TCPAddr{IP: ci.Addr.IP.To16(), Port: ci.Addr.Port}
			dst = &net.TCPAddr{IP: ci.Local.IP.To16(), Port: ci.Local.Port}
		}
		h = proxyproto.HeaderProxyFromAddrs(2, src, dst)
	} else {
		h = &proxyproto.Header{Version: 2, Command: proxyproto.LOCAL}
	}
	b, err := h.Format()
	if err != nil {
		b, _ = (&proxyproto.Header{Version: 2, Command: proxyproto.LOCAL}).Format()
	}
	return b
}
