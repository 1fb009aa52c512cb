package proxy

import (
	"context"
	"sync"
	"time"
)

// ProbeResult is the outcome of one health probe of one address.
type ProbeResult struct {
	Upstream string // the group's Label
	Address  string
	Err      error // nil: the address answered as a login would find it
	// Changed is set when the result differs from the address's
	// previous one (the first probe of an address that fails counts as
	// a change; the first that succeeds does not).
	Changed bool
}

// Watch probes every member of g every ProbeInterval until ctx ends
// (Upstream.Probe: connect, TLS, greeting, CAPABILITY when needed,
// LOGOUT; never a login), marks each up or down for logins, and tells
// report, if set, the result of each probe. The members of one round are
// probed at once; the next round starts ProbeInterval after the last one
// began, or when it ends if it took longer.
func (g *UpstreamGroup) Watch(ctx context.Context, report func(ProbeResult)) {
	t := time.NewTicker(g.probeInterval())
	defer t.Stop()
	for {
		g.ProbeAll(ctx, report)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// ProbeAll probes every member of g once, at once, and returns when all
// are done; see Watch.
func (g *UpstreamGroup) ProbeAll(ctx context.Context, report func(ProbeResult)) {
	st := g.states()
	var wg sync.WaitGroup
	for i := range g.Members {
		wg.Add(1)
		go probeMember(ctx, &wg, g, i, &st[i], report)
	}
	wg.Wait()
}

// probeMember probes member i of g once and records the result; a named
// function so goroutine dumps say what each probe is.
func probeMember(ctx context.Context, wg *sync.WaitGroup, g *UpstreamGroup, i int, st *memberState, report func(ProbeResult)) {
	defer wg.Done()
	u := g.Members[i]
	err := u.Probe(ctx)
	if ctx.Err() != nil {
		return // shutting down or replaced by a reload: no verdict
	}
	now := time.Now().UnixNano()
	wasDown := st.down.Load()
	first := st.lastProbe.Swap(now) == 0
	if err == nil {
		st.lastOK.Store(now)
	}
	st.down.Store(err != nil)
	if report != nil {
		changed := wasDown != (err != nil) || (first && err != nil)
		report(ProbeResult{Upstream: g.Label(), Address: u.Address, Err: err, Changed: changed})
	}
}

// Ready reports whether at least one address of g answered a probe
// within the last three probe intervals; /readyz asks it of every group.
func (g *UpstreamGroup) Ready(now time.Time) bool {
	limit := now.Add(-3 * g.probeInterval()).UnixNano()
	st := g.states()
	for i := range g.Members {
		if !st[i].down.Load() && st[i].lastOK.Load() >= limit {
			return true
		}
	}
	return false
}

// LastAnswer returns when an address of g last answered a probe; the
// zero time when none has yet.
func (g *UpstreamGroup) LastAnswer() time.Time {
	var last int64
	st := g.states()
	for i := range g.Members {
		last = max(last, st[i].lastOK.Load())
	}
	if last == 0 {
		return time.Time{}
	}
	return time.Unix(0, last)
}

// Up reports whether member i of g is usable: not marked down by its
// last probe or login.
func (g *UpstreamGroup) Up(i int) bool { return !g.states()[i].down.Load() }
