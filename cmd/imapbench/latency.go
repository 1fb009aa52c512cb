package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"text/tabwriter"
	"time"
)

// latencyOptions configures runLatency.
type latencyOptions struct {
	Target target
	// Count is how many NOOPs are sent, one after the other. If zero, 2000.
	Count int
	// Log receives progress. If nil, nothing is logged.
	Log *slog.Logger
}

// latencyResult is what runLatency measured.
type latencyResult struct {
	Scenario string        `json:"scenario"` // "latency"
	Target   targetSummary `json:"target"`
	Count    int           `json:"count"` // NOOP round trips measured
	// Latency is of one round trip: from writing "TAG NOOP" to reading
	// its tagged OK.
	Latency latencyStats `json:"latency"`
}

const defaultCount = 2000

// runLatency logs in once and measures o.Count sequential NOOP round
// trips.
func runLatency(ctx context.Context, o latencyOptions) (latencyResult, error) {
	if o.Count <= 0 {
		o.Count = defaultCount
	}
	log := o.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	t := o.Target
	res := latencyResult{Scenario: "latency", Target: t.summary()}
	c, err := dial(ctx, t, t.source(0), 4<<10)
	if err != nil {
		return res, fmt.Errorf("latency: %w", err)
	}
	defer c.Close()
	if err := c.authenticate(ctx, t, t.user(0)); err != nil {
		return res, fmt.Errorf("latency: %w", err)
	}
	log.Info("sending NOOPs", "count", o.Count, "target", res.Target.String())
	ds := make([]time.Duration, 0, o.Count)
	for range o.Count {
		start := time.Now()
		if err := c.noop(ctx); err != nil {
			res.Count, res.Latency = len(ds), summarize(ds)
			return res, fmt.Errorf("latency: after %d NOOPs: %w", len(ds), err)
		}
		ds = append(ds, time.Since(start))
	}
	res.Count, res.Latency = len(ds), summarize(ds)
	if err := c.logout(ctx); err != nil {
		return res, fmt.Errorf("latency: %w", err)
	}
	return res, nil
}

func (res latencyResult) writeTable(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	l := res.Latency
	fmt.Fprintf(tw, "latency\t%s\n", res.Target)
	fmt.Fprintf(tw, "NOOP round trips\t%d\n", res.Count)
	fmt.Fprintf(tw, "p50\t%.1f µs\n", l.P50Micros)
	fmt.Fprintf(tw, "p99\t%.1f µs\n", l.P99Micros)
	fmt.Fprintf(tw, "mean\t%.1f µs\n", l.MeanMicros)
	fmt.Fprintf(tw, "min / max\t%.1f / %.1f µs\n", l.MinMicros, l.MaxMicros)
	return tw.Flush()
}
