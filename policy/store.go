package policy

import (
	"context"
	"time"
)

// Store keeps the counters a Guard decides with. MemoryStore is the
// single-node store; a shared store for a cluster implements the same
// methods, and the Guard's rules stay the same. Methods may be called
// concurrently.
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
//
// What a store keeps must not be floodable by what an attacker controls
// (its own account's successes from many networks, failures from many
// networks at many users):
//   - Only Commit creates a failure counter. Take reads the counters and
//     creates none, so an attempt that succeeds or is refunded leaves
//     nothing behind.
//   - Pending attempts are counted apart from failures, one count per key
//     with an attempt in flight, dropped when it returns to zero: as many
//     as the attempts in flight, never more.
//   - A user's known devices are capped (MarkKnown replaces that user's
//     oldest), so one account cannot push out other users' devices.
//   - A store that drops failure counters to stay bounded drops first
//     those whose window has passed, then those that cost the fewest
//     failures to make (see MemoryStore).
//
// A Redis store maps it so: Take is one Lua script that reads every key's
// failure counter and pending count and, when no limit is reached,
// increments the pending counts (INCR "pend:"+Key.String(), with an expiry
// longer than any attempt lasts, so a node that dies mid-attempt does not
// hold a budget for ever); Commit decrements the pending count (DEL at
// zero) and increments the failure counter (INCR, with PEXPIRE window when
// it opens); Refund decrements; Reset is DEL; a user's known devices are
// one sorted set scored by last success (ZADD, ZREMRANGEBYRANK down to the
// cap, EXPIRE known_device_for). Its failure counters then leave with
// their window; a maxmemory that makes Redis evict would bypass these
// rules, so it must be sized not to.
type Store interface {
	// Take holds one pending attempt for every key, unless some key's
	// failures have reached its limit (limits[i] > 0 and failures >=
	// limits[i]): then nothing is held and the index of the first such key
	// is returned; or unless failures plus pending attempts reach a limit:
	// then nothing is held and TakeBusy is returned. It returns TakeHeld
	// when the attempt was held. Either way counts[i] is set to the
	// failures of keys[i], plus one when held (the count a failure of this
	// attempt makes). Check and hold are one atomic step. Take creates no
	// failure counter; exactly one Commit or Refund must follow a hold.
	Take(ctx context.Context, keys []Key, limits []int, window time.Duration, now time.Time, counts []int) (spent int, err error)
	// Commit turns one pending attempt of every key into a failure,
	// creating the key's counter if it has none.
	Commit(ctx context.Context, keys []Key, window time.Duration, now time.Time) error
	// Refund gives back one pending attempt of every key.
	Refund(ctx context.Context, keys []Key) error
	// Reset forgets the failures of keys; attempts pending on them keep
	// their hold.
	Reset(ctx context.Context, keys []Key) error
	// Known reports whether device (a KeyDevice) had a success within ttl
	// before now.
	Known(ctx context.Context, device Key, ttl time.Duration, now time.Time) (bool, error)
	// MarkKnown records a success of device at now. A store keeps a
	// bounded number of devices per user (MemoryStore:
	// MaxDevicesPerUser): a new one replaces that user's device whose
	// last success is oldest.
	MarkKnown(ctx context.Context, device Key, now time.Time) error
}

// What Take returns besides a key index.
const (
	TakeHeld = -1 // the attempt is held as pending on every key
	TakeBusy = -2 // no budget is spent, but pending attempts fill one: wait and try again
)
