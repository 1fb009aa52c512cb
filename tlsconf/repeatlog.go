package tlsconf

import (
	"context"
	"log/slog"
	"sync"
	"time"
)

// RepeatedLogInterval bounds the log lines that peers can make the ACME
// manager repeat at will (a TLS-ALPN-01 hello for a name with no challenge
// pending, a refused On-Demand name, a failing accept on the challenge
// listener): at most one line of each kind per interval, and one more
// with the count of those left out.
const RepeatedLogInterval = 10 * time.Second

// repeatLog writes one kind of line at most once per interval. The first
// line of a quiet spell is written at once and opens an interval; lines
// within it are only counted. When an interval ends with a count, one line
// with the attributes of the latest of them and "suppressed": N is written
// and opens the next interval. Its zero value is not usable: build it with
// newRepeatLog.
type repeatLog struct {
	log   *slog.Logger
	level slog.Level
	msg   string
	every time.Duration

	mu         sync.Mutex
	timer      *time.Timer // non-nil while an interval is open
	suppressed int
	last       []any // attributes of the latest suppressed line
	closed     bool
}

// newRepeatLog returns a repeatLog of msg at level; every <= 0 means
// RepeatedLogInterval.
func newRepeatLog(log *slog.Logger, level slog.Level, msg string, every time.Duration) *repeatLog {
	if every <= 0 {
		every = RepeatedLogInterval
	}
	return &repeatLog{log: log, level: level, msg: msg, every: every}
}

// Log writes the line with args now, or counts it if an interval is open.
// After Close it does nothing.
func (r *repeatLog) Log(args ...any) {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return
	}
	if r.timer != nil {
		r.suppressed++
		r.last = args
		r.mu.Unlock()
		return
	}
	r.timer = time.AfterFunc(r.every, r.endInterval)
	r.mu.Unlock()
	r.log.Log(context.Background(), r.level, r.msg, args...)
}

// endInterval runs when an interval ends: it writes the count, if any.
func (r *repeatLog) endInterval() {
	r.mu.Lock()
	n, last := r.suppressed, r.last
	r.suppressed, r.last = 0, nil
	if n == 0 || r.closed {
		r.timer = nil
		r.mu.Unlock()
		return
	}
	r.timer = time.AfterFunc(r.every, r.endInterval)
	r.mu.Unlock()
	r.write(n, last)
}

// Close writes the count of the open interval, if any, and stops.
func (r *repeatLog) Close() {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return
	}
	r.closed = true
	if r.timer != nil {
		r.timer.Stop()
		r.timer = nil
	}
	n, last := r.suppressed, r.last
	r.suppressed, r.last = 0, nil
	r.mu.Unlock()
	if n > 0 {
		r.write(n, last)
	}
}

func (r *repeatLog) write(n int, last []any) {
	args := append(append([]any{}, last...), "suppressed", n, "interval", r.every.String())
	r.log.Log(context.Background(), r.level, r.msg, args...)
}
