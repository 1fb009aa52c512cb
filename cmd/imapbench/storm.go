package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"text/tabwriter"
	"time"
)

// The storm: every phone behind a Wi-Fi access point, or every client of
// a restarted NAT, loses its connection at the same moment and comes back
// at once. runStorm sets up sessions in IDLE, measures the proxy's memory
// while they idle, drops every connection at once and lets each session
// reconnect on its own goroutine, retrying after a failure as a phone
// would, until all are back in IDLE or the storm's bound has passed.

// stormOptions configures runStorm.
type stormOptions struct {
	Target target
	// Sessions is how many sessions to set up and drop. Required.
	Sessions int
	// Concurrency is how many sessions are being set up at once before
	// the drop (the reconnect has no cap). If zero, 64 is used.
	Concurrency int
	// Hold is how long the sessions idle after the setup's memory sample
	// before they are dropped. If zero, 30s is used.
	Hold time.Duration
	// Settle is how long after the last session was set up, and after
	// the last one came back, the memory is sampled. If zero, 3s is used.
	Settle time.Duration
	// Within bounds the reconnect storm: sessions not back by then are
	// given up. If zero, 120s is used.
	Within time.Duration
	// RetryDelay is the wait after a failed reconnect attempt. If zero,
	// 1s is used.
	RetryDelay time.Duration
	// SampleEvery is how often the memory is sampled during the storm
	// for its peak. If zero, 100ms is used.
	SampleEvery time.Duration
	// PIDs are the processes whose memory is measured, summed (nginx's
	// master and workers). If empty, no memory is measured.
	PIDs []int
	// CPUPIDs are the processes whose CPU time (utime + stime) from the
	// drop until the storm is over is measured, summed (nginx's with its
	// auth_http responder). If empty, none is measured.
	CPUPIDs []int
	// ProcRoot is where /proc is. If empty, "/proc" is used.
	ProcRoot string
	// OnDrop, if set, is called right after every connection was dropped
	// (compare starts a CPU profile of the proxy there).
	OnDrop func()
	// Log receives progress. If nil, nothing is logged.
	Log *slog.Logger
}

const (
	defaultStormHold   = 30 * time.Second
	defaultStormSettle = 3 * time.Second
	defaultStormWithin = 120 * time.Second
	defaultRetryDelay  = time.Second
	defaultStormSample = 100 * time.Millisecond
	// stormDrop is how the connections are dropped: SO_LINGER 0, so that
	// close sends RST at once, as the proxy sees a client that vanished
	// behind a NAT (its next write gets RST) and so that the client side
	// keeps no TIME_WAIT per session, which would otherwise hold a port of
	// each source address for 60 seconds.
	stormDrop = "rst"
)

// stormResult is what runStorm measured.
type stormResult struct {
	Scenario     string        `json:"scenario"` // "storm"
	Target       targetSummary `json:"target"`
	Requested    int           `json:"requested"`
	SetUp        int           `json:"set_up"` // sessions in IDLE before the drop
	SetupFailed  int           `json:"setup_failed"`
	SetupErrors  []errorCount  `json:"setup_errors,omitempty"`
	SetupSeconds float64       `json:"setup_seconds"`
	HoldSeconds  float64       `json:"hold_seconds"`
	Drop         string        `json:"drop"` // "rst": SO_LINGER 0
	// Back is how many of the dropped sessions were in IDLE again within
	// the bound.
	Back int `json:"back"`
	// AllBackSeconds is the time from the drop until the last session
	// was back in IDLE; 0 when not all came back (see StormSeconds).
	AllBackSeconds float64 `json:"all_back_seconds"`
	// StormSeconds is how long the storm ran: AllBackSeconds, or the
	// bound when some did not come back.
	StormSeconds float64 `json:"storm_seconds"`
	// Reconnect is, per session back, the time from the drop to its
	// "+ idling", retries included.
	Reconnect latencyStats `json:"reconnect"`
	Attempts  int          `json:"attempts"`
	// AttemptsNotOK are the attempts that failed (connection error,
	// timeout, NO, BAD or BYE), by kind in AttemptErrors; SessionsNotOK
	// the sessions with at least one.
	AttemptsNotOK int          `json:"attempts_not_ok"`
	SessionsNotOK int          `json:"sessions_not_ok"`
	AttemptErrors []errorCount `json:"attempt_errors,omitempty"`
	// LoginsRefused are the attempts whose AUTHENTICATE (or LOGIN) got
	// NO, BAD or BYE: every session has the right password, so each one
	// is a right password refused.
	LoginsRefused int `json:"logins_refused"`
	// CPUSeconds is the CPU time of CPUPIDs from the drop until the
	// storm was over; 0 without CPUPIDs.
	CPUSeconds float64 `json:"cpu_seconds"`
	// ClientCPUSeconds is this process's, the client's, over the same
	// time: on a machine shared with the proxy, the client's handshakes
	// take CPU from it.
	ClientCPUSeconds float64      `json:"client_cpu_seconds"`
	Memory           *stormMemory `json:"memory,omitempty"` // nil without PIDs
}

