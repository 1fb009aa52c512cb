package policy

import (
	"context"
	"time"
)

// Store keeps the counters a Guard decides with. MemoryStore is the
// single-node store; a shared store for a cluster (Redis: one INCR and
// PEXPIRE per key, a SET with a TTL per known device) implements the same
// five methods, and the Guard's rules stay the same. Methods may be called
// concurrently.
type Store interface {
	// Failures fills counts[i] with the failures of keys[i] in its current
	// window: a window opens at a key's first failure and lasts window;
	// once it has passed the key counts 0 again.
	Failures(ctx context.Context, keys []Key, window time.Duration, now time.Time, counts []int) error
	// AddFailure counts one failure for each key, opening a window of
	// length window where none is open, and returns each key's count
	// after the addition in counts.
	AddFailure(ctx context.Context, keys []Key, window time.Duration, now time.Time, counts []int) error
	// Reset forgets the failures of keys.
	Reset(ctx context.Context, keys []Key) error
	// Known reports whether device (a KeyDevice) had a success within ttl
	// before now.
	Known(ctx context.Context, device Key, ttl time.Duration, now time.Time) (bool, error)
	// MarkKnown records a success of device at now.
	MarkKnown(ctx context.Context, device Key, now time.Time) error
}
