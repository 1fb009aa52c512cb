package proxy

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/imapgate/imapgate/auth"
	"github.com/imapgate/imapgate/auth/credstore"
	"github.com/imapgate/imapgate/policy"
)

// TLSMode is how a listener secures client connections.
type TLSMode string

// Listener TLS modes.
const (
	TLSImplicit TLSMode = "implicit" // TLS from the first byte (port 993)
	TLSStartTLS TLSMode = "starttls" // plaintext greeting, then STARTTLS (port 143)
)

// Listener describes one client-facing listener.
type Listener struct {
	// Name identifies the listener in audit events; usually its address.
	Name string
	// Mode is TLSImplicit or TLSStartTLS. Required.
	Mode TLSMode
	// TLSConfig serves the client handshake. Required. The certificate
	// a handshake serves is what tls-server-end-point channel binding
	// (SCRAM-SHA-256-PLUS) binds to: it needs the certificate's Leaf
	// (tls.X509KeyPair, tlsconf and certmagic set it); without one that
	// binding is not offered.
	TLSConfig *tls.Config
}

// Config is everything a session needs. Defaults apply to zero fields.
// A Config must not be changed once given to a Server; use SetConfig.
type Config struct {
	// Upstream is the server behind the proxy. Required: with a Router
	// it is the default upstream's first address, whose answer times
	// pace refusals (see Upstream.KeepAnswerTimes).
	Upstream *Upstream
	// Router picks the upstream of each login among several (README
	// "Routing"). Nil: every login goes to Upstream.
	Router *Router
	// Mechanisms are the SASL mechanisms offered after TLS, those
	// auth.Offered keeps, on listeners whose Listeners entry names none.
	// Empty means auth.Default (PLAIN).
	Mechanisms []string
	// Verifiers check the credentials imapgate judges itself (tokens,
	// SCRAM keys, client certificates), for the mechanisms that need
	// them. Nil: those mechanisms are not offered, whatever Mechanisms
	// says.
	Verifiers *auth.Verifiers
	// AllowLoginOverTLS accepts the LOGIN command over TLS (never before).
	// False (the default) refuses LOGIN everywhere and advertises LOGINDISABLED.
	AllowLoginOverTLS bool
	// LoginAppPasswordsOnly accepts the LOGIN command over TLS (never
	// before) only with an app password of the user named (README "App
	// passwords"): any other password is refused, reason
	// passthrough_disabled, and never reaches the upstream. It needs
	// AppPasswords. False: LOGIN is as AllowLoginOverTLS says.
	LoginAppPasswordsOnly bool
	// AppPasswords is the store of app passwords. A password that is one
	// of the user's logs in through Upstream.Master (Upstream.LoginAs);
	// one that is revoked, expired or out of scope is refused and never
	// reaches the upstream. Nil: no app passwords, every password is
	// passed through.
	AppPasswords credstore.Store
	// RefusePassThrough turns the user's own password off
	// (auth.passthrough = false): a password that is not an app password
	// is refused, reason passthrough_disabled, and never reaches the
	// upstream. False: it is passed through to the upstream, which judges
	// it.
	RefusePassThrough bool
	// Listeners are settings of single listeners, by Listener.Name, that
	// replace Mechanisms and RefusePassThrough for the clients of that
	// listener (README "[[listen]] mechanisms and passthrough"). A
	// listener not in the map uses Config's. They live here rather than in
	// Listener so that a reload (SetConfig) reaches listeners that stay
	// bound.
	Listeners map[string]ListenerAuth
	// PassThroughRules decide pass-through for some clients by address and
	// listener ([[policy.rule]] passthrough): the first rule that matches
	// a client applies; one that leaves PassThrough nil, and a client no
	// rule matches, get the listener's. Empty: the listener's for everyone.
	PassThroughRules []PassThroughRule
	// PreauthTimeout bounds the time from accept to a completed login.
	// Zero means 60s.
	PreauthTimeout time.Duration
	// IdleTimeout ends a relayed session after this long without a byte
	// either way. Zero means 31m (RFC 2177 clients re-IDLE every 29m).
	IdleTimeout time.Duration
	// FailureDelay is waited before answering a claim auth refuses before
	// any attempt (a malformed SASL exchange or LOGIN arguments), and,
	// without a Policy, a wrong password. With a Policy a wrong password
	// waits the Policy's tarpit instead. Zero means no wait.
	FailureDelay time.Duration
	// MaxBadCommands ends a pre-auth connection with BYE after this many
	// BAD answers. Zero means 10.
	MaxBadCommands int
	// MaxAuthFailures ends a connection with BYE after this many failed
	// authentications. Zero means 3.
	MaxAuthFailures int
	// Access is checked at accept time. Nil allows everyone.
	Access *policy.Access
	// Conns limits open connections. Nil means no limit.
	Conns *policy.ConnLimiter
	// Policy is asked before every upstream login (brute-force and
	// spraying budgets) and told the outcome; a refused attempt never
	// reaches the upstream, and the tarpit it returns replaces
	// FailureDelay after a failure. Nil allows every attempt.
	Policy policy.Decider
	// UpstreamLogins caps concurrent upstream logins, with a short queue;
	// beyond it the client gets NO [UNAVAILABLE] at once. Nil means no cap.
	UpstreamLogins *policy.Slots
	// Audit receives audit events. Nil discards them.
	Audit *Auditor
	// Log is the operational log. Nil means slog.Default().
	Log *slog.Logger

	// writeTimeout overrides preauthWriteTimeout (tests).
	writeTimeout time.Duration

	// parkAfter overrides how long a quiet relay direction waits before it
	// parks (tests). It is read once, by NewServer.
	parkAfter time.Duration
}

