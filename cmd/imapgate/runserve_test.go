package main

import (
	"context"
	"net"
	"testing"
	"time"
)

// runServe runs serve on the config at path in this process, reloading
// when reload receives (a SIGHUP would reach every serve of the test
// process), and waits up to within for addr to accept connections. The
// exit code goes to exit (buffered, one slot). The cleanup cancels the
// context (as SIGTERM does), expects exit code 0 within 15s, and then
// calls after (log dumps, secret scans), which may be nil.
func runServe(t *testing.T, path, addr string, stderr *lockedBuffer, reload <-chan struct{}, exit chan int, within time.Duration, after func()) context.CancelFunc {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	go func() { exit <- serveReloading(ctx, path, stderr, reload) }()
	deadline := time.Now().Add(within)
	for {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
			break
		}
		select {
		case code := <-exit:
			cancel()
			t.Fatalf("serve exited with %d: %s", code, stderr.String())
		default:
		}
		if time.Now().After(deadline) {
			cancel()
			t.Fatalf("proxy did not start: %s", stderr.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Cleanup(func() {
		cancel()
		select {
		case code := <-exit:
			if code != 0 {
				t.Errorf("serve exited with %d: %s", code, tail(stderr.String(), 8000))
			}
		case <-time.After(15 * time.Second):
			t.Error("serve did not stop within 15s of its cancellation (SIGTERM)")
		}
		if after != nil {
			after()
		}
	})
	return cancel
}
