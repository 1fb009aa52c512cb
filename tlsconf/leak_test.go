package tlsconf

import (
	"testing"

	"go.uber.org/goleak"
)

// libraryGoroutines are the goroutines of libraries that this package
// starts and that no API of theirs lets it stop or wait for; everything
// else must be gone when the tests end.
var libraryGoroutines = []goleak.Option{
	// certmagic keeps one ACME rate limiter per CA and account in a
	// process-wide map (acmeclient.go, rateLimiters) and never stops it.
	goleak.IgnoreAnyFunction("github.com/caddyserver/certmagic.(*RingBufferRateLimiter).loop"),
	// certmagic's file storage refreshes a lock file every 5s and notices
	// the unlock only at its next wake-up ("might not terminate until up
	// to lockFreshnessInterval after the lock is released").
	goleak.IgnoreAnyFunction("github.com/caddyserver/certmagic.keepLockfileFresh"),
	// The in-process Pebble CA of the tests: its validation authority's
	// workers have no stop (Pebble is a test server, run until exit).
	goleak.IgnoreTopFunction("github.com/letsencrypt/pebble/v2/va.VAImpl.processTasks"),
}

// No goroutine of the package (ACME managers, the on-demand and OCSP
// responders, the certificate file watcher) outlives the tests.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, libraryGoroutines...)
}
