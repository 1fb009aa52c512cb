package main

import (
	"context"
	"log/slog"
	"runtime/debug"
	"runtime/metrics"
	"time"
)

// How serve trims (README "Performance"): a look every trimEvery, so the
// memory a storm leaves is returned within about two seconds of its end
// (a look only reads runtime/metrics: microseconds), and never for less
// than trimFloor.
const (
	trimEvery = time.Second
	trimFloor = 4 << 20
)

// quietWindow is the span "quiet" is judged over, whatever the interval
// between looks: under max(1/8 of the live heap, 4 MiB) allocated per
// quietWindow. Looking more often therefore sees a burst end sooner
// without calling a busier process quiet.
const quietWindow = 5 * time.Second

// trimMemory gives memory back to the system after a burst. The garbage a
// storm of TLS handshakes and logins leaves behind (heap objects and the
// stacks of goroutines that have ended) stays with the process until the
// next collection, and an idle proxy allocates so little that the next one
// may be minutes away, while the sessions the storm created idle for hours.
// Every interval, when the process allocated little since the last look (it
// is quiet) and holds more spare memory than before (see trimmer), it
// collects and returns the memory at once. A busy proxy is left to the
// runtime.
func trimMemory(ctx context.Context, interval time.Duration, floor uint64, log *slog.Logger) {
	samples := []metrics.Sample{
		{Name: "/memory/classes/heap/free:bytes"},    // free and not yet returned
		{Name: "/memory/classes/heap/objects:bytes"}, // live and not yet collected
		{Name: "/memory/classes/heap/stacks:bytes"},  // goroutine stacks, in use or cached
		{Name: "/gc/heap/live:bytes"},
		{Name: "/gc/heap/allocs:bytes"},
	}
	read := func() memSample {
		metrics.Read(samples)
		return memSample{
			spare:  samples[0].Value.Uint64() + samples[1].Value.Uint64() + samples[2].Value.Uint64(),
			live:   samples[3].Value.Uint64(),
			allocs: samples[4].Value.Uint64(),
		}
	}
	tr := trimmer{floor: floor, every: interval}
	tr.decide(read())
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if m := read(); tr.decide(m) {
			debug.FreeOSMemory()
			tr.trimmed(read())
			log.Debug("returned spare memory to the system", "spare_bytes", m.spare-min(m.spare, m.live), "live_bytes", m.live)
		}
	}
}

// memSample is what trimmer looks at: heap objects, free heap and stacks
// together (spare, before subtracting live), the live heap at the last
// collection, and the bytes allocated since the start.
type memSample struct {
	spare, live, allocs uint64
}

// trimmer decides when a trim pays. "Extra" is spare memory (everything but
// the live heap) beyond the baseline, which is what was left right after
// the last trim (stacks of running goroutines and the like: a collection
// cannot give those back, so they must not cause a trim every interval).
type trimmer struct {
	floor uint64 // extra memory below this is never worth a trim
	// every is the interval between looks (calls of decide), which scales
	// the allocations that still count as quiet (see quietWindow). If
	// zero, or not shorter than quietWindow, quietWindow is assumed.
	every      time.Duration
	lastAllocs uint64
	baseline   uint64
}

func (t *trimmer) decide(m memSample) bool {
	spare := m.spare - min(m.spare, m.live)
	quiet := m.allocs-t.lastAllocs < t.quietBelow(m.live)
	t.lastAllocs = m.allocs
	t.baseline = min(t.baseline, spare) // goroutines ended: the floor went down
	extra := spare - min(spare, t.baseline)
	return quiet && extra > t.floor && extra > m.live/4
}

// quietBelow is how many bytes allocated since the last look still count
// as quiet: max(live/8, 4 MiB) per quietWindow, in proportion to every.
func (t *trimmer) quietBelow(live uint64) uint64 {
	q := max(live/8, 4<<20)
	if t.every > 0 && t.every < quietWindow {
		q = uint64(float64(q) * t.every.Seconds() / quietWindow.Seconds())
	}
	return q
}

func (t *trimmer) trimmed(m memSample) {
	t.baseline = m.spare - min(m.spare, m.live)
	t.lastAllocs = m.allocs
}