// stormMemory is the measured processes' memory at each step of a storm.
type stormMemory struct {
	PIDs       []int     `json:"pids"`
	Baseline   memSample `json:"baseline"`    // before the first session was set up
	AfterSetup memSample `json:"after_setup"` // Settle after the last one was set up
	Held       memSample `json:"held"`        // at the end of the hold, just before the drop
	// PeakRSSBytes is the largest RSS sampled during the storm.
	PeakRSSBytes int64     `json:"peak_rss_bytes"`
	AfterStorm   memSample `json:"after_storm"` // Settle after the last one came back
	// Per session: (AfterSetup - Baseline) / SetUp, (Held - Baseline) /
	// SetUp and (AfterStorm - Baseline) / Back.
	PerSessionSetupRSSBytes int64 `json:"per_session_setup_rss_bytes"`
	PerSessionHeldRSSBytes  int64 `json:"per_session_held_rss_bytes"`
	PerSessionAfterRSSBytes int64 `json:"per_session_after_rss_bytes"`
	PerSessionSetupPSSBytes int64 `json:"per_session_setup_pss_bytes"`
	PerSessionHeldPSSBytes  int64 `json:"per_session_held_pss_bytes"`
	PerSessionAfterPSSBytes int64 `json:"per_session_after_pss_bytes"`
}

// stormRun is the state shared by the goroutines of one runStorm.
type stormRun struct {
	o        stormOptions
	log      *slog.Logger
	sessions []idleSession   // [i] is written by the one goroutine that opens i
	backAt   []time.Duration // [i]: drop to session i's "+ idling"; 0 while not back
	next     atomic.Int64
	failed   atomic.Int64
	setupErr errorCounts

	attempts, notOK, sessionsNotOK, refused, back atomic.Int64
	attemptErr                                    errorCounts
}

