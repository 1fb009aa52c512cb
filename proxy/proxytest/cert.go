package proxytest

import (
	"crypto/x509"
	"encoding/pem"
	"time"

	"github.com/imapgate/imapgate/tlsconf"
)

// selfSignedCert makes the certificate Dovecot serves: ECDSA P-256, for
// "localhost" and 127.0.0.1, valid for a week. It is its own CA, so tests
// trust it by using it as their CA file.
func selfSignedCert() (certPEM, keyPEM []byte, err error) {
	cert, certPEM, err := tlsconf.SelfSigned(7*24*time.Hour, "localhost", "127.0.0.1")
	if err != nil {
		return nil, nil, err
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(cert.PrivateKey)
	if err != nil {
		return nil, nil, err
	}
	return certPEM, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), nil
}
