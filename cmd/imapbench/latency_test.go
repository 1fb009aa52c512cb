package main

import "testing"

func TestLatencyOfNOOPs(t *testing.T) {
	up := startUpstream(t, 1)
	res, err := runLatency(testContext(t), latencyOptions{Target: plainTarget(up), Count: 100})
	if err != nil {
		t.Fatal(err)
	}
	l := res.Latency
	if res.Count != 100 || l.P50Micros <= 0 || l.P99Micros < l.P50Micros || l.MinMicros > l.P50Micros || l.MaxMicros < l.P99Micros || l.MeanMicros <= 0 {
		t.Fatalf("count %d, latency %+v", res.Count, l)
	}
}

func TestLatencyWithLOGIN(t *testing.T) {
	up := startUpstream(t, 1)
	tg := plainTarget(up)
	tg.Login = true
	res, err := runLatency(testContext(t), latencyOptions{Target: tg, Count: 10})
	if err != nil || res.Count != 10 {
		t.Fatalf("count %d, err %v", res.Count, err)
	}
}
