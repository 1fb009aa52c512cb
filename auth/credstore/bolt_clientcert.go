package credstore

import (
	"context"
	"errors"
	"net/netip"

	bolt "go.etcd.io/bbolt"
)

// Bolt's client certificates: registering one by its SPKI fingerprint,
// checking one at the handshake, and listing them.

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
	c, err := b.LookupClientCert(ctx, fp)
	if err != nil {
		return ClientCert{}, err
	}
	b.RecordUse(c.ID, addr)
	return c, nil
}

// LookupClientCert implements Store.
func (b *Bolt) LookupClientCert(ctx context.Context, fp Fingerprint) (ClientCert, error) {
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
	return r.clientCert(), nil
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
