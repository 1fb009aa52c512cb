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

// relayBufferSize is the copy buffer of a direction while bytes move: one
// full TLS record of plaintext, so a large FETCH goes out in maximal records.
const relayBufferSize = 16 << 10

// relayShared is what all relays of a Server share: the copy buffers and
// the parker that watches idle sockets. The zero value is not usable; see
// newRelayShared.
type relayShared struct {
	buffers sync.Pool
	parker  *parker // nil: each waiting direction keeps a goroutine
	// linger is how long a direction waits for bytes in its own goroutine
	// before it parks. Zero means defaultParkAfter.
	linger time.Duration
}

// defaultParkAfter: a session with no bytes for this long is idle enough
// to park. Shorter saves memory sooner; longer keeps busy sessions on the
// runtime poller's faster wake-up.
const defaultParkAfter = 2 * time.Second

func (rs *relayShared) parkAfter() time.Duration {
	if rs.parker == nil {
		return 0 // nowhere to park: wait in the goroutine, without a deadline
	}
	if rs.linger > 0 {
		// A read must get to try the socket after a wake-up, or a
		// parked direction would wake and park forever.
		return max(rs.linger, time.Millisecond)
	}
	return defaultParkAfter
}

func newRelayShared() *relayShared {
	rs := &relayShared{parker: newParker()}
	rs.buffers.New = func() any { b := make([]byte, relayBufferSize); return &b }
	return rs
}

// relay copies bytes both ways between a logged-in client and its upstream
// until one side closes, the session idles for longer than idle, or it is
// aborted. It owns both connections and closes them at the end, then calls
// onDone once.
//
// The memory an idle phone costs is the point of this design. A direction
// that has seen no byte for parkAfter gives its buffer back to the pool and,
// with a parker, its goroutine too: its socket is handed to the parker's
// epoll set, and a new goroutine is started when bytes arrive. While bytes
// flow it is a plain copy loop, as fast as one.
type relay struct {
	client, upstream net.Conn
	idle             time.Duration
	shared           *relayShared
	onDone           func()

	in, out atomic.Int64 // bytes client->upstream, upstream->client
	last    atomic.Int64 // unix nanos of the last byte either way
	endOnce sync.Once
	endWhy  atomic.Value // string
	timer   atomic.Pointer[time.Timer]
	// clientGone is set when the client has closed (or half-closed) its
	// side: from then on the upstream has clientGoneDrain of quiet, not
	// idle, to finish.
	clientGone atomic.Bool
	pending    atomic.Int32 // directions still running or parked

	mu     sync.Mutex // guards closed and the directions' parked flags
	closed bool
	toUp   direction // client -> upstream
	toCli  direction // upstream -> client
}

// direction is one half of a relay.
type direction struct {
	r        *relay
	dst, src net.Conn
	rc       syscall.RawConn // src's socket; nil when it has none
	layered  bool            // src buffers bytes above the socket (TLS)
	// socket is the upstream socket under src's crypto/tls, whose reads
	// gather can make fail instead of wait; nil for other sources.
	socket   *upstreamSocket
	n        *atomic.Int64
	toClient bool
	parked   bool   // in the parker's epoll set (guarded by r.mu)
	parkID   uint64 // the parker's slot while parked
	// atLineEnd (toward the client): the last bytes written ended a
	// response line that announces no literal, so an untagged BYE may
	// follow (byeIfIdle).
	atLineEnd atomic.Bool
}

