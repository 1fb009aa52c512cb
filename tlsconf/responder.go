package tlsconf

import (
	"errors"
	"net"
	"sync"
	"time"
)

// challengeListener is the listener of the ACME challenge responder. Its
// Accept holds at most max connections open at once (a connection's slot
// frees when it is closed), and outlasts every accept error: out of
// descriptors (EMFILE), of memory, or anything else, it waits a little
// longer each time (5ms doubling to 1s, as the IMAP listeners do) and
// accepts again, so that the CA's next validation is answered once the
// cause is gone. Accept returns an error only once Close was called.
type challengeListener struct {
	net.Listener
	slots chan struct{}
	stop  chan struct{} // closed by Close
	once  sync.Once
	log   *repeatLog // accept failures
}

func newChallengeListener(ln net.Listener, slots int, log *repeatLog) *challengeListener {
	return &challengeListener{Listener: ln, slots: make(chan struct{}, slots), stop: make(chan struct{}), log: log}
}

// Accept waits for a free slot, then for a connection.
func (l *challengeListener) Accept() (net.Conn, error) {
	select {
	case l.slots <- struct{}{}:
	case <-l.stop:
		return nil, net.ErrClosed
	}
	var backoff time.Duration
	for {
		c, err := l.Listener.Accept()
		if err == nil {
			return &slotConn{Conn: c, release: l.release}, nil
		}
		if l.closed() || errors.Is(err, net.ErrClosed) {
			l.release()
			return nil, net.ErrClosed
		}
		backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
		l.log.Log("err", err.Error(), "backoff", backoff.String())
		t := time.NewTimer(backoff)
		select {
		case <-t.C:
		case <-l.stop:
			t.Stop()
			l.release()
			return nil, net.ErrClosed
		}
	}
}

func (l *challengeListener) release() { <-l.slots }

func (l *challengeListener) closed() bool {
	select {
	case <-l.stop:
		return true
	default:
		return false
	}
}

// Close stops Accept and closes the socket.
func (l *challengeListener) Close() error {
	l.once.Do(func() { close(l.stop) })
	return l.Listener.Close()
}

// slotConn gives its listener's slot back when it is closed (once), after
// its socket.
type slotConn struct {
	net.Conn
	once    sync.Once
	release func()
}

func (c *slotConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(c.release)
	return err
}
