package policy

import (
	"context"
	"time"
)

// Store keeps the counters a Guard decides with. MemoryStore is the
// single-node store; a shared store for a cluster (Redis: Take as one Lua
// script over the keys, Refund as DECR, known devices as keys with a TTL)
// implements the same methods, and the Guard's rules stay the same. Methods
// may be called concurrently.
//
// A counter counts failures in a window: the window opens at the first
// failure of its key and lasts window; once it has passed the key counts 0
// again. An attempt let through (Take) is held as pending until the
// upstream answers: a failure commits it (Commit), anything else gives it
// back (Refund). Failures plus pending attempts never exceed a limit, so
// parallel attempts cannot overshoot a budget; but only failures spend it:
// when pending attempts alone fill it, Take answers TakeBusy and the caller
// waits for them to settle (a login storm from one address, all with the
// right password, must not be refused).
type Store interface {
	// Take holds one pending attempt for every key, unless some key's
	// failures have reached its limit (limits[i] > 0 and failures >=
	// limits[i]): then nothing is held and the index of the first such key
	// is returned; or unless failures plus pending attempts reach a limit:
	// then nothing is held and TakeBusy is returned. It returns TakeHeld
	// when the attempt was held. Either way counts[i] is set to the
	// failures of keys[i], plus one when held (the count a failure of this
	// attempt makes). Check and hold are one atomic step.
	Take(ctx context.Context, keys []Key, limits []int, window time.Duration, now time.Time, counts []int) (spent int, err error)
	// Commit turns one pending attempt of every key into a failure.
	Commit(ctx context.Context, keys []Key, window time.Duration, now time.Time) error
	// Refund gives back one pending attempt of every key.
	Refund(ctx context.Context, keys []Key) error
	// Reset forgets the failures of keys.
	Reset(ctx context.Context, keys []Key) error
	// Known reports whether device (a KeyDevice) had a success within ttl
	// before now.
	Known(ctx context.Context, device Key, ttl time.Duration, now time.Time) (bool, error)
	// MarkKnown records a success of device at now.
	MarkKnown(ctx context.Context, device Key, now time.Time) error
}

// What Take returns besides a key index.
const (
	TakeHeld = -1 // the attempt is held as pending on every key
	TakeBusy = -2 // no budget is spent, but pending attempts fill one: wait and try again
)
