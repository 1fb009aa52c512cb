package proxy

import (
	"errors"
	"math/rand/v2"
	"sync"
	"time"
)

// answerEstimate follows how long the upstream takes to answer a wrong
// password, the way TCP follows a round-trip time (RFC 6298): a smoothed
// mean and a smoothed mean deviation. A refused attempt, which never
// reaches the upstream, waits a draw from it so that it is answered
// when a real failure would be (README, "Brute force and password
// spraying"). The zero value knows nothing yet.
type answerEstimate struct {
	mu        sync.Mutex
	mean, dev time.Duration
	seen      bool
}

// observe adds one measured answer time.
func (e *answerEstimate) observe(d time.Duration) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if !e.seen {
		e.mean, e.dev, e.seen = d, d/4, true
		return
	}
	diff := d - e.mean
	e.dev += (abs(diff) - e.dev) / 4
	e.mean += diff / 8
}

// draw returns a plausible answer time: uniform over mean ± 2 mean
// deviations (for a uniform spread, as Dovecot's 500ms flush timer
// gives, that is the spread itself), never negative; 0 before any
// observation.
func (e *answerEstimate) draw() time.Duration {
	e.mu.Lock()
	mean, dev := e.mean, e.dev
	e.mu.Unlock()
	if dev > 0 {
		mean += time.Duration(rand.Int64N(int64(4*dev)+1)) - 2*dev
	}
	return max(mean, 0)
}

func abs(d time.Duration) time.Duration {
	if d < 0 {
		return -d
	}
	return d
}

// KeepAnswerTimes carries what old has learnt about how long the server
// takes to answer a wrong password over to u, when both name the same
// address: a reload that keeps the upstream must not leave refusals
// answering at the tarpit alone until the next wrong password.
func (u *Upstream) KeepAnswerTimes(old *Upstream) {
	if old == nil || old == u || old.Address != u.Address {
		return
	}
	old.failures.mu.Lock()
	mean, dev, seen := old.failures.mean, old.failures.dev, old.failures.seen
	old.failures.mu.Unlock()
	u.failures.mu.Lock()
	u.failures.mean, u.failures.dev, u.failures.seen = mean, dev, seen
	u.failures.mu.Unlock()
}

// noteFailureTime, deferred by Login (never by LoginAs: a master login's
// NO is no answer to a client's guess), learns from a login the upstream
// answered with a wrong-password NO how long such an answer takes.
func (u *Upstream) noteFailureTime(start time.Time, err *error) {
	if errors.Is(*err, ErrBadCredentials) {
		u.failures.observe(time.Since(start))
	}
}

// failureAnswerTime is a draw of how long this upstream has lately taken
// to answer bad credentials, counted from the start of Login; 0 until it
// has answered one.
func (u *Upstream) failureAnswerTime() time.Duration { return u.failures.draw() }
