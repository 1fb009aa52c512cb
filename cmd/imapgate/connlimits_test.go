package main

import (
	"fmt"
	"net"
	"strings"
	"testing"
	"time"
)

// TestOneNetworkCannotFillTheProxy runs `serve` with a cap of 4 connections
// per network: 10 addresses of 127.0.0.0/24 connect once each and 4 get in;
// a client of 127.0.1.0/24 still does; when one of the first network's
// connections ends, another address of it takes the free slot.
func TestOneNetworkCannotFillTheProxy(t *testing.T) {
	g := startGate(t, gateOptions{
		upstream: fmt.Sprintf("address = %q\ntls = \"none\"", startMemUpstream(t)),
		policy:   "max_connections = 100\nmax_connections_per_ip = 2\nmax_connections_per_network = 4",
	})
	// connect opens a plaintext connection from source and returns it with
	// its first line: the greeting, or the BYE of a refusal.
	connect := func(source string) (net.Conn, string) {
		conn := dialFrom(t, source, g.starttls)
		conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		b := make([]byte, 256)
		n, _ := conn.Read(b)
		return conn, string(b[:n])
	}
	g.waitNoSessions(t)
	var admitted []net.Conn
	refused := 0
	for i := 1; i <= 10; i++ {
		conn, first := connect(fmt.Sprintf("127.0.0.%d", i))
		switch {
		case strings.HasPrefix(first, "* OK "):
			admitted = append(admitted, conn)
		case strings.HasPrefix(first, "* BYE [UNAVAILABLE]"):
			refused++
		default:
			t.Fatalf("127.0.0.%d read %q", i, first)
		}
	}
	if len(admitted) != 4 || refused != 6 {
		t.Fatalf("10 addresses of one /24: %d admitted, %d refused; want 4 and 6", len(admitted), refused)
	}
	if _, first := connect("127.0.1.1"); !strings.HasPrefix(first, "* OK ") {
		t.Fatalf("a client of another /24 read %q, want the greeting", first)
	}

	// One of the network's connections ends; its slot is free again.
	port := float64(admitted[0].LocalAddr().(*net.TCPAddr).Port)
	admitted[0].Close()
	waitFor(t, func() bool {
		for _, e := range g.events(t) {
			if e["event"] == "session_end" && e["client_ip"] == "127.0.0.1" && e["client_port"] == port {
				return true
			}
		}
		return false
	})
	if _, first := connect("127.0.0.200"); !strings.HasPrefix(first, "* OK ") {
		t.Fatalf("after a connection of the network ended, a new one read %q", first)
	}

	var reasons []string
	for _, e := range g.events(t) {
		if e["event"] == "connect" && e["result"] == "refused" {
			reasons = append(reasons, fmt.Sprintf("%v/%v", e["client_ip"], e["reason"]))
		}
	}
	if len(reasons) != 6 || strings.Count(strings.Join(reasons, " "), "too_many_connections_per_network") != 6 {
		t.Errorf("refusals %v, want 6 × too_many_connections_per_network", reasons)
	}
}

// waitNoSessions waits until every admitted connection has ended: serve's
// start-up check connects from 127.0.0.1 too, and counts against its limits
// until its session_end.
func (g *gate) waitNoSessions(t *testing.T) {
	t.Helper()
	waitFor(t, func() bool {
		open := 0
		for _, e := range g.events(t) {
			switch {
			case e["event"] == "connect" && e["result"] == "accepted":
				open++
			case e["event"] == "session_end":
				open--
			}
		}
		return open == 0
	})
}

// TestIPv6ClientsBehindAProxyCountBySlash64AndSlash48: a trusted proxy
// forwards clients from IPv6 addresses (loopback has only ::1, the PROXY
// header has them all). With 2 per address and 5 per network, 20 addresses
// of one /64 get 2 connections, 10 more /64s of the same /48 get the 3 left
// to the network, and a client of another /48 still gets in.
func TestIPv6ClientsBehindAProxyCountBySlash64AndSlash48(t *testing.T) {
	g := startProxyGate(t, "max_connections_per_ip = 2\nmax_connections_per_network = 5")
	connect := func(client string) string {
		conn := dialFrom(t, "127.0.0.2", g.plain)
		conn.SetDeadline(time.Now().Add(5 * time.Second))
		fmt.Fprintf(conn, "PROXY TCP6 %s 2001:db8::1 40000 143\r\n", client)
		b := make([]byte, 256)
		n, _ := conn.Read(b)
		return string(b[:n])
	}
	count := func(format string, from, to int) (admitted int) {
		for i := from; i <= to; i++ {
			first := connect(fmt.Sprintf(format, i))
			switch {
			case strings.HasPrefix(first, "* OK "):
				admitted++
			case !strings.HasPrefix(first, "* BYE [UNAVAILABLE]"):
				t.Fatalf("%s read %q", fmt.Sprintf(format, i), first)
			}
		}
		return admitted
	}
	if n := count("2001:db8:1:2::%x", 1, 20); n != 2 {
		t.Errorf("20 addresses of one /64: %d admitted, want 2", n)
	}
	if n := count("2001:db8:1:%x::1", 0x10, 0x19); n != 3 {
		t.Errorf("10 more /64s of the /48: %d admitted, want the 3 left of 5", n)
	}
	if n := count("2001:db8:2::%x", 1, 1); n != 1 {
		t.Error("a client of another /48 was refused")
	}
	reasons := map[string]int{}
	for _, e := range g.connectEvents(t, g.plain, 31, 5*time.Second) {
		if e["result"] == "refused" {
			reasons[e["reason"].(string)]++
		}
	}
	if reasons["too_many_connections_per_ip"] != 18 || reasons["too_many_connections_per_network"] != 7 || len(reasons) != 2 {
		t.Errorf("refusals %v, want 18 × too_many_connections_per_ip and 7 × too_many_connections_per_network", reasons)
	}
}
