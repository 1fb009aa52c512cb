package proxy

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/imapgate/imapgate/auth"
	"github.com/pires/go-proxyproto"
)

// session is one client connection, from accept to close. Its life reads
// top to bottom in serve: access checks, TLS, the pre-auth command loop,
// the upstream login, then the relay.
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
	user         string // the authenticated user
	upstream     *UpstreamConn
	endReason    string
	bytesIn      int64
	bytesOut     int64

	admitted bool   // passed admit: session_end is logged
	release  func() // gives the connection slot back

	mu    sync.Mutex
	relay *relay // set while relaying, for abort
}

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

// abort ends the session from outside (shutdown deadline).
func (s *session) abort(why string) {
	s.mu.Lock()
	r := s.relay
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

	s.r = bufio.NewReaderSize(s.raw, 2048)
	s.w = bufio.NewWriterSize(s.raw, 2048)
	if s.l.Mode == TLSImplicit {
		if !s.handshake() {
			return false
		}
	}
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

// identify finds out who the client is: the peer, or, on a PROXY protocol
// listener, the client named by a trusted proxy's header, read here in the
// session's goroutine, never in the accept loop (see readProxyHeader). A
// header that is late or bad ends the connection, audited with the proxy's
// address.
func (s *session) identify() bool {
	if pc, ok := s.raw.(*proxyproto.Conn); ok {
		if reason := s.readProxyHeader(pc); reason != "" {
			s.clientAddr = addrPortOf(pc.Raw().RemoteAddr())
			ev := s.event(EventConnect)
			ev.Result, ev.Reason = ResultRefused, reason
			s.cfg.Audit.Log(ev)
			return false
		}
	}
	s.clientAddr = addrPortOf(s.raw.RemoteAddr())
	return true
}

// addrPortOf returns an "ip:port" address as a netip.AddrPort, IPv4-mapped
// IPv6 unmapped; anything else gives the zero AddrPort.
func addrPortOf(a net.Addr) netip.AddrPort {
	ap, err := netip.ParseAddrPort(a.String())
	if err != nil {
		return netip.AddrPort{}
	}
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}

// admit applies the access rules and connection limits before any byte of
// IMAP is read, and logs the connect event. It reports whether the client
// may go on.
func (s *session) admit() bool {
	ev := s.event(EventConnect)
	if allowed, reason := s.cfg.Access.Allowed(s.clientAddr.Addr()); !allowed {
		ev.Result, ev.Reason = ResultRefused, reason
		s.cfg.Audit.Log(ev)
		return false
	}
	release, reason := s.cfg.Conns.Acquire(s.clientAddr.Addr())
	if release == nil {
		ev.Result, ev.Reason = ResultRefused, reason
		s.cfg.Audit.Log(ev)
		// A short, polite refusal costs one write and no TLS handshake.
		if s.l.Mode == TLSStartTLS {
			s.raw.SetWriteDeadline(time.Now().Add(time.Second))
			io.WriteString(s.raw, "* BYE [UNAVAILABLE] Too many connections, try again later.\r\n")
		}
		return false
	}
	ev.Result = "accepted"
	s.cfg.Audit.Log(ev)
	s.admitted, s.release = true, release
	return true
}

// alpnACME is the ALPN protocol of TLS-ALPN-01 validation (RFC 8737).
const alpnACME = "acme-tls/1"

// handshake runs the server side of TLS over s.raw (implicit TLS, or after
// STARTTLS) and logs the tls event.
func (s *session) handshake() bool {
	tc := tls.Server(s.raw, s.l.TLSConfig)
	err := tc.HandshakeContext(s.ctx)
	ev := s.event(EventTLS)
	if err != nil {
		ev.Result, ev.Reason = "failed", tlsFailureReason(err)
		s.cfg.Audit.Log(ev)
		s.endReason = "tls_failed"
		return false
	}
	st := tc.ConnectionState()
	ev.Result = "ok"
	ev.TLSVersion = tls.VersionName(st.Version)
	ev.TLSCipher = tls.CipherSuiteName(st.CipherSuite)
	ev.SNI = st.ServerName
	if st.NegotiatedProtocol == alpnACME {
		// An ACME CA validating TLS-ALPN-01 (RFC 8737): the handshake
		// was the whole exchange; it gets no IMAP greeting.
		ev.Reason = "acme_challenge"
		s.cfg.Audit.Log(ev)
		tc.Close()
		s.endReason = "acme_challenge"
		return false
	}
	s.cfg.Audit.Log(ev)
	s.conn = tc
	s.isTLS = true
	s.r.Reset(tc)
	s.w.Reset(tc)
	return true
}

// tlsFailureReason turns a handshake error into a short snake_case word.
func tlsFailureReason(err error) string {
	var rerr tls.RecordHeaderError
	var aerr tls.AlertError
	switch {
	case errors.Is(err, os.ErrDeadlineExceeded), errors.Is(err, context.Canceled):
		return "timeout"
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, syscall.ECONNRESET):
		return "client_closed"
	case errors.As(err, &rerr):
		return "not_tls"
	case errors.As(err, &aerr):
		return "client_alert"
	case strings.Contains(err.Error(), "protocol version"):
		return "protocol_version"
	case strings.Contains(err.Error(), "no cipher suite"), strings.Contains(err.Error(), "no mutual"):
		return "no_shared_cipher"
	}
	return "handshake_error"
}

