package proxy

import (
	"crypto/tls"
	"net"
	"os"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestOversizeInputDoesNotGrowMemory sends many oversize lines and literals
// and checks that the proxy's heap afterwards is where it started: nothing
// per attack is kept, and nothing is buffered beyond the limits.
func TestOversizeInputDoesNotGrowMemory(t *testing.T) {
	tp := startProxy(t, nil)
	big := strings.Repeat("A", 1<<20) // 1 MiB without a line end
	attack := func(payload string) {
		conn, err := tls.Dial("tcp", tp.implicit, &tls.Config{RootCAs: tp.roots, ServerName: "localhost"})
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		conn.SetDeadline(time.Now().Add(5 * time.Second))
		go conn.Write([]byte(payload))
		buf := make([]byte, 4096)
		for {
			if _, err := conn.Read(buf); err != nil {
				return // closed by the proxy, as it should be
			}
		}
	}
	heap := func() uint64 {
		runtime.GC()
		runtime.GC()
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		return m.HeapInuse
	}
	attack("a NOOP " + big) // warm up pools and TLS
	waitFor(t, func() bool { return tp.srv.Sessions() == 0 })
	before := heap()
	for i := 0; i < 30; i++ {
		attack("a NOOP " + big)
		attack("a ID ({9999999+}\r\n" + big)
		attack("a ID ({8000+}\r\n" + strings.Repeat("x", 8000) + " {8000+}\r\n" + strings.Repeat("x", 8000) + " {8000+}\r\n" + strings.Repeat("x", 8000) + " {8000+}\r\n" + strings.Repeat("x", 8000) + " {8000+}\r\n" + big)
	}
	waitFor(t, func() bool { return tp.srv.Sessions() == 0 })
	after := heap()
	if after > before+4<<20 {
		t.Fatalf("heap grew from %d to %d bytes over 90 oversize attacks", before, after)
	}
	ends := 0
	for _, e := range tp.audit.events(t) {
		if e.Event == EventSessionEnd && (e.Reason == "line_too_long" || e.Reason == "literal_too_large") {
			ends++
		}
	}
	if ends < 90 {
		t.Fatalf("%d sessions ended for size, want 91", ends)
	}
}

func TestRetryableAccept(t *testing.T) {
	tests := []struct {
		err  error
		want bool
	}{
		{&net.OpError{Op: "accept", Err: os.NewSyscallError("accept4", syscall.EMFILE)}, true},
		{&net.OpError{Op: "accept", Err: os.NewSyscallError("accept4", syscall.ENFILE)}, true},
		{&net.OpError{Op: "accept", Err: os.NewSyscallError("accept4", syscall.ECONNABORTED)}, true},
		{&net.OpError{Op: "accept", Err: os.NewSyscallError("accept4", syscall.EPROTO)}, true},
		{&net.OpError{Op: "accept", Err: os.NewSyscallError("accept4", syscall.EHOSTUNREACH)}, true},
		{&net.OpError{Op: "accept", Err: os.NewSyscallError("accept4", syscall.EPERM)}, true},
		{net.ErrClosed, false},
		{&net.OpError{Op: "accept", Err: os.NewSyscallError("accept4", syscall.EINVAL)}, false},
	}
	for _, tt := range tests {
		if got := retryableAccept(tt.err); got != tt.want {
			t.Errorf("retryableAccept(%v) = %v, want %v", tt.err, got, tt.want)
		}
	}
}
