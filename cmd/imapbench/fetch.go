package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"text/tabwriter"
	"time"
)

// fetchOptions configures runFetch.
type fetchOptions struct {
	Target target
	// Rounds is how many times the whole INBOX is fetched. If zero, 3.
	Rounds int
	// Log receives progress. If nil, nothing is logged.
	Log *slog.Logger
}

// fetchResult is what runFetch measured.
type fetchResult struct {
	Scenario   string        `json:"scenario"` // "fetch"
	Target     targetSummary `json:"target"`
	Messages   int64         `json:"messages"` // in INBOX at SELECT
	Rounds     []fetchRound  `json:"rounds"`
	MedianMBps float64       `json:"median_mb_per_s"` // of the rounds' MBps
	// WireBytes and BodyBytes are those of the median round (all rounds
	// read the same mailbox).
	WireBytes int64 `json:"wire_bytes"`
	BodyBytes int64 `json:"body_bytes"`
}

// fetchRound is one "UID FETCH 1:* BODY.PEEK[]".
type fetchRound struct {
	Seconds float64 `json:"seconds"` // from sending the command to its tagged OK
	// WireBytes is every byte of the response as IMAP (after TLS):
	// response lines, literals, the tagged OK.
	WireBytes int64 `json:"wire_bytes"`
	// BodyBytes is the bytes inside literals: the messages themselves.
	BodyBytes int64 `json:"body_bytes"`
	Messages  int   `json:"messages"` // FETCH responses
	// MBps is WireBytes / Seconds in decimal megabytes (1e6 bytes).
	MBps float64 `json:"mb_per_s"`
}

const (
	fetchBufSize  = 256 << 10
	defaultRounds = 3
)

// runFetch logs in once, selects INBOX and fetches every message's full
// body o.Rounds times, counting the bytes of each response until its
// tagged OK. Bodies are skipped as they arrive, never kept.
func runFetch(ctx context.Context, o fetchOptions) (fetchResult, error) {
	if o.Rounds <= 0 {
		o.Rounds = defaultRounds
	}
	log := o.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	t := o.Target
	res := fetchResult{Scenario: "fetch", Target: t.summary()}
	c, err := dial(ctx, t, t.source(0), fetchBufSize)
	if err != nil {
		return res, fmt.Errorf("fetch: %w", err)
	}
	defer c.Close()
	if err := c.authenticate(ctx, t, t.user(0)); err != nil {
		return res, fmt.Errorf("fetch: %w", err)
	}
	if res.Messages, err = c.selectInbox(ctx); err != nil {
		return res, fmt.Errorf("fetch: %w", err)
	}
	if res.Messages == 0 {
		return res, errors.New("fetch: INBOX is empty: there is nothing to fetch")
	}
	log.Info("fetching INBOX", "messages", res.Messages, "rounds", o.Rounds, "target", res.Target.String())
	for i := range o.Rounds {
		start := time.Now()
		r, err := c.command(ctx, "UID FETCH", false, "UID FETCH 1:* BODY.PEEK[]")
		if err != nil {
			return res, fmt.Errorf("fetch: round %d: %w", i+1, err)
		}
		if r.Status != "OK" {
			return res, fmt.Errorf("fetch: round %d: %w", i+1, &stepError{"UID FETCH", &statusError{r.Status, r.Text}})
		}
		d := time.Since(start)
		round := fetchRound{Seconds: d.Seconds(), WireBytes: r.WireBytes, BodyBytes: r.BodyBytes, Messages: r.Fetches}
		if d > 0 {
			round.MBps = float64(r.WireBytes) / 1e6 / d.Seconds()
		}
		res.Rounds = append(res.Rounds, round)
		log.Info("round", "round", i+1, "mb_per_s", fmt.Sprintf("%.1f", round.MBps), "bytes", round.WireBytes)
	}
	med := medianRound(res.Rounds)
	res.MedianMBps, res.WireBytes, res.BodyBytes = med.MBps, med.WireBytes, med.BodyBytes
	if err := c.logout(ctx); err != nil {
		return res, fmt.Errorf("fetch: %w", err)
	}
	return res, nil
}

// medianRound is the round of median speed (the lower one of an even
// number of rounds).
func medianRound(rounds []fetchRound) fetchRound {
	if len(rounds) == 0 {
		return fetchRound{}
	}
	s := slices.Clone(rounds)
	slices.SortFunc(s, func(a, b fetchRound) int {
		switch {
		case a.MBps < b.MBps:
			return -1
		case a.MBps > b.MBps:
			return 1
		}
		return 0
	})
	return s[(len(s)-1)/2]
}

func (res fetchResult) writeTable(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "fetch\t%s\n", res.Target)
	fmt.Fprintf(tw, "messages\t%d\n", res.Messages)
	for i, r := range res.Rounds {
		fmt.Fprintf(tw, "round %d\t%.1f MB/s  %d bytes (%d in bodies)  %d messages  %.3fs\n", i+1, r.MBps, r.WireBytes, r.BodyBytes, r.Messages, r.Seconds)
	}
	fmt.Fprintf(tw, "median\t%.1f MB/s  %d bytes\n", res.MedianMBps, res.WireBytes)
	return tw.Flush()
}
