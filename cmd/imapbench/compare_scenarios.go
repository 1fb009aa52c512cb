package main

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"
)

// The scenarios of a comparison: each runs once against one contender
// in one round and adds what it measured to the samples.

// idle holds o.Sessions sessions in IDLE through a freshly started proxy
// and records its memory per session. Dovecot alone has no proxy to
// measure: direct is skipped.
func (c *comparison) idle(ctx context.Context, ct contender, round int) error {
	if ct.server == nil {
		return nil
	}
	if err := ct.server.restart(ctx, c.tlsConf); err != nil {
		return fmt.Errorf("restart: %w", err)
	}
	before := c.dovecotChildren()
	r, err := runIdle(ctx, idleOptions{Target: ct.target, Sessions: c.o.Sessions, Concurrency: c.o.Concurrency,
		Hold: c.o.Hold, PIDs: ct.server.pids(), Log: c.o.RunnerLog})
	c.settle(ctx, before)
	if err != nil {
		return err
	}
	if r.Failed > 0 {
		c.problem("%s idle round %d: %d of %d sessions failed to open: %s", ct.name, round+1, r.Failed, r.Requested, errorSummary(r.OpenErrors))
	}
	if r.Closed < r.Opened {
		c.problem("%s idle round %d: %d of %d sessions did not close cleanly: %s", ct.name, round+1, r.Opened-r.Closed, r.Opened, errorSummary(r.CloseErrors))
	}
	if r.Memory == nil || r.Opened == 0 {
		return errors.New("no memory measurement: no session opened")
	}
	rss, pss := float64(r.Memory.PerSessionRSSBytes)/1024, float64(r.Memory.PerSessionPSSBytes)/1024
	c.samples.add(figIdleRSSSetup, ct.name, float64(r.Memory.PerSessionSetupRSSBytes)/1024)
	c.samples.add(figIdleRSS, ct.name, rss)
	c.samples.add(figIdlePSS, ct.name, pss)
	c.log.Info("idle", "round", round+1, "target", ct.name, "sessions", r.Opened, "rss_kib_per_session", fmt.Sprintf("%.1f", rss),
		"pss_kib_per_session", fmt.Sprintf("%.1f", pss), "pids", joinInts(ct.server.pids()))
	return nil
}

// dovecotChildren counts the processes of Dovecot's master: one per
// logged-in session and a handful of services.
func (c *comparison) dovecotChildren() int {
	kids, _ := childProcs("/proc", c.dovecot.PID)
	return len(kids)
}

// settle waits (at most 15s) until Dovecot has ended the sessions of an
// idle run, so that the next measurement does not share the CPU with
// thousands of exiting processes.
func (c *comparison) settle(ctx context.Context, before int) {
	deadline := time.Now().Add(15 * time.Second)
	for ctx.Err() == nil && time.Now().Before(deadline) && c.dovecotChildren() > before+2 {
		pause(ctx, 50*time.Millisecond)
	}
}

// fetch fetches user1's INBOX once through ct, and records MB/s and the
// CPU time of the proxy's processes per MB under ct's fetch keys.
func (c *comparison) fetch(ctx context.Context, ct contender, round int) error {
	cpu := c.startCPU(ct)
	r, err := runFetch(ctx, fetchOptions{Target: ct.target, Rounds: 1, Log: c.o.RunnerLog})
	if err != nil {
		return err
	}
	used, cpuErr := cpu()
	key, cpuKey := ct.fetchKeys()
	if got := r.BodyBytes; got < int64(c.o.Messages)*int64(c.o.MessageSize)*9/10 {
		c.problem("%s fetch round %d: %d bytes in bodies, want about %d", ct.name, round+1, got, int64(c.o.Messages)*int64(c.o.MessageSize))
	}
	c.samples.add(key, ct.name, r.MedianMBps)
	attrs := []any{"round", round + 1, "target", ct.name, "upstream_tls", ct.upstreamMode(), "mb_per_s", fmt.Sprintf("%.1f", r.MedianMBps), "bytes", r.WireBytes}
	if ct.server != nil && r.WireBytes > 0 {
		if cpuErr != nil {
			return cpuErr
		}
		ms := float64(used.Microseconds()) / 1000 / (float64(r.WireBytes) / 1e6)
		c.samples.add(cpuKey, ct.name, ms)
		attrs = append(attrs, "cpu_ms_per_mb", fmt.Sprintf("%.2f", ms))
	}
	c.log.Info("fetch", attrs...)
	return nil
}