// The defaults of Config's zero fields.
func (c *Config) preauthTimeout() time.Duration { return orDefault(c.PreauthTimeout, 60*time.Second) }
func (c *Config) idleTimeout() time.Duration    { return orDefault(c.IdleTimeout, 31*time.Minute) }
func (c *Config) maxBadCommands() int           { return orDefault(c.MaxBadCommands, 10) }
func (c *Config) maxAuthFailures() int          { return orDefault(c.MaxAuthFailures, 3) }

// orDefault returns v when it is set (above zero), else def.
func orDefault[T int | time.Duration](v, def T) T {
	if v > 0 {
		return v
	}
	return def
}

// loginOverTLS reports whether the LOGIN command is accepted over TLS.
func (c *Config) loginOverTLS() bool { return c.AllowLoginOverTLS || c.LoginAppPasswordsOnly }

func (c *Config) log() *slog.Logger {
	if c.Log != nil {
		return c.Log
	}
	return slog.Default()
}

// Server accepts client connections on any number of listeners and runs one
// session per connection. Create it with NewServer.
type Server struct {
	cfg atomic.Pointer[Config]

	mu        sync.Mutex
	listeners map[net.Listener]struct{}
	sessions  map[*session]struct{}
	closing   bool
	wg        sync.WaitGroup
	// base is cancelled by Shutdown: pre-auth sessions end at once.
	base       context.Context
	cancelBase context.CancelFunc
	// relays holds the copy buffers and the idle-socket parker.
	relays *relayShared
	// endedIn and endedOut count the bytes of ended sessions (see Bytes);
	// written under mu.
	endedIn, endedOut int64
	// freed is closed when a session ends, waking accept loops that wait
	// for descriptors (see Serve); nil until one waits. Guarded by mu.
	freed chan struct{}
	// acceptErrors counts accept failures Serve retried (AcceptErrors).
	acceptErrors atomic.Uint64
	// handoff passes an accepted session to a session goroutine waiting
	// in awaitSession; waitingSessionGoroutines counts those.
	handoff                  chan *session
	waitingSessionGoroutines atomic.Int32
	// preauthBufs holds the readers and writers (2 KiB each) of ended
	// pre-auth phases.
	preauthBufs bufPool
}

// NewServer returns a Server using cfg.
func NewServer(cfg *Config) *Server {
	s := &Server{listeners: map[net.Listener]struct{}{}, sessions: map[*session]struct{}{}, relays: newRelayShared(), handoff: make(chan *session)}
	s.relays.linger = cfg.parkAfter
	s.base, s.cancelBase = context.WithCancel(context.Background())
	s.cfg.Store(cfg)
	return s
}

// SetConfig replaces the configuration for new sessions; sessions already
// running keep the one they started with.
func (s *Server) SetConfig(cfg *Config) { s.cfg.Store(cfg) }

// Config returns the current configuration.
func (s *Server) Config() *Config { return s.cfg.Load() }

// ErrServerClosed is returned by Serve after Shutdown.
var ErrServerClosed = errors.New("proxy: server closed")

