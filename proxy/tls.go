package proxy

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"os"
	"strings"
	"sync/atomic"
	"syscall"

	"github.com/imapgate/imapgate/auth"
	"github.com/imapgate/imapgate/tlsconf"
)

// alpnACME is the ALPN protocol of TLS-ALPN-01 validation (RFC 8737).
const alpnACME = "acme-tls/1"

// handshake runs the server side of TLS over s.raw (implicit TLS, or after
// STARTTLS) and logs the tls event.
func (s *session) handshake() bool {
	hc := &handshakeConn{Conn: s.raw}
	tc := tls.Server(hc, s.l.TLSConfig)
	err := tc.HandshakeContext(s.ctx)
	ev := s.event(EventTLS)
	if err != nil {
		ev.Result, ev.Reason = ResultFailed, tlsFailureReason(err)
		s.cfg.Audit.Log(ev)
		s.endReason = endTLSFailed
		return false
	}
	st := tc.ConnectionState()
	ev.Result = ResultOK
	ev.TLSVersion = tls.VersionName(st.Version)
	ev.TLSCipher = cipherSuiteName(st.CipherSuite)
	ev.SNI = st.ServerName
	if st.NegotiatedProtocol == alpnACME {
		// An ACME CA validating TLS-ALPN-01 (RFC 8737): the handshake
		// was the whole exchange; it gets no IMAP greeting.
		ev.Reason = ReasonACMEChallenge
		s.cfg.Audit.Log(ev)
		tc.Close()
		s.endReason = endACMEChallenge
		return false
	}
	s.cfg.Audit.Log(ev)
	if hc.served != nil && !st.DidResume {
		// A resumed handshake serves no certificate (RFC 5929 section
		// 4: the client binds to the one of the first handshake, which
		// may have been renewed since).
		s.servedLeaf = hc.served.Leaf
	}
	s.conn = tc
	s.isTLS = true
	s.in.r = tc
	if s.r != nil { // STARTTLS: the plaintext phase's buffers carry on
		s.r.Reset(&s.in)
		s.w.Reset(tc)
	}
	return true
}

// cipherSuiteName is tls.CipherSuiteName without its cost: crypto/tls
// builds its whole list of suites on every call (some 20 allocations),
// once per login for the tls event. The names are crypto/tls's own, read
// once into suiteNames.
func cipherSuiteName(id uint16) string {
	if name, ok := suiteNames[id]; ok {
		return name
	}
	return tls.CipherSuiteName(id)
}

// suiteNames maps crypto/tls's cipher suites to their names. It is made
// once and only read.
var suiteNames = func() map[uint16]string {
	m := map[uint16]string{}
	for _, list := range [][]*tls.CipherSuite{tls.CipherSuites(), tls.InsecureCipherSuites()} {
		for _, cs := range list {
			m[cs.ID] = cs.Name
		}
	}
	return m
}()

// tlsFailureReason turns a handshake error into its audit reason.
func tlsFailureReason(err error) string {
	var rerr tls.RecordHeaderError
	var aerr tls.AlertError
	var verr *tls.CertificateVerificationError
	var invalid x509.CertificateInvalidError
	switch {
	case errors.Is(err, os.ErrDeadlineExceeded), errors.Is(err, context.Canceled):
		return ReasonTLSTimeout
	case errors.Is(err, tlsconf.ErrClientCertRequired):
		return ReasonClientCertRequired
	case errors.As(err, &invalid) && invalid.Reason == x509.Expired:
		return ReasonClientCertExpired
	case errors.As(err, &verr):
		// A server verifies only the client's certificate.
		return ReasonClientCertUntrusted
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, syscall.ECONNRESET):
		return ReasonTLSClientClosed
	case errors.As(err, &rerr):
		return ReasonNotTLS
	case errors.As(err, &aerr):
		return ReasonClientAlert
	case strings.Contains(err.Error(), "protocol version"):
		return ReasonProtocolVersion
	case strings.Contains(err.Error(), "no cipher suite"), strings.Contains(err.Error(), "no mutual"):
		return ReasonNoSharedCipher
	}
	return ReasonHandshakeError
}

