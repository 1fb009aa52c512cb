package main

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"
)

func TestIdleHoldsSessionsAndMeasuresTheirMemory(t *testing.T) {
	up := startUpstream(t, 10, testMessage(1, 2000))
	tg := plainTarget(up)
	tg.UsersPattern, tg.UsersCount = "user%d", 10 // only user1 has a message
	srcs, err := parseSources("", 4)
	if err != nil {
		t.Fatal(err)
	}
	tg.Sources = srcs

	res, err := runIdle(testContext(t), idleOptions{Target: tg, Sessions: 20, Concurrency: 8, Hold: time.Second, PIDs: []int{os.Getpid()}})
	if err != nil {
		t.Fatal(err)
	}
	if res.Opened != 20 || res.Failed != 0 || len(res.OpenErrors) != 0 {
		t.Fatalf("opened %d, failed %d (%v), want 20 and 0", res.Opened, res.Failed, res.OpenErrors)
	}
	if res.EmptyInboxes != 18 {
		t.Errorf("EmptyInboxes = %d, want 18 (sessions of user2..user10)", res.EmptyInboxes)
	}
	if res.Closed != 20 || len(res.CloseErrors) != 0 {
		t.Errorf("closed %d (%v), want all 20 with DONE and LOGOUT", res.Closed, res.CloseErrors)
	}
	if res.HoldSeconds < 0.9 || res.OpenLatency.P50Micros <= 0 {
		t.Errorf("held %.2fs, open p50 %.0fµs", res.HoldSeconds, res.OpenLatency.P50Micros)
	}
	m := res.Memory
	if m == nil || m.Baseline.RSSBytes <= 0 || m.Held.RSSBytes <= 0 || m.Held.PSSBytes <= 0 || m.Peak.RSSBytes < m.Held.RSSBytes {
		t.Fatalf("Memory = %+v, want baseline and held samples, peak >= held", m)
	}
	if want := (m.Held.RSSBytes - m.Baseline.RSSBytes) / 20; m.PerSessionRSSBytes != want {
		t.Errorf("PerSessionRSSBytes = %d, want (held - baseline) / 20 = %d", m.PerSessionRSSBytes, want)
	}
	t.Logf("per session (client and server in this process): RSS %d B, PSS %d B", m.PerSessionRSSBytes, m.PerSessionPSSBytes)

	var b strings.Builder
	if err := res.writeTable(&b); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"20 of 20", "per session", "closed cleanly"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("table lacks %q:\n%s", want, b.String())
		}
	}
}

func TestIdleCountsSessionsThatFailToOpen(t *testing.T) {
	up := startUpstream(t, 2, testMessage(1, 500)) // user3 does not exist
	tg := plainTarget(up)
	tg.UsersPattern, tg.UsersCount = "user%d", 3

	res, err := runIdle(testContext(t), idleOptions{Target: tg, Sessions: 6, Hold: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if res.Opened != 4 || res.Failed != 2 || res.Closed != 4 {
		t.Fatalf("opened %d, failed %d, closed %d; want 4, 2, 4", res.Opened, res.Failed, res.Closed)
	}
	if len(res.OpenErrors) != 1 || res.OpenErrors[0].Count != 2 || !strings.HasPrefix(res.OpenErrors[0].Error, "AUTHENTICATE: NO") {
		t.Errorf("OpenErrors = %+v, want 2× AUTHENTICATE: NO ...", res.OpenErrors)
	}
	if res.Memory != nil {
		t.Errorf("Memory = %+v without PIDs", res.Memory)
	}
}

func TestIdleRefusesMoreSessionsThanOpenFiles(t *testing.T) {
	limit, err := openFileLimit()
	if err != nil || limit > 1<<30 {
		t.Skip("no open file limit here")
	}
	_, err = runIdle(testContext(t), idleOptions{Target: target{Addr: "127.0.0.1:1"}, Sessions: int(limit)})
	if err == nil || !strings.Contains(err.Error(), "RLIMIT_NOFILE") {
		t.Fatalf("err = %v, want the open file limit named", err)
	}
}

func TestIdleStopsOpeningWhenCancelled(t *testing.T) {
	up := startUpstream(t, 1)
	ctx := testContext(t)
	ctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	res, err := runIdle(ctx, idleOptions{Target: plainTarget(up), Sessions: 5, Hold: time.Minute})
	if err == nil || !strings.Contains(err.Error(), "interrupted") {
		t.Fatalf("err = %v, want interrupted", err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Fatalf("runIdle took %v after its context ended", d)
	}
	if res.Opened != 5 || res.Closed != 5 {
		t.Errorf("opened %d, closed %d; want the 5 opened sessions closed", res.Opened, res.Closed)
	}
}