// runStorm sets up o.Sessions sessions in IDLE, holds them, drops them
// all at once and reconnects them all at once, measuring the memory of
// o.PIDs throughout. Failed attempts are counted, not fatal. When ctx is
// done the run stops and closes what is open; the result says what
// happened and the error is ctx's.
func runStorm(ctx context.Context, o stormOptions) (stormResult, error) {
	if o.Sessions <= 0 {
		return stormResult{}, errors.New("storm: the number of sessions must be positive")
	}
	if o.Concurrency <= 0 {
		o.Concurrency = defaultConcurrency
	}
	o.Concurrency = min(o.Concurrency, o.Sessions)
	o.Hold = cmpDuration(o.Hold, defaultStormHold)
	o.Settle = cmpDuration(o.Settle, defaultStormSettle)
	o.Within = cmpDuration(o.Within, defaultStormWithin)
	o.RetryDelay = cmpDuration(o.RetryDelay, defaultRetryDelay)
	o.SampleEvery = cmpDuration(o.SampleEvery, defaultStormSample)
	if o.ProcRoot == "" {
		o.ProcRoot = "/proc"
	}
	if limit, err := openFileLimit(); err == nil && uint64(o.Sessions)+fdReserve > limit {
		return stormResult{}, fmt.Errorf("storm: %d sessions need about %d open files, and RLIMIT_NOFILE is %d: set up fewer sessions, or raise the hard limit",
			o.Sessions, o.Sessions+fdReserve, limit)
	}
	if err := checkEphemeralPorts(o.Sessions, len(o.Target.Sources)); err != nil {
		return stormResult{}, err
	}
	r := &stormRun{o: o, log: o.Log, sessions: make([]idleSession, o.Sessions), backAt: make([]time.Duration, o.Sessions)}
	if r.log == nil {
		r.log = slog.New(slog.DiscardHandler)
	}
	defer r.dropAll() // whatever is still open when the run ends
	res := stormResult{Scenario: "storm", Target: o.Target.summary(), Requested: o.Sessions, Drop: stormDrop}
	sample := func(into *memSample) error {
		if len(o.PIDs) == 0 {
			return nil
		}
		m, err := readProcMem(o.ProcRoot, o.PIDs)
		if err != nil {
			return fmt.Errorf("storm: memory: %w", err)
		}
		*into = m
		return nil
	}
	var mem stormMemory
	if err := sample(&mem.Baseline); err != nil {
		return res, err
	}

	// The setup, at o.Concurrency sessions at a time, like idle's.
	r.log.Info("setting up sessions", "sessions", o.Sessions, "concurrency", o.Concurrency, "target", res.Target.String())
	start := time.Now()
	var wg sync.WaitGroup
	wg.Add(o.Concurrency)
	for range o.Concurrency {
		go r.setupWorker(ctx, &wg)
	}
	waitWithProgress(&wg, func() {
		r.log.Info("setting up", "set_up", int(r.next.Load())-int(r.failed.Load()), "failed", r.failed.Load(), "of", o.Sessions)
	})
	res.SetupSeconds = time.Since(start).Seconds()
	res.SetupFailed, res.SetupErrors = int(r.failed.Load()), r.setupErr.list()
	for _, s := range r.sessions {
		if s.c != nil {
			res.SetUp++
		}
	}
	if ctx.Err() != nil {
		return res, fmt.Errorf("storm: interrupted during the setup: %w", context.Cause(ctx))
	}
	if res.SetUp == 0 {
		return res, fmt.Errorf("storm: no session was set up: %s", errorSummary(res.SetupErrors))
	}

	r.log.Info("holding sessions in IDLE", "set_up", res.SetUp, "failed", res.SetupFailed, "hold", o.Hold)
	holdStart := time.Now()
	pause(ctx, o.Settle)
	if err := sample(&mem.AfterSetup); err != nil {
		return res, err
	}
	pause(ctx, o.Hold-time.Since(holdStart))
	res.HoldSeconds = time.Since(holdStart).Seconds()
	if err := sample(&mem.Held); err != nil {
		return res, err
	}
	if ctx.Err() != nil {
		return res, fmt.Errorf("storm: interrupted during the hold: %w", context.Cause(ctx))
	}

	// The drop, and the storm.
	peak := make(chan int64, 1)
	samplerCtx, stopSampler := context.WithCancel(ctx)
	defer stopSampler()
	go sampleRSSPeak(samplerCtx, o.ProcRoot, o.PIDs, o.SampleEvery, peak)
	r.log.Info("dropping every session at once", "sessions", res.SetUp, "how", stormDrop)
	cpuBefore, cpuErr := readStormCPU(o.ProcRoot, o.CPUPIDs)
	selfBefore, _ := readStormCPU(o.ProcRoot, []int{os.Getpid()})
	dropped := r.dropAll()
	drop := time.Now()
	sctx, cancel := context.WithDeadline(ctx, drop.Add(o.Within))
	defer cancel()
	if o.OnDrop != nil {
		o.OnDrop()
	}
	wg.Add(len(dropped))
	for _, i := range dropped {
		go r.reconnect(sctx, &wg, i, drop)
	}
	waitWithProgress(&wg, func() {
		r.log.Info("storm", "back", r.back.Load(), "of", len(dropped), "attempts", r.attempts.Load(), "not_ok", r.notOK.Load())
	})
	stormDur := time.Since(drop)
	cpuAfter, err := readStormCPU(o.ProcRoot, o.CPUPIDs)
	if cpuErr = errors.Join(cpuErr, err); cpuErr != nil {
		return res, fmt.Errorf("storm: CPU time: %w", cpuErr)
	}
	res.CPUSeconds = (cpuAfter - cpuBefore).Seconds()
	if selfAfter, err := readStormCPU(o.ProcRoot, []int{os.Getpid()}); err == nil && selfBefore > 0 {
		res.ClientCPUSeconds = (selfAfter - selfBefore).Seconds()
	}
	stopSampler()
	mem.PeakRSSBytes = <-peak
	res.Back = int(r.back.Load())
	res.Attempts, res.AttemptsNotOK = int(r.attempts.Load()), int(r.notOK.Load())
	res.SessionsNotOK, res.LoginsRefused = int(r.sessionsNotOK.Load()), int(r.refused.Load())
	res.AttemptErrors = r.attemptErr.list()
	var times []time.Duration
	var last time.Duration
	for _, i := range dropped {
		if d := r.backAt[i]; d > 0 {
			times = append(times, d)
			last = max(last, d)
		}
	}
	res.Reconnect = summarize(times)
	res.StormSeconds = stormDur.Seconds()
	if res.Back == len(dropped) {
		res.AllBackSeconds = last.Seconds()
		res.StormSeconds = res.AllBackSeconds
	}
	r.log.Info("storm over", "back", res.Back, "of", len(dropped), "seconds", fmt.Sprintf("%.2f", res.StormSeconds), "attempts_not_ok", res.AttemptsNotOK)
	if ctx.Err() != nil {
		return res, fmt.Errorf("storm: interrupted during the storm: %w", context.Cause(ctx))
	}

	pause(ctx, o.Settle)
	if err := sample(&mem.AfterStorm); err != nil {
		return res, err
	}
	if len(o.PIDs) > 0 && ctx.Err() == nil {
		mem.PIDs = o.PIDs
		perSession := func(m memSample, n int) (rss, pss int64) {
			if n == 0 {
				return 0, 0
			}
			return (m.RSSBytes - mem.Baseline.RSSBytes) / int64(n), (m.PSSBytes - mem.Baseline.PSSBytes) / int64(n)
		}
		mem.PerSessionSetupRSSBytes, mem.PerSessionSetupPSSBytes = perSession(mem.AfterSetup, res.SetUp)
		mem.PerSessionHeldRSSBytes, mem.PerSessionHeldPSSBytes = perSession(mem.Held, res.SetUp)
		mem.PerSessionAfterRSSBytes, mem.PerSessionAfterPSSBytes = perSession(mem.AfterStorm, res.Back)
		res.Memory = &mem
	}
	if ctx.Err() != nil {
		return res, fmt.Errorf("storm: interrupted: %w", context.Cause(ctx))
	}
	return res, nil
}

