package oauth

import (
	"cmp"
	"container/list"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/go-jose/go-jose/v4/jwt"
)

// Defaults and bounds of Introspection.
const (
	// DefaultIntrospectionCacheTTL is how long an introspection answer is
	// reused: a token revoked at the provider still works for at most this
	// long.
	DefaultIntrospectionCacheTTL = time.Minute
	// MaxIntrospectionCacheTTL bounds CacheTTL.
	MaxIntrospectionCacheTTL = 5 * time.Minute
	// DefaultIntrospectionCacheSize is the number of answers kept; the
	// least recently used goes first.
	DefaultIntrospectionCacheSize = 10000
)

// Introspection configures RFC 7662 token introspection.
type Introspection struct {
	// Endpoint is the introspection URL. If empty, the discovery
	// document's introspection_endpoint (discovery fails, and is retried,
	// while it names none). It must be https, or http to a loopback
	// address.
	Endpoint string
	// ClientID and ClientSecret authenticate imapgate to the endpoint with
	// client_secret_basic (RFC 6749 section 2.3.1). Both required. The
	// secret is never logged. An answer without aud is accepted only when
	// ClientID is one of Config.Audiences (the provider then judged the
	// token for that audience); otherwise it is refused (token_audience).
	ClientID     string
	ClientSecret string
	// CheckJWT also introspects JWTs, so that a token revoked at the
	// provider is refused (token_not_active) within CacheTTL even though
	// its signature and exp still hold; it costs one request per token
	// per CacheTTL. If false, only opaque tokens are introspected.
	CheckJWT bool
	// CacheTTL is how long an answer is reused, never past the token's
	// exp. If zero, DefaultIntrospectionCacheTTL (1 minute); at most
	// MaxIntrospectionCacheTTL.
	CacheTTL time.Duration
	// CacheSize is how many answers are kept. If zero,
	// DefaultIntrospectionCacheSize (10,000).
	CacheSize int
}

// GoString hides the client secret from %#v.
func (c Introspection) GoString() string {
	return fmt.Sprintf("oauth.Introspection{Endpoint:%q ClientID:%q ClientSecret:(redacted) CheckJWT:%v CacheTTL:%v CacheSize:%d}",
		c.Endpoint, c.ClientID, c.CheckJWT, c.CacheTTL, c.CacheSize)
}

// String hides the client secret.
func (c Introspection) String() string { return c.GoString() }

// LogValue hides the client secret from log/slog.
func (c Introspection) LogValue() slog.Value { return slog.StringValue(c.GoString()) }

// MarshalJSON hides the client secret from encoding/json (and so from
// slog's JSON handler): everything else is written as it is.
func (c Introspection) MarshalJSON() ([]byte, error) {
	type shown Introspection // without this method
	s := shown(c)
	if s.ClientSecret != "" {
		s.ClientSecret = "(redacted)"
	}
	return json.Marshal(s)
}

type introspector struct {
	endpoint string // set by New, or by discovery before Ready
	id       string
	secret   string
	checkJWT bool
	ttl      time.Duration
	size     int

	mu       sync.Mutex
	lru      *list.List // of *cacheEntry, most recent first
	entries  map[[32]byte]*list.Element
	inflight map[[32]byte]*introspection
}

// introspectResult is the part of an RFC 7662 answer Validate uses.
type introspectResult struct {
	active bool
	claims map[string]json.RawMessage
}

type cacheEntry struct {
	key     [32]byte
	result  *introspectResult
	expires time.Time
}

// introspection is one request that several logins with the same token may
// wait for.
type introspection struct {
	done   chan struct{}
	result *introspectResult
	err    error
}

func newIntrospector(c Introspection) (*introspector, error) {
	if c.ClientID == "" || c.ClientSecret == "" {
		return nil, errors.New("oauth: introspection needs a client id and a client secret")
	}
	if c.Endpoint != "" {
		if err := checkURL("introspection endpoint", c.Endpoint); err != nil {
			return nil, fmt.Errorf("oauth: %w", err)
		}
	}
	ttl, err := duration("introspection cache TTL", c.CacheTTL, DefaultIntrospectionCacheTTL, MaxIntrospectionCacheTTL)
	if err != nil {
		return nil, err
	}
	if c.CacheSize < 0 {
		return nil, fmt.Errorf("oauth: negative introspection cache size %d", c.CacheSize)
	}
	size := c.CacheSize
	if size == 0 {
		size = DefaultIntrospectionCacheSize
	}
	return &introspector{
		endpoint: c.Endpoint,
		id:       c.ClientID,
		secret:   c.ClientSecret,
		checkJWT: c.CheckJWT,
		ttl:      ttl,
		size:     size,
		lru:      list.New(),
		entries:  make(map[[32]byte]*list.Element),
		inflight: make(map[[32]byte]*introspection),
	}, nil
}

// introspect returns the provider's answer for token, from the cache if it
// is younger than the TTL. The cache is keyed by the token's SHA-256, so it
// holds no token. Failures (ErrUnavailable) are not cached.
func (in *introspector) introspect(ctx context.Context, v *Validator, token string) (*introspectResult, error) {
	key := sha256.Sum256([]byte(token))
	now := v.now()
	in.mu.Lock()
	if el, ok := in.entries[key]; ok {
		e := el.Value.(*cacheEntry)
		if now.Before(e.expires) {
			in.lru.MoveToFront(el)
			in.mu.Unlock()
			return e.result, nil
		}
		in.lru.Remove(el)
		delete(in.entries, key)
	}
	call, waiting := in.inflight[key]
	if !waiting {
		call = &introspection{done: make(chan struct{})}
		in.inflight[key] = call
	}
	in.mu.Unlock()

	if !waiting {
		// Others wait for this answer: one client hanging up must not
		// fail their logins. v.timeout still bounds the request.
		call.result, call.err = in.request(context.WithoutCancel(ctx), v, token)
		in.mu.Lock()
		delete(in.inflight, key)
		if call.err == nil {
			in.store(key, call.result, now, v.skew)
		}
		in.mu.Unlock()
		close(call.done)
	}
	select {
	case <-call.done:
		return call.result, call.err
	case <-ctx.Done():
		return nil, fmt.Errorf("%w: waiting for introspection: %w", ErrUnavailable, ctx.Err())
	}
}

