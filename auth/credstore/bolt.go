package credstore

import (
	"bytes"
	"cmp"
	"context"
	"crypto/hmac"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

// The database layout (schema version 1): four buckets.
//
//	meta    "version" -> "1"; "check" -> HMAC of a label under the server key
//	creds   ID -> record as JSON (live credentials and tombstones)
//	keys    kind byte + digest or SPKI fingerprint -> ID (live and tombstoned)
//	labels  kind byte + user + NUL + label -> ID (live only)
const (
	bucketMeta   = "meta"
	bucketCreds  = "creds"
	bucketKeys   = "keys"
	bucketLabels = "labels"

	metaVersion = "version"
	metaCheck   = "check"
	version1    = "1"
)

// errIDTaken: a freshly drawn ID is in use (one chance in 2^40 per
// credential); the add is retried with another.
var errIDTaken = errors.New("credstore: ID taken")

// Bolt is the Store kept in one bbolt file, for a single node. Only one
// process can hold it open (bbolt's exclusive lock): the one that serves
// logins. Open it with OpenBolt.
type Bolt struct {
	db   *bolt.DB
	keys *keyring
	opts Options
	uses *pendingUses
	// drawID draws credential IDs; nil: newID. Tests set it to make IDs
	// collide.
	drawID func() string

	closed    atomic.Bool
	stop      chan struct{}
	done      chan struct{}
	closeOnce sync.Once
	closeErr  error
}

var _ Store = (*Bolt)(nil)

// newID draws a credential ID.
func (b *Bolt) newID() string {
	if b.drawID != nil {
		return b.drawID()
	}
	return newID()
}

// OpenBolt opens the credential store at path, creating it, its directory
// (mode 0700) and its key file (mode 0600, see Options.KeyFile) on first
// use. It refuses, with ErrInsecureFile, a database or key file that its
// group or others may read, or a directory they may write to; with
// ErrLocked, a database another process holds open (after
// Options.LockTimeout); with ErrWrongKey, a key file that is not the
// database's. Close it when done: that writes the last uses.
func OpenBolt(path string, opts Options) (*Bolt, error) {
	if path == "" {
		return nil, fmt.Errorf("%w: no database path", ErrInvalid)
	}
	opts = opts.withDefaults(path)
	if opts.LockTimeout < 0 || opts.FlushEvery < 0 || opts.TombstoneFor < 0 || opts.MaxPendingUses < 0 {
		return nil, fmt.Errorf("%w: negative option", ErrInvalid)
	}
	if opts.SCRAMIterations < DefaultSCRAMIterations {
		return nil, fmt.Errorf("%w: SCRAM iteration count %d is below RFC 7677's minimum %d", ErrInvalid, opts.SCRAMIterations, DefaultSCRAMIterations)
	}
	for _, dir := range []string{filepath.Dir(path), filepath.Dir(opts.KeyFile)} {
		if err := ensureDir(dir); err != nil {
			return nil, err
		}
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{
		Timeout: opts.LockTimeout,
		OpenFile: func(name string, flag int, _ os.FileMode) (*os.File, error) {
			return openPrivate(name, flag, "database")
		},
	})
	switch {
	case errors.Is(err, berrors.ErrTimeout):
		return nil, fmt.Errorf("credstore: %s: %w", path, ErrLocked)
	case err != nil:
		return nil, fmt.Errorf("credstore: open %s: %w", path, err)
	}
	b, err := initBolt(db, path, opts)
	if err != nil {
		db.Close()
		return nil, err
	}
	go b.flushLoop()
	return b, nil
}

// initBolt creates the buckets, loads (or with a new database creates) the
// server key and checks that it is the database's.
func initBolt(db *bolt.DB, path string, opts Options) (*Bolt, error) {
	var check []byte
	err := db.Update(func(tx *bolt.Tx) error {
		for _, name := range []string{bucketMeta, bucketCreds, bucketKeys, bucketLabels} {
			if _, err := tx.CreateBucketIfNotExists([]byte(name)); err != nil {
				return err
			}
		}
		meta := tx.Bucket([]byte(bucketMeta))
		if v := meta.Get([]byte(metaVersion)); v != nil && string(v) != version1 {
			return fmt.Errorf("credstore: %s has schema version %q; this imapgate knows %q", path, v, version1)
		}
		check = bytes.Clone(meta.Get([]byte(metaCheck)))
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("credstore: %s: %w", path, err)
	}
	key, _, err := loadServerKey(opts.KeyFile, check == nil)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil, fmt.Errorf("%w: %s holds credentials but its key file %s is missing: restore the key file (without it no app password can be checked), or move the database away to start afresh", ErrWrongKey, path, opts.KeyFile)
	case err != nil:
		return nil, err
	}
	keys := newKeyring(key)
	if check != nil && !hmac.Equal(check, keys.check) {
		return nil, fmt.Errorf("%w: %s is not the key file of %s", ErrWrongKey, opts.KeyFile, path)
	}
	if check == nil {
		err := db.Update(func(tx *bolt.Tx) error {
			meta := tx.Bucket([]byte(bucketMeta))
			if err := meta.Put([]byte(metaVersion), []byte(version1)); err != nil {
				return err
			}
			return meta.Put([]byte(metaCheck), keys.check)
		})
		if err != nil {
			return nil, fmt.Errorf("credstore: %s: %w", path, err)
		}
	}
	b := &Bolt{
		db: db, keys: keys, opts: opts,
		uses: newPendingUses(opts.MaxPendingUses),
		stop: make(chan struct{}), done: make(chan struct{}),
	}
	if err := b.purgeTombstones(); err != nil {
		return nil, err
	}
	return b, nil
}

func (b *Bolt) now() time.Time { return storedTime(b.opts.Now()) }

// storedTime is t as it reads back from storage: UTC, no monotonic clock
// reading; the zero time stays zero.
func storedTime(t time.Time) time.Time {
	if t.IsZero() {
		return time.Time{}
	}
	return t.UTC().Round(0)
}

// usable returns ErrClosed after Close, or ctx's error.
func (b *Bolt) usable(ctx context.Context) error {
	if b.closed.Load() {
		return ErrClosed
	}
	return ctx.Err()
}

func (b *Bolt) view(fn func(*bolt.Tx) error) error   { return b.txErr(b.db.View(fn)) }
func (b *Bolt) update(fn func(*bolt.Tx) error) error { return b.txErr(b.db.Update(fn)) }

func (b *Bolt) txErr(err error) error {
	if errors.Is(err, berrors.ErrDatabaseNotOpen) {
		return ErrClosed
	}
	return err
}

func keyIndex(k Kind, key []byte) []byte { return append([]byte{byte(k)}, key...) }

func labelIndex(k Kind, user, label string) []byte {
	b := append([]byte{byte(k)}, user...)
	b = append(b, 0)
	return append(b, label...)
}

// userPrefix is the start of every labelIndex of user's credentials of k.
func userPrefix(k Kind, user string) []byte { return append(append([]byte{byte(k)}, user...), 0) }

func getRecord(tx *bolt.Tx, id []byte) (*record, error) {
	v := tx.Bucket([]byte(bucketCreds)).Get(id)
	if v == nil {
		return nil, nil
	}
	r := new(record)
	if err := json.Unmarshal(v, r); err != nil {
		return nil, fmt.Errorf("credstore: credential %s: %w", id, err)
	}
	return r, nil
}

func putRecord(tx *bolt.Tx, r *record) error {
	v, err := json.Marshal(r)
	if err != nil {
		return err
	}
	return tx.Bucket([]byte(bucketCreds)).Put([]byte(r.ID), v)
}

// byKey finds the record, live or tombstone, indexed by kind and key.
func (b *Bolt) byKey(k Kind, key []byte) (r *record, err error) {
	err = b.view(func(tx *bolt.Tx) error {
		id := tx.Bucket([]byte(bucketKeys)).Get(keyIndex(k, key))
		if id == nil {
			return nil
		}
		r, err = getRecord(tx, id)
		return err
	})
	return r, err
}

// insert puts a new record and its indexes, after checking that its ID,
// its key and its label are free. A tombstone with the same key (a client
// certificate registered again) is replaced.
func insert(tx *bolt.Tx, r *record) error {
	creds, keys, labels := tx.Bucket([]byte(bucketCreds)), tx.Bucket([]byte(bucketKeys)), tx.Bucket([]byte(bucketLabels))
	if creds.Get([]byte(r.ID)) != nil {
		return errIDTaken
	}
	li := labelIndex(r.Kind, r.User, r.Label)
	if labels.Get(li) != nil {
		return fmt.Errorf("%w: %s %q of %q exists; revoke it first or choose another label", ErrLabelTaken, r.Kind, r.Label, r.User)
	}
	ki := keyIndex(r.Kind, r.Key)
	if old := keys.Get(ki); old != nil {
		o, err := getRecord(tx, old)
		if err != nil {
			return err
		}
		switch {
		case o == nil:
		case o.Kind == KindClientCert && !o.Revoked.IsZero():
			if err := creds.Delete(old); err != nil {
				return err
			}
		case o.Kind == KindClientCert:
			return fmt.Errorf("%w: as %s of %q, label %q", ErrCertExists, o.ID, o.User, o.Label)
		default:
			// Two app passwords with one digest: 140 random bits
			// collided, or the random source is broken.
			return errors.New("credstore: app password digest collision: the random source is broken")
		}
	}
	if err := putRecord(tx, r); err != nil {
		return err
	}
	if err := keys.Put(ki, []byte(r.ID)); err != nil {
		return err
	}
	return labels.Put(li, []byte(r.ID))
}

// live returns the live records of kind, of user or everyone's when user
// is "", ordered by user and creation, with pending uses applied.
func (b *Bolt) live(ctx context.Context, kind Kind, user string) ([]*record, error) {
	if err := b.usable(ctx); err != nil {
		return nil, err
	}
	var rs []*record
	err := b.view(func(tx *bolt.Tx) error {
		// The label index holds exactly the live credentials.
		prefix := []byte{byte(kind)}
		if user != "" {
			prefix = userPrefix(kind, user)
		}
		c := tx.Bucket([]byte(bucketLabels)).Cursor()
		for k, id := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, id = c.Next() {
			r, err := getRecord(tx, id)
			if err != nil {
				return err
			}
			if r != nil {
				rs = append(rs, r)
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	for _, r := range rs {
		if u, ok := b.uses.get(r.ID); ok && u.At.After(r.LastUsed) {
			r.LastUsed, r.LastAddr = u.At, u.Addr
		}
	}
	slices.SortFunc(rs, func(x, y *record) int {
		return cmp.Or(cmp.Compare(x.User, y.User), x.Created.Compare(y.Created), cmp.Compare(x.ID, y.ID))
	})
	return rs, nil
}

// Close implements Store.
func (b *Bolt) Close() error {
	b.closeOnce.Do(func() {
		b.closed.Store(true)
		close(b.stop)
		<-b.done
		b.closeErr = errors.Join(b.flush(), b.db.Close())
	})
	return b.closeErr
}
