package proxy

import (
	"bytes"
	"net"
	"runtime"
	"runtime/pprof"
	"testing"
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
