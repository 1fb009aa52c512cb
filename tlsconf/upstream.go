package tlsconf

import (
	"crypto/sha256"
	"crypto/subtle"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"strings"
)

// UpstreamOptions configures the proxy's TLS connection to the legacy
// upstream server. Verification is never skipped: it uses the system roots,
// a CA file, or a pinned public key.
type UpstreamOptions struct {
	// ServerName is sent as SNI and, without a pin, is the name the
	// certificate must be valid for. Required unless PinSHA256 is set;
	// with a pin it is still sent as SNI when non-empty.
	ServerName string

	// CAFile is a PEM bundle of the roots to trust. If empty, the system
	// roots are used. It cannot be combined with PinSHA256.
	CAFile string

	// PinSHA256 is the base64 (standard encoding) SHA-256 of the upstream
	// certificate's SubjectPublicKeyInfo, as printed by SPKIPin or by
	//
	//	openssl s_client -connect HOST:993 </dev/null | openssl x509 -pubkey -noout |
	//	  openssl pkey -pubin -outform der | openssl dgst -sha256 -binary | base64
	//
	// When set, the leaf's key must match and the chain and name are not
	// checked: the pin replaces them (old Exchange servers with self-signed
	// certificates). If empty, normal verification applies.
	PinSHA256 string
}

// UpstreamConfig builds the tls.Config for connections to the upstream
// server. MinVersion is always TLS 1.2 (Exchange 2010 and later speak it
// once patched; TLS 1.0/1.1 upstreams are not supported).
//
// With a pin, the config sets InsecureSkipVerify only to replace Go's
// chain check with VerifyConnection, which compares the leaf's key with the
// pin in constant time and fails with an error naming the expected and the
// received pin. Without a pin, Go's normal verification runs against the
// CAFile roots or the system roots, and ServerName is required.
func UpstreamConfig(o UpstreamOptions) (*tls.Config, error) {
	cfg := &tls.Config{
		MinVersion: tls.VersionTLS12,
		ServerName: o.ServerName,
	}
	if o.PinSHA256 != "" {
		if o.CAFile != "" {
			return nil, errors.New("tlsconf: upstream: set CAFile or PinSHA256, not both (a pin replaces chain verification)")
		}
		want, err := ParsePin(o.PinSHA256)
		if err != nil {
			return nil, fmt.Errorf("tlsconf: upstream: %w", err)
		}
		cfg.InsecureSkipVerify = true // replaced by the pin check below, never skipped
		cfg.VerifyConnection = pinVerifier(want)
		return cfg, nil
	}
	if o.ServerName == "" {
		return nil, errors.New("tlsconf: upstream: ServerName is required to verify the certificate (or set PinSHA256)")
	}
	if o.CAFile != "" {
		data, err := os.ReadFile(o.CAFile)
		if err != nil {
			return nil, fmt.Errorf("tlsconf: upstream CA file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(data) {
			return nil, fmt.Errorf("tlsconf: upstream CA file %s: no PEM certificates found", o.CAFile)
		}
		cfg.RootCAs = pool
	}
	return cfg, nil
}

// pinVerifier returns a VerifyConnection callback that accepts only a leaf
// whose SubjectPublicKeyInfo hashes to want.
func pinVerifier(want []byte) func(tls.ConnectionState) error {
	return func(cs tls.ConnectionState) error {
		if len(cs.PeerCertificates) == 0 {
			return errors.New("tlsconf: upstream sent no certificate")
		}
		leaf := cs.PeerCertificates[0]
		got := sha256.Sum256(leaf.RawSubjectPublicKeyInfo)
		if subtle.ConstantTimeCompare(got[:], want) != 1 {
			return fmt.Errorf("tlsconf: upstream certificate public key pin mismatch: expected %s, got %s (subject %q)",
				base64.StdEncoding.EncodeToString(want), base64.StdEncoding.EncodeToString(got[:]), leaf.Subject.String())
		}
		return nil
	}
}

// SPKIPin returns the pin of cert for UpstreamOptions.PinSHA256: the
// base64 (standard encoding) SHA-256 of its SubjectPublicKeyInfo.
func SPKIPin(cert *x509.Certificate) string {
	sum := sha256.Sum256(cert.RawSubjectPublicKeyInfo)
	return base64.StdEncoding.EncodeToString(sum[:])
}

// ParsePin validates a configured pin and returns the 32-byte hash.
// Surrounding spaces and curl's "sha256//" prefix are accepted. The error
// says what is wrong: not base64, hex instead of base64, or not 32 bytes.
func ParsePin(s string) ([]byte, error) {
	s = strings.TrimPrefix(strings.TrimSpace(s), "sha256//")
	if s == "" {
		return nil, errors.New("tlsconf: pin is empty")
	}
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil || len(b) != sha256.Size {
		if h, herr := hex.DecodeString(s); herr == nil && len(h) == sha256.Size {
			return nil, fmt.Errorf("tlsconf: pin %q is hex; want the SHA-256 in base64 (standard encoding), e.g. %s",
				s, base64.StdEncoding.EncodeToString(h))
		}
	}
	if err != nil {
		return nil, fmt.Errorf("tlsconf: pin %q is not base64 (standard encoding, 44 characters ending in '='): %w", s, err)
	}
	if len(b) != sha256.Size {
		return nil, fmt.Errorf("tlsconf: pin %q decodes to %d bytes, want %d (a SHA-256 of the SubjectPublicKeyInfo)", s, len(b), sha256.Size)
	}
	return b, nil
}
