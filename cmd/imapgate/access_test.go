package main

import (
	"crypto/tls"
	"io"
	"net"
	"testing"
	"time"
)

// TestDenyWrittenIPv4MappedRefusesTheIPv4Client: an admin copies a client
// address from a log of an IPv6 socket (::ffff:127.0.0.9) into the deny
// list. The client connects over IPv4 from 127.0.0.9 and is refused before
// any byte, with the audit event that says so; its neighbour is served.
// Before, the mapped entry matched no client and the deny list failed open.
func TestDenyWrittenIPv4MappedRefusesTheIPv4Client(t *testing.T) {
	g := startGate(t, gateOptions{
		upstream: `address = "127.0.0.1:1"
tls = "none"`,
		policy: `deny = ["::ffff:127.0.0.9", "::ffff:127.0.1.0/120"]`,
	})
	dial := func(source string) (net.Conn, error) {
		d := &net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(source)}}
		return tls.DialWithDialer(d, "tcp", g.implicit, &tls.Config{RootCAs: g.roots, ServerName: "localhost"})
	}
	for _, source := range []string{"127.0.0.9", "127.0.1.77"} {
		conn, err := dial(source)
		if err == nil {
			io.ReadAll(io.LimitReader(conn, 64))
			conn.Close()
			t.Errorf("%s, denied as ::ffff:%s, completed a TLS handshake", source, source)
		}
	}
	neighbour := g.dialTLSFrom(t, "127.0.0.10") // reads the "* OK" greeting
	neighbour.conn.Close()

	var refused []string
	waitFor(t, func() bool {
		refused = refused[:0]
		for _, e := range g.events(t) {
			if e["event"] == "connect" && e["result"] == "refused" && e["reason"] == "denied_network" {
				refused = append(refused, e["client_ip"].(string))
			}
		}
		return len(refused) >= 2
	})
	if len(refused) != 2 || refused[0] != "127.0.0.9" || refused[1] != "127.0.1.77" {
		t.Fatalf("refused connects from %v, want 127.0.0.9 and 127.0.1.77", refused)
	}
}
