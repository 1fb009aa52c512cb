package proxy

import (
	"bytes"
	"crypto/rand"
	"crypto/tls"
	"io"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestRelayGathersRecordsAlreadyInTheUpstreamSocket: when a FETCH's
// records from a TLS upstream are already in the proxy's socket (the
// upstream writes faster than the client reads), the relay sends them to
// the client in full 16 KiB records, not one per upstream record or per
// read crypto/tls makes of the socket (about 8 KiB).
func TestRelayGathersRecordsAlreadyInTheUpstreamSocket(t *testing.T) {
	phone, proxyClientSide, clientWrites := tlsPairCountingServerWrites(t)
	proxyUpSide, server := upstreamTLSPair(t)

	const record, records = 4 << 10, 24 // 96 KiB: fits the socket buffer
	fetch := make([]byte, record*records)
	rand.Read(fetch)
	for off := 0; off < len(fetch); off += record {
		if _, err := server.Write(fetch[off : off+record]); err != nil {
			t.Fatal(err)
		}
	}
	// Every record has reached the proxy's socket before the relay reads.
	const overhead = 5 + 1 + 16 // TLS 1.3 record header, content type, AES-GCM tag
	waitFor(t, func() bool { return socketBytes(t, proxyUpSide) >= records*(record+overhead) })

	before := clientWrites.Load()
	_, done := runRelay(t, proxyClientSide, proxyUpSide, time.Minute)
	phone.SetReadDeadline(time.Now().Add(10 * time.Second))
	got := make([]byte, len(fetch))
	if _, err := io.ReadFull(phone, got); err != nil {
		t.Fatalf("client read: %v", err)
	}
	if !bytes.Equal(got, fetch) {
		t.Fatal("client got the FETCH altered")
	}
	// 6 full writes; one more where the first read began in the small buffer.
	if n := clientWrites.Load() - before; n > int64(len(fetch)/relayBufferSize)+1 {
		t.Errorf("%d writes toward the client for %d KiB in the upstream socket, want %d of 16 KiB",
			n, len(fetch)>>10, len(fetch)/relayBufferSize)
	}
	phone.Close()
	server.Close()
	<-done
}

// socketBytes is how many bytes wait in c's socket (SIOCINQ).
func socketBytes(t *testing.T, c *tls.Conn) int {
	t.Helper()
	var n int
	var ierr error
	if err := rawConnOf(c).Control(func(fd uintptr) { n, ierr = unix.IoctlGetInt(int(fd), unix.SIOCINQ) }); err != nil {
		t.Fatal(err)
	}
	if ierr != nil {
		t.Fatal(ierr)
	}
	return n
}
