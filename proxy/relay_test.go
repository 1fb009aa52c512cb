package proxy

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/imapgate/imapgate/proxy/proxytest"
	"github.com/imapgate/imapgate/tlsconf"
)

// tcpPair returns the two ends of a loopback TCP connection.
func tcpPair(t testing.TB) (a, b net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		accepted <- c
	}()
	a, err = net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	b = <-accepted
	t.Cleanup(func() { a.Close(); b.Close() })
	return a, b
}

// tlsPair returns a TLS client and the proxy-side TLS server over TCP.
func tlsPair(t testing.TB) (client, server *tls.Conn) {
	a, b := tcpPair(t)
	return tlsOver(t, a, b, nil)
}

// tlsOver runs a TLS handshake between a client on a and a server on b
// with a fresh self-signed certificate for localhost, the server's config
// changed by tune if not nil, and returns both ends.
func tlsOver(t testing.TB, a, b net.Conn, tune func(*tls.Config)) (client, server *tls.Conn) {
	t.Helper()
	cert, certPEM, err := tlsconf.SelfSigned(time.Hour, "localhost")
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(certPEM)
	sc := &tls.Config{Certificates: []tls.Certificate{cert}}
	if tune != nil {
		tune(sc)
	}
	client = tls.Client(a, &tls.Config{RootCAs: roots, ServerName: "localhost"})
	server = tls.Server(b, sc)
	handshakeBoth(t, client, server)
	return client, server
}

// oneRecordPerWrite turns off dynamic record sizing: one record per
// Write, so counted writes are the relay's (and an upstream writes like
// OpenSSL servers do).
func oneRecordPerWrite(c *tls.Config) { c.DynamicRecordSizingDisabled = true }

// runRelay relays between the proxy's client side and upstream side.
func runRelay(tb testing.TB, client, upstream net.Conn, idle time.Duration) (*relay, chan struct{}) {
	return runRelayWith(closeAtEnd(tb, newRelayShared()), client, upstream, idle)
}

// closeAtEnd stops rs's parker when the test ends, as Server.Shutdown does.
func closeAtEnd(tb testing.TB, rs *relayShared) *relayShared {
	tb.Cleanup(rs.parker.close)
	return rs
}

func runRelayWith(shared *relayShared, client, upstream net.Conn, idle time.Duration) (*relay, chan struct{}) {
	done := make(chan struct{})
	r := newRelay(client, upstream, idle, shared, func() { close(done) })
	r.start()
	return r, done
}

// TestRelayCopiesLargeStreamsBothWays sends 4 MiB each way at once through
// TLS on the client side and plain TCP upstream, and checks every byte.
func TestRelayCopiesLargeStreamsBothWays(t *testing.T) {
	forEachWaitMode(t, testRelayCopiesLargeStreamsBothWays)
}

// forEachWaitMode runs a relay test with idle directions parked in epoll
// and, as on systems without it, waiting in their own goroutines.
func forEachWaitMode(t *testing.T, test func(t *testing.T, shared func() *relayShared)) {
	t.Run("parked", func(t *testing.T) {
		// Park after 1ms without bytes, so the tests go through the parker
		// all the time.
		test(t, func() *relayShared { rs := closeAtEnd(t, newRelayShared()); rs.linger = time.Millisecond; return rs })
	})
	t.Run("lingering", func(t *testing.T) { test(t, func() *relayShared { return closeAtEnd(t, newRelayShared()) }) })
	t.Run("goroutines", func(t *testing.T) {
		test(t, func() *relayShared { rs := newRelayShared(); rs.parker = nil; return rs })
	})
}