// readStormCPU is the CPU time of pids, 0 for none.
func readStormCPU(procRoot string, pids []int) (time.Duration, error) {
	if len(pids) == 0 {
		return 0, nil
	}
	return readProcCPU(procRoot, pids)
}

func cmpDuration(d, def time.Duration) time.Duration {
	if d <= 0 {
		return def
	}
	return d
}

// checkEphemeralPorts says whether sessions spread over sources (0: the
// kernel's one address) fit the ephemeral port range toward one address:
// each source holds its share of sessions, and as many again while the
// storm replaces them (the client leaves no TIME_WAIT, see stormDrop, but
// the proxy may not yet have closed a dropped session's socket).
func checkEphemeralPorts(sessions, sources int) error {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return nil // not Linux: nothing to check against
	}
	f := strings.Fields(string(b))
	if len(f) != 2 {
		return nil
	}
	lo, err1 := strconv.Atoi(f[0])
	hi, err2 := strconv.Atoi(f[1])
	if err1 != nil || err2 != nil {
		return nil
	}
	per := (sessions + max(sources, 1) - 1) / max(sources, 1)
	if 2*per > hi-lo+1 {
		return fmt.Errorf("storm: %d sessions over %d source address(es) need %d ephemeral ports per address, and net.ipv4.ip_local_port_range has %d: use more source addresses",
			sessions, max(sources, 1), 2*per, hi-lo+1)
	}
	return nil
}

