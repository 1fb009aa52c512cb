package proxy

import (
	"encoding/binary"
	"errors"
	"log/slog"
	"sync"

	"golang.org/x/sys/unix"
)

// parker watches the sockets of idle relay directions in one epoll set, so
// that an idle session costs no goroutine at all: 20,000 phones in IDLE are
// 20,000 registrations, not 40,000 parked goroutines with their stacks.
//
// Each registration is level-triggered and one-shot: a socket that already
// has bytes when it is added fires at once, and fires only once. The slot
// map decides ownership: whoever removes a direction from it (the event
// loop on readiness, or unpark on close) is the one that continues it.
type parker struct {
	start sync.Once
	epfd  int
	wake  int           // an eventfd in the set, under slot 0: close's doorbell
	done  chan struct{} // closed when watchIdleSockets has returned
	err   error

	mu     sync.Mutex
	next   uint64 // the last slot given; slot 0 is the doorbell's
	slots  map[uint64]*direction
	closed bool
}

// errParkerClosed is the err of a parker closed before its first park.
var errParkerClosed = errors.New("relay: parker closed")

func newParker() *parker {
	return &parker{slots: map[uint64]*direction{}, done: make(chan struct{})}
}

// park adds d's socket to the epoll set. It reports false when the parker
// cannot be used (the caller then waits in its own goroutine).
func (p *parker) park(d *direction) bool {
	if p == nil {
		return false
	}
	p.start.Do(p.open)
	if p.err != nil {
		return false
	}
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return false
	}
	p.next++
	id := p.next
	p.slots[id] = d
	p.mu.Unlock()
	ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLRDHUP | unix.EPOLLONESHOT, Fd: int32(id), Pad: int32(id >> 32)}
	var addErr error
	ctlErr := d.rc.Control(func(fd uintptr) {
		addErr = unix.EpollCtl(p.epfd, unix.EPOLL_CTL_ADD, int(fd), &ev)
	})
	if err := errors.Join(ctlErr, addErr); err != nil {
		p.mu.Lock()
		delete(p.slots, id)
		p.mu.Unlock()
		return false
	}
	d.parkID = id
	return true
}

// unpark takes d out of the set. It reports whether it did: false means
// the event loop has already woken d.
func (p *parker) unpark(d *direction) bool {
	p.mu.Lock()
	_, ok := p.slots[d.parkID]
	delete(p.slots, d.parkID)
	p.mu.Unlock()
	if ok {
		p.remove(d)
	}
	return ok
}

// remove deletes d's socket from the epoll set. Inside Control the
// descriptor cannot be closed and reused; a closed one has left the set.
func (p *parker) remove(d *direction) {
	d.rc.Control(func(fd uintptr) {
		unix.EpollCtl(p.epfd, unix.EPOLL_CTL_DEL, int(fd), nil)
	})
}

func (p *parker) open() {
	p.epfd, p.err = unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if p.err != nil {
		slog.Warn("relay: epoll unavailable; idle sessions keep a goroutine each", "err", p.err)
		return
	}
	p.wake, p.err = unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if p.err == nil {
		ev := unix.EpollEvent{Events: unix.EPOLLIN} // slot 0
		p.err = unix.EpollCtl(p.epfd, unix.EPOLL_CTL_ADD, p.wake, &ev)
		if p.err != nil {
			unix.Close(p.wake)
		}
	}
	if p.err != nil {
		unix.Close(p.epfd)
		slog.Warn("relay: epoll unavailable; idle sessions keep a goroutine each", "err", p.err)
		return
	}
	go p.watchIdleSockets()
}

// close stops the parker's goroutine and closes its descriptors; later
// parks fail, so a direction that waits keeps its own goroutine. The
// Server calls it at the end of Shutdown, once every relay has ended.
func (p *parker) close() {
	if p == nil {
		return
	}
	p.start.Do(func() { p.err = errParkerClosed }) // never opened: nothing runs
	p.mu.Lock()
	already := p.closed
	p.closed = true
	p.mu.Unlock()
	if already || p.err != nil {
		return
	}
	var one [8]byte // an eventfd takes a uint64 in native byte order
	binary.NativeEndian.PutUint64(one[:], 1)
	unix.Write(p.wake, one[:])
	<-p.done
	unix.Close(p.wake)
	unix.Close(p.epfd)
}

// watchIdleSockets is the parker's one goroutine: it waits in epoll_wait and
// starts a direction's goroutine again when its socket has bytes.
func (p *parker) watchIdleSockets() {
	defer close(p.done)
	events := make([]unix.EpollEvent, 256)
	for {
		n, err := unix.EpollWait(p.epfd, events, -1)
		if err != nil {
			if errors.Is(err, unix.EINTR) {
				continue
			}
			slog.Error("relay: epoll_wait failed; parked sessions will end at their idle timeout", "err", err)
			return
		}
		for _, ev := range events[:n] {
			id := uint64(uint32(ev.Fd)) | uint64(uint32(ev.Pad))<<32
			if id == 0 {
				return // close rang
			}
			p.mu.Lock()
			d := p.slots[id]
			delete(p.slots, id)
			p.mu.Unlock()
			if d == nil {
				continue // unparked meanwhile
			}
			p.remove(d)
			d.woken()
		}
	}
}