func testRelayCopiesLargeStreamsBothWays(t *testing.T, shared func() *relayShared) {
	phone, proxyClientSide := tlsPair(t)
	proxyUpSide, server := tcpPair(t)
	r, done := runRelayWith(shared(), proxyClientSide, proxyUpSide, time.Minute)

	up := make([]byte, 4<<20)
	down := make([]byte, 4<<20)
	rand.Read(up)
	rand.Read(down)
	gotUp := make(chan []byte, 1)
	gotDown := make(chan []byte, 1)
	go func() { b, _ := io.ReadAll(io.LimitReader(server, int64(len(up)))); gotUp <- b }()
	go func() { b, _ := io.ReadAll(io.LimitReader(phone, int64(len(down)))); gotDown <- b }()
	go func() {
		// Many small writes: many TLS records, many bursts.
		for off := 0; off < len(up); off += 777 {
			phone.Write(up[off:min(off+777, len(up))])
		}
	}()
	server.Write(down)
	if b := <-gotUp; !bytes.Equal(b, up) {
		t.Fatalf("client->upstream: got %d bytes, want %d identical", len(b), len(up))
	}
	if b := <-gotDown; !bytes.Equal(b, down) {
		t.Fatalf("upstream->client: got %d bytes, want %d identical", len(b), len(down))
	}
	// The upstream answers and closes in one go: the answer must arrive.
	server.Write([]byte("* BYE bye\r\n"))
	server.Close()
	phone.SetReadDeadline(time.Now().Add(5 * time.Second))
	rest, err := io.ReadAll(phone)
	if string(rest) != "* BYE bye\r\n" {
		t.Fatalf("after upstream close: %q, %v", rest, err)
	}
	<-done
	if r.in.Load() != int64(len(up)) || r.out.Load() != int64(len(down))+11 {
		t.Fatalf("counted in=%d out=%d", r.in.Load(), r.out.Load())
	}
	if r.reason() != endUpstreamClosed {
		t.Fatalf("reason = %s", r.reason())
	}
}

// TestRelayForwardsRecordsTLSReadAhead: the pre-auth phase may leave whole
// TLS records inside crypto/tls (read ahead with the last command). The
// relay must forward them without waiting for more bytes on the socket.
func TestRelayForwardsRecordsTLSReadAhead(t *testing.T) {
	forEachWaitMode(t, testRelayForwardsRecordsTLSReadAhead)
}

func testRelayForwardsRecordsTLSReadAhead(t *testing.T, shared func() *relayShared) {
	for i := 0; i < 20; i++ {
		phone, proxyClientSide := tlsPair(t)
		proxyUpSide, server := tcpPair(t)
		phone.Write([]byte("a1 AUTHENTICATE PLAIN x\r\n"))
		phone.Write([]byte("a2 SELECT INBOX\r\n")) // a second record
		time.Sleep(5 * time.Millisecond)           // let both records arrive
		br := bufio.NewReader(proxyClientSide)
		if line, _ := br.ReadString('\n'); line != "a1 AUTHENTICATE PLAIN x\r\n" {
			t.Fatalf("pre-auth read %q", line)
		}
		// What bufio holds is the session's to forward; the rest may be in crypto/tls.
		pending := make([]byte, br.Buffered())
		br.Read(pending)
		proxyUpSide.Write(pending)
		_, done := runRelayWith(shared(), proxyClientSide, proxyUpSide, time.Minute)
		server.SetReadDeadline(time.Now().Add(3 * time.Second))
		got, err := bufio.NewReader(server).ReadString('\n')
		if got != "a2 SELECT INBOX\r\n" {
			t.Fatalf("round %d: upstream got %q, %v", i, got, err)
		}
		phone.Close()
		server.Close()
		<-done
	}
}

// TestRelayHalfClose: a client that sends its last command and half-closes
// still gets the upstream's answer.
func TestRelayHalfClose(t *testing.T) {
	forEachWaitMode(t, testRelayHalfClose)
}

