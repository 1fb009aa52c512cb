package credstore

import (
	"context"
	"errors"

	bolt "go.etcd.io/bbolt"
)

// Bolt's app passwords: adding one (its digest and sealed SCRAM keys),
// checking one at login, its SCRAM identity, and listing them.

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
	// The SCRAM keys (a PBKDF2) are derived once, before the write
	// transaction, which is then held for lookups and puts only; an ID
	// that is taken costs a new seal.
	keys, err := b.keys.scramKeys(secret.Reveal(), b.opts.SCRAMIterations)
	if err != nil {
		return AppPassword{}, Secret{}, err
	}
	for range 3 {
		id := b.newID()
		sealed, err := b.keys.seal(id, keys)
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
