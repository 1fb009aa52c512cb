package policy

import (
	"context"
	"sync"
	"time"
)

// Slots caps concurrent upstream logins. Up to Max logins run at once; up
// to Queue more wait, first come first served, for at most Wait; anyone
// beyond gets a refusal at once, so a login storm cannot pile onto the
// legacy server and the client hears NO [UNAVAILABLE] quickly.
//
// The zero value (and a nil *Slots) limits nothing.
type Slots struct {
	mu      sync.Mutex
	max     int
	queue   int
	wait    time.Duration
	inUse   int
	waiters []chan struct{} // FIFO; a slot is handed over by a send
}

// DefaultSlotWait is how long a login waits in the queue when the wait is
// zero.
const DefaultSlotWait = 2 * time.Second

// NewSlots returns Slots allowing max concurrent logins (0 = no limit),
// queue waiters (0 = as many as max) each waiting up to wait (0 =
// DefaultSlotWait).
func NewSlots(max, queue int, wait time.Duration) *Slots {
	s := &Slots{}
	s.SetLimits(max, queue, wait)
	return s
}

// SetLimits changes the limits (on a config reload); logins in flight and
// waiting keep their places.
func (s *Slots) SetLimits(max, queue int, wait time.Duration) {
	if queue <= 0 {
		queue = max
	}
	if wait <= 0 {
		wait = DefaultSlotWait
	}
	s.mu.Lock()
	s.max, s.queue, s.wait = max, queue, wait
	for (s.max <= 0 || s.inUse < s.max) && len(s.waiters) > 0 { // a raised limit frees waiters
		s.handOver()
	}
	s.mu.Unlock()
}

// Acquire takes a slot, waiting in the queue if need be. It returns a
// release function (call it exactly once, when the login is done), or nil when the queue
// is full, the wait ran out or ctx ended.
func (s *Slots) Acquire(ctx context.Context) (release func()) {
	if s == nil {
		return func() {}
	}
	s.mu.Lock()
	if s.max <= 0 || s.inUse < s.max {
		s.inUse++
		s.mu.Unlock()
		return s.release
	}
	if len(s.waiters) >= s.queue {
		s.mu.Unlock()
		return nil
	}
	ch := make(chan struct{}, 1)
	s.waiters = append(s.waiters, ch)
	wait := s.wait
	s.mu.Unlock()

	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-ch:
		return s.release
	case <-t.C:
	case <-ctx.Done():
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if i := indexOf(s.waiters, ch); i >= 0 {
		s.waiters = append(s.waiters[:i], s.waiters[i+1:]...)
		return nil
	}
	// The slot was handed over while the wait ran out: pass it on.
	s.releaseLocked()
	return nil
}

func indexOf(list []chan struct{}, ch chan struct{}) int {
	for i, c := range list {
		if c == ch {
			return i
		}
	}
	return -1
}

func (s *Slots) release() {
	s.mu.Lock()
	s.releaseLocked()
	s.mu.Unlock()
}

func (s *Slots) releaseLocked() {
	s.inUse--
	if len(s.waiters) > 0 && (s.max <= 0 || s.inUse < s.max) {
		s.handOver()
	}
}

// handOver gives one slot to the first waiter.
func (s *Slots) handOver() {
	ch := s.waiters[0]
	s.waiters = s.waiters[1:]
	s.inUse++
	ch <- struct{}{}
}

// InUse returns the logins in flight and the number waiting.
func (s *Slots) InUse() (inFlight, waiting int) {
	if s == nil {
		return 0, 0
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.inUse, len(s.waiters)
}
