package main

import (
	"context"
	"errors"
	"net"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"
)

// latencyStats summarises durations in microseconds.
type latencyStats struct {
	P50Micros  float64 `json:"p50_us"`
	P99Micros  float64 `json:"p99_us"`
	MeanMicros float64 `json:"mean_us"`
	MinMicros  float64 `json:"min_us"`
	MaxMicros  float64 `json:"max_us"`
}

// summarize sorts ds and returns its nearest-rank percentiles, mean, min
// and max; all zero for no durations.
func summarize(ds []time.Duration) latencyStats {
	if len(ds) == 0 {
		return latencyStats{}
	}
	slices.Sort(ds)
	var sum time.Duration
	for _, d := range ds {
		sum += d
	}
	return latencyStats{
		P50Micros:  micros(percentile(ds, 50)),
		P99Micros:  micros(percentile(ds, 99)),
		MeanMicros: micros(sum / time.Duration(len(ds))),
		MinMicros:  micros(ds[0]),
		MaxMicros:  micros(ds[len(ds)-1]),
	}
}

// percentile is the nearest-rank p-th percentile of sorted ds.
func percentile(sorted []time.Duration, p int) time.Duration {
	rank := (p*len(sorted) + 99) / 100 // ceil(p/100 * n)
	return sorted[max(rank, 1)-1]
}

func micros(d time.Duration) float64 { return float64(d.Nanoseconds()) / 1e3 }

// errorCount is how often one kind of error happened.
type errorCount struct {
	Error string `json:"error"`
	Count int    `json:"count"`
}

// errorCounts counts errors by kind (errorKind), safe for concurrent use.
// It keeps at most maxErrorKinds kinds; the rest count as "other".
type errorCounts struct {
	mu    sync.Mutex
	m     map[string]int
	total int
}

const maxErrorKinds = 16

func (e *errorCounts) add(err error) {
	k := errorKind(err)
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.m == nil {
		e.m = map[string]int{}
	}
	if _, ok := e.m[k]; !ok && len(e.m) >= maxErrorKinds {
		k = "other"
	}
	e.m[k]++
	e.total++
}

// list returns the kinds, most frequent first.
func (e *errorCounts) list() []errorCount {
	e.mu.Lock()
	defer e.mu.Unlock()
	var l []errorCount
	for k, n := range e.m {
		l = append(l, errorCount{k, n})
	}
	sort.Slice(l, func(i, j int) bool {
		if l[i].Count != l[j].Count {
			return l[i].Count > l[j].Count
		}
		return l[i].Error < l[j].Error
	})
	return l
}

// errorKind names an error without what differs between connections
// (ports, addresses): "connect: connection refused", "AUTHENTICATE: NO
// [AUTHENTICATIONFAILED] Invalid credentials", "IDLE: timeout".
func errorKind(err error) string {
	step := ""
	var se *stepError
	if errors.As(err, &se) {
		step = se.Step + ": "
		err = se.Err
	}
	var st *statusError
	var ne net.Error
	switch {
	case errors.As(err, &st):
		return step + truncate(st.Error(), 120)
	case errors.Is(err, context.Canceled):
		return step + "cancelled"
	case errors.Is(err, context.DeadlineExceeded):
		return step + "deadline exceeded"
	case errors.As(err, &ne) && ne.Timeout():
		return step + "timeout"
	}
	for {
		inner := errors.Unwrap(err)
		if inner == nil {
			break
		}
		err = inner
	}
	return step + truncate(err.Error(), 120)
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return strings.ToValidUTF8(s[:n], "") + "..."
}
