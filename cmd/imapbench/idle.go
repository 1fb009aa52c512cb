package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"text/tabwriter"
	"time"
)

// idleOptions configures runIdle.
type idleOptions struct {
	Target target
	// Sessions is how many sessions to open. Required.
	Sessions int
	// Concurrency is how many sessions are being opened (and closed) at
	// once. If zero, 64 is used.
	Concurrency int
	// Hold is how long all sessions stay in IDLE before they are closed.
	// If zero, 10s is used.
	Hold time.Duration
	// PIDs are the processes whose memory is measured, summed (nginx's
	// master and workers). If empty, no memory is measured.
	PIDs []int
	// ProcRoot is where /proc is. If empty, "/proc" is used.
	ProcRoot string
	// Log receives progress. If nil, nothing is logged.
	Log *slog.Logger
}

// idleResult is what runIdle measured.
type idleResult struct {
	Scenario       string        `json:"scenario"` // "idle"
	Target         targetSummary `json:"target"`
	Requested      int           `json:"requested"`
	Opened         int           `json:"opened"` // sessions that reached "+ idling"
	Failed         int           `json:"failed"`
	OpenErrors     []errorCount  `json:"open_errors,omitempty"`
	EmptyInboxes   int           `json:"empty_inboxes"` // sessions whose INBOX was empty: no FETCH
	OpenSeconds    float64       `json:"open_seconds"`
	OpensPerSecond float64       `json:"opens_per_second"`
	OpenLatency    latencyStats  `json:"open_latency"` // connect to "+ idling", per session
	HoldSeconds    float64       `json:"hold_seconds"`
	Memory         *idleMemory   `json:"memory,omitempty"` // nil without PIDs
	Closed         int           `json:"closed"`           // sessions whose DONE and LOGOUT got OK
	CloseErrors    []errorCount  `json:"close_errors,omitempty"`
}

// idleMemory is the measured processes' memory before and while the
// sessions were held.
type idleMemory struct {
	PIDs     []int     `json:"pids"`
	Baseline memSample `json:"baseline"` // before the first session opened
	// AfterSetup is 3 s (idleSettle) into the hold, or at its end if it
	// is shorter: right after the storm of opens.
	AfterSetup memSample `json:"after_setup"`
	Held       memSample `json:"held"` // at the end of the hold
	Peak       memSample `json:"peak"` // the largest of the samples taken each second of the hold
	// PerSession is (Held - Baseline) / Opened.
	PerSessionRSSBytes int64 `json:"per_session_rss_bytes"`
	PerSessionPSSBytes int64 `json:"per_session_pss_bytes"`
	// PerSessionSetupRSSBytes is (AfterSetup - Baseline) / Opened.
	PerSessionSetupRSSBytes int64 `json:"per_session_setup_rss_bytes"`
}

const (
	idleBufSize        = 4 << 10 // read buffer of an idle session
	defaultConcurrency = 64
	defaultHold        = 10 * time.Second
	// fdReserve is the open files kept for everything but the sessions.
	fdReserve = 64
	// idleSettle is when, after the last session opened, the memory "3 s
	// after setup" is sampled.
	idleSettle = 3 * time.Second
)

// idleSession is one session in IDLE.
type idleSession struct {
	c   *client
	tag string // of the IDLE command
}

// idleRun is the state shared by the workers of one runIdle.
type idleRun struct {
	o        idleOptions
	log      *slog.Logger
	sessions []idleSession   // [i] is written by the one worker that opened i
	openTime []time.Duration // likewise
	next     atomic.Int64    // the next session index to open, or to close
	opened   atomic.Int64
	failed   atomic.Int64
	empty    atomic.Int64
	closed   atomic.Int64
	openErrs errorCounts
	closeErr errorCounts
}