// setupWorker sets up sessions until all are taken or ctx is done.
func (r *stormRun) setupWorker(ctx context.Context, wg *sync.WaitGroup) {
	defer wg.Done()
	for ctx.Err() == nil {
		i := int(r.next.Add(1) - 1)
		if i >= len(r.sessions) {
			return
		}
		s, err := openStormSession(ctx, r.o.Target, i)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			r.failed.Add(1)
			r.setupErr.add(err)
			r.log.Debug("session failed", "session", i, "err", err)
			continue
		}
		r.sessions[i] = s
	}
}

// openStormSession is session i: connect, TLS, authenticate, SELECT
// INBOX, IDLE until "+ idling".
func openStormSession(ctx context.Context, t target, i int) (s idleSession, err error) {
	c, err := dial(ctx, t, t.source(i), idleBufSize)
	if err != nil {
		return s, err
	}
	defer func() {
		if err != nil {
			c.Close()
		}
	}()
	if err := c.authenticate(ctx, t, t.user(i)); err != nil {
		return s, err
	}
	if _, err := c.selectInbox(ctx); err != nil {
		return s, err
	}
	tag, err := c.idle(ctx)
	if err != nil {
		return s, err
	}
	return idleSession{c: c, tag: tag}, nil
}

// dropAll resets every open session's TCP connection (SO_LINGER 0, no
// TLS close_notify: the client vanished) and returns their indexes.
func (r *stormRun) dropAll() []int {
	var dropped []int
	for i, s := range r.sessions {
		if s.c == nil {
			continue
		}
		if tc, ok := s.c.pr.raw.(*net.TCPConn); ok {
			tc.SetLinger(0)
		}
		s.c.pr.raw.Close()
		r.sessions[i] = idleSession{}
		dropped = append(dropped, i)
	}
	return dropped
}

// reconnect brings session i back: connect, TLS, AUTHENTICATE, SELECT,
// IDLE, and after a failure the same again after RetryDelay, until it is
// back or ctx is done.
func (r *stormRun) reconnect(ctx context.Context, wg *sync.WaitGroup, i int, drop time.Time) {
	defer wg.Done()
	failedOnce := false
	for ctx.Err() == nil {
		r.attempts.Add(1)
		s, err := openStormSession(ctx, r.o.Target, i)
		if err == nil {
			r.sessions[i] = s
			r.backAt[i] = time.Since(drop)
			r.back.Add(1)
			return
		}
		if ctx.Err() != nil {
			return // the storm's bound, not the target's failure
		}
		r.notOK.Add(1)
		r.attemptErr.add(err)
		if isLoginRefusal(err) {
			r.refused.Add(1)
		}
		if !failedOnce {
			failedOnce = true
			r.sessionsNotOK.Add(1)
		}
		r.log.Debug("reconnect failed", "session", i, "err", err)
		pause(ctx, r.o.RetryDelay)
	}
}

// isLoginRefusal says whether err is the server answering the login
// command with NO, BAD or BYE.
func isLoginRefusal(err error) bool {
	var se *stepError
	var st *statusError
	return errors.As(err, &se) && (se.Step == "AUTHENTICATE" || se.Step == "LOGIN") && errors.As(err, &st)
}