// Serve accepts connections on ln until ln fails or Shutdown is called.
func (s *Server) Serve(ln net.Listener, l Listener) error {
	if l.TLSConfig == nil {
		return fmt.Errorf("proxy: listener %s has no TLS config", l.Name)
	}
	if l.Name == "" {
		l.Name = ln.Addr().String()
	}
	l.TLSConfig = servingConfig(l.TLSConfig)
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		ln.Close()
		return ErrServerClosed
	}
	s.listeners[ln] = struct{}{}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.listeners, ln)
		s.mu.Unlock()
	}()
	var failing acceptFailures
	for {
		conn, err := ln.Accept()
		if err != nil {
			s.mu.Lock()
			closing := s.closing
			s.mu.Unlock()
			if closing {
				return ErrServerClosed
			}
			if !retryableAccept(err) {
				return err
			}
			s.acceptErrors.Add(1)
			s.waitToAccept(&failing, l.Name, err)
			continue
		}
		failing.recovered(s.Config().log(), l.Name)
		sess := s.newSession(conn, l)
		if sess == nil {
			conn.Close()
			return ErrServerClosed
		}
		s.startSession(sess)
	}
}

// Session goroutines (README "Performance"): a goroutine whose session
// has passed its pre-auth phase (to the relay, or to its end) waits a
// moment for the next accepted connection rather than exiting, so the
// stack the TLS handshake grew serves the next handshake instead of being
// freed and grown again from its starting size, copy by copy. At most
// maxWaitingSessionGoroutines wait, each for at most
// sessionGoroutineWait, and none after Shutdown: an idle proxy keeps none.
const (
	maxWaitingSessionGoroutines = 8
	sessionGoroutineWait        = 500 * time.Millisecond
)

// startSession hands sess to a waiting session goroutine, or starts one.
func (s *Server) startSession(sess *session) {
	select {
	case s.handoff <- sess:
	default:
		go s.serveSessions(sess)
	}
}

// serveSessions is a session goroutine: it serves sess up to the relay,
// then the sessions startSession hands it while it waits.
func (s *Server) serveSessions(sess *session) {
	for sess != nil {
		sess.serve()
		sess = s.awaitSession()
	}
}

// awaitSession waits for startSession's next session, unless enough
// goroutines wait already; nil when none came in time or the server is
// shutting down.
func (s *Server) awaitSession() *session {
	if s.waitingSessionGoroutines.Add(1) > maxWaitingSessionGoroutines {
		s.waitingSessionGoroutines.Add(-1)
		return nil
	}
	defer s.waitingSessionGoroutines.Add(-1)
	t := time.NewTimer(sessionGoroutineWait)
	defer t.Stop()
	select {
	case sess := <-s.handoff:
		return sess
	case <-t.C:
	case <-s.base.Done():
	}
	return nil
}

// acceptFailures is one listener's failed accepts: the current run (how
// long to wait before the next try) and what was logged (README "Out of
// file descriptors").
type acceptFailures struct {
	backoff time.Duration
	count   int       // failures in this run
	since   time.Time // the run's first failure
	warned  bool      // this run was logged
	logged  time.Time // the last warning, of any run
}

// acceptLogEvery is how often failed accepts are logged at most, per
// listener: a proxy at its descriptor limit fails and succeeds in turn.
const acceptLogEvery = 10 * time.Second

// waitToAccept waits after a failed accept: 5 ms, doubling to at most 1 s
// (as net/http does), and no longer than until a session ends, which frees
// descriptors, or the server shuts down. It logs at most every
// acceptLogEvery.
func (s *Server) waitToAccept(f *acceptFailures, listener string, err error) {
	now := time.Now()
	if f.count == 0 {
		f.since = now
	}
	f.count++
	f.backoff = min(max(2*f.backoff, 5*time.Millisecond), time.Second)
	if now.Sub(f.logged) >= acceptLogEvery {
		f.logged, f.warned = now, true
		s.Config().log().Warn("accept failed; retrying until it succeeds", "listener", listener, "err", err,
			"failures", f.count, "since", f.since.Format(time.RFC3339Nano), "backoff", f.backoff)
	}
	t := time.NewTimer(f.backoff)
	defer t.Stop()
	select {
	case <-t.C:
	case <-s.sessionFreed():
	case <-s.base.Done():
	}
}

// recovered ends a run of failed accepts, saying so in the log if the run
// was logged.
func (f *acceptFailures) recovered(log *slog.Logger, listener string) {
	if f.count == 0 {
		return
	}
	if f.warned {
		log.Info("accepting again", "listener", listener, "failures", f.count, "after", time.Since(f.since))
	}
	*f = acceptFailures{logged: f.logged}
}

// sessionFreed returns a channel closed when the next session ends.
func (s *Server) sessionFreed() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.freed == nil {
		s.freed = make(chan struct{})
	}
	return s.freed
}

// AcceptErrors returns how many accepts failed and were retried (out of
// descriptors or memory, a connection aborted in the backlog) since the
// server started: the metric imapgate_accept_errors_total.
func (s *Server) AcceptErrors() uint64 { return s.acceptErrors.Load() }

