package proxy

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"sync"
	"time"

	"github.com/imapgate/imapgate/auth"
)

// session is one client connection, from accept to close. Its life reads
// top to bottom in serve: admission, TLS, the pre-auth command loop, the
// login attempt, then the relay.
type session struct {
	srv   *Server
	cfg   *Config
	l     Listener
	raw   net.Conn // the TCP connection
	conn  net.Conn // raw, or the TLS connection over it
	r     *bufio.Reader
	w     *bufio.Writer
	cr    commandReader
	start time.Time

	id         string
	clientAddr netip.AddrPort
	isTLS      bool

	// ctx ends the pre-auth phase (shutdown); cancel releases it.
	ctx    context.Context
	cancel context.CancelFunc

	badCommands  int
	authFailures int
	clientID     map[string]string
	// user, mechanism and credential are who logged in and how: the
	// mechanism, and the credential when imapgate judged it (an app
	// password, a token, a certificate); loggedIn is when. Written once
	// at login under srv.mu and read under it by ListSessions, Kick and
	// EndCredential.
	user       string
	mechanism  string
	credential auth.Credential
	loggedIn   time.Time
	// upstreamAddr is the upstream address the session logged in to.
	upstreamAddr string
	upstream     *UpstreamConn
	// servedLeaf is the certificate this connection's handshake served,
	// for tls-server-end-point; nil before TLS, after a resumed
	// handshake, and for a certificate without a parsed Leaf.
	servedLeaf  *x509.Certificate
	endReason   string
	writeFailed bool          // a write to the client failed: no TLS close_notify after it
	in          preauthReader // counts what the client sends before login
	bytesIn     int64
	bytesOut    int64

	// certCache is what the client certificate maps to, kept between
	// the CAPABILITY that offers EXTERNAL and the AUTHENTICATE that uses it.
	certCache auth.CertCache

	admitted bool   // passed admit: session_end is logged
	release  func() // gives the connection slot back

	mu    sync.Mutex
	relay *relay // set while relaying, for abort
	// abortedFor is why abort ended the session before the relay took
	// it (the session_end reason); "" when it did not.
	abortedFor string
}

// next is what the command loop does once a command has been answered.
type next int

const (
	stay     next = iota // read the next command
	relayNow             // logged in: hand the connection to the relay
	end                  // end the session; endReason says why
)

func newSession(srv *Server, cfg *Config, conn net.Conn, l Listener) *session {
	s := &session{srv: srv, cfg: cfg, l: l, raw: conn, conn: conn, start: time.Now(), id: newSessionID()}
	s.ctx, s.cancel = context.WithCancel(srv.base)
	return s
}