// startCPU reads the CPU time of ct's proxy processes and returns a
// function that says how much they used since; for direct, none.
func (c *comparison) startCPU(ct contender) func() (time.Duration, error) {
	if ct.server == nil {
		return func() (time.Duration, error) { return 0, nil }
	}
	pids := ct.server.cpuPIDs()
	before, err := readProcCPU("/proc", pids)
	return func() (time.Duration, error) {
		if err != nil {
			return 0, err
		}
		after, err := readProcCPU("/proc", pids)
		if err != nil {
			return 0, err
		}
		return after - before, nil
	}
}

// logins runs the login loop with workers workers through ct: with
// Dovecot or the memory upstream, a full handshake each login, or with
// the memory upstream and a TLS session cache shared by the workers
// (empty at the run's start), as kind says.
func (c *comparison) logins(ctx context.Context, ct contender, round, workers int, kind loginsKind) error {
	resume := kind == loginsMemoryResumed
	t := ct.target
	if kind == loginsMemoryHybrid {
		t = hybridTarget(t)
	}
	cpu := c.startCPU(ct)
	r, err := runLogins(ctx, loginsOptions{Target: t, Workers: workers, Duration: c.o.Duration, Resume: resume, Log: c.o.RunnerLog})
	if err != nil {
		return err
	}
	used, cpuErr := cpu()
	name, upstream := "logins", "dovecot"
	switch kind {
	case loginsMemory:
		name, upstream = "memory logins", "memory"
	case loginsMemoryResumed:
		name, upstream = "resumed memory logins", "memory"
	case loginsMemoryHybrid:
		name, upstream = "memory logins, X25519MLKEM768 offered,", "memory"
	}
	if r.Errors > 0 {
		c.problem("%s %s@%d round %d: %d errors: %s", ct.name, name, workers, round+1, r.Errors, errorSummary(r.ErrorKinds))
	}
	if r.Logins == 0 {
		return errors.New("no login succeeded")
	}
	rate, p50, p99, cpuKey := loginFigures(workers, kind)
	c.samples.add(rate, ct.name, r.LoginsPerSecond)
	c.samples.add(p50, ct.name, r.Latency.P50Micros/1000)
	c.samples.add(p99, ct.name, r.Latency.P99Micros/1000)
	attrs := []any{"round", round + 1, "target", ct.name, "upstream", upstream, "resume", resume, "workers", workers, "per_s", fmt.Sprintf("%.0f", r.LoginsPerSecond),
		"p50", fmtMicros(r.Latency.P50Micros), "p99", fmtMicros(r.Latency.P99Micros)}
	if ct.server != nil {
		if cpuErr != nil {
			return cpuErr
		}
		// Every cycle that ran, also one that failed, used the proxy's
		// CPU; the rate counts the successful ones.
		us := float64(used.Microseconds()) / float64(r.Logins+r.Errors)
		c.samples.add(cpuKey, ct.name, us)
		attrs = append(attrs, "cpu_us_per_login", fmt.Sprintf("%.0f", us))
	}
	if resume {
		c.countResumed(ct.name, workers, r.Logins, r.Resumed)
		attrs = append(attrs, "resumed", fmt.Sprintf("%d of %d", r.Resumed, r.Logins))
		if r.Resumed == 0 {
			c.log.Warn("no TLS handshake resumed a session", "target", ct.name, "workers", workers, "round", round+1, "logins", r.Logins)
		}
	}
	c.log.Info("logins", attrs...)
	return nil
}

func (c *comparison) latency(ctx context.Context, ct contender, round int) error {
	r, err := runLatency(ctx, latencyOptions{Target: ct.target, Count: c.o.Count, Log: c.o.RunnerLog})
	if err != nil {
		return err
	}
	c.samples.add(figNoopP50, ct.name, r.Latency.P50Micros)
	c.samples.add(figNoopP99, ct.name, r.Latency.P99Micros)
	c.log.Info("latency", "round", round+1, "target", ct.name, "p50", fmtMicros(r.Latency.P50Micros), "p99", fmtMicros(r.Latency.P99Micros))
	return nil
}

// errorSummary is the most frequent errors of a scenario, for problems.
func errorSummary(errs []errorCount) string {
	var parts []string
	for i, e := range errs {
		if i == 3 {
			parts = append(parts, "...")
			break
		}
		parts = append(parts, fmt.Sprintf("%d× %s", e.Count, e.Error))
	}
	return strings.Join(parts, "; ")
}

// hybridTarget is t with the client offering Go's default key exchanges
// (X25519MLKEM768 first, then X25519 and the NIST curves) instead of
// X25519 alone.
func hybridTarget(t target) target {
	cfg := t.tlsConfig().Clone()
	cfg.CurvePreferences = nil
	t.TLSConfig = cfg
	return t
}
