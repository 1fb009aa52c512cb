package proxy

import (
	"crypto/tls"
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/pires/go-proxyproto"
)

// relayBufferSize is the copy buffer per direction: one full TLS record of
// plaintext, so a large FETCH goes out in maximal records.
const relayBufferSize = 16 << 10

// relayBuffers pools copy buffers across sessions.
var relayBuffers = sync.Pool{New: func() any { b := make([]byte, relayBufferSize); return &b }}

// Reasons a relayed session ends (session_end.reason).
const (
	endClientClosed   = "client_closed"
	endUpstreamClosed = "upstream_closed"
	endIdleTimeout    = "idle_timeout"
	endShutdown       = "shutdown"
	endClientError    = "client_error"
	endUpstreamError  = "upstream_error"
)

// relay copies bytes both ways between a logged-in client and its upstream
// until one side closes, the session idles for longer than idle, or abort is
// closed. It owns both connections and closes them before returning.
type relay struct {
	client, upstream net.Conn
	idle             time.Duration

	in, out atomic.Int64 // bytes client->upstream, upstream->client
	last    atomic.Int64 // unix nanos of the last byte either way
	endOnce sync.Once
	endWhy  atomic.Value // string
	upDone  chan struct{}
	timer   atomic.Pointer[time.Timer]
}

func newRelay(client, upstream net.Conn, idle time.Duration) *relay {
	return &relay{client: client, upstream: upstream, idle: idle, upDone: make(chan struct{})}
}

// setReason records why the relay ended; the first reason wins.
func (r *relay) setReason(why string) {
	r.endOnce.Do(func() { r.endWhy.Store(why) })
}

func (r *relay) reason() string {
	if v, ok := r.endWhy.Load().(string); ok {
		return v
	}
	return endClientClosed
}

// abort ends the relay from outside (shutdown).
func (r *relay) abort(why string) {
	r.setReason(why)
	r.client.Close()
	r.upstream.Close()
}

// run relays until the end. The calling goroutine copies client->upstream;
// one more goroutine copies upstream->client.
func (r *relay) run() {
	r.touch()
	if r.idle > 0 {
		r.timer.Store(time.AfterFunc(r.idle, r.checkIdle))
	}
	go r.copyUpstreamToClient()
	rerr, werr := r.copy(r.upstream, r.client, &r.in)
	switch {
	case werr != nil:
		if !isClosedErr(werr) {
			r.setReason(endUpstreamError)
		}
		r.upstream.Close()
	case rerr == nil: // client sent EOF: let the upstream finish its answers
		r.setReason(endClientClosed)
		closeWrite(r.upstream)
	case isClosedErr(rerr):
		// closed by us (upstream ended, idle, abort): reason already set
		r.upstream.Close()
	default:
		r.setReason(endClientError)
		r.upstream.Close()
	}
	<-r.upDone
	r.client.Close()
	r.upstream.Close()
	if t := r.timer.Load(); t != nil {
		t.Stop()
	}
}

// checkIdle runs on the idle timer: it ends the relay when no byte went
// either way for r.idle, else rearms for the time left.
func (r *relay) checkIdle() {
	quiet := time.Duration(time.Now().UnixNano() - r.last.Load())
	if quiet >= r.idle {
		r.abort(endIdleTimeout)
		return
	}
	if t := r.timer.Load(); t != nil {
		t.Reset(r.idle - quiet)
	}
}

func (r *relay) touch() { r.last.Store(time.Now().UnixNano()) }

// copyUpstreamToClient is the relay's second goroutine; a named function so
// goroutine dumps of 20,000 idle sessions say what each one is.
func (r *relay) copyUpstreamToClient() {
	defer close(r.upDone)
	rerr, werr := r.copy(r.client, r.upstream, &r.out)
	switch {
	case werr != nil:
		if !isClosedErr(werr) {
			r.setReason(endClientError)
		}
	case rerr == nil:
		r.setReason(endUpstreamClosed)
	case isClosedErr(rerr):
	default:
		r.setReason(endUpstreamError)
	}
	// The upstream is gone: nothing the client sends can be answered.
	r.client.Close()
	r.upstream.Close()
}