// runIdle opens o.Sessions authenticated sessions, puts each in IDLE,
// holds them for o.Hold, measures the memory of o.PIDs before and while
// they are held, and closes them with DONE and LOGOUT. Sessions that fail
// to open are counted, not fatal. When ctx is done, opening stops and the
// open sessions are closed at once; the result says what happened and the
// error is ctx's.
func runIdle(ctx context.Context, o idleOptions) (idleResult, error) {
	if o.Sessions <= 0 {
		return idleResult{}, errors.New("idle: the number of sessions must be positive")
	}
	if o.Concurrency <= 0 {
		o.Concurrency = defaultConcurrency
	}
	o.Concurrency = min(o.Concurrency, o.Sessions)
	if o.Hold <= 0 {
		o.Hold = defaultHold
	}
	if o.ProcRoot == "" {
		o.ProcRoot = "/proc"
	}
	if limit, err := openFileLimit(); err == nil && uint64(o.Sessions)+fdReserve > limit {
		return idleResult{}, fmt.Errorf("idle: %d sessions need about %d open files, and RLIMIT_NOFILE is %d: open fewer sessions, or raise the hard limit",
			o.Sessions, o.Sessions+fdReserve, limit)
	}
	r := &idleRun{o: o, log: o.Log, sessions: make([]idleSession, o.Sessions), openTime: make([]time.Duration, o.Sessions)}
	if r.log == nil {
		r.log = slog.New(slog.DiscardHandler)
	}
	res := idleResult{Scenario: "idle", Target: o.Target.summary(), Requested: o.Sessions}

	if len(o.PIDs) > 0 {
		base, err := readProcMem(o.ProcRoot, o.PIDs)
		if err != nil {
			return res, fmt.Errorf("idle: baseline memory: %w", err)
		}
		res.Memory = &idleMemory{PIDs: o.PIDs, Baseline: base}
	}

	r.log.Info("opening sessions", "sessions", o.Sessions, "concurrency", o.Concurrency, "target", res.Target.String())
	start := time.Now()
	var wg sync.WaitGroup
	wg.Add(o.Concurrency)
	for range o.Concurrency {
		go r.openWorker(ctx, &wg)
	}
	waitWithProgress(&wg, func() {
		r.log.Info("opening", "opened", r.opened.Load(), "failed", r.failed.Load(), "of", o.Sessions)
	})
	openDur := time.Since(start)
	res.Opened, res.Failed, res.EmptyInboxes = int(r.opened.Load()), int(r.failed.Load()), int(r.empty.Load())
	res.OpenErrors = r.openErrs.list()
	res.OpenSeconds = openDur.Seconds()
	if openDur > 0 {
		res.OpensPerSecond = float64(res.Opened) / openDur.Seconds()
	}
	var times []time.Duration
	for i, s := range r.sessions {
		if s.c != nil {
			times = append(times, r.openTime[i])
		}
	}
	res.OpenLatency = summarize(times)

	var errs []error
	if ctx.Err() == nil && res.Opened > 0 {
		r.log.Info("holding sessions in IDLE", "opened", res.Opened, "failed", res.Failed, "hold", o.Hold)
		early, held, peak, dur, err := r.hold(ctx)
		res.HoldSeconds = dur.Seconds()
		if err != nil {
			errs = append(errs, err)
		} else if res.Memory != nil && ctx.Err() == nil { // the final sample was taken
			m := res.Memory
			m.AfterSetup, m.Held, m.Peak = early, held, peak
			if res.Opened > 0 {
				m.PerSessionRSSBytes = (held.RSSBytes - m.Baseline.RSSBytes) / int64(res.Opened)
				m.PerSessionPSSBytes = (held.PSSBytes - m.Baseline.PSSBytes) / int64(res.Opened)
				m.PerSessionSetupRSSBytes = (early.RSSBytes - m.Baseline.RSSBytes) / int64(res.Opened)
			}
		}
	}

	r.log.Info("closing sessions", "sessions", res.Opened)
	r.closeAll(ctx)
	res.Closed = int(r.closed.Load())
	res.CloseErrors = r.closeErr.list()
	if ctx.Err() != nil {
		errs = append(errs, fmt.Errorf("idle: interrupted: %w", context.Cause(ctx)))
	}
	return res, errors.Join(errs...)
}