func testRelayHalfClose(t *testing.T, shared func() *relayShared) {
	phone, proxyClientSide := tcpPair(t)
	proxyUpSide, server := tcpPair(t)
	_, done := runRelayWith(shared(), proxyClientSide, proxyUpSide, time.Minute)
	phone.Write([]byte("a LOGOUT\r\n"))
	phone.(*net.TCPConn).CloseWrite()
	br := bufio.NewReader(server)
	if line, _ := br.ReadString('\n'); line != "a LOGOUT\r\n" {
		t.Fatalf("upstream got %q", line)
	}
	if _, err := br.ReadByte(); err != io.EOF {
		t.Fatalf("upstream did not see the half-close: %v", err)
	}
	server.Write([]byte("* BYE\r\na OK\r\n"))
	server.Close()
	phone.SetReadDeadline(time.Now().Add(5 * time.Second))
	rest, _ := io.ReadAll(phone)
	if string(rest) != "* BYE\r\na OK\r\n" {
		t.Fatalf("client got %q", rest)
	}
	<-done
}

// TestRelayIdleTimeoutCountsBothDirections: bytes in either direction keep
// the session alive (an IDLE client sends nothing for 29 minutes while the
// server sends updates); silence both ways ends it.
func TestRelayIdleTimeoutCountsBothDirections(t *testing.T) {
	forEachWaitMode(t, testRelayIdleTimeoutCountsBothDirections)
}

func testRelayIdleTimeoutCountsBothDirections(t *testing.T, shared func() *relayShared) {
	phone, proxyClientSide := tcpPair(t)
	proxyUpSide, server := tcpPair(t)
	r, done := runRelayWith(shared(), proxyClientSide, proxyUpSide, 300*time.Millisecond)
	go io.Copy(io.Discard, phone)
	for i := 0; i < 6; i++ { // 600ms of upstream-only traffic
		server.Write([]byte("* OK still here\r\n"))
		time.Sleep(100 * time.Millisecond)
	}
	select {
	case <-done:
		t.Fatal("relay ended although the upstream kept sending")
	default:
	}
	select {
	case <-done:
	case <-time.After(2 * time.Second):
		t.Fatal("relay did not end after 300ms of silence")
	}
	if r.reason() != endIdleTimeout {
		t.Fatalf("reason = %s", r.reason())
	}
}

// BenchmarkRelayThroughput measures the copy loop: TLS to the client,
// plain TCP from the upstream, as with a legacy server on a trusted network.
func BenchmarkRelayThroughput(b *testing.B) {
	benchRelayThroughput(b, tcpPair, 256<<10)
}

// BenchmarkRelayThroughputTLSUpstream is BenchmarkRelayThroughput with
// TLS on both legs, the upstream writing 4 KiB records as Dovecot's
// OpenSSL does.
func BenchmarkRelayThroughputTLSUpstream(b *testing.B) {
	benchRelayThroughput(b, func(t testing.TB) (net.Conn, net.Conn) { return upstreamTLSPair(t) }, 4<<10)
}

// benchRelayThroughput relays 256 KiB chunks from an upstream connected
// by upstreamPair, written record bytes at a time, to a TLS client.
func benchRelayThroughput(b *testing.B, upstreamPair func(testing.TB) (net.Conn, net.Conn), record int) {
	phone, proxyClientSide := tlsPair(b)
	proxyUpSide, server := upstreamPair(b)
	_, done := runRelay(b, proxyClientSide, proxyUpSide, time.Minute)
	chunk := make([]byte, 256<<10)
	rand.Read(chunk)
	b.SetBytes(int64(len(chunk)))
	b.ResetTimer()
	go func() {
		for i := 0; i < b.N; i++ {
			for off := 0; off < len(chunk); off += record {
				server.Write(chunk[off : off+record])
			}
		}
	}()
	if _, err := io.CopyN(io.Discard, phone, int64(b.N)*int64(len(chunk))); err != nil {
		b.Fatal(err)
	}
	b.StopTimer()
	server.Close()
	phone.Close()
	<-done
}

