package tlsconf

import (
	"cmp"
	"context"
	"crypto/tls"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/caddyserver/certmagic"
)

// The ACME challenge responder: TLS-ALPN-01 or HTTP-01 served on its own
// listener (challengeListener), and the TLS-ALPN-01 answers that the
// client-facing listeners give too (challengeAnswer).

// MaxChallengeConns caps the connections the TLS-ALPN-01 or HTTP-01
// responder serves at once. A CA validates a name from a few vantage
// points (Let's Encrypt: up to five), one connection each, so 32 leave room
// for several names at a time. With all slots taken the responder accepts
// nothing more until one frees (at the latest after ChallengeConnTimeout):
// the next connections wait in the kernel's backlog instead of being
// refused.
const MaxChallengeConns = 32

// ChallengeConnTimeout bounds one connection to the challenge responder:
// a TLS-ALPN-01 handshake, or an HTTP-01 request and its answer. A peer
// that sends nothing, or sends slowly, loses its slot after it.
const ChallengeConnTimeout = 5 * time.Second

// serveChallenges answers the CA on the challenge listener until it is
// closed: TLS-ALPN-01 handshakes, or HTTP-01 requests (nothing but
// /.well-known/acme-challenge/ is answered; everything else is 404). The
// listener holds the connections to MaxChallengeConns and outlasts accept
// errors; each connection gets ChallengeConnTimeout.
func (a *ACME) serveChallenges(ctx context.Context, ln *challengeListener, answer *challengeAnswer, done chan struct{}) {
	defer close(done)
	timeout := cmp.Or(a.chalTimeout, ChallengeConnTimeout)
	if a.opts.Challenge == ChallengeHTTP {
		srv := &http.Server{
			Handler:           a.issuer.HTTPChallengeHandler(http.NotFoundHandler()),
			ReadHeaderTimeout: timeout,
			ReadTimeout:       timeout,
			WriteTimeout:      timeout,
			MaxHeaderBytes:    8 << 10, // a CA's GET is a few hundred bytes
			ErrorLog:          slog.NewLogLogger(a.log.Handler(), slog.LevelDebug),
			BaseContext:       func(net.Listener) context.Context { return ctx },
		}
		srv.SetKeepAlivesEnabled(false)
		srv.Serve(ln)
		srv.Close() // requests still in flight
		return
	}
	cfg := &tls.Config{
		MinVersion:     tls.VersionTLS12,
		NextProtos:     []string{ACMEProtocol},
		GetCertificate: answer.onlyChallenges,
	}
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		c, err := ln.Accept()
		if err != nil {
			return // closed: the listener retries everything else
		}
		wg.Add(1)
		go answerTLSALPN(ctx, c, cfg, timeout, &wg)
	}
}

// answerTLSALPN completes one TLS-ALPN-01 handshake: the challenge
// certificate is the answer, nothing is read or written after it.
func answerTLSALPN(ctx context.Context, c net.Conn, cfg *tls.Config, timeout time.Duration, wg *sync.WaitGroup) {
	defer wg.Done()
	defer c.Close()
	c.SetDeadline(time.Now().Add(timeout))
	tls.Server(c, cfg).HandshakeContext(ctx)
}

// isChallengeHello reports whether hello is a TLS-ALPN-01 validation: a
// name in SNI and "acme-tls/1" as the only protocol (RFC 8737, section 3).
func isChallengeHello(hello *tls.ClientHelloInfo) bool {
	return hello.ServerName != "" && len(hello.SupportedProtos) == 1 && hello.SupportedProtos[0] == ACMEProtocol
}

// challengeAnswer answers TLS-ALPN-01 validations, on the responder and
// on client-facing listeners.
type challengeAnswer struct {
	// chal finds the challenges of this process, or of another node in
	// the storage. Its own log is silent: certmagic would log every hello
	// for a name with no challenge pending as an error, which anyone can
	// repeat at will; refused logs them at most once per interval.
	chal    *certmagic.Config
	refused *repeatLog
	log     *slog.Logger
}

// onlyChallenges is GetCertificate of the TLS-ALPN-01 responder: it
// answers validations and nothing else.
func (c *challengeAnswer) onlyChallenges(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
	if !isChallengeHello(hello) {
		return nil, errors.New("tlsconf: the ACME challenge responder answers TLS-ALPN-01 validations only")
	}
	return c.certificate(hello)
}

// certificate returns the TLS-ALPN-01 certificate for hello's name, or an
// error when no challenge is pending for it.
func (c *challengeAnswer) certificate(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
	remote := ""
	if hello.Conn != nil {
		remote = hello.Conn.RemoteAddr().String()
	}
	cert, err := c.chal.GetCertificate(hello)
	if err != nil {
		c.refused.Log("server_name", hello.ServerName, "remote_addr", remote, "reason", err.Error())
		return nil, err
	}
	c.log.Debug("TLS-ALPN-01 challenge answered", "server_name", hello.ServerName, "remote_addr", remote)
	return cert, nil
}

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
