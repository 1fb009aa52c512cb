package credstore

import (
	"crypto/x509"
	"errors"
	"fmt"

	"github.com/imapgate/imapgate/tlsconf"
)

// ParseCertificatePEM returns the first certificate of a PEM file: the
// device's own when the file holds a chain. A file with a private key in
// it is refused: the server needs the certificate only, and a device's key
// should never travel to where it is registered.
func ParseCertificatePEM(data []byte) (*x509.Certificate, error) {
	certs, err := tlsconf.CertificatesFromPEM(data)
	switch {
	case errors.Is(err, tlsconf.ErrPrivateKeyInPEM):
		return nil, fmt.Errorf("%w: %v: give the certificate only, and keep the key on the device", ErrInvalid, err)
	case err != nil:
		return nil, fmt.Errorf("%w: %v", ErrInvalid, err)
	case len(certs) == 0:
		return nil, fmt.Errorf("%w: no CERTIFICATE block in the PEM file", ErrInvalid)
	}
	return certs[0], nil
}