// waitWithProgress waits for wg, calling progress every 5 seconds.
func waitWithProgress(wg *sync.WaitGroup, progress func()) {
	done := make(chan struct{})
	go closeWhenDone(wg, done)
	tick := time.NewTicker(5 * time.Second)
	defer tick.Stop()
	for {
		select {
		case <-done:
			return
		case <-tick.C:
			progress()
		}
	}
}

func closeWhenDone(wg *sync.WaitGroup, done chan<- struct{}) {
	wg.Wait()
	close(done)
}

// openWorker opens sessions until all are taken or ctx is done.
func (r *idleRun) openWorker(ctx context.Context, wg *sync.WaitGroup) {
	defer wg.Done()
	for ctx.Err() == nil {
		i := int(r.next.Add(1) - 1)
		if i >= len(r.sessions) {
			return
		}
		start := time.Now()
		s, empty, err := openIdleSession(ctx, r.o.Target, i)
		if err != nil {
			if ctx.Err() != nil {
				return // not a failure of the target
			}
			r.failed.Add(1)
			r.openErrs.add(err)
			r.log.Debug("session failed", "session", i, "err", err)
			continue
		}
		r.openTime[i] = time.Since(start)
		r.sessions[i] = s
		r.opened.Add(1)
		if empty {
			r.empty.Add(1)
		}
	}
}

// openIdleSession is session i: connect, TLS, authenticate, SELECT INBOX,
// FETCH the first message's flags and header (so that buffers have been
// used; skipped when INBOX is empty), and IDLE until "+ idling".
func openIdleSession(ctx context.Context, t target, i int) (s idleSession, emptyInbox bool, err error) {
	c, err := dial(ctx, t, t.source(i), idleBufSize)
	if err != nil {
		return s, false, err
	}
	defer func() {
		if err != nil {
			c.Close()
		}
	}()
	if err := c.authenticate(ctx, t, t.user(i)); err != nil {
		return s, false, err
	}
	exists, err := c.selectInbox(ctx)
	if err != nil {
		return s, false, err
	}
	if exists > 0 {
		if err := c.expectOK(ctx, "FETCH", "FETCH 1 (FLAGS BODY.PEEK[HEADER])"); err != nil {
			return s, false, err
		}
	}
	tag, err := c.idle(ctx)
	if err != nil {
		return s, false, err
	}
	return idleSession{c: c, tag: tag}, exists == 0, nil
}

// hold waits o.Hold, sampling memory each second, and returns the sample
// taken idleSettle into it (the last one if the hold is shorter), the
// last sample (taken at the end), the largest one and how long it held.
func (r *idleRun) hold(ctx context.Context) (early, last, peak memSample, held time.Duration, err error) {
	start := time.Now()
	end := start.Add(r.o.Hold)
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	timer := time.NewTimer(r.o.Hold)
	defer timer.Stop()
	settle := time.NewTimer(idleSettle)
	defer settle.Stop()
	settled := false
	sample := func() error {
		if len(r.o.PIDs) == 0 {
			return nil
		}
		m, err := readProcMem(r.o.ProcRoot, r.o.PIDs)
		if err != nil {
			return fmt.Errorf("idle: memory while held: %w", err)
		}
		last, peak = m, peak.max(m)
		return nil
	}
	for {
		select {
		case <-ctx.Done():
			return early, last, peak, time.Since(start), nil
		case <-timer.C:
			err := sample()
			if !settled {
				early = last
			}
			return early, last, peak, time.Since(start), err
		case <-settle.C:
			if end.Sub(time.Now()) < 100*time.Millisecond {
				continue // the final sample is due, and serves
			}
			if err := sample(); err != nil {
				return early, last, peak, time.Since(start), err
			}
			early, settled = last, true
		case now := <-tick.C:
			if end.Sub(now) < 100*time.Millisecond {
				continue // the final sample is due
			}
			if err := sample(); err != nil {
				return early, last, peak, time.Since(start), err
			}
		}
	}
}

