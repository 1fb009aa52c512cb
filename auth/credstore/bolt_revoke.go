package credstore

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Revocation in Bolt: a revoked credential becomes a tombstone (secret
// material deleted, key index kept), purged after Options.TombstoneFor.

// Revoke implements Store.
func (b *Bolt) Revoke(ctx context.Context, id string) (Revoked, error) {
	if err := b.usable(ctx); err != nil {
		return Revoked{}, err
	}
	return b.revoke(func(tx *bolt.Tx) ([]byte, error) {
		if tx.Bucket([]byte(bucketCreds)).Get([]byte(id)) == nil {
			return nil, fmt.Errorf("%w: ID %q", ErrNotFound, id)
		}
		return []byte(id), nil
	})
}

// RevokeLabel implements Store.
func (b *Bolt) RevokeLabel(ctx context.Context, kind Kind, user, label string) (Revoked, error) {
	if err := b.usable(ctx); err != nil {
		return Revoked{}, err
	}
	return b.revoke(func(tx *bolt.Tx) ([]byte, error) {
		id := tx.Bucket([]byte(bucketLabels)).Get(labelIndex(kind, user, label))
		if id == nil {
			return nil, fmt.Errorf("%w: %s of %q with label %q", ErrNotFound, kind, user, label)
		}
		return bytes.Clone(id), nil
	})
}

// revoke turns the record that find names into a tombstone: secret
// material deleted, label freed, key index kept (so a lost phone that
// keeps trying is told apart from a stranger). Then OnRevoke is told.
func (b *Bolt) revoke(find func(*bolt.Tx) ([]byte, error)) (Revoked, error) {
	var rv Revoked
	err := b.update(func(tx *bolt.Tx) error {
		id, err := find(tx)
		if err != nil {
			return err
		}
		r, err := getRecord(tx, id)
		if err != nil {
			return err
		}
		if !r.Revoked.IsZero() {
			return fmt.Errorf("%w: %s %s of %q, label %q, at %s", ErrRevoked, r.Kind, r.ID, r.User, r.Label, r.Revoked.Format(time.RFC3339))
		}
		r.Revoked, r.SCRAM = b.now(), nil
		if err := putRecord(tx, r); err != nil {
			return err
		}
		if err := tx.Bucket([]byte(bucketLabels)).Delete(labelIndex(r.Kind, r.User, r.Label)); err != nil {
			return err
		}
		rv = r.revoked()
		return nil
	})
	if err != nil {
		return Revoked{}, err
	}
	b.uses.forget(rv.ID)
	b.opts.OnRevoke(rv)
	return rv, nil
}

// purgeTombstones deletes tombstones older than Options.TombstoneFor.
func (b *Bolt) purgeTombstones() error {
	cutoff := b.now().Add(-b.opts.TombstoneFor)
	return b.update(func(tx *bolt.Tx) error {
		var old []*record
		err := tx.Bucket([]byte(bucketCreds)).ForEach(func(_, v []byte) error {
			r := new(record)
			if err := json.Unmarshal(v, r); err != nil {
				return err
			}
			if !r.Revoked.IsZero() && !r.Revoked.After(cutoff) {
				old = append(old, r)
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("credstore: purging tombstones: %w", err)
		}
		keys := tx.Bucket([]byte(bucketKeys))
		for _, r := range old {
			if err := tx.Bucket([]byte(bucketCreds)).Delete([]byte(r.ID)); err != nil {
				return err
			}
			ki := keyIndex(r.Kind, r.Key)
			if bytes.Equal(keys.Get(ki), []byte(r.ID)) {
				if err := keys.Delete(ki); err != nil {
					return err
				}
			}
		}
		return nil
	})
}