func newRelay(client, upstream net.Conn, idle time.Duration, shared *relayShared, onDone func()) *relay {
	r := &relay{client: client, upstream: upstream, idle: idle, shared: shared, onDone: onDone}
	r.toUp = direction{r: r, dst: upstream, src: client, n: &r.in}
	r.toCli = direction{r: r, dst: client, src: upstream, n: &r.out, toClient: true}
	for _, d := range []*direction{&r.toUp, &r.toCli} {
		d.rc = rawConnOf(d.src)
		if tc, ok := d.src.(*tls.Conn); ok {
			d.layered = true
			d.socket, _ = tc.NetConn().(*upstreamSocket)
		}
	}
	r.toCli.atLineEnd.Store(true) // the proxy's own tagged OK came last
	return r
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

// start begins relaying; it returns at once. onDone runs when both
// directions have ended and both connections are closed.
func (r *relay) start() {
	r.touch()
	r.pending.Store(2)
	if r.idle > 0 {
		r.timer.Store(time.AfterFunc(r.idle, r.checkIdle))
	}
	go r.toUp.pumpClientToUpstream()
	go r.toCli.pumpUpstreamToClient()
}

// abort ends the relay from outside (shutdown, idle timeout).
func (r *relay) abort(why string) {
	r.setReason(why)
	r.closeAll()
}

// byeIfIdle ends an idle relay for why, with "* BYE msg" to the client
// and then TLS close_notify (README "Shutdown"): only when both directions
// are parked (no byte either way for parkAfter) and the last bytes to the
// client ended a response line outside a literal, so that the BYE cannot
// land inside another response (RFC 9051 section 7.1.5 allows an untagged
// BYE between responses at any time). It reports whether it ended the
// relay; without a parker it never does.
func (r *relay) byeIfIdle(why, msg string) bool {
	p := r.shared.parker
	if p == nil {
		return false
	}
	d := &r.toCli
	r.mu.Lock()
	if r.closed || !d.parked || !r.toUp.parked || !d.atLineEnd.Load() || !p.unpark(d) {
		r.mu.Unlock()
		return false
	}
	d.parked = false
	r.mu.Unlock()
	// d is out of the parker and has no goroutine: writing to the client
	// is ours alone. The client's direction may wake, but it writes only
	// to the upstream, whose answer nobody reads now.
	r.setReason(why)
	r.client.SetWriteDeadline(time.Now().Add(time.Second))
	io.WriteString(r.client, "* BYE "+msg+"\r\n")
	r.closeAll()
	d.finish(net.ErrClosed, nil)
	return true
}

// endsResponseLine reports whether b, the last bytes sent to the client,
// ends a line that announces no literal ("{N}" or "{N+}" before CRLF).
func endsResponseLine(b []byte) bool {
	n := len(b)
	if n == 0 || b[n-1] != '\n' {
		return false
	}
	n--
	if n > 0 && b[n-1] == '\r' {
		n--
	}
	return n == 0 || b[n-1] != '}'
}

// closeAll closes both connections. Directions parked in the parker have
// no goroutine to notice, so they are taken out and finished here.
func (r *relay) closeAll() {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return
	}
	r.closed = true
	var orphans []*direction
	for _, d := range []*direction{&r.toUp, &r.toCli} {
		if d.parked && r.shared.parker.unpark(d) {
			d.parked = false
			orphans = append(orphans, d)
		}
	}
	r.mu.Unlock()
	r.client.Close()
	r.upstream.Close()
	for _, d := range orphans {
		d.finish(net.ErrClosed, nil)
	}
}

// clientGoneDrain is how long a relay whose client has closed its side
// waits for the upstream to finish, counted from the last byte either
// way (README "When the mail server fails"): an upstream that answers
// goes on for as long as it sends, one that is hung (stopped, starved)
// no longer holds the session, its slot and its upstream connection
// until idle_timeout.
const clientGoneDrain = 10 * time.Second

// limit is how long the relay may go without a byte: r.idle, or
// clientGoneDrain (if shorter, or without an idle timeout) once the
// client has gone.
func (r *relay) limit() time.Duration {
	if !r.clientGone.Load() {
		return r.idle
	}
	if r.idle > 0 {
		return min(r.idle, clientGoneDrain)
	}
	return clientGoneDrain
}

// checkIdle runs on the idle timer: it ends the relay when no byte went
// either way for r.limit(), else rearms for the time left. The first
// reason stays: a relay whose client went ends as client_closed.
func (r *relay) checkIdle() {
	limit := r.limit()
	quiet := time.Duration(time.Now().UnixNano() - r.last.Load())
	if quiet >= limit {
		r.abort(endIdleTimeout)
		return
	}
	if t := r.timer.Load(); t != nil {
		t.Reset(limit - quiet)
	}
}

