package main

import "testing"

func TestTrimmerDecides(t *testing.T) {
	const MiB = 1 << 20
	tests := []struct {
		name string
		prep []memSample // earlier looks
		now  memSample
		want bool
	}{
		{"after a login storm, now quiet", []memSample{{spare: 40 * MiB, live: 20 * MiB, allocs: 500 * MiB}},
			memSample{spare: 60 * MiB, live: 20 * MiB, allocs: 501 * MiB}, true},
		{"still busy", []memSample{{spare: 40 * MiB, live: 20 * MiB, allocs: 500 * MiB}},
			memSample{spare: 60 * MiB, live: 20 * MiB, allocs: 600 * MiB}, false},
		{"too little to gain", []memSample{{spare: 20 * MiB, live: 20 * MiB, allocs: 500 * MiB}},
			memSample{spare: 30 * MiB, live: 20 * MiB, allocs: 500 * MiB}, false},
		{"small next to a big live heap", []memSample{{spare: 900 * MiB, live: 800 * MiB, allocs: 5000 * MiB}},
			memSample{spare: 1000 * MiB, live: 800 * MiB, allocs: 5000 * MiB}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tr := trimmer{floor: 16 * MiB}
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
