package proxy

import (
	"context"
	"testing"
	"time"
)

// TestShutdownStopsTheIdleSocketWatcher: a Server's parker (one epoll set
// and one goroutine) outlived Shutdown, one per Server: a process that
// starts and stops servers (tests, an embedding program) lost a goroutine
// and two descriptors each time. Shutdown now stops it once the sessions
// have ended, and a later park fails instead of using a closed set.
func TestShutdownStopsTheIdleSocketWatcher(t *testing.T) {
	tp := startProxy(t, func(c *Config) { c.parkAfter = time.Millisecond })
	c := tp.dialImplicit(t)
	c.send("a1 AUTHENTICATE PLAIN " + plainIR(testUser, testPass))
	c.expect("a1 OK")
	p := tp.srv.relays.parker
	waitFor(t, func() bool {
		p.mu.Lock()
		defer p.mu.Unlock()
		return len(p.slots) > 0 // a direction is parked: the watcher runs
	})
	c.conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := tp.srv.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case <-p.done:
	case <-time.After(time.Second):
		t.Fatal("the idle socket watcher still runs after Shutdown")
	}
	if p.park(&direction{}) {
		t.Fatal("a park after Shutdown succeeded")
	}
}