// closeAll ends every open session with DONE and LOGOUT and closes it.
// Closing is graceful even when ctx is done, but bounded: what has not
// closed within twice the timeout (at least 30s) is cut.
func (r *idleRun) closeAll(ctx context.Context) {
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), max(30*time.Second, 2*r.o.Target.timeout()))
	defer cancel()
	r.next.Store(0)
	n := min(r.o.Concurrency, max(int(r.opened.Load()), 1))
	var wg sync.WaitGroup
	wg.Add(n)
	for range n {
		go r.closeWorker(cctx, &wg)
	}
	waitWithProgress(&wg, func() {
		r.log.Info("closing", "closed", r.closed.Load())
	})
	for _, s := range r.sessions {
		if s.c != nil {
			s.c.Close()
		}
	}
}

// closeWorker ends sessions until none is left.
func (r *idleRun) closeWorker(ctx context.Context, wg *sync.WaitGroup) {
	defer wg.Done()
	for {
		i := int(r.next.Add(1) - 1)
		if i >= len(r.sessions) {
			return
		}
		s := r.sessions[i]
		if s.c == nil {
			continue
		}
		err := s.c.done(ctx, s.tag)
		if err == nil {
			err = s.c.logout(ctx)
		}
		s.c.Close()
		if err != nil {
			r.closeErr.add(err)
			continue
		}
		r.closed.Add(1)
	}
}

// writeTable writes the result for people.
func (res idleResult) writeTable(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "idle\t%s\n", res.Target)
	fmt.Fprintf(tw, "sessions opened\t%d of %d (%d failed, %d with an empty INBOX)\n", res.Opened, res.Requested, res.Failed, res.EmptyInboxes)
	fmt.Fprintf(tw, "open time\t%.2fs (%.0f sessions/s)\n", res.OpenSeconds, res.OpensPerSecond)
	fmt.Fprintf(tw, "open latency\tp50 %s  p99 %s  max %s\n", fmtMicros(res.OpenLatency.P50Micros), fmtMicros(res.OpenLatency.P99Micros), fmtMicros(res.OpenLatency.MaxMicros))
	for _, e := range res.OpenErrors {
		fmt.Fprintf(tw, "open error\t%d× %s\n", e.Count, e.Error)
	}
	fmt.Fprintf(tw, "held\t%.1fs\n", res.HoldSeconds)
	fmt.Fprintf(tw, "closed cleanly\t%d of %d\n", res.Closed, res.Opened)
	for _, e := range res.CloseErrors {
		fmt.Fprintf(tw, "close error\t%d× %s\n", e.Count, e.Error)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if m := res.Memory; m != nil {
		fmt.Fprintf(w, "\nmemory of pid %s\n", joinInts(m.PIDs))
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintf(tw, "\tRSS\tPSS\t\n")
		fmt.Fprintf(tw, "baseline\t%s\t%s\t\n", fmtBytes(m.Baseline.RSSBytes), fmtBytes(m.Baseline.PSSBytes))
		fmt.Fprintf(tw, "3 s after setup\t%s\t%s\t\n", fmtBytes(m.AfterSetup.RSSBytes), fmtBytes(m.AfterSetup.PSSBytes))
		fmt.Fprintf(tw, "held\t%s\t%s\t\n", fmtBytes(m.Held.RSSBytes), fmtBytes(m.Held.PSSBytes))
		fmt.Fprintf(tw, "peak\t%s\t%s\t\n", fmtBytes(m.Peak.RSSBytes), fmtBytes(m.Peak.PSSBytes))
		fmt.Fprintf(tw, "held - baseline\t%s\t%s\t\n", fmtBytes(m.Held.RSSBytes-m.Baseline.RSSBytes), fmtBytes(m.Held.PSSBytes-m.Baseline.PSSBytes))
		fmt.Fprintf(tw, "per session\t%s\t%s\t\n", fmtBytes(m.PerSessionRSSBytes), fmtBytes(m.PerSessionPSSBytes))
		fmt.Fprintf(tw, "per session 3 s after setup\t%s\t\t\n", fmtBytes(m.PerSessionSetupRSSBytes))
		return tw.Flush()
	}
	return nil
}