// clientClosed bounds what is left of the relay once the client has
// closed its side: the upstream's answers still go out, but a quiet
// spell of clientGoneDrain ends it.
func (r *relay) clientClosed() {
	r.clientGone.Store(true)
	if t := r.timer.Load(); t != nil {
		t.Reset(0) // checkIdle works out the time left
		return
	}
	t := time.AfterFunc(clientGoneDrain, r.checkIdle)
	if !r.timer.CompareAndSwap(nil, t) {
		t.Stop()
	}
}

func (r *relay) touch() { r.last.Store(time.Now().UnixNano()) }

// pumpClientToUpstream and pumpUpstreamToClient are the relay's goroutines,
// named so that a goroutine dump says what each one is.
func (d *direction) pumpClientToUpstream() { d.pump() }
func (d *direction) pumpUpstreamToClient() { d.pump() }

// resume is started by the parker when a parked socket has bytes.
func (d *direction) resume() { d.pump() }

// pump copies until the direction ends or parks.
//
// While bytes flow (a client sending commands, a FETCH in progress) it is a
// plain copy loop: blocking reads, woken by the runtime's poller, with no
// extra system call. After parkAfter without a byte it parks the socket,
// holding no buffer. Before parking it drains what is buffered above the
// socket, which the parker's epoll cannot see: crypto/tls keeps records it
// read ahead (also during the pre-auth phase), and the PROXY protocol
// reader keeps what followed its header.
func (d *direction) pump() {
	small := make([]byte, smallReadSize)
	linger := d.r.shared.parkAfter()
	if d.rc == nil || linger <= 0 {
		d.finish(d.copy(small, waitForBytes))
		return
	}
	if rerr, werr := d.copy(small, linger); rerr != nil || werr != nil {
		d.finish(rerr, werr)
		return
	}
	if d.layered {
		if rerr, werr := d.copy(small, noWait); rerr != nil || werr != nil {
			d.finish(rerr, werr)
			return
		}
	}
	switch d.park() {
	case parkedOK:
		return // the parker starts resume when bytes arrive
	case parkClosed:
		d.finish(net.ErrClosed, nil)
		return
	}
	d.finish(d.copy(small, waitForBytes)) // the parker failed: keep the goroutine
}

// How long each read of copy waits for bytes, besides a positive duration
// (a quiet spell that ends the copy).
const (
	// waitForBytes: reads block until bytes, the end of src or an error.
	waitForBytes time.Duration = 0
	// noWait: reads return only what is buffered above the socket.
	noWait time.Duration = -1
)

// smallReadSize covers IMAP commands and short responses in one read.
const smallReadSize = 1024

