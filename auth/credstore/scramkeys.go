package credstore

import (
	"bytes"
	"context"
	"errors"
	"net/netip"

	"github.com/imapgate/imapgate/auth"
	"github.com/imapgate/imapgate/auth/scram"
)

// SCRAMKeys returns store as the auth package's SCRAMKeys, for the
// SCRAM-SHA-256 mechanisms: the keys of app passwords' login names, with
// their refusals (unknown, revoked, expired, out of scope) as
// *auth.Refusal values named by Reason.
func SCRAMKeys(store Store) auth.SCRAMKeys { return scramKeys{store} }

type scramKeys struct{ store Store }

func (k scramKeys) LookupSCRAM(ctx context.Context, login, listener string) (scram.StoredCredentials, string, auth.Credential, error) {
	c, err := k.store.LookupSCRAM(ctx, login, listener)
	var ce *CredentialError
	switch {
	case errors.As(err, &ce):
		r := &auth.Refusal{Reason: ce.Reason(), User: ce.User, Err: err}
		if errors.Is(err, ErrUnknown) {
			r.Reason = "" // the mechanism's word: scram_unknown_user
		}
		if ce.ID != "" {
			r.Credential = auth.Credential{Kind: auth.CredentialAppPassword, ID: ce.ID, Label: ce.Label}
		}
		return scram.StoredCredentials{}, "", auth.Credential{}, r
	case err != nil:
		return scram.StoredCredentials{}, "", auth.Credential{}, err
	}
	p := c.AppPassword
	return c.Keys, p.User, auth.Credential{Kind: auth.CredentialAppPassword, ID: p.ID, Label: p.Label}, nil
}

func (k scramKeys) RecordUse(id string, addr netip.Addr) { k.store.RecordUse(id, addr) }

// SCRAMOptions are the auth/scram server options that make unknown login
// names look like the store's: its iteration count, and a key derived from
// the server key for their made-up salts, so that an unknown name's salt
// stays the same across restarts (and on every node that shares the key),
// as a real one's does.
func (b *Bolt) SCRAMOptions() scram.Options {
	return scram.Options{Key: bytes.Clone(b.keys.fakeSalt), UnknownIterations: b.opts.SCRAMIterations}
}
