package policy

import (
	"context"
	"sync"
	"time"
)

// Slots caps concurrent upstream logins. Up to Max logins run at once;
// up to Queue more wait, first come first served, and anyone beyond gets
// a refusal at once, so a login storm cannot pile onto the legacy server.
//
// A waiter keeps its place while the upstream makes progress: it is
// refused only when no login has finished for Wait (since it began
// waiting or since the last one finished, whichever is later). After a
// Wi-Fi blip or a restart thousands of phones log in at once with the
// right password; while logins keep finishing they all get their turn,
// however long the queue, and a hung upstream (no login finishing) still
// answers the waiters NO [UNAVAILABLE] within Wait (README "Upstream
// protection").
type Slots struct {
	mu      sync.Mutex
	max     int
	queue   int
	wait    time.Duration
	inUse   int
	waiters []chan struct{} // FIFO; a slot is handed over by a send
	// finished is when a login last gave its slot back: the upstream's
	// progress, which waiters measure their wait from.
	finished time.Time
}

// DefaultSlotWait is how long a login waits in the queue without any login
// finishing, when the wait is zero.
const DefaultSlotWait = 2 * time.Second

// NewSlots returns Slots allowing max concurrent logins (0 = no limit)
// and queue waiters (0 = no limit: the connection limits bound them),
// each waiting while some login finishes at least every wait (0 =
// DefaultSlotWait).
func NewSlots(max, queue int, wait time.Duration) *Slots {
	s := &Slots{}
	s.SetLimits(max, queue, wait)
	return s
}

// SetLimits changes the limits (on a config reload); logins in flight and
// waiting keep their places.
func (s *Slots) SetLimits(max, queue int, wait time.Duration) {
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
	if s.queue > 0 && len(s.waiters) >= s.queue {
		s.mu.Unlock()
		return nil
	}
	ch := make(chan struct{}, 1)
	s.waiters = append(s.waiters, ch)
	since := time.Now()
	s.mu.Unlock()

	t := time.NewTimer(s.patience(since))
	defer t.Stop()
	for waiting := true; waiting; {
		select {
		case <-ch:
			return s.release
		case <-t.C:
			// A login finished meanwhile: the upstream is answering,
			// so wait on, measured from then.
			if d := s.patience(since); d > 0 {
				t.Reset(d)
				continue
			}
			waiting = false
		case <-ctx.Done():
			waiting = false
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if i := indexOf(s.waiters, ch); i >= 0 {
		s.waiters = append(s.waiters[:i], s.waiters[i+1:]...)
		return nil
	}
	// The slot was handed over while the wait ran out: pass it on (no
	// login finished: the others' waits stay as they are).
	s.passOnLocked()
	return nil
}

// patience is how much longer a waiter that began waiting at since may
// wait: until Wait after since or after the last login finished,
// whichever is later.
func (s *Slots) patience(since time.Time) time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	from := since
	if s.finished.After(from) {
		from = s.finished
	}
	return time.Until(from.Add(s.wait))
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
	s.finished = time.Now()
	s.passOnLocked()
}

// passOnLocked frees a slot and hands it to the first waiter, if any.
func (s *Slots) passOnLocked() {
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