// TestIdleRelaysHoldNoGoroutines: with the parker, idle sessions cost no
// goroutine, and an abort still ends parked sessions.
func TestIdleRelaysHoldNoGoroutines(t *testing.T) {
	shared := closeAtEnd(t, newRelayShared())
	if shared.parker == nil {
		t.Skip("no epoll parker on this system")
	}
	shared.linger = 20 * time.Millisecond
	// Start the parker's own goroutine first.
	warm, warmUp := tcpPair(t)
	_, warmDone := runRelayWith(shared, warm, warmUp, time.Minute)
	time.Sleep(50 * time.Millisecond)
	before := runtime.NumGoroutine()
	const n = 50
	var relays []*relay
	var dones []chan struct{}
	var phones []net.Conn
	for i := 0; i < n; i++ {
		phone, proxyClientSide := tlsPair(t)
		proxyUpSide, server := tcpPair(t)
		r, done := runRelayWith(shared, proxyClientSide, proxyUpSide, time.Minute)
		relays, dones, phones = append(relays, r), append(dones, done), append(phones, phone)
		// One exchange, so both directions have run and parked again.
		phone.Write([]byte("a NOOP\r\n"))
		buf := make([]byte, 64)
		server.SetReadDeadline(time.Now().Add(5 * time.Second))
		server.Read(buf)
		server.Write([]byte("a OK\r\n"))
		phone.SetReadDeadline(time.Now().Add(5 * time.Second))
		phone.Read(buf)
	}
	waitFor(t, func() bool { return runtime.NumGoroutine() <= before+2 })
	for i, r := range relays {
		r.abort(endShutdown)
		select {
		case <-dones[i]:
		case <-time.After(5 * time.Second):
			t.Fatalf("aborting parked relay %d did not end it", i)
		}
		phones[i].SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := phones[i].Read(make([]byte, 1)); err == nil {
			t.Fatalf("relay %d: client connection still open after abort", i)
		}
	}
	warm.Close()
	<-warmDone
}

// BenchmarkRelayRoundTrip measures what the relay adds to a small
// request/response exchange (an IMAP NOOP): client over TLS, upstream over
// TCP. Compare with BenchmarkDirectRoundTrip, the same exchange without a
// relay, in the same run.
func BenchmarkRelayRoundTrip(b *testing.B) {
	for _, mode := range []struct {
		name   string
		shared func() *relayShared
	}{
		{"lingering", func() *relayShared { return closeAtEnd(b, newRelayShared()) }},
		{"parked", func() *relayShared { rs := closeAtEnd(b, newRelayShared()); rs.linger = time.Millisecond; return rs }},
		{"goroutines", func() *relayShared { rs := newRelayShared(); rs.parker = nil; return rs }},
	} {
		b.Run(mode.name, func(b *testing.B) {
			phone, proxyClientSide := tlsPair(b)
			proxyUpSide, server := tcpPair(b)
			_, done := runRelayWith(mode.shared(), proxyClientSide, proxyUpSide, time.Minute)
			go echoLines(server)
			roundTrips(b, phone)
			phone.Close()
			server.Close()
			<-done
		})
	}
}

// BenchmarkDirectRoundTrip is the baseline: the same exchange, TLS from the
// client straight to the echoing server.
func BenchmarkDirectRoundTrip(b *testing.B) {
	phone, server := tlsPair(b)
	go echoLines(server)
	roundTrips(b, phone)
}

func echoLines(c net.Conn) {
	br := bufio.NewReader(c)
	for {
		line, err := br.ReadSlice('\n')
		if err != nil {
			return
		}
		if _, err := c.Write(line); err != nil {
			return
		}
	}
}

func roundTrips(b *testing.B, c net.Conn) {
	br := bufio.NewReader(c)
	req := []byte("a1 NOOP\r\n")
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := c.Write(req); err != nil {
			b.Fatal(err)
		}
		if _, err := br.ReadSlice('\n'); err != nil {
			b.Fatal(err)
		}
	}
}

