package oauth

// The issuer's signing keys (its JWKS, RFC 7517) are cached here rather
// than in go-oidc's RemoteKeySet, which fetches the key set again for every
// token it cannot verify: each forged token would cost one request to the
// identity provider, with no floor between them. Here a fetch happens only
// for a key ID not in the cache (a rotation), at most once per
// KeyRefreshInterval, and when the cached set is older than MaxKeyAge (so a
// key the provider withdrew stops working); a bad signature under a known
// key ID never causes a fetch.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	jose "github.com/go-jose/go-jose/v4"
)

// Defaults for the key cache.
const (
	// DefaultKeyRefreshInterval is the least time between two fetches of
	// the key set.
	DefaultKeyRefreshInterval = 30 * time.Second
	// DefaultMaxKeyAge is how long a fetched key set is used before it is
	// fetched again (if that fetch fails, the old set stays in use).
	DefaultMaxKeyAge = time.Hour
)

// errRefreshTooSoon: the set was fetched less than KeyRefreshInterval ago.
var errRefreshTooSoon = errors.New("key set fetched moments ago")

type keySet struct {
	url        string
	fetch      func(ctx context.Context) ([]jose.JSONWebKey, error)
	now        func() time.Time
	minRefresh time.Duration
	maxAge     time.Duration

	mu        sync.Mutex
	keys      []jose.JSONWebKey
	fetchedOK time.Time // when keys were fetched
	attempted time.Time // the last fetch, good or not
	inflight  *keyFetch
}

// keyFetch is one fetch that several logins may wait for.
type keyFetch struct {
	done chan struct{}
	err  error
}

// verify returns jws's payload if one of the issuer's keys verifies it.
func (k *keySet) verify(ctx context.Context, jws *jose.JSONWebSignature) ([]byte, error) {
	h := jws.Signatures[0].Header
	kid, alg := h.KeyID, h.Algorithm

	keys, fetchedOK := k.snapshot()
	if k.now().Sub(fetchedOK) > k.maxAge {
		// Old keys: fetch anew for the next login, verify with these.
		_, _ = k.start(ctx)
	}
	payload, known := tryKeys(jws, keys, kid, alg)
	if payload != nil {
		return payload, nil
	}
	if known && kid != "" {
		return nil, fmt.Errorf("%w: key %q did not verify it", ErrTokenSignature, kid)
	}
	// A key ID the cache does not hold: perhaps the issuer rotated.
	switch err := k.refresh(ctx); {
	case errors.Is(err, errRefreshTooSoon):
		return nil, fmt.Errorf("%w: the issuer publishes no key that verifies it", ErrTokenSignature)
	case err != nil:
		return nil, err
	}
	keys, _ = k.snapshot()
	if payload, _ := tryKeys(jws, keys, kid, alg); payload != nil {
		return payload, nil
	}
	return nil, fmt.Errorf("%w: the issuer publishes no key that verifies it", ErrTokenSignature)
}

// tryKeys verifies jws with each key that may have signed it: the one of
// its key ID (any, if it names none) whose algorithm, if stated, is alg.
// known reports whether there was such a key.
func tryKeys(jws *jose.JSONWebSignature, keys []jose.JSONWebKey, kid, alg string) (payload []byte, known bool) {
	for i := range keys {
		key := &keys[i]
		if kid != "" && key.KeyID != kid || key.Algorithm != "" && key.Algorithm != alg {
			continue
		}
		known = true
		if p, err := jws.Verify(key.Key); err == nil {
			return p, true
		}
	}
	return nil, known
}

func (k *keySet) snapshot() ([]jose.JSONWebKey, time.Time) {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.keys, k.fetchedOK
}

// refresh fetches the key set unless it was fetched less than minRefresh
// ago (errRefreshTooSoon) and waits for the fetch.
func (k *keySet) refresh(ctx context.Context) error {
	f, err := k.start(ctx)
	if err != nil {
		return err
	}
	select {
	case <-f.done:
		return f.err
	case <-ctx.Done():
		return fmt.Errorf("%w: waiting for the issuer's keys: %w", ErrUnavailable, ctx.Err())
	}
}

// start begins a fetch of the key set, or returns the one under way;
// concurrent logins share it. It returns errRefreshTooSoon when the last
// fetch began less than minRefresh ago.
func (k *keySet) start(ctx context.Context) (*keyFetch, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.inflight != nil {
		return k.inflight, nil
	}
	now := k.now()
	if !k.attempted.IsZero() && now.Sub(k.attempted) < k.minRefresh {
		return nil, errRefreshTooSoon
	}
	k.attempted = now
	f := &keyFetch{done: make(chan struct{})}
	k.inflight = f
	go k.fetchKeys(context.WithoutCancel(ctx), f)
	return f, nil
}

// fetchKeys runs one fetch for refresh; it is a named function so that a
// goroutine dump says what it waits for. Its context has no cancel (other
// logins may wait for it), only the request timeout of fetch.
func (k *keySet) fetchKeys(ctx context.Context, f *keyFetch) {
	keys, err := k.fetch(ctx)
	k.mu.Lock()
	defer k.mu.Unlock()
	if err == nil {
		k.keys = keys
		k.fetchedOK = k.now()
	}
	k.inflight = nil
	f.err = err
	close(f.done)
}

// parseKeySet reads a JWKS and keeps the public signing keys this package
// can use: RSA, EC and Ed25519 keys not marked for encryption. Keys of
// other types (go-jose's ErrUnsupportedKeyType, e.g. an RSA key under 2048
// bits) or with other algorithms are skipped, as RFC 7517 section 5 asks;
// symmetric ("oct") keys are always skipped, since HMAC tokens are never
// accepted.
func parseKeySet(body []byte) ([]jose.JSONWebKey, error) {
	var raw struct {
		Keys []json.RawMessage `json:"keys"`
	}
	if err := json.Unmarshal(body, &raw); err != nil {
		return nil, fmt.Errorf("key set is not a JWKS: %w", err)
	}
	var keys []jose.JSONWebKey
	for _, r := range raw.Keys {
		var meta struct {
			Kty string `json:"kty"`
			Alg string `json:"alg"`
			Use string `json:"use"`
		}
		if err := json.Unmarshal(r, &meta); err != nil {
			return nil, fmt.Errorf("key set entry is not an object: %w", err)
		}
		if meta.Kty == "oct" || meta.Use == "enc" || meta.Alg != "" && !isSigningAlgorithm(meta.Alg) {
			continue
		}
		var key jose.JSONWebKey
		if err := json.Unmarshal(r, &key); err != nil {
			if errors.Is(err, jose.ErrUnsupportedKeyType) {
				continue
			}
			return nil, fmt.Errorf("key set entry: %w", err)
		}
		if !key.IsPublic() {
			key = key.Public()
		}
		if !key.Valid() {
			continue
		}
		keys = append(keys, key)
	}
	if len(keys) == 0 {
		return nil, errors.New("key set has no usable signing key")
	}
	return keys, nil
}