// copy is the relay's one copy loop: it copies from src to dst until a
// read or a write fails, or src has been quiet for wait (wait > 0: no
// byte read or written for that long; noWait: src had nothing more
// buffered), which returns (nil, nil). With waitForBytes only an error
// ends it.
//
// It reads into small, so thousands of sessions that exchanged a few lines
// in the last seconds do not each hold 16 KiB; a read that fills it means
// bulk data, and a pooled full-size buffer is used until a read comes back
// short. From a TLS source the bytes of a read that filled small are moved
// to the full-size buffer and gathered with what follows before anything is
// written, so a burst goes out in full writes however small the source's
// records are (README "Performance").
//
// A quiet spell is watched with one read deadline, set when copy starts
// and moved only when it expires while bytes still flowed: a NOOP round
// trip costs no deadline change (README "Performance").
func (d *direction) copy(small []byte, wait time.Duration) (rerr, werr error) {
	var deadline time.Time // src's read deadline; zero: none
	switch {
	case wait == noWait:
		deadline = pastDeadline
	case wait > 0:
		deadline = time.Now().Add(wait)
	}
	if !deadline.IsZero() {
		d.src.SetReadDeadline(deadline)
		defer d.src.SetReadDeadline(time.Time{})
	}
	lastActive := time.Now() // of the last read or write that moved bytes (wait > 0)
	buf := small
	var bulk *[]byte // from the pool while a burst lasts
	defer func() {
		if bulk != nil {
			d.r.shared.buffers.Put(bulk)
		}
	}()
	for {
		nr, rerr := d.src.Read(buf)
		if d.layered && rerr == nil && nr > 0 {
			if bulk == nil && nr == len(buf) {
				bulk = d.r.shared.buffers.Get().(*[]byte)
				copy(*bulk, buf[:nr])
				buf = *bulk
			}
			if bulk != nil && nr < len(buf) {
				var more int
				more, rerr = d.gather(buf[nr:], deadline)
				nr += more
			}
		}
		if nr > 0 {
			d.r.touch()
			nw, err := d.dst.Write(buf[:nr])
			d.n.Add(int64(nw))
			if err != nil {
				return nil, err
			}
			if d.toClient {
				d.atLineEnd.Store(endsResponseLine(buf[:nr]))
			}
			if wait > 0 {
				lastActive = time.Now()
			}
		}
		switch {
		case rerr == nil:
		case wait != waitForBytes && errors.Is(rerr, os.ErrDeadlineExceeded):
			if wait == noWait {
				return nil, nil
			}
			next := lastActive.Add(wait)
			if !time.Now().Before(next) {
				return nil, nil
			}
			deadline = next // bytes moved since the deadline was set
			d.src.SetReadDeadline(deadline)
			continue
		default:
			return rerr, nil
		}
		switch {
		case bulk == nil && nr == len(buf):
			bulk = d.r.shared.buffers.Get().(*[]byte)
			buf = *bulk
		case bulk != nil && nr < len(buf):
			d.r.shared.buffers.Put(bulk)
			bulk, buf = nil, small
		}
	}
}

// gather reads into b what src (crypto/tls) holds above its socket:
// decrypted bytes and the complete records it read ahead, and, from an
// upstream socket, the records already in the socket, without waiting for
// more. crypto/tls returns at most one record per Read, and an upstream
// whose records are small (OpenSSL servers write 4 to 8 KiB) would
// otherwise cost one write, one record and one system call toward the
// client for each of them, twice over where a record begins in the small
// buffer. It returns the bytes read and the error that ended reading, nil
// when src had nothing more ready; it then restores the read deadline copy
// runs with (deadline).
func (d *direction) gather(b []byte, deadline time.Time) (n int, err error) {
	switch {
	case d.socket != nil:
		d.socket.noWait = true
		defer func() { d.socket.noWait = false }()
	case !deadline.Equal(pastDeadline):
		// A read deadline in the past: crypto/tls returns what it holds
		// and its read of the socket fails at once.
		d.src.SetReadDeadline(pastDeadline)
		defer d.src.SetReadDeadline(deadline)
	}
	for n < len(b) {
		m, rerr := d.src.Read(b[n:])
		n += m
		if rerr != nil {
			if errors.Is(rerr, os.ErrDeadlineExceeded) || errors.Is(rerr, errWouldWait) {
				rerr = nil // nothing more is ready
			}
			return n, rerr
		}
		if m == 0 {
			break
		}
	}
	return n, nil
}

// upstreamSocket is the connection to the upstream under its crypto/tls
// (implicit TLS or after STARTTLS). It reads like the connection it wraps,
// except while noWait is set by the one goroutine that reads it (the
// relay's direction toward the client, in gather): then a read that would
// wait for bytes fails at once with errWouldWait, which crypto/tls treats
// like a read deadline (what it read of a record stays buffered), so
// crypto/tls takes the records already in the socket and no more.
type upstreamSocket struct {
	net.Conn
	rc     syscall.RawConn // nil: noWait has no effect
	noWait bool
}