// store caches r until the TTL or the token's exp, whichever is first;
// in.mu is held.
func (in *introspector) store(key [32]byte, r *introspectResult, now time.Time, skew time.Duration) {
	expires := now.Add(in.ttl)
	if exp := r.exp(); !exp.IsZero() && exp.Add(skew).Before(expires) {
		expires = exp.Add(skew)
	}
	if !expires.After(now) {
		return
	}
	in.entries[key] = in.lru.PushFront(&cacheEntry{key: key, result: r, expires: expires})
	for in.lru.Len() > in.size {
		last := in.lru.Back()
		in.lru.Remove(last)
		delete(in.entries, last.Value.(*cacheEntry).key)
	}
}

// request asks the endpoint about token (RFC 7662 section 2.1): a form
// POST, authenticated with client_secret_basic. Any failure, a refusal of
// imapgate's own credentials included, is ErrUnavailable: the client is
// not at fault.
func (in *introspector) request(ctx context.Context, v *Validator, token string) (*introspectResult, error) {
	ctx, cancel := context.WithTimeout(ctx, v.timeout)
	defer cancel()
	form := url.Values{"token": {token}, "token_type_hint": {"access_token"}}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, in.endpoint, strings.NewReader(form.Encode()))
	if err != nil {
		return nil, fmt.Errorf("%w: introspection: %w", ErrUnavailable, err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Accept", "application/json")
	// RFC 6749 section 2.3.1: form-urlencode both before Basic encoding.
	req.SetBasicAuth(url.QueryEscape(in.id), url.QueryEscape(in.secret))
	resp, err := v.client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%w: introspection: %w", ErrUnavailable, err)
	}
	body, err := readBody(resp)
	if err != nil {
		return nil, fmt.Errorf("%w: introspection: %w", ErrUnavailable, err)
	}
	switch {
	case resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden:
		return nil, fmt.Errorf("%w: introspection endpoint %s refused imapgate's client credentials (%s)", ErrUnavailable, in.endpoint, resp.Status)
	case resp.StatusCode != http.StatusOK:
		return nil, fmt.Errorf("%w: introspection endpoint %s answered %s", ErrUnavailable, in.endpoint, resp.Status)
	}
	var claims map[string]json.RawMessage
	if err := json.Unmarshal(body, &claims); err != nil {
		return nil, fmt.Errorf("%w: introspection answer is not a JSON object", ErrUnavailable)
	}
	var active bool
	if err := json.Unmarshal(claims["active"], &active); err != nil {
		return nil, fmt.Errorf("%w: introspection answer has no boolean active", ErrUnavailable)
	}
	return &introspectResult{active: active, claims: claims}, nil
}

// exp is the answer's exp, zero if it has none or an unreadable one.
func (r *introspectResult) exp() time.Time {
	var d jwt.NumericDate
	if raw, ok := r.claims["exp"]; !ok || json.Unmarshal(raw, &d) != nil {
		return time.Time{}
	}
	return d.Time()
}

// validateOpaque checks a token that is not a JWT through introspection:
// active, then exp and iss where the answer gives them (RFC 7662 makes
// them optional), aud (an answer without one only when imapgate's
// introspection client is a configured audience), then the mailbox claim
// from the answer.
func (v *Validator) validateOpaque(ctx context.Context, raw string) (Identity, error) {
	r, err := v.intro.introspect(ctx, v, raw)
	if err != nil {
		return Identity{}, err
	}
	if !r.active {
		return Identity{}, fmt.Errorf("%w: introspection answered active=false", ErrTokenNotActive)
	}
	var c tokenClaims
	b, _ := json.Marshal(r.claims)
	if err := json.Unmarshal(b, &c); err != nil {
		return Identity{}, fmt.Errorf("%w: introspection answer: %w", ErrTokenMalformed, err)
	}
	exp := jwt.Expected{Time: v.now()}
	if c.Issuer != "" {
		exp.Issuer = v.issuer
	}
	switch {
	case len(c.Audience) > 0:
		exp.AnyAudience = v.audiences
	case !slices.Contains(v.audiences, v.intro.id):
		// RFC 7662 makes aud optional and lets the provider answer
		// active=false for a token the caller may not use (section 2.2).
		// So an answer without aud vouches for the audience only when
		// imapgate asked as one of the audiences; otherwise it may be a
		// token the provider issued to any other application.
		return Identity{}, fmt.Errorf("%w: the introspection answer has no aud, and imapgate introspects as %q, which is not a configured audience", ErrTokenAudience, v.intro.id)
	}
	if err := c.ValidateWithLeeway(exp, v.skew); err != nil {
		return Identity{}, claimsError(err)
	}
	mailbox, err := v.mailbox(r.claims)
	if err != nil {
		return Identity{}, err
	}
	id := Identity{
		Mailbox:      mailbox,
		Subject:      c.Subject,
		ClientID:     cmp.Or(c.ClientID, c.AZP, c.AppID),
		TokenID:      c.ID,
		Introspected: true,
	}
	if c.Expiry != nil {
		id.Expiry = c.Expiry.Time()
	}
	return id, nil
}
