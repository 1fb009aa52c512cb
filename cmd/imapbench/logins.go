package main

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"text/tabwriter"
	"time"
)

// loginsOptions configures runLogins.
type loginsOptions struct {
	Target target
	// Workers is how many login cycles run at once. If zero, 16.
	Workers int
	// Duration is how long workers start new cycles. If zero, 5s.
	Duration time.Duration
	// MaxLogins bounds the cycles started, whatever Duration says. If
	// zero, 1,000,000.
	MaxLogins int
	// Resume shares a TLS session cache among the workers, so that
	// handshakes after the first resume a session. If false, every cycle
	// is a full handshake, as for a phone after a network change.
	Resume bool
	// Log receives progress. If nil, nothing is logged.
	Log *slog.Logger
}

// loginsResult is what runLogins measured.
type loginsResult struct {
	Scenario string        `json:"scenario"` // "logins"
	Target   targetSummary `json:"target"`
	Workers  int           `json:"workers"`
	Resume   bool          `json:"resume"`
	// Seconds is the measuring window: Duration, or less when MaxLogins
	// or ctx ended the run earlier.
	Seconds float64 `json:"seconds"`
	// WallSeconds is from the first cycle's start to the last one's end:
	// the cycles running at the end of the window finish, or time out.
	WallSeconds float64      `json:"wall_seconds"`
	Logins      int          `json:"logins"` // cycles that ended with LOGOUT's tagged OK
	Errors      int          `json:"errors"`
	ErrorKinds  []errorCount `json:"error_kinds,omitempty"`
	// LoginsPerSecond is the logins that ended within the window divided
	// by Seconds, so that a cycle hanging past the window until its
	// timeout does not dilute the rate.
	LoginsPerSecond float64      `json:"logins_per_second"`
	Latency         latencyStats `json:"latency"` // of a whole successful cycle
	Resumed         int          `json:"resumed"` // cycles whose TLS handshake resumed a session
}

const (
	defaultWorkers   = 16
	defaultDuration  = 5 * time.Second
	defaultMaxLogins = 1_000_000
	// errorPause keeps a worker facing a dead target from spinning.
	errorPause = 10 * time.Millisecond
)

// loginsRun is the state shared by the workers of one runLogins.
type loginsRun struct {
	o        loginsOptions
	t        target
	deadline time.Time
	started  atomic.Int64
	resumed  atomic.Int64
	lat      [][]time.Duration // [w] belongs to worker w
	inWindow []int             // [w]: worker w's logins that ended by the deadline
	errs     errorCounts
}

// runLogins runs o.Workers workers that repeat a login cycle (connect,
// TLS or STARTTLS, AUTHENTICATE PLAIN, LOGOUT until its tagged OK, close)
// for o.Duration, at most o.MaxLogins cycles in all.
func runLogins(ctx context.Context, o loginsOptions) (loginsResult, error) {
	if o.Workers <= 0 {
		o.Workers = defaultWorkers
	}
	if o.Duration <= 0 {
		o.Duration = defaultDuration
	}
	if o.MaxLogins <= 0 {
		o.MaxLogins = defaultMaxLogins
	}
	log := o.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	t := o.Target
	cfg := t.tlsConfig().Clone()
	cfg.ClientSessionCache = nil
	if o.Resume {
		cfg.ClientSessionCache = tls.NewLRUClientSessionCache(max(64, 4*o.Workers))
	}
	t.TLSConfig = cfg
	r := &loginsRun{o: o, t: t, lat: make([][]time.Duration, o.Workers), inWindow: make([]int, o.Workers)}
	res := loginsResult{Scenario: "logins", Target: t.summary(), Workers: o.Workers, Resume: o.Resume}

	log.Info("logging in", "workers", o.Workers, "duration", o.Duration, "resume", o.Resume, "target", res.Target.String())
	start := time.Now()
	r.deadline = start.Add(o.Duration)
	var wg sync.WaitGroup
	wg.Add(o.Workers)
	for w := range o.Workers {
		go r.loginWorker(ctx, &wg, w)
	}
	wg.Wait()
	elapsed := time.Since(start)

	var all []time.Duration
	inWindow := 0
	for w, l := range r.lat {
		all = append(all, l...)
		inWindow += r.inWindow[w]
	}
	window := min(elapsed, o.Duration)
	res.Seconds, res.WallSeconds = window.Seconds(), elapsed.Seconds()
	res.Logins = len(all)
	res.Errors = r.errs.total
	res.ErrorKinds = r.errs.list()
	res.Resumed = int(r.resumed.Load())
	if window > 0 {
		res.LoginsPerSecond = float64(inWindow) / window.Seconds()
	}
	res.Latency = summarize(all)
	if ctx.Err() != nil {
		return res, fmt.Errorf("logins: interrupted: %w", context.Cause(ctx))
	}
	return res, nil
}

// loginWorker repeats login cycles until the deadline or the bound on
// cycles, or until ctx is done.
func (r *loginsRun) loginWorker(ctx context.Context, wg *sync.WaitGroup, w int) {
	defer wg.Done()
	for ctx.Err() == nil && time.Now().Before(r.deadline) {
		i := r.started.Add(1) - 1
		if i >= int64(r.o.MaxLogins) {
			return
		}
		start := time.Now()
		resumed, err := loginCycle(ctx, r.t, int(i))
		d := time.Since(start)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			r.errs.add(err)
			pause(ctx, errorPause)
			continue
		}
		r.lat[w] = append(r.lat[w], d)
		if !start.Add(d).After(r.deadline) {
			r.inWindow[w]++
		}
		if resumed {
			r.resumed.Add(1)
		}
	}
}

// loginCycle is login number i: connect, TLS, authenticate, LOGOUT.
func loginCycle(ctx context.Context, t target, i int) (resumed bool, err error) {
	c, err := dial(ctx, t, t.source(i), 4<<10)
	if err != nil {
		return false, err
	}
	defer c.Close()
	if err := c.authenticate(ctx, t, t.user(i)); err != nil {
		return false, err
	}
	if err := c.logout(ctx); err != nil {
		return false, err
	}
	st, _ := c.TLSState()
	return st.DidResume, nil
}

// pause waits d or until ctx is done.
func pause(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

func (res loginsResult) writeTable(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	resume := "off (a full handshake each login)"
	switch {
	case res.Target.TLS == string(tlsNone):
		resume = "no TLS"
	case res.Resume:
		resume = fmt.Sprintf("on (%d of %d resumed)", res.Resumed, res.Logins)
	}
	fmt.Fprintf(tw, "logins\t%s\n", res.Target)
	fmt.Fprintf(tw, "workers\t%d for %.1fs (all done after %.1fs)\n", res.Workers, res.Seconds, res.WallSeconds)
	fmt.Fprintf(tw, "TLS resumption\t%s\n", resume)
	fmt.Fprintf(tw, "logins\t%d (%.0f/s)\n", res.Logins, res.LoginsPerSecond)
	fmt.Fprintf(tw, "latency\tp50 %s  p99 %s  mean %s\n", fmtMicros(res.Latency.P50Micros), fmtMicros(res.Latency.P99Micros), fmtMicros(res.Latency.MeanMicros))
	fmt.Fprintf(tw, "errors\t%d\n", res.Errors)
	for _, e := range res.ErrorKinds {
		fmt.Fprintf(tw, "error\t%d× %s\n", e.Count, e.Error)
	}
	return tw.Flush()
}
