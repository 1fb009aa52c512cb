package route

import (
	"container/list"
	"context"
	"errors"
	"strings"
	"sync"
	"time"
)

// Cache keeps a lookup's answers for TTL, at most Size of them, the least
// recently used going first. It caches answers and ErrNotFound, never an
// error or a refusal, and nothing for a query that carries a password
// (the service judges the password each time).
type Cache struct {
	// Next is the lookup asked on a miss. Required.
	Next Lookup
	// Size bounds the entries. Zero means no caching.
	Size int
	// TTL is how long an answer is kept. Zero means no caching.
	TTL time.Duration

	mu    sync.Mutex
	lru   list.List // of *cacheEntry, most recent first
	byKey map[string]*list.Element
}

type cacheEntry struct {
	key      string
	answer   Answer
	notFound bool
	expires  time.Time
}

// Cached wraps l in a Cache of size entries kept for ttl.
func Cached(l Lookup, size int, ttl time.Duration) *Cache {
	return &Cache{Next: l, Size: size, TTL: ttl}
}

// Lookup answers from the cache, or asks Next and keeps its answer.
func (c *Cache) Lookup(ctx context.Context, q Query) (Answer, error) {
	if c.Size <= 0 || c.TTL <= 0 || q.Password != "" {
		return c.Next.Lookup(ctx, q)
	}
	key := strings.ToLower(q.User)
	now := time.Now()
	c.mu.Lock()
	if el, ok := c.byKey[key]; ok {
		e := el.Value.(*cacheEntry)
		if now.Before(e.expires) {
			c.lru.MoveToFront(el)
			c.mu.Unlock()
			if e.notFound {
				return Answer{}, ErrNotFound
			}
			return e.answer, nil
		}
		c.lru.Remove(el)
		delete(c.byKey, key)
	}
	c.mu.Unlock()

	a, err := c.Next.Lookup(ctx, q)
	notFound := errors.Is(err, ErrNotFound)
	if err != nil && !notFound {
		return a, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.byKey == nil {
		c.byKey = map[string]*list.Element{}
	}
	if el, ok := c.byKey[key]; ok {
		c.lru.Remove(el)
	}
	c.byKey[key] = c.lru.PushFront(&cacheEntry{key: key, answer: a, notFound: notFound, expires: now.Add(c.TTL)})
	for c.lru.Len() > c.Size {
		old := c.lru.Back()
		c.lru.Remove(old)
		delete(c.byKey, old.Value.(*cacheEntry).key)
	}
	return a, err
}

// Len returns the number of entries held, expired ones included.
func (c *Cache) Len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.lru.Len()
}
