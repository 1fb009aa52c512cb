package tlsconf

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
)

// ClientCertMode says whether a listener asks clients for a certificate
// (README "Client certificates"): the config's client_certs words.
type ClientCertMode string

const (
	// ClientCertsOff asks for none: no CertificateRequest is sent.
	ClientCertsOff ClientCertMode = "off"
	// ClientCertsRequest asks for one and takes the handshake without it,
	// or with one the CAs did not issue: the mapping to a user decides
	// what a certificate is worth, and a client without one logs in some
	// other way.
	ClientCertsRequest ClientCertMode = "request"
	// ClientCertsRequire fails the handshake without a certificate, or,
	// with CAs, with one they did not issue for client authentication or
	// that is out of date.
	ClientCertsRequire ClientCertMode = "require"
)

// ErrClientCertRequired is the handshake error of a client that sent no
// certificate where ClientCertsRequire asks for one.
var ErrClientCertRequired = errors.New("tlsconf: the listener requires a client certificate and the client sent none")

// ClientCerts is what a listener asks of client certificates. The zero
// value asks for none.
type ClientCerts struct {
	// Mode is off (or empty), request or require.
	Mode ClientCertMode
	// CAs issue the devices' certificates (client_ca_file). They are
	// named in the CertificateRequest, so a client with several
	// certificates can pick the right one. With ClientCertsRequire the
	// handshake verifies the certificate against them; with
	// ClientCertsRequest it does not (the mapping does, for a certificate
	// it maps by a subject field). Nil: any certificate, which only a
	// registered key maps to a user.
	CAs *x509.CertPool
}

// Apply sets c's client authentication: ClientAuth, ClientCAs and, for
// ClientCertsRequire, VerifyConnection. It works the same on a config of
// ServerConfig and of ACME.ServerConfig; an ACME CA's TLS-ALPN-01
// validation (RFC 8737), which presents no certificate, is never refused
// for want of one.
func (cc ClientCerts) Apply(c *tls.Config) {
	switch cc.Mode {
	case ClientCertsRequest:
		c.ClientAuth = tls.RequestClientCert
		c.ClientCAs = cc.CAs
	case ClientCertsRequire:
		// Not tls.RequireAnyClientCert / RequireAndVerifyClientCert:
		// those would refuse the ACME validation too. The certificate
		// is required in VerifyConnection instead, which also runs on a
		// resumed session.
		c.ClientAuth = tls.RequestClientCert
		if cc.CAs != nil {
			c.ClientAuth, c.ClientCAs = tls.VerifyClientCertIfGiven, cc.CAs
		}
		c.VerifyConnection = requireClientCert
	}
}

// requireClientCert fails a handshake that brought no client certificate,
// unless it is an ACME CA's validation.
func requireClientCert(cs tls.ConnectionState) error {
	if len(cs.PeerCertificates) == 0 && cs.NegotiatedProtocol != ACMEProtocol {
		return ErrClientCertRequired
	}
	return nil
}

// LoadClientCAs reads a PEM file of CA certificates (client_ca_file). It
// fails for a file without a certificate, with one that does not parse,
// and with a private key in it (a CA's key has no business on the proxy).
func LoadClientCAs(path string) (*x509.CertPool, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("tlsconf: client CAs: %w", err)
	}
	certs, err := CertificatesFromPEM(data)
	if errors.Is(err, ErrPrivateKeyInPEM) {
		return nil, fmt.Errorf("tlsconf: client CAs: %s: %w: give the CA certificates only", path, err)
	}
	if err != nil {
		return nil, fmt.Errorf("tlsconf: client CAs: %s: %w", path, err)
	}
	pool := x509.NewCertPool()
	for _, ca := range certs {
		pool.AddCert(ca)
	}
	n := len(certs)
	if n == 0 {
		return nil, fmt.Errorf("tlsconf: client CAs: %s: no PEM CERTIFICATE block", path)
	}
	return pool, nil
}