// TestShutdownSaysByeToParkedSessions: a relayed session whose directions
// are parked (idle, between two responses) gets an untagged BYE and is
// ended by Shutdown at once, not at its deadline; ending it must not
// deadlock on the server's lock.
func TestShutdownSaysByeToParkedSessions(t *testing.T) {
	tp := startProxy(t, func(c *Config) { c.parkAfter = time.Millisecond }) // park at once
	c := tp.dialImplicit(t)
	c.send("a1 AUTHENTICATE PLAIN " + plainIR(testUser, testPass))
	c.expect("a1 OK")
	c.send("a2 NOOP")
	c.expect("a2 OK")
	time.Sleep(50 * time.Millisecond) // both directions park
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	done := make(chan error, 1)
	start := time.Now()
	go func() { done <- tp.srv.Shutdown(ctx) }()
	c.expect("* BYE Server shutting down.")
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Shutdown: %v, want the idle session drained at once", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Shutdown hung while ending a parked session")
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("Shutdown took %v for one idle session", d)
	}
	if n := tp.srv.Sessions(); n != 0 {
		t.Fatalf("%d sessions left", n)
	}
}

func TestEndsResponseLine(t *testing.T) {
	tests := []struct {
		in   string
		want bool
	}{
		{"* 3 EXISTS\r\n", true},
		{"a OK done\r\n", true},
		{"+ idling\r\n", true},
		{"\r\n", true},
		{"* 1 FETCH (BODY[] {5}\r\n", false},
		{"* 1 FETCH (BODY[] {5+}\r\n", false},
		{"* 1 FETCH (BODY[] {5}\n", false},
		{"* 3 EXI", false},
		{"partial\r", false},
		{"", false},
	}
	for _, tt := range tests {
		if got := endsResponseLine([]byte(tt.in)); got != tt.want {
			t.Errorf("endsResponseLine(%q) = %v, want %v", tt.in, got, tt.want)
		}
	}
}

// TestRelayedSessionOutlivesThePreauthWriteDeadline: every pre-auth flush
// sets a write deadline, the last one (the login's OK) included; the relay
// must not inherit it, or the first write after it passes fails and the
// client reads "bad record MAC".
func TestRelayedSessionOutlivesThePreauthWriteDeadline(t *testing.T) {
	tp := startProxy(t, func(c *Config) { c.writeTimeout = 100 * time.Millisecond })
	c := tp.dialImplicit(t)
	c.send("a AUTHENTICATE PLAIN " + saslPlain(testUser, testPass))
	c.expect("a OK")
	time.Sleep(300 * time.Millisecond)
	c.send("b NOOP")
	c.expect("b OK")
}

// TestRelayGathersSmallUpstreamRecordsIntoFewerWrites: an upstream over TLS
// whose server writes 4 KiB records (Dovecot's OpenSSL does) sends a
// 2 MiB FETCH. crypto/tls hands the relay one record per Read; the
// client must still get every byte, in order, in at most one write toward
// it per upstream record (it took two: the first 1 KiB of each record, then
// the rest), and the tagged OK that follows the burst must not wait for
// more bytes.
func TestRelayGathersSmallUpstreamRecordsIntoFewerWrites(t *testing.T) {
	forEachWaitMode(t, testRelayGathersSmallUpstreamRecords)
}

