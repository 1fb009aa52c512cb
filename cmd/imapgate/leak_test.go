package main

import (
	"fmt"
	"os"

	"go.uber.org/goleak"
)

// libraryGoroutines are the goroutines of certmagic that serve's ACME
// manager starts and that no API of certmagic's lets it stop or wait for
// (as in tlsconf's leak check); everything else must be gone when the
// tests end.
var libraryGoroutines = []goleak.Option{
	// One ACME rate limiter per CA and account, kept in a process-wide
	// map (certmagic acmeclient.go, rateLimiters) and never stopped.
	goleak.IgnoreAnyFunction("github.com/caddyserver/certmagic.(*RingBufferRateLimiter).loop"),
	// The file storage's lock refresher notices an unlock only at its
	// next wake-up, up to 5s later.
	goleak.IgnoreAnyFunction("github.com/caddyserver/certmagic.keepLockfileFresh"),
}

// findLeaks is TestMain's goroutine leak check (go.uber.org/goleak): once
// every test has passed, no goroutine serve, its reloads, its audit
// queue, its ACME manager or the tests' own servers started may be left.
// It returns the exit code: 1 with the leaked stacks on stderr.
func findLeaks() int {
	if err := goleak.Find(libraryGoroutines...); err != nil {
		fmt.Fprintln(os.Stderr, "goleak:", err)
		return 1
	}
	return 0
}