// newUpstreamSocket wraps the upstream connection c before crypto/tls is
// layered on it.
func newUpstreamSocket(c net.Conn) *upstreamSocket {
	s := &upstreamSocket{Conn: c}
	if sc, ok := c.(syscall.Conn); ok {
		s.rc, _ = sc.SyscallConn()
	}
	return s
}

func (s *upstreamSocket) Read(b []byte) (int, error) {
	if !s.noWait || s.rc == nil || len(b) == 0 {
		return s.Conn.Read(b)
	}
	var n int
	var err error
	if cerr := s.rc.Read(func(fd uintptr) bool {
		for {
			n, err = syscall.Read(int(fd), b)
			if err != syscall.EINTR {
				return true // never wait
			}
		}
	}); cerr != nil {
		return 0, cerr // closed, or the read deadline passed
	}
	switch {
	case errors.Is(err, syscall.EAGAIN):
		return 0, errWouldWait
	case err != nil:
		return 0, os.NewSyscallError("read", err)
	case n == 0:
		return 0, io.EOF
	}
	return n, nil
}

// errWouldWait is an upstreamSocket's read in noWait mode that found no
// bytes. It is a net.Error that is temporary, so that crypto/tls does not
// keep it as the connection's error.
var errWouldWait error = wouldWaitError{}

type wouldWaitError struct{}

func (wouldWaitError) Error() string   { return "relay: no bytes ready on the upstream socket" }
func (wouldWaitError) Timeout() bool   { return true }
func (wouldWaitError) Temporary() bool { return true }

type parkResult int

const (
	parkUnavailable parkResult = iota // no parker: wait in this goroutine
	parkedOK
	parkClosed
)

// park hands the socket to the parker, unless the relay is closing.
func (d *direction) park() parkResult {
	p := d.r.shared.parker
	if p == nil {
		return parkUnavailable
	}
	d.r.mu.Lock()
	defer d.r.mu.Unlock()
	if d.r.closed {
		return parkClosed
	}
	if !p.park(d) {
		return parkUnavailable
	}
	d.parked = true
	return parkedOK
}

// woken is called by the parker after it took d out of its set.
func (d *direction) woken() {
	d.r.mu.Lock()
	d.parked = false
	d.r.mu.Unlock()
	go d.resume()
}

// finish ends a direction: it records why, closes what must be closed and,
// for the last direction, completes the relay. A client that half-closes
// still gets the upstream's remaining answers, for as long as they keep
// coming (clientGoneDrain); an upstream that closes ends the session,
// since nothing the client sends could be answered.
func (d *direction) finish(rerr, werr error) {
	r := d.r
	eof := rerr == nil && werr == nil || errors.Is(rerr, io.EOF)
	switch {
	case werr != nil && !isClosedErr(werr):
		if d.toClient {
			r.setReason(endClientError)
		} else {
			r.setReason(endUpstreamError)
		}
		r.closeAll()
	case werr != nil || isClosedErr(rerr):
		r.closeAll() // closed by us: the reason is already set
	case eof && !d.toClient:
		r.setReason(endClientClosed)
		closeWrite(r.upstream)
		r.clientClosed()
	case eof:
		r.setReason(endUpstreamClosed)
		r.closeAll()
	default:
		if d.toClient {
			r.setReason(endUpstreamError)
		} else {
			r.setReason(endClientError)
		}
		r.closeAll()
	}
	if r.pending.Add(-1) == 0 {
		r.closeAll()
		if t := r.timer.Load(); t != nil {
			t.Stop()
		}
		if r.onDone != nil {
			r.onDone()
		}
	}
}

// pastDeadline is a read deadline that has always expired.
var pastDeadline = time.Unix(1, 0)

// rawConnOf returns the socket under c (through TLS and PROXY protocol
// wrappers), or nil when there is none.
func rawConnOf(c net.Conn) syscall.RawConn {
	for {
		switch t := c.(type) {
		case *tls.Conn:
			c = t.NetConn()
			continue
		case *handshakeConn:
			c = t.Conn
			continue
		case *upstreamSocket:
			c = t.Conn
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
