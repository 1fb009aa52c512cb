package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"time"
)

// The storm of a comparison: runStorm through the memory upstream's
// nginx and imapgate, each freshly started for the round, with the same
// descriptor limit (20,000 per process: imapgate's inherited from
// imapbench, each nginx worker's worker_rlimit_nofile) and, by default,
// the same listen backlog (net.core.somaxconn).

// storm runs one storm through ct and records its figures.
func (c *comparison) storm(ctx context.Context, ct contender, round int) error {
	if ct.server == nil {
		return nil
	}
	if err := ct.server.restart(ctx, c.tlsConf); err != nil {
		return fmt.Errorf("restart: %w", err)
	}
	var prof *cpuProfile
	o := stormOptions{Target: ct.target, Sessions: c.o.StormSessions, Concurrency: c.o.Concurrency, Hold: c.o.Hold,
		Settle: c.o.StormSettle, Within: c.o.StormWithin, PIDs: ct.server.pids(), CPUPIDs: ct.server.cpuPIDs(), Log: c.o.RunnerLog}
	if g, ok := ct.server.(*imapgateServer); ok && c.o.Profile != "" && g.metrics != "" {
		file := filepath.Join(c.o.Profile, fmt.Sprintf("imapgate-storm-round%d.pprof", round+1))
		o.OnDrop = func() { prof = startCPUProfile(ctx, g.metrics, file, min(c.o.StormWithin, 30*time.Second)) }
	}
	r, err := runStorm(ctx, o)
	if prof != nil {
		if perr := prof.wait(); perr != nil {
			c.problem("%s storm round %d: CPU profile: %v", ct.name, round+1, perr)
		} else {
			c.log.Info("CPU profile of imapgate during the storm", "file", prof.file)
		}
	}
	if err != nil {
		return err
	}
	if r.SetupFailed > 0 {
		c.problem("%s storm round %d: %d of %d sessions failed to set up: %s", ct.name, round+1, r.SetupFailed, r.Requested, errorSummary(r.SetupErrors))
	}
	if r.Back < r.SetUp {
		c.problem("%s storm round %d: %d of %d sessions not back within %v", ct.name, round+1, r.SetUp-r.Back, r.SetUp, c.o.StormWithin)
	}
	if r.LoginsRefused > 0 {
		c.problem("%s storm round %d: %d right-password logins refused: %s", ct.name, round+1, r.LoginsRefused, errorSummary(r.AttemptErrors))
	} else if r.AttemptsNotOK > 0 {
		c.problem("%s storm round %d: %d attempts not OK (from %d sessions): %s", ct.name, round+1, r.AttemptsNotOK, r.SessionsNotOK, errorSummary(r.AttemptErrors))
	}
	if r.AllBackSeconds > 0 {
		c.samples.add(figStormAllBack, ct.name, r.AllBackSeconds)
	}
	c.samples.add(figStormP50, ct.name, r.Reconnect.P50Micros/1000)
	c.samples.add(figStormP99, ct.name, r.Reconnect.P99Micros/1000)
	c.samples.add(figStormNotOK, ct.name, float64(r.AttemptsNotOK))
	c.samples.add(figStormSessionsNotOK, ct.name, float64(r.SessionsNotOK))
	c.samples.add(figStormRefused, ct.name, float64(r.LoginsRefused))
	if r.Back > 0 {
		c.samples.add(figStormCPU, ct.name, r.CPUSeconds*1e6/float64(r.Back))
	}
	m := r.Memory
	if m == nil {
		return errors.New("no memory measurement")
	}
	kib := func(b int64) float64 { return float64(b) / 1024 }
	c.samples.add(figStormPeakRSS, ct.name, float64(m.PeakRSSBytes)/(1<<20))
	c.samples.add(figStormRSSSetup, ct.name, kib(m.PerSessionSetupRSSBytes))
	c.samples.add(figStormRSSHeld, ct.name, kib(m.PerSessionHeldRSSBytes))
	c.samples.add(figStormRSSAfter, ct.name, kib(m.PerSessionAfterRSSBytes))
	c.log.Info("storm", "round", round+1, "target", ct.name, "sessions", r.SetUp, "back", r.Back,
		"seconds", fmt.Sprintf("%.2f", r.StormSeconds), "p50", fmtMicros(r.Reconnect.P50Micros), "p99", fmtMicros(r.Reconnect.P99Micros),
		"cpu_us_per_session", fmt.Sprintf("%.0f", r.CPUSeconds*1e6/float64(max(r.Back, 1))), "cpu_s", fmt.Sprintf("%.2f", r.CPUSeconds),
		"client_cpu_s", fmt.Sprintf("%.2f", r.ClientCPUSeconds), "attempts", r.Attempts, "not_ok", r.AttemptsNotOK, "refused", r.LoginsRefused, "errors", errorSummary(r.AttemptErrors),
		"peak_rss", fmtBytes(m.PeakRSSBytes), "rss_kib_per_session_setup", fmt.Sprintf("%.1f", kib(m.PerSessionSetupRSSBytes)),
		"held", fmt.Sprintf("%.1f", kib(m.PerSessionHeldRSSBytes)), "after_storm", fmt.Sprintf("%.1f", kib(m.PerSessionAfterRSSBytes)),
		"pids", joinInts(ct.server.pids()))
	return nil
}

// cpuProfile is a CPU profile being taken from imapgate's
// /debug/pprof/profile (metrics.pprof) into file.
type cpuProfile struct {
	file string
	done chan error
}

// startCPUProfile asks metricsAddr for a CPU profile of the next d and
// writes it to file.
func startCPUProfile(ctx context.Context, metricsAddr, file string, d time.Duration) *cpuProfile {
	p := &cpuProfile{file: file, done: make(chan error, 1)}
	go p.fetch(ctx, fmt.Sprintf("http://%s/debug/pprof/profile?seconds=%d", metricsAddr, max(1, int(d.Seconds()))), d)
	return p
}

func (p *cpuProfile) fetch(ctx context.Context, url string, d time.Duration) {
	p.done <- func() error {
		ctx, cancel := context.WithTimeout(ctx, d+30*time.Second)
		defer cancel()
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return err
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("%s: %s", url, resp.Status)
		}
		f, err := os.Create(p.file)
		if err != nil {
			return err
		}
		if _, err := io.Copy(f, resp.Body); err != nil {
			f.Close()
			return err
		}
		return f.Close()
	}()
}

func (p *cpuProfile) wait() error { return <-p.done }