func testRelayGathersSmallUpstreamRecords(t *testing.T, shared func() *relayShared) {
	phone, proxyClientSide, clientWrites := tlsPairCountingServerWrites(t)
	proxyUpSide, server := upstreamTLSPair(t)
	_, done := runRelayWith(shared(), proxyClientSide, proxyUpSide, time.Minute)

	const record = 4 << 10
	fetch := make([]byte, 2<<20)
	rand.Read(fetch)
	const ok = "a OK FETCH completed\r\n"
	before := clientWrites.Load()
	go func() {
		for off := 0; off < len(fetch); off += record {
			server.Write(fetch[off : off+record]) // one record each
		}
		server.Write([]byte(ok))
	}()
	phone.SetReadDeadline(time.Now().Add(20 * time.Second))
	got := make([]byte, len(fetch)+len(ok))
	if _, err := io.ReadFull(phone, got); err != nil {
		t.Fatalf("client read: %v", err)
	}
	if !bytes.Equal(got[:len(fetch)], fetch) || string(got[len(fetch):]) != ok {
		t.Fatal("client got the FETCH altered")
	}
	records := len(fetch)/record + 1
	if n := clientWrites.Load() - before; n > int64(records) {
		t.Errorf("%d writes toward the client for %d upstream records, want at most one per record", n, records)
	}
	phone.Close()
	server.Close()
	<-done
}

// countingConn counts the writes to a TCP connection (under crypto/tls,
// one per record) and, if deadlines is set, the read deadlines set on it.
type countingConn struct {
	*net.TCPConn
	writes, deadlines *atomic.Int64
}

func (c countingConn) Write(b []byte) (int, error) {
	c.writes.Add(1)
	return c.TCPConn.Write(b)
}

func (c countingConn) SetReadDeadline(t time.Time) error {
	if c.deadlines != nil {
		c.deadlines.Add(1)
	}
	return c.TCPConn.SetReadDeadline(t)
}

// tlsPairCountingServerWrites is tlsPair with the writes of the proxy's
// side counted: one per record (no dynamic record sizing toward the
// client, so the count is the relay's).
func tlsPairCountingServerWrites(t testing.TB) (client, server *tls.Conn, writes *atomic.Int64) {
	a, b := tcpPair(t)
	writes = new(atomic.Int64)
	client, server = tlsOver(t, a, countingConn{b.(*net.TCPConn), writes, nil}, oneRecordPerWrite)
	return client, server, writes
}

// upstreamTLSPair returns the proxy's TLS client toward an upstream, over
// an upstreamSocket as Upstream.connect makes it, and that upstream's TLS
// server, which writes one record per Write (no dynamic record sizing), as
// OpenSSL servers do.
func upstreamTLSPair(t testing.TB) (proxyUpSide, server *tls.Conn) {
	t.Helper()
	a, b := tcpPair(t)
	proxyUpSide, server = tlsOver(t, newUpstreamSocket(a), b, oneRecordPerWrite)
	if rawConnOf(proxyUpSide) == nil {
		t.Fatal("rawConnOf finds no socket under the upstream's TLS: its direction could never park")
	}
	return proxyUpSide, server
}

