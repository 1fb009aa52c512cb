package main

// The fixed-size tables `imapgate audit` counts in, so that its memory
// stays flat whatever the size of the logs: a Space-Saving top-K counter
// (Metwally et al., 2005) and an LRU history of each recent user's
// networks.

import (
	"container/heap"
	"container/list"
	"net/netip"
	"slices"
	"strings"
)

// topK is a Space-Saving counter: at most size keys, the smallest count
// is replaced when a new key arrives on a full table.
type topK struct {
	size int
	m    map[string]*topEntry
	h    topHeap
}

type topEntry struct {
	key   string
	count uint64
	over  uint64 // the count may be overstated by at most this much
	idx   int
	nets  []netip.Prefix // distinct failure networks (by-user table), capped
	many  bool           // more than sprayNetCap networks
	cred  *credDetail    // the by-credential table's detail
}

func newTopK(size int) *topK { return &topK{size: size, m: make(map[string]*topEntry, size)} }

func (t *topK) add(key string) *topEntry {
	if e, ok := t.m[key]; ok {
		e.count++
		heap.Fix(&t.h, e.idx)
		return e
	}
	if len(t.h) < t.size {
		e := &topEntry{key: key, count: 1}
		t.m[key] = e
		heap.Push(&t.h, e)
		return e
	}
	e := t.h[0]
	delete(t.m, e.key)
	e.key, e.over, e.count = key, e.count, e.count+1
	e.nets, e.many, e.cred = e.nets[:0], false, nil
	t.m[key] = e
	heap.Fix(&t.h, 0)
	return e
}

func (e *topEntry) addNet(p netip.Prefix) {
	if e.many || slices.Contains(e.nets, p) {
		return
	}
	if len(e.nets) >= sprayNetCap {
		e.many = true
		return
	}
	e.nets = append(e.nets, p)
}

// networks is the number of distinct networks (sprayNetCap+1 = "more").
func (e *topEntry) networks() int {
	if e.many {
		return sprayNetCap + 1
	}
	return len(e.nets)
}

// sorted returns the entries by count, largest first.
func (t *topK) sorted() []*topEntry {
	out := slices.Clone([]*topEntry(t.h))
	slices.SortFunc(out, func(a, b *topEntry) int {
		if a.count != b.count {
			if a.count > b.count {
				return -1
			}
			return 1
		}
		return strings.Compare(a.key, b.key)
	})
	return out
}

type topHeap []*topEntry

func (h topHeap) Len() int           { return len(h) }
func (h topHeap) Less(i, j int) bool { return h[i].count < h[j].count }
func (h topHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i]; h[i].idx = i; h[j].idx = j }
func (h *topHeap) Push(x any)        { e := x.(*topEntry); e.idx = len(*h); *h = append(*h, e) }
func (h *topHeap) Pop() any {
	old := *h
	e := old[len(old)-1]
	*h = old[:len(old)-1]
	return e
}

// userHistory remembers the networks each recent user logged in from.
type userHistory struct {
	size    int
	lru     *list.List // of *userNets, most recent first
	m       map[string]*list.Element
	Evicted uint64
}

type userNets struct {
	user string
	nets []netip.Prefix // in order of first use, capped at historyNetCap (oldest dropped)
}

func newUserHistory(size int) *userHistory {
	return &userHistory{size: size, lru: list.New(), m: map[string]*list.Element{}}
}

// login records a successful login and reports whether it came from a new
// network for a user with earlier logins, and the networks known before.
func (h *userHistory) login(user string, nw netip.Prefix) (known []netip.Prefix, isNew bool) {
	if el, ok := h.m[user]; ok {
		h.lru.MoveToFront(el)
		u := el.Value.(*userNets)
		if slices.Contains(u.nets, nw) {
			return nil, false
		}
		known = slices.Clone(u.nets)
		if len(u.nets) >= historyNetCap {
			u.nets = slices.Delete(u.nets, 0, 1)
		}
		u.nets = append(u.nets, nw)
		return known, true
	}
	var u *userNets
	if h.lru.Len() >= h.size {
		el := h.lru.Back()
		u = el.Value.(*userNets)
		delete(h.m, u.user)
		h.lru.Remove(el)
		h.Evicted++
		u.user, u.nets = user, u.nets[:0]
	} else {
		u = &userNets{user: user, nets: make([]netip.Prefix, 0, 2)}
	}
	u.nets = append(u.nets, nw)
	h.m[user] = h.lru.PushFront(u)
	return nil, false
}
