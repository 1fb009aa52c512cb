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
// again. An attempt is counted when it is let through (Take), before the
// upstream answers, so that parallel attempts cannot overshoot a budget;
// an attempt that turned out not to be a failure is given back (Refund).
type Store interface {
	// Take counts one attempt for every key, unless some key's count has
	// reached its limit (limits[i] > 0 and counts[i] >= limits[i]): then
	// nothing is counted and the index of the first such key is returned.
	// It returns -1 when the attempt was counted. Either way counts[i] is
	// set to the count of keys[i] (after counting, when counted). Check and
	// count are one atomic step.
	Take(ctx context.Context, keys []Key, limits []int, window time.Duration, now time.Time, counts []int) (spent int, err error)
	// Refund gives back one attempt counted by Take for every key.
	Refund(ctx context.Context, keys []Key) error
	// Reset forgets the failures of keys.
	Reset(ctx context.Context, keys []Key) error
	// Known reports whether device (a KeyDevice) had a success within ttl
	// before now.
	Known(ctx context.Context, device Key, ttl time.Duration, now time.Time) (bool, error)
	// MarkKnown records a success of device at now.
	MarkKnown(ctx context.Context, device Key, now time.Time) error
}