func handshakeBoth(t testing.TB, client, server *tls.Conn) {
	t.Helper()
	errc := make(chan error, 1)
	go func() { errc <- client.Handshake() }()
	if err := server.Handshake(); err != nil {
		t.Fatal(err)
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
}

// TestRelayRoundTripsMoveNoReadDeadline: a session exchanging commands
// faster than its quiet spell (2 seconds before it parks) must not pay a
// read deadline change per command: the deadline is set once and moved
// only when it expires while bytes still flowed.
func TestRelayRoundTripsMoveNoReadDeadline(t *testing.T) {
	a, b := tcpPair(t)
	var writes, deadlines atomic.Int64
	phone, proxyClientSide := tlsOver(t, a, countingConn{b.(*net.TCPConn), &writes, &deadlines}, nil)
	proxyUpSide, server := tcpPair(t)
	_, done := runRelay(t, proxyClientSide, proxyUpSide, time.Minute)
	go echoLines(server)

	const commands = 200
	br := bufio.NewReader(phone)
	before := deadlines.Load()
	for i := range commands {
		phone.SetDeadline(time.Now().Add(5 * time.Second))
		fmt.Fprintf(phone, "a%d NOOP\r\n", i)
		if line, err := br.ReadString('\n'); err != nil || line != fmt.Sprintf("a%d NOOP\r\n", i) {
			t.Fatalf("round trip %d: %q, %v", i, line, err)
		}
	}
	if n := deadlines.Load() - before; n > 4 {
		t.Errorf("%d read deadlines set for %d round trips, want a handful", n, commands)
	}
	phone.Close()
	server.Close()
	<-done
}

// TestLargeFetchThroughTLSUpstreamArrivesIntact: a 2 MB FETCH from Dovecot
// through the proxy with TLS on both legs (upstream STARTTLS and implicit
// TLS, Dovecot's own OpenSSL records) reaches the client byte for byte as
// Dovecot sends it to a client of its own.
func TestLargeFetchThroughTLSUpstreamArrivesIntact(t *testing.T) {
	d := proxytest.StartDovecot(t, proxytest.DovecotOptions{Messages: 20, MessageSize: 100 << 10})
	const fetch = "f UID FETCH 1:* BODY.PEEK[]"

	direct, err := net.Dial("tcp", d.Addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { direct.Close() })
	dc := &textClient{t: t, conn: direct, r: bufio.NewReader(direct)}
	dc.expect("* OK ")
	dc.send("l LOGIN user1 " + strconv.Quote(d.Users["user1"]))
	dc.expect("l OK")
	dc.send("s SELECT INBOX")
	dc.expect("s OK")
	dc.send(fetch)
	want, _ := readResponse(t, dc.r, "f ")
	if len(want) < 2e6 {
		t.Fatalf("Dovecot's own FETCH is %d bytes, want a 2 MB mailbox", len(want))
	}

	for _, mode := range []UpstreamTLS{UpstreamSTARTTLS, UpstreamImplicit} {
		t.Run(string(mode), func(t *testing.T) {
			addr := d.Addr
			if mode == UpstreamImplicit {
				addr = d.ImplicitAddr
			}
			tp := startProxyTo(t, addr, mode, dovecotTLS(d), nil, nil)
			c := tp.dialImplicit(t)
			c.send("a AUTHENTICATE PLAIN " + plainIR("user1", d.Users["user1"]))
			c.expect("a OK")
			c.send("s SELECT INBOX")
			c.expect("s OK")
			c.send(fetch)
			got, tagged := readResponse(t, c.r, "f ")
			if !bytes.Equal(got, want) {
				t.Fatalf("the client got %d bytes before the tagged line, Dovecot sends %d; first difference at %d",
					len(got), len(want), firstDifference(got, want))
			}
			if !strings.HasPrefix(tagged, "f OK ") {
				t.Fatalf("tagged answer %q", tagged)
			}
		})
	}
}

// readResponse reads a command's whole response: the untagged responses,
// literals included, and the tagged line (apart: Dovecot's says how long
// the command took).
func readResponse(t *testing.T, r *bufio.Reader, tag string) (untagged []byte, tagged string) {
	t.Helper()
	var all []byte
	for {
		line, err := r.ReadBytes('\n')
		if err != nil {
			t.Fatalf("after %d bytes: %v", len(all), err)
		}
		if bytes.HasPrefix(line, []byte(tag)) {
			return all, string(line)
		}
		all = append(all, line...)
		if n, ok := literalSize(line); ok {
			lit := make([]byte, n)
			if _, err := io.ReadFull(r, lit); err != nil {
				t.Fatalf("literal of %d bytes: %v", n, err)
			}
			all = append(all, lit...)
		}
	}
}

// literalSize is N when line ends with "{N}\r\n".
func literalSize(line []byte) (int, bool) {
	s := strings.TrimSuffix(string(line), "\r\n")
	i := strings.LastIndexByte(s, '{')
	if i < 0 || !strings.HasSuffix(s, "}") {
		return 0, false
	}
	n, err := strconv.Atoi(s[i+1 : len(s)-1])
	return n, err == nil
}

func firstDifference(a, b []byte) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}