func newSessionID() string {
	var b [9]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// event returns an audit event with the common fields filled in.
func (s *session) event(name string) *Event {
	return &Event{
		Event:      name,
		Session:    s.id,
		ClientIP:   s.clientAddr.Addr().String(),
		ClientPort: int(s.clientAddr.Port()),
		Listener:   s.l.Name,
	}
}

// abort ends the session from outside (shutdown deadline, revocation,
// kick); why is the session_end reason.
func (s *session) abort(why string) {
	s.mu.Lock()
	r := s.relay
	if r == nil {
		s.abortedFor = why
	}
	s.mu.Unlock()
	if r != nil {
		r.abort(why)
		return
	}
	s.cancel()
	s.raw.Close()
}

// serve runs the session: everything before the relay happens in this
// goroutine; once relaying, the goroutine returns and the relay calls
// finish when the session ends, so a logged-in phone does not keep the
// large stack the TLS handshake and the login grew.
func (s *session) serve() {
	if !s.preauth() {
		s.lingerClose()
		s.finish()
	}
}

// preauth runs the session up to the relay. It reports whether the relay
// took over (and will call finish).
func (s *session) preauth() bool {
	if !s.identify() {
		return false
	}
	if !s.admit() {
		return false
	}
	// One deadline bounds everything before the relay; shutdown moves it
	// to now so blocked reads return at once.
	s.raw.SetDeadline(s.start.Add(s.cfg.preauthTimeout()))
	stop := context.AfterFunc(s.ctx, func() { s.raw.SetReadDeadline(time.Unix(1, 0)) })
	defer stop()

	s.in = preauthReader{r: s.raw, left: maxPreauthBytes}
	if s.l.Mode == TLSImplicit {
		if !s.handshake() {
			return false
		}
	}
	// The buffers only once the handshake is done: in a storm of
	// reconnecting phones most sessions wait for their handshake, and
	// would hold 4 KiB each for nothing (README "Performance"). They
	// come from the Server's pool and go back when the pre-auth phase
	// ends.
	bufs := s.srv.preauthBufs.get(&s.in, s.conn, 2048, 2048)
	defer func() {
		s.r, s.w, s.cr = nil, nil, commandReader{}
		bufs.release()
	}()
	s.r, s.w = bufs.r, bufs.w
	s.cr = commandReader{r: s.r, w: s.w, onLiteral: s.onLiteral}
	s.reply("* OK [CAPABILITY " + s.capabilities() + "] IMAP server ready.")
	if !s.flush() {
		return false
	}
	if !s.commandLoop() {
		return false
	}
	// A shutdown that raced with the login does not matter: the client
	// has its OK, and relayed sessions are drained, not cut (Shutdown waits
	// for them, then aborts the relay). The session's context only serves
	// the pre-auth phase: release it now rather than keep it registered
	// with the server's for the hours a phone stays in IDLE.
	stop()
	s.cancel()
	return s.startRelay()
}

// finish ends the session exactly once: the session_end event, the
// connection slot, and the server's count.
func (s *session) finish() {
	s.raw.Close()
	if s.admitted {
		s.logEnd()
		s.release()
	}
	s.cancel()
	s.srv.sessionDone(s)
}

// commandLoop serves pre-auth commands until the client is logged in
// (true) or the session must end (false).
func (s *session) commandLoop() bool {
	for {
		n := s.serveCommand()
		if !s.flush() {
			return false
		}
		switch n {
		case relayNow:
			return true
		case end:
			return false
		}
	}
}

// serveCommand reads one command and answers it.
func (s *session) serveCommand() next {
	cmd, err := s.cr.read()
	var se *syntaxError
	switch {
	case err == nil:
		return s.dispatch(cmd)
	case errors.As(err, &se) && errors.Is(err, errLiteralRefused):
		// LOGIN with a literal we will not ask for: refuse the command
		// before the credential is ever sent.
		return s.refuseLogin(se.tag, "")
	case errors.As(err, &se):
		return s.bad(se.tag, se.msg)
	}
	return s.readFailed(err)
}

// dispatch runs one command.
func (s *session) dispatch(cmd *command) next {
	switch cmd.name {
	case "CAPABILITY":
		return s.handleCapability(cmd)
	case "NOOP":
		s.reply(cmd.tag + " OK NOOP completed")
		return stay
	case "LOGOUT":
		s.reply("* BYE Logging out")
		s.reply(cmd.tag + " OK LOGOUT completed")
		s.endReason = endClientLogout
		return end
	case "ID":
		return s.handleID(cmd)
	case "STARTTLS":
		return s.handleStartTLS(cmd)
	case "AUTHENTICATE":
		return s.handleAuthenticate(cmd)
	case "LOGIN":
		return s.handleLogin(cmd)
	}
	return s.bad(cmd.tag, "Unknown command or not allowed before login: "+truncate(cmd.name, 20))
}

// readFailed ends the session after a read error, telling the client why
// when that is still possible.
func (s *session) readFailed(err error) next {
	switch {
	case s.ctx.Err() != nil:
		return s.shutDown()
	case errors.Is(err, os.ErrDeadlineExceeded):
		return s.endWith(endPreauthTimeout, "Disconnected for inactivity.")
	case errors.Is(err, errLineTooLong), errors.Is(err, errCommandTooBig):
		return s.endWith(endLineTooLong, "Command line too long.")
	case errors.Is(err, errLiteralTooBig):
		return s.endWith(endLiteralTooLarge, "Literal too large.")
	case errors.Is(err, errPreauthTooMuch):
		return s.endWith(endPreauthTooLarge, "Too much data before login.")
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		s.endReason = endClientClosed
	default:
		s.endReason = endClientError
	}
	return end
}

// bad answers BAD and counts it; too many end the session.
func (s *session) bad(tag, msg string) next {
	if tag == "" {
		tag = "*"
	}
	s.reply(tag + " BAD " + msg)
	s.badCommands++
	if s.badCommands >= s.cfg.maxBadCommands() {
		return s.endWith(endTooManyBadCommands, "Too many invalid commands.")
	}
	return stay
}

// endWith ends the session for reason, with BYE msg.
func (s *session) endWith(reason, msg string) next {
	s.endReason = reason
	s.bye(msg)
	return end
}

// shutDown ends the session because the server is shutting down.
func (s *session) shutDown() next { return s.endWith(endShutdown, "Server shutting down.") }

func (s *session) reply(line string) {
	s.w.WriteString(line)
	s.w.WriteString("\r\n")
}

func (s *session) bye(msg string) {
	s.raw.SetWriteDeadline(time.Now().Add(time.Second))
	s.reply("* BYE " + msg)
	if s.w.Flush() != nil {
		s.writeFailed = true
	}
}

// preauthWriteTimeout bounds one flush of pre-auth answers to a client
// that does not read. Each flush gets its own deadline rather than the
// pre-auth deadline: an answer to a command read in time (after a tarpit
// that outlasted that deadline, say) must still go out whole, followed by
// the BYE, not be cut.
const preauthWriteTimeout = 10 * time.Second

func (s *session) flush() bool {
	timeout := preauthWriteTimeout
	if s.cfg.writeTimeout > 0 {
		timeout = s.cfg.writeTimeout
	}
	s.raw.SetWriteDeadline(time.Now().Add(timeout))
	if err := s.w.Flush(); err != nil {
		s.writeFailed = true
		if s.endReason == "" {
			s.endReason = endClientError
		}
		return false
	}
	return true
}

// lingerClose ends a connection the proxy itself is closing before the
// relay: it half-closes and drains what the client still sends for a moment,
// so the kernel does not answer unread bytes with a reset that would
// destroy the BYE before the client reads it.
func (s *session) lingerClose() {
	if !s.admitted {
		return
	}
	if s.writeFailed {
		// crypto/tls counted the failed record: a close_notify now would
		// be sealed with the wrong sequence number and read as "bad record
		// MAC". Half-close the TCP connection instead.
		closeWrite(s.raw)
	} else {
		closeWrite(s.conn)
	}
	s.raw.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
	io.CopyN(io.Discard, s.raw, 256<<10)
}

// logEnd writes the session_end event.
func (s *session) logEnd() {
	ev := s.event(EventSessionEnd)
	ev.User = s.user
	d := time.Since(s.start).Milliseconds()
	ev.DurationMS = &d
	ev.BytesIn, ev.BytesOut = &s.bytesIn, &s.bytesOut
	ev.Reason = s.endReason
	s.mu.Lock()
	if s.abortedFor != "" {
		ev.Reason = s.abortedFor
	}
	s.mu.Unlock()
	if ev.Reason == "" {
		ev.Reason = endClientClosed
	}
	s.cfg.Audit.Log(ev)
}

// truncate bounds attacker-controlled text before it reaches a reply or log.
func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

// startRelay hands the logged-in session to the relay. Bytes the client
// pipelined after its AUTHENTICATE, and bytes the upstream sent after its
// OK, are delivered first, so nothing read so far is lost. It reports
// whether the relay took over.
func (s *session) startRelay() bool {
	uc := s.upstream
	if n := uc.R.Buffered(); n > 0 {
		b, _ := uc.R.Peek(n)
		s.w.Write(b)
		s.bytesOut += int64(n)
	}
	uc.dropReader()
	if !s.flush() {
		uc.Conn.Close()
		return false
	}
	// The relay has no deadline of its own (its idle timer reads the
	// clock): clear the pre-auth ones, the write deadline flush just set
	// included.
	s.raw.SetDeadline(time.Time{})
	if n := s.r.Buffered(); n > 0 {
		b, _ := s.r.Peek(n)
		if _, err := uc.Conn.Write(b); err != nil {
			s.endReason = endUpstreamError
			uc.Conn.Close()
			return false
		}
		s.bytesIn += int64(n)
	}
	// Everything the pre-auth phase needed is dropped here; the relay reads
	// the connections directly and holds a buffer only while bytes move.
	s.r, s.w, s.cr, s.clientID = nil, nil, commandReader{}, nil
	s.upstream = &UpstreamConn{Conn: uc.Conn}
	r := newRelay(s.conn, uc.Conn, s.cfg.idleTimeout(), s.srv.relays, func() {
		s.mu.Lock()
		r := s.relay
		s.mu.Unlock()
		s.bytesIn += r.in.Load()
		s.bytesOut += r.out.Load()
		s.endReason = r.reason()
		s.finish()
	})
	s.mu.Lock()
	s.relay = r
	s.mu.Unlock()
	r.start()
	return true
}

// errPreauthTooMuch ends a client that sent more than maxPreauthBytes
// before logging in.
var errPreauthTooMuch = errors.New("too much data before login")

// preauthReader is the client's side of the connection before login: it
// counts the bytes read and fails once left is spent. The relay reads the
// connection directly, so the count ends at login.
type preauthReader struct {
	r    io.Reader
	left int64
}

func (p *preauthReader) Read(b []byte) (int, error) {
	if p.left <= 0 {
		return 0, errPreauthTooMuch
	}
	if int64(len(b)) > p.left {
		b = b[:p.left]
	}
	n, err := p.r.Read(b)
	p.left -= int64(n)
	return n, err
}