// copy moves bytes from src to dst until src reaches EOF (both errors nil),
// reading fails (rerr) or writing fails (werr).
//
// An idle phone must cost as little as possible, so a direction waiting for
// bytes holds no buffer: it waits for the socket to become readable through
// its syscall.RawConn, takes a pooled buffer, copies what is ready and gives
// the buffer back.
//
// "Ready" includes bytes buffered above the socket, which the socket's
// readability cannot see: crypto/tls keeps records it read ahead (also
// during the pre-auth phase), and the PROXY protocol reader keeps what
// followed its header. Before every wait, reads with an expired deadline
// return those bytes without touching the socket.
func (r *relay) copy(dst, src net.Conn, n *atomic.Int64) (rerr, werr error) {
	defer func() {
		if errors.Is(rerr, io.EOF) {
			rerr = nil
		}
	}()
	rc := rawConnOf(src)
	if rc == nil {
		// No way to wait without a buffer: hold one.
		bp := relayBuffers.Get().(*[]byte)
		defer relayBuffers.Put(bp)
		for {
			if _, rerr, werr = r.copyOnce(dst, src, *bp, n); rerr != nil || werr != nil {
				return rerr, werr
			}
		}
	}
	_, layered := src.(*tls.Conn)
	for {
		bp := relayBuffers.Get().(*[]byte)
		if layered {
			rerr, werr = r.drainBuffered(dst, src, *bp, n)
		}
		relayBuffers.Put(bp)
		if rerr != nil || werr != nil {
			return rerr, werr
		}
		if err := waitReadable(rc); err != nil {
			return err, nil
		}
		bp = relayBuffers.Get().(*[]byte)
		for {
			var nr int
			nr, rerr, werr = r.copyOnce(dst, src, *bp, n)
			// A full buffer means more is probably waiting; otherwise go
			// back to waiting without the buffer.
			if rerr != nil || werr != nil || nr < len(*bp) {
				break
			}
		}
		relayBuffers.Put(bp)
		if rerr != nil || werr != nil {
			return rerr, werr
		}
	}
}

// copyOnce does one read from src and writes what it got to dst.
func (r *relay) copyOnce(dst, src net.Conn, buf []byte, n *atomic.Int64) (nr int, rerr, werr error) {
	nr, rerr = src.Read(buf)
	if nr > 0 {
		r.touch()
		nw, err := dst.Write(buf[:nr])
		n.Add(int64(nw))
		if err != nil {
			return nr, nil, err
		}
	}
	return nr, rerr, nil
}

// drainBuffered copies whatever src returns without waiting for the socket,
// until a read finds nothing (its expired deadline) or fails.
func (r *relay) drainBuffered(dst, src net.Conn, buf []byte, n *atomic.Int64) (rerr, werr error) {
	src.SetReadDeadline(pastDeadline)
	defer src.SetReadDeadline(time.Time{})
	for {
		_, rerr, werr := r.copyOnce(dst, src, buf, n)
		if werr != nil {
			return nil, werr
		}
		if errors.Is(rerr, os.ErrDeadlineExceeded) {
			return nil, nil
		}
		if rerr != nil {
			return rerr, nil
		}
	}
}

// pastDeadline is a read deadline that has always expired.
var pastDeadline = time.Unix(1, 0)

// waitReadable blocks until the socket has bytes (or EOF, or an error)
// ready, without reading them. The runtime clears a socket's readiness
// before it calls the function given to RawConn.Read, so the function
// first asks the socket itself (MSG_PEEK) and only waits for the next
// readiness edge when nothing is there.
func waitReadable(rc syscall.RawConn) error {
	return rc.Read(func(fd uintptr) bool {
		var b [1]byte
		_, _, err := syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		return err != syscall.EAGAIN && err != syscall.EWOULDBLOCK
	})
}

// rawConnOf returns the socket under c (through TLS and PROXY protocol
// wrappers), or nil when there is none.
func rawConnOf(c net.Conn) syscall.RawConn {
	for {
		switch t := c.(type) {
		case *tls.Conn:
			c = t.NetConn()
			continue
		case *proxyproto.Conn:
			if tc, ok := t.TCPConn(); ok {
				c = tc
				continue
			}
			return nil
		case syscall.Conn:
			rc, err := t.SyscallConn()
			if err != nil {
				return nil
			}
			return rc
		}
		return nil
	}
}

func isClosedErr(err error) bool {
	return errors.Is(err, net.ErrClosed)
}

// closeWrite half-closes c if it can (TCP FIN, or TLS close_notify).
func closeWrite(c net.Conn) {
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		if cw.CloseWrite() == nil {
			return
		}
	}
	c.Close()
}
