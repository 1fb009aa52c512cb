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
	"net/netip"
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

	closed    atomic.Bool
	stop      chan struct{}
	done      chan struct{}
	closeOnce sync.Once
	closeErr  error
}

var _ Store = (*Bolt)(nil)

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

// AddAppPassword implements Store.
func (b *Bolt) AddAppPassword(ctx context.Context, req NewAppPassword) (AppPassword, Secret, error) {
	if err := b.usable(ctx); err != nil {
		return AppPassword{}, Secret{}, err
	}
	now := b.now()
	scope, err := checkAppRequest(req, now)
	if err != nil {
		return AppPassword{}, Secret{}, err
	}
	canonical, secret := newSecret()
	digest := b.keys.digest(canonical)
	for range 3 {
		// The SCRAM keys (a PBKDF2) are derived before the write
		// transaction, which is then held for lookups and puts only.
		id := newID()
		sealed, err := b.keys.scramKeys(id, secret.Reveal(), b.opts.SCRAMIterations)
		if err != nil {
			return AppPassword{}, Secret{}, err
		}
		r := &record{
			Kind: KindAppPassword, ID: id, User: req.User, Label: req.Label,
			Created: now, Expires: storedTime(req.Expires), Scope: scope,
			Key: digest, SCRAM: &sealed,
		}
		err = b.update(func(tx *bolt.Tx) error { return insert(tx, r) })
		if errors.Is(err, errIDTaken) {
			continue
		}
		if err != nil {
			return AppPassword{}, Secret{}, err
		}
		return r.appPassword(), secret, nil
	}
	return AppPassword{}, Secret{}, errIDTaken
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

// VerifyAppPassword implements Store.
func (b *Bolt) VerifyAppPassword(ctx context.Context, a AppPasswordAttempt) (AppPassword, error) {
	if err := b.usable(ctx); err != nil {
		return AppPassword{}, err
	}
	canonical, ok := NormalizeAppPassword(a.Password)
	if !ok {
		return AppPassword{}, unknown(KindAppPassword)
	}
	r, err := b.byKey(KindAppPassword, b.keys.digest(canonical))
	switch {
	case err != nil:
		return AppPassword{}, err
	case r == nil:
		return AppPassword{}, unknown(KindAppPassword)
	}
	if err := r.check(a.User, a.Listener, b.now()); err != nil {
		return AppPassword{}, err
	}
	b.RecordUse(r.ID, a.Addr)
	return r.appPassword(), nil
}

// LookupSCRAM implements Store.
func (b *Bolt) LookupSCRAM(ctx context.Context, login, listener string) (SCRAMCredential, error) {
	if err := b.usable(ctx); err != nil {
		return SCRAMCredential{}, err
	}
	user, id, ok := SplitSCRAMLogin(login)
	if !ok {
		return SCRAMCredential{}, unknown(KindAppPassword)
	}
	var r *record
	err := b.view(func(tx *bolt.Tx) (err error) {
		r, err = getRecord(tx, []byte(id))
		return err
	})
	switch {
	case err != nil:
		return SCRAMCredential{}, err
	case r == nil || r.Kind != KindAppPassword:
		return SCRAMCredential{}, unknown(KindAppPassword)
	}
	if err := r.check(user, listener, b.now()); err != nil {
		return SCRAMCredential{}, err
	}
	if r.SCRAM == nil {
		return SCRAMCredential{}, unknown(KindAppPassword)
	}
	keys, err := b.keys.open(r.ID, *r.SCRAM)
	if err != nil {
		return SCRAMCredential{}, err
	}
	return SCRAMCredential{AppPassword: r.appPassword(), Keys: keys}, nil
}

// AddClientCert implements Store.
func (b *Bolt) AddClientCert(ctx context.Context, req NewClientCert) (ClientCert, error) {
	if err := b.usable(ctx); err != nil {
		return ClientCert{}, err
	}
	now := b.now()
	if err := checkCertRequest(req, now); err != nil {
		return ClientCert{}, err
	}
	fp := SPKIFingerprint(req.Certificate)
	for range 3 {
		r := &record{
			Kind: KindClientCert, ID: newID(), User: req.User, Label: req.Label,
			Created: now, Expires: storedTime(req.Expires), Key: fp[:],
			Subject: req.Certificate.Subject.String(), NotAfter: storedTime(req.Certificate.NotAfter),
		}
		err := b.update(func(tx *bolt.Tx) error { return insert(tx, r) })
		if errors.Is(err, errIDTaken) {
			continue
		}
		if err != nil {
			return ClientCert{}, err
		}
		return r.clientCert(), nil
	}
	return ClientCert{}, errIDTaken
}

// VerifyClientCert implements Store.
func (b *Bolt) VerifyClientCert(ctx context.Context, fp Fingerprint, addr netip.Addr) (ClientCert, error) {
	if err := b.usable(ctx); err != nil {
		return ClientCert{}, err
	}
	r, err := b.byKey(KindClientCert, fp[:])
	switch {
	case err != nil:
		return ClientCert{}, err
	case r == nil:
		return ClientCert{}, unknown(KindClientCert)
	}
	if err := r.check(r.User, "", b.now()); err != nil {
		return ClientCert{}, err
	}
	b.RecordUse(r.ID, addr)
	return r.clientCert(), nil
}

// RecordUse implements Store.
func (b *Bolt) RecordUse(id string, addr netip.Addr) {
	b.uses.record(id, use{At: b.now(), Addr: addr.Unmap()})
}

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

// ListAppPasswords implements Store.
func (b *Bolt) ListAppPasswords(ctx context.Context, user string) ([]AppPassword, error) {
	rs, err := b.live(ctx, KindAppPassword, user)
	if err != nil {
		return nil, err
	}
	ps := make([]AppPassword, len(rs))
	for i, r := range rs {
		ps[i] = r.appPassword()
	}
	return ps, nil
}

// ListClientCerts implements Store.
func (b *Bolt) ListClientCerts(ctx context.Context, user string) ([]ClientCert, error) {
	rs, err := b.live(ctx, KindClientCert, user)
	if err != nil {
		return nil, err
	}
	cs := make([]ClientCert, len(rs))
	for i, r := range rs {
		cs[i] = r.clientCert()
	}
	return cs, nil
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