// sampleRSSPeak sums the VmRSS of pids every interval until ctx is done
// and then sends the largest sum (0 without pids) on peak. RSS alone:
// PSS (smaps_rollup) walks every mapping, too slow for 100 ms.
func sampleRSSPeak(ctx context.Context, procRoot string, pids []int, every time.Duration, peak chan<- int64) {
	var top int64
	defer func() { peak <- top }()
	if len(pids) == 0 {
		return
	}
	tick := time.NewTicker(every)
	defer tick.Stop()
	for {
		var sum int64
		for _, pid := range pids {
			if v, err := readProcField(procRoot+"/"+strconv.Itoa(pid)+"/status", "VmRSS"); err == nil {
				sum += v
			}
		}
		top = max(top, sum)
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// writeTable writes the result for people.
func (res stormResult) writeTable(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "storm\t%s\n", res.Target)
	fmt.Fprintf(tw, "set up\t%d of %d in %.2fs (%d failed)\n", res.SetUp, res.Requested, res.SetupSeconds, res.SetupFailed)
	for _, e := range res.SetupErrors {
		fmt.Fprintf(tw, "setup error\t%d× %s\n", e.Count, e.Error)
	}
	fmt.Fprintf(tw, "held\t%.1fs, then every connection dropped (%s)\n", res.HoldSeconds, res.Drop)
	if res.AllBackSeconds > 0 {
		fmt.Fprintf(tw, "back in IDLE\tall %d after %.2fs\n", res.Back, res.AllBackSeconds)
	} else {
		fmt.Fprintf(tw, "back in IDLE\t%d of %d; the storm gave up after %.2fs\n", res.Back, res.SetUp, res.StormSeconds)
	}
	fmt.Fprintf(tw, "reconnect (drop to + idling)\tp50 %s  p99 %s  max %s\n", fmtMicros(res.Reconnect.P50Micros), fmtMicros(res.Reconnect.P99Micros), fmtMicros(res.Reconnect.MaxMicros))
	fmt.Fprintf(tw, "attempts\t%d, %d not OK, from %d sessions; %d right passwords refused\n", res.Attempts, res.AttemptsNotOK, res.SessionsNotOK, res.LoginsRefused)
	if res.CPUSeconds > 0 && res.Back > 0 {
		fmt.Fprintf(tw, "CPU of the measured processes\t%.2fs during the storm, %s per session back\n", res.CPUSeconds, fmtMicros(res.CPUSeconds*1e6/float64(res.Back)))
	}
	if res.ClientCPUSeconds > 0 {
		fmt.Fprintf(tw, "CPU of the client (imapbench)\t%.2fs during the storm\n", res.ClientCPUSeconds)
	}
	for _, e := range res.AttemptErrors {
		fmt.Fprintf(tw, "attempt error\t%d× %s\n", e.Count, e.Error)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if m := res.Memory; m != nil {
		fmt.Fprintf(w, "\nmemory of pid %s (peak RSS during the storm %s)\n", joinInts(m.PIDs), fmtBytes(m.PeakRSSBytes))
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintf(tw, "\tRSS\tPSS\tRSS per session\tPSS per session\t\n")
		fmt.Fprintf(tw, "baseline\t%s\t%s\t\t\t\n", fmtBytes(m.Baseline.RSSBytes), fmtBytes(m.Baseline.PSSBytes))
		fmt.Fprintf(tw, "after the setup\t%s\t%s\t%s\t%s\t\n", fmtBytes(m.AfterSetup.RSSBytes), fmtBytes(m.AfterSetup.PSSBytes), fmtBytes(m.PerSessionSetupRSSBytes), fmtBytes(m.PerSessionSetupPSSBytes))
		fmt.Fprintf(tw, "end of the hold\t%s\t%s\t%s\t%s\t\n", fmtBytes(m.Held.RSSBytes), fmtBytes(m.Held.PSSBytes), fmtBytes(m.PerSessionHeldRSSBytes), fmtBytes(m.PerSessionHeldPSSBytes))
		fmt.Fprintf(tw, "after the storm\t%s\t%s\t%s\t%s\t\n", fmtBytes(m.AfterStorm.RSSBytes), fmtBytes(m.AfterStorm.PSSBytes), fmtBytes(m.PerSessionAfterRSSBytes), fmtBytes(m.PerSessionAfterPSSBytes))
		return tw.Flush()
	}
	return nil
}
