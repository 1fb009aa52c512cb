package main

import (
	"strings"
	"testing"
)

func TestFetchCountsEveryByteOfEveryMessage(t *testing.T) {
	var msgs [][]byte
	var sum int64
	for i := range 50 {
		m := testMessage(i, 500+i*997) // 0.5 to 49 kB
		msgs = append(msgs, m)
		sum += int64(len(m))
	}
	up := startUpstream(t, 1, msgs...)

	res, err := runFetch(testContext(t), fetchOptions{Target: plainTarget(up)})
	if err != nil {
		t.Fatal(err)
	}
	if res.Messages != 50 || len(res.Rounds) != 3 {
		t.Fatalf("messages %d, rounds %d; want 50 and 3", res.Messages, len(res.Rounds))
	}
	for i, r := range res.Rounds {
		if r.BodyBytes != sum || r.Messages != 50 {
			t.Errorf("round %d: %d body bytes in %d messages, want %d in 50", i+1, r.BodyBytes, r.Messages, sum)
		}
		if r.WireBytes <= r.BodyBytes || r.MBps <= 0 {
			t.Errorf("round %d: wire bytes %d, %.1f MB/s", i+1, r.WireBytes, r.MBps)
		}
	}
	if res.BodyBytes != sum || res.MedianMBps <= 0 {
		t.Errorf("median: %d body bytes, %.1f MB/s", res.BodyBytes, res.MedianMBps)
	}
}

func TestFetchOfAnEmptyInboxIsAnError(t *testing.T) {
	up := startUpstream(t, 1)
	_, err := runFetch(testContext(t), fetchOptions{Target: plainTarget(up), Rounds: 1})
	if err == nil || !strings.Contains(err.Error(), "INBOX is empty") {
		t.Fatalf("err = %v", err)
	}
}

func TestMedianRound(t *testing.T) {
	rounds := []fetchRound{{MBps: 30}, {MBps: 10}, {MBps: 20}}
	if got := medianRound(rounds); got.MBps != 20 {
		t.Errorf("median of 30, 10, 20 = %v", got.MBps)
	}
	if got := medianRound(rounds[:2]); got.MBps != 10 {
		t.Errorf("median of 30, 10 = %v, want the lower", got.MBps)
	}
}