// commandLoop serves pre-auth commands until the client is logged in
// (true) or the session must end (false).
func (s *session) commandLoop() bool {
	for {
		cmd, err := s.cr.read()
		if err != nil {
			var se *syntaxError
			switch {
			case errors.As(err, &se) && errors.Is(err, errLiteralRefused):
				// LOGIN with a literal we will not ask for: refuse the
				// command before the credential is ever sent.
				if !s.refuseLogin(se.tag, "") {
					s.flush()
					return false
				}
			case errors.As(err, &se):
				if !s.bad(se.tag, se.msg) {
					return false
				}
			default:
				s.readFailed(err)
				return false
			}
			if !s.flush() {
				return false
			}
			continue
		}
		done, keep := s.dispatch(cmd)
		if !s.flush() {
			return false
		}
		if done {
			return true
		}
		if !keep {
			return false
		}
	}
}

// readFailed ends the session after a read error, telling the client why
// when that is still possible.
func (s *session) readFailed(err error) {
	switch {
	case s.ctx.Err() != nil:
		s.endReason = endShutdown
		s.bye("Server shutting down.")
	case errors.Is(err, os.ErrDeadlineExceeded):
		s.endReason = "preauth_timeout"
		s.bye("Disconnected for inactivity.")
	case errors.Is(err, errLineTooLong), errors.Is(err, errCommandTooBig):
		s.endReason = "line_too_long"
		s.bye("Command line too long.")
	case errors.Is(err, errLiteralTooBig):
		s.endReason = "literal_too_large"
		s.bye("Literal too large.")
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		s.endReason = endClientClosed
	default:
		s.endReason = endClientError
	}
}

// dispatch runs one command. done means logged in; keep false means end.
func (s *session) dispatch(cmd *command) (done, keep bool) {
	switch cmd.name {
	case "CAPABILITY":
		if len(cmd.args) != 0 {
			return false, s.bad(cmd.tag, "CAPABILITY takes no arguments")
		}
		s.reply("* CAPABILITY " + s.capabilities())
		s.reply(cmd.tag + " OK CAPABILITY completed")
	case "NOOP":
		s.reply(cmd.tag + " OK NOOP completed")
	case "LOGOUT":
		s.reply("* BYE Logging out")
		s.reply(cmd.tag + " OK LOGOUT completed")
		s.endReason = "client_logout"
		return false, false
	case "ID":
		return false, s.handleID(cmd)
	case "STARTTLS":
		return false, s.handleStartTLS(cmd)
	case "AUTHENTICATE":
		return s.handleAuthenticate(cmd)
	case "LOGIN":
		return s.handleLogin(cmd)
	default:
		return false, s.bad(cmd.tag, "Unknown command or not allowed before login: "+truncate(cmd.name, 20))
	}
	return false, true
}

// bad answers BAD and counts it; false means too many, the session ends.
func (s *session) bad(tag, msg string) bool {
	if tag == "" {
		tag = "*"
	}
	s.reply(tag + " BAD " + msg)
	s.badCommands++
	if s.badCommands >= s.cfg.maxBadCommands() {
		s.endReason = "too_many_bad_commands"
		s.bye("Too many invalid commands.")
		return false
	}
	return true
}

func (s *session) reply(line string) {
	s.w.WriteString(line)
	s.w.WriteString("\r\n")
}

func (s *session) bye(msg string) {
	s.raw.SetWriteDeadline(time.Now().Add(time.Second))
	s.reply("* BYE " + msg)
	s.w.Flush()
}

func (s *session) flush() bool {
	if err := s.w.Flush(); err != nil {
		if s.endReason == "" {
			s.endReason = endClientError
		}
		return false
	}
	return true
}

// capabilities lists what the proxy offers before login.
func (s *session) capabilities() string {
	caps := []string{"IMAP4rev1", "ID"}
	if !s.isTLS {
		if s.l.Mode == TLSStartTLS {
			caps = append(caps, "STARTTLS")
		}
		caps = append(caps, "LOGINDISABLED")
		return strings.Join(caps, " ")
	}
	caps = append(caps, "SASL-IR")
	for _, m := range auth.Offered(s.cfg.Mechanisms, s.connState()) {
		caps = append(caps, "AUTH="+m)
	}
	if !s.cfg.AllowLoginOverTLS {
		caps = append(caps, "LOGINDISABLED")
	}
	return strings.Join(caps, " ")
}

// lingerClose ends a connection the proxy itself is closing before the
// relay: it half-closes and drains what the client still sends for a moment,
// so the kernel does not answer unread bytes with a reset that would
// destroy the BYE before the client reads it.
func (s *session) lingerClose() {
	if !s.admitted {
		return
	}
	closeWrite(s.conn)
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
	s.raw.SetDeadline(time.Time{})
	if n := uc.R.Buffered(); n > 0 {
		b, _ := uc.R.Peek(n)
		s.w.Write(b)
		s.bytesOut += int64(n)
	}
	if !s.flush() {
		uc.Conn.Close()
		return false
	}
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