// connState is what a SASL mechanism may know of the connection: its TLS
// state and served certificate (nil before TLS), the listener, the
// client's address, and where EXTERNAL keeps the client certificate's
// mapping.
func (s *session) connState() auth.ConnState {
	cs := auth.ConnState{Listener: s.l.Name, ClientAddr: s.clientAddr.Addr(), CertCache: &s.certCache}
	if tc, ok := s.conn.(*tls.Conn); ok {
		st := tc.ConnectionState()
		cs.TLS = &st
		cs.Certificate = s.servedLeaf
	}
	return cs
}

// handshakeConn is a client connection during its TLS handshake: what
// servingConfig needs to record the certificate it served (crypto/tls
// reports only the peer's), for tls-server-end-point channel binding
// (RFC 5929 section 4).
type handshakeConn struct {
	net.Conn
	served *tls.Certificate // written by the handshake's GetCertificate
}

// servingConfig wraps a listener's TLS config for Serve: every handshake
// uses the config base would (its own, or what its GetConfigForClient
// returns), with a GetCertificate that also records the certificate it
// chose in the handshake's handshakeConn. The wrapper itself is the config
// crypto/tls keeps session ticket keys in, one per listener as before.
//
// crypto/tls keeps the config a handshake used for the life of the
// connection, so the recording copy is made once per config base yields,
// not once per connection: hours of idle sessions do not each hold a copy
// (README "Performance"). A reload yields a new config, hence a new copy.
func servingConfig(base *tls.Config) *tls.Config {
	var last atomic.Pointer[recordingConfig]
	return &tls.Config{GetConfigForClient: func(hello *tls.ClientHelloInfo) (*tls.Config, error) {
		cfg := base
		if base.GetConfigForClient != nil {
			c, err := base.GetConfigForClient(hello)
			if err != nil {
				return nil, err
			}
			if c != nil {
				cfg = c
			}
		}
		if _, ok := hello.Conn.(*handshakeConn); !ok {
			return cfg, nil
		}
		if rc := last.Load(); rc != nil && rc.of == cfg {
			return rc.rec, nil
		}
		rc := newRecordingConfig(cfg)
		last.Store(rc)
		return rc.rec, nil
	}}
}

// recordingConfig is the copy of a config (of) that servingConfig's
// handshakes use: of with a GetCertificate that also records the
// certificate it chose in the handshake's handshakeConn.
type recordingConfig struct {
	of, rec *tls.Config
}

func newRecordingConfig(cfg *tls.Config) *recordingConfig {
	rec := cfg.Clone()
	rec.GetConfigForClient = nil
	rec.GetCertificate = func(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
		c, err := chooseCertificate(cfg, hello)
		if hc, ok := hello.Conn.(*handshakeConn); ok {
			hc.served = c
		}
		return c, err
	}
	return &recordingConfig{of: cfg, rec: rec}
}

// chooseCertificate is crypto/tls's choice of certificate for hello
// under cfg: GetCertificate's, else (or when it returns none) the only
// one of Certificates, else the first the client supports, else the
// first.
func chooseCertificate(cfg *tls.Config, hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
	if cfg.GetCertificate != nil {
		c, err := cfg.GetCertificate(hello)
		if c != nil || err != nil {
			return c, err
		}
	}
	switch len(cfg.Certificates) {
	case 0:
		return nil, errors.New("tls: no certificates configured")
	case 1:
		return &cfg.Certificates[0], nil
	}
	for i := range cfg.Certificates {
		if hello.SupportsCertificate(&cfg.Certificates[i]) == nil {
			return &cfg.Certificates[i], nil
		}
	}
	return &cfg.Certificates[0], nil
}

// authEnv is what the mechanisms get on this connection: its facts and
// the configured verifiers. It has no Admit: an attempt adds its own.
func (s *session) authEnv() *auth.Env {
	return &auth.Env{Conn: s.connState(), Verifiers: s.cfg.Verifiers}
}
