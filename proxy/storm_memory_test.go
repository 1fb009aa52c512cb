package proxy

import (
	"bytes"
	"crypto/tls"
	"net"
	"runtime"
	"runtime/pprof"
	"testing"
	"time"

	"github.com/imapgate/imapgate/tlsconf"
)

// TestSessionsWaitingForTheirHandshakeHoldNoBuffers: in a storm of
// reconnecting phones most sessions wait for their TLS handshake; each
// must cost only what the handshake needs (about 4.3 KiB of heap: the
// session, its tls.Conn and the connection), not also the 4 KiB of command
// buffers it gets once the handshake is done (README "Performance").
func TestSessionsWaitingForTheirHandshakeHoldNoBuffers(t *testing.T) {
	const phones = 200
	tp := startProxy(t, nil)
	before := liveHeap()
	var conns []net.Conn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for range phones {
		c, err := net.Dial("tcp", tp.implicit) // connected, ClientHello not sent yet
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
	}
	waitFor(t, func() bool { return goroutinesIn("crypto/tls.(*Conn).readClientHello") >= phones })
	perSession := (int64(liveHeap()) - int64(before)) / phones
	t.Logf("%d sessions waiting for their ClientHello: %d bytes of heap each", phones, perSession)
	if perSession > 6<<10 {
		t.Fatalf("a session waiting for its handshake holds %d bytes of heap, want at most 6 KiB (the command buffers alone are 4 KiB)", perSession)
	}
}

// liveHeap is the heap in use after a collection.
func liveHeap() uint64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

// goroutinesIn counts the goroutines whose stack has fn in it.
func goroutinesIn(fn string) int {
	var b bytes.Buffer
	pprof.Lookup("goroutine").WriteTo(&b, 2)
	return bytes.Count(b.Bytes(), []byte(fn+"("))
}

// TestHandshakesShareOneRecordingConfig: crypto/tls keeps the config of a
// handshake for the life of its connection, so thousands of idle sessions
// must share one copy of the listener's config, while each handshake
// still records the certificate it was served (for channel binding).
func TestHandshakesShareOneRecordingConfig(t *testing.T) {
	cert, _, err := tlsconf.SelfSigned(time.Hour, "localhost")
	if err != nil {
		t.Fatal(err)
	}
	listener := &tls.Config{Certificates: []tls.Certificate{cert}}
	serving := servingConfig(listener)
	phone, laptop := &handshakeConn{}, &handshakeConn{}
	configFor := func(hc *handshakeConn) *tls.Config {
		cfg, err := serving.GetConfigForClient(&tls.ClientHelloInfo{Conn: hc, ServerName: "localhost"})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := cfg.GetCertificate(&tls.ClientHelloInfo{Conn: hc, ServerName: "localhost"}); err != nil {
			t.Fatal(err)
		}
		return cfg
	}
	if a, b := configFor(phone), configFor(laptop); a != b {
		t.Error("two handshakes on one listener got two copies of its config")
	}
	if phone.served == nil || laptop.served == nil {
		t.Errorf("served certificates not recorded: phone %v, laptop %v", phone.served, laptop.served)
	}

	// A reload gives the listener a new config: its handshakes get a
	// copy of that one.
	reloaded := &tls.Config{Certificates: []tls.Certificate{cert}}
	live := listener
	serving = servingConfig(&tls.Config{GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) { return live, nil }})
	before := configFor(phone)
	live = reloaded
	if after := configFor(laptop); after == before {
		t.Error("a handshake after the reload got the old config's copy")
	}
}
