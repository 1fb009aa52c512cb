package credstore

import (
	"context"
	"fmt"
	"net/netip"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Last uses in Bolt: RecordUse keeps them in memory, flush writes them
// in one transaction, and flushLoop flushes in the background (and
// purges old tombstones) until Close.

// RecordUse implements Store.
func (b *Bolt) RecordUse(id string, addr netip.Addr) {
	b.uses.record(id, use{At: b.now(), Addr: addr.Unmap()})
}

// Flush implements Store.
func (b *Bolt) Flush(ctx context.Context) error {
	if err := b.usable(ctx); err != nil {
		return err
	}
	return b.flush()
}

// flush writes the pending uses in one transaction (one fsync), skipping
// credentials revoked meanwhile. On failure they are kept for the next.
func (b *Bolt) flush() error {
	m := b.uses.take()
	if m == nil {
		return nil
	}
	err := b.update(func(tx *bolt.Tx) error {
		for id, u := range m {
			r, err := getRecord(tx, []byte(id))
			if err != nil {
				return err
			}
			if r == nil || !r.Revoked.IsZero() || !u.At.After(r.LastUsed) {
				continue
			}
			r.LastUsed, r.LastAddr = u.At, u.Addr
			if err := putRecord(tx, r); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		b.uses.putBack(m)
		return fmt.Errorf("credstore: writing last uses: %w", err)
	}
	return nil
}

// flushLoop writes the pending uses every FlushEvery, and at once when
// they fill up; and purges old tombstones every hour. It ends with Close.
func (b *Bolt) flushLoop() {
	defer close(b.done)
	flush := time.NewTicker(b.opts.FlushEvery)
	defer flush.Stop()
	purge := time.NewTicker(tombstonePurgeEvery)
	defer purge.Stop()
	for {
		select {
		case <-b.stop:
			return
		case <-purge.C:
			if err := b.purgeTombstones(); err != nil {
				b.opts.Logger.Error("credstore: purging tombstones", "err", err)
			}
			continue
		case <-flush.C:
		case <-b.uses.full:
		}
		if err := b.flush(); err != nil {
			b.opts.Logger.Error("credstore: writing last uses", "err", err)
		}
	}
}
