package credstore

import (
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"strings"
)

// ParseCertificatePEM returns the first certificate of a PEM file: the
// device's own when the file holds a chain. A file with a private key in
// it is refused: the server needs the certificate only, and a device's key
// should never travel to where it is registered.
func ParseCertificatePEM(data []byte) (*x509.Certificate, error) {
	var cert *x509.Certificate
	for rest := data; ; {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		switch {
		case strings.Contains(b.Type, "PRIVATE KEY"):
			return nil, fmt.Errorf("%w: the PEM file holds a private key (%s): give the certificate only, and keep the key on the device", ErrInvalid, b.Type)
		case b.Type == "CERTIFICATE" && cert == nil:
			c, err := x509.ParseCertificate(b.Bytes)
			if err != nil {
				return nil, fmt.Errorf("%w: certificate: %v", ErrInvalid, err)
			}
			cert = c
		}
	}
	if cert == nil {
		return nil, fmt.Errorf("%w: no CERTIFICATE block in the PEM file", ErrInvalid)
	}
	return cert, nil
}
