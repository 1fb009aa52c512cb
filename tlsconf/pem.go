package tlsconf

import (
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"strings"
)

// ErrPrivateKeyInPEM is what CertificatesFromPEM returns for a file that
// holds a private key where only certificates belong (a CA file, a
// device's certificate to register): the key has no business there.
var ErrPrivateKeyInPEM = errors.New("the PEM file holds a private key")

// CertificatesFromPEM parses every CERTIFICATE block of a PEM file, in
// order, skipping blocks of other types. It fails for a block that does
// not parse and, wrapping ErrPrivateKeyInPEM, for any private key block.
// No certificate at all is not an error: the caller says what it needed.
func CertificatesFromPEM(data []byte) ([]*x509.Certificate, error) {
	var certs []*x509.Certificate
	for rest := data; ; {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			return certs, nil
		}
		switch {
		case strings.Contains(b.Type, "PRIVATE KEY"):
			return nil, fmt.Errorf("%w (%s)", ErrPrivateKeyInPEM, b.Type)
		case b.Type != "CERTIFICATE":
			continue
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return nil, fmt.Errorf("certificate %d: %w", len(certs)+1, err)
		}
		certs = append(certs, c)
	}
}
