package proxy

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"os"
	"strings"
	"syscall"

	"github.com/imapgate/imapgate/auth"
	"github.com/imapgate/imapgate/tlsconf"
)

// alpnACME is the ALPN protocol of TLS-ALPN-01 validation (RFC 8737).
const alpnACME = "acme-tls/1"

// handshake runs the server side of TLS over s.raw (implicit TLS, or after
// STARTTLS) and logs the tls event.
func (s *session) handshake() bool {
	tc := tls.Server(s.raw, s.l.TLSConfig)
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
	ev.TLSCipher = tls.CipherSuiteName(st.CipherSuite)
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
	s.conn = tc
	s.isTLS = true
	s.in.r = tc
	s.r.Reset(&s.in)
	s.w.Reset(tc)
	return true
}

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
// state (nil before TLS), the listener, the client's address, and where
// EXTERNAL keeps the client certificate's mapping.
func (s *session) connState() auth.ConnState {
	cs := auth.ConnState{Listener: s.l.Name, ClientAddr: s.clientAddr.Addr(), CertCache: &s.certCache}
	if tc, ok := s.conn.(*tls.Conn); ok {
		st := tc.ConnectionState()
		cs.TLS = &st
	}
	return cs
}

// authEnv is what the mechanisms get on this connection: its facts and
// the configured verifiers. It has no Admit: an attempt adds its own.
func (s *session) authEnv() *auth.Env {
	return &auth.Env{Conn: s.connState(), Verifiers: s.cfg.Verifiers}
}