// retryableAccept reports whether an accept error is passing: out of
// descriptors or memory for now, or a connection that died in the backlog
// (Linux's accept(2) passes the new connection's pending network error to
// the caller; a firewall may refuse it with EPERM). A closed listener, or
// one that is no socket, is not.
func retryableAccept(err error) bool {
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return true
	}
	for _, e := range []error{
		syscall.EMFILE, syscall.ENFILE, syscall.ENOBUFS, syscall.ENOMEM, syscall.ECONNABORTED,
		syscall.EPROTO, syscall.ENOPROTOOPT, syscall.EHOSTDOWN, syscall.EHOSTUNREACH,
		syscall.EOPNOTSUPP, syscall.ENETDOWN, syscall.ENETUNREACH, syscall.EPERM, syscall.EINTR,
	} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

// newSession registers a session, or returns nil when shutting down.
func (s *Server) newSession(conn net.Conn, l Listener) *session {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closing {
		return nil
	}
	sess := newSession(s, s.cfg.Load(), conn, l)
	s.sessions[sess] = struct{}{}
	s.wg.Add(1)
	return sess
}

func (s *Server) sessionDone(sess *session) {
	s.mu.Lock()
	s.endedIn += sess.bytesIn
	s.endedOut += sess.bytesOut
	delete(s.sessions, sess)
	if s.freed != nil {
		close(s.freed)
		s.freed = nil
	}
	s.mu.Unlock()
	s.wg.Done()
}

// Sessions returns the number of open sessions.
func (s *Server) Sessions() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.sessions)
}

// shutdownSweep is how often Shutdown looks for relayed sessions that
// have gone idle.
const shutdownSweep = 250 * time.Millisecond

// Shutdown stops accepting, ends sessions that have not logged in yet with
// BYE, and ends relayed sessions with BYE and TLS close_notify as soon as
// they are idle (no byte either way for 2 s, between two responses: a
// phone in IDLE at once, a FETCH once it is done), checking every 250 ms,
// until ctx is done; then it closes the rest and returns ctx's error.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.closing = true
	for ln := range s.listeners {
		ln.Close()
	}
	s.mu.Unlock()
	s.cancelBase()

	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	// Once every session has ended, nothing is parked: the parker's
	// goroutine and descriptors go too.
	defer s.relays.parker.close()
	sweep := time.NewTicker(shutdownSweep)
	defer sweep.Stop()
	for waiting := true; waiting; {
		s.byeIdleRelays()
		select {
		case <-done:
			return nil
		case <-ctx.Done():
			waiting = false
		case <-sweep.C:
		}
	}
	// Abort outside the lock: ending a parked session finishes it right
	// here, and finishing takes the lock.
	s.mu.Lock()
	left := make([]*session, 0, len(s.sessions))
	for sess := range s.sessions {
		left = append(left, sess)
	}
	s.mu.Unlock()
	for _, sess := range left {
		sess.abort(endShutdown)
	}
	<-done
	return ctx.Err()
}

// byeIdleRelays ends every relayed session that is idle with BYE
// (relay.byeIfIdle), reason shutdown.
func (s *Server) byeIdleRelays() {
	s.mu.Lock()
	relays := make([]*relay, 0, len(s.sessions))
	for sess := range s.sessions {
		sess.mu.Lock()
		if r := sess.relay; r != nil {
			relays = append(relays, r)
		}
		sess.mu.Unlock()
	}
	s.mu.Unlock()
	// Outside the lock: ending a relay finishes its session, which takes it.
	for _, r := range relays {
		r.byeIfIdle(endShutdown, "Server shutting down.")
	}
}

// EndCredential ends every open session that logged in with the app
// password or client certificate id (session_end reason
// credential_revoked) and returns how many it ended. Revocation calls it:
// the device is cut off now, not at its next login.
func (s *Server) EndCredential(id string) int {
	if id == "" {
		return 0
	}
	return s.endWhere(endCredentialRevoked, func(sess *session) bool {
		return sess.credential.ID == id && sess.credential.Kind != auth.CredentialToken
	})
}

// Bytes returns the bytes relayed so far, client to upstream (in) and
// upstream to client (out): those of ended sessions plus the live count
// of every session relaying now, so a phone in IDLE for hours shows its
// traffic as it happens. The sums never go down, so they suit a Prometheus
// counter. It costs one pass over the open sessions: call it per scrape,
// not per byte.
func (s *Server) Bytes() (in, out int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	in, out = s.endedIn, s.endedOut
	for sess := range s.sessions {
		sess.mu.Lock()
		r := sess.relay
		sess.mu.Unlock()
		if r != nil {
			in += r.in.Load()
			out += r.out.Load()
		}
	}
	return in, out
}
