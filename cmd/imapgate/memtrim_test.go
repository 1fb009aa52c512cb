package main

import (
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestTrimmerDecides(t *testing.T) {
	const MiB = 1 << 20
	tests := []struct {
		name  string
		every time.Duration // between looks; zero: quietWindow
		prep  []memSample   // earlier looks
		now   memSample
		want  bool
	}{
		{"after a login storm, now quiet", 0, []memSample{{spare: 40 * MiB, live: 20 * MiB, allocs: 500 * MiB}},
			memSample{spare: 60 * MiB, live: 20 * MiB, allocs: 501 * MiB}, true},
		{"still busy", 0, []memSample{{spare: 40 * MiB, live: 20 * MiB, allocs: 500 * MiB}},
			memSample{spare: 60 * MiB, live: 20 * MiB, allocs: 600 * MiB}, false},
		{"too little to gain", 0, []memSample{{spare: 20 * MiB, live: 20 * MiB, allocs: 500 * MiB}},
			memSample{spare: 30 * MiB, live: 20 * MiB, allocs: 500 * MiB}, false},
		{"small next to a big live heap", 0, []memSample{{spare: 900 * MiB, live: 800 * MiB, allocs: 5000 * MiB}},
			memSample{spare: 1000 * MiB, live: 800 * MiB, allocs: 5000 * MiB}, false},
		// Looks every second judge quiet per 5 s all the same: 12.5 MiB
		// per 5 s against a 100 MiB live heap, so 2.5 MiB per second.
		{"one second after a login storm, quiet", time.Second, []memSample{{spare: 100 * MiB, live: 100 * MiB, allocs: 900 * MiB}},
			memSample{spare: 180 * MiB, live: 100 * MiB, allocs: 902 * MiB}, true},
		{"busy for a one-second look, quiet for a five-second one", time.Second, []memSample{{spare: 100 * MiB, live: 100 * MiB, allocs: 900 * MiB}},
			memSample{spare: 180 * MiB, live: 100 * MiB, allocs: 905 * MiB}, false},
		{"the same allocations over five seconds are quiet", 5 * time.Second, []memSample{{spare: 100 * MiB, live: 100 * MiB, allocs: 900 * MiB}},
			memSample{spare: 180 * MiB, live: 100 * MiB, allocs: 905 * MiB}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tr := trimmer{floor: 16 * MiB, every: tt.every}
			for _, m := range tt.prep {
				tr.decide(m)
			}
			if got := tr.decide(tt.now); got != tt.want {
				t.Fatalf("decide = %v, want %v", got, tt.want)
			}
		})
	}
}

// TestTrimmerDoesNotRepeatOnWhatItCannotFree: stacks of running goroutines
// count as spare but survive a collection; after one trim they must not
// cause another every interval.
func TestTrimmerDoesNotRepeatOnWhatItCannotFree(t *testing.T) {
	const MiB = 1 << 20
	tr := trimmer{floor: 16 * MiB}
	tr.decide(memSample{spare: 100 * MiB, live: 40 * MiB, allocs: 100 * MiB})
	if !tr.decide(memSample{spare: 200 * MiB, live: 40 * MiB, allocs: 101 * MiB}) {
		t.Fatal("first trim not taken")
	}
	tr.trimmed(memSample{spare: 120 * MiB, live: 40 * MiB, allocs: 101 * MiB}) // 80 MiB of stacks stay
	for i := 0; i < 5; i++ {
		if tr.decide(memSample{spare: 121 * MiB, live: 40 * MiB, allocs: 102 * MiB}) {
			t.Fatalf("trim %d repeated on memory a collection cannot free", i)
		}
	}
	// A new storm leaves new garbage: trim again.
	if !tr.decide(memSample{spare: 180 * MiB, live: 40 * MiB, allocs: 103 * MiB}) {
		t.Fatal("new garbage not trimmed")
	}
}

// TestStormGarbageIsReturnedWithinTwoSeconds: serve's trimmer, on this
// process's own runtime, returns the garbage of a burst of allocations
// (what a login storm leaves) within two seconds of the burst's end, so
// that RSS measured 3 s after a storm is the sessions', not the storm's.
func TestStormGarbageIsReturnedWithinTwoSeconds(t *testing.T) {
	trims := &lineSignal{match: "returned spare memory", seen: make(chan time.Time, 16)}
	log := slog.New(slog.NewTextHandler(trims, &slog.HandlerOptions{Level: slog.LevelDebug}))
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	defer func() { cancel(); <-done }()
	go func() { trimMemory(ctx, trimEvery, trimFloor, log); close(done) }()

	keep := allocateStorm(256<<20, 16<<20) // 256 MiB allocated, 16 MiB of it kept, like the sessions
	end := time.Now()
	deadline := time.After(2*time.Second + 500*time.Millisecond)
	for {
		select {
		case at := <-trims.seen:
			if at.Before(end) {
				continue // a trim during the burst; the one after it counts
			}
			t.Logf("trimmed %v after the burst (%d live buffers)", at.Sub(end).Round(time.Millisecond), len(keep))
			return
		case <-deadline:
			t.Fatalf("no trim within 2.5 s of the burst's end (looks every %v)", trimEvery)
		}
	}
}

// allocateStorm allocates total bytes in 4 KiB buffers, the size of a
// handshake's, and keeps about kept bytes of them.
func allocateStorm(total, kept int) [][]byte {
	const size = 4 << 10
	var keep [][]byte
	every := total / kept
	for i := range total / size {
		b := make([]byte, size)
		b[0] = byte(i)
		if i%every == 0 {
			keep = append(keep, b)
		}
	}
	return keep
}

// lineSignal is a log writer that reports when a line containing match
// was written.
type lineSignal struct {
	match string
	seen  chan time.Time
	mu    sync.Mutex
}

func (l *lineSignal) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if strings.Contains(string(p), l.match) {
		select {
		case l.seen <- time.Now():
		default:
		}
	}
	return len(p), nil
}
