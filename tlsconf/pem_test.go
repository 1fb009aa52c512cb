package tlsconf

import (
	"encoding/pem"
	"errors"
	"strings"
	"testing"
)

// FuzzCertificatesFromPEM: whatever the file, a private key block is
// never accepted, and every certificate returned came from a CERTIFICATE
// block.
func FuzzCertificatesFromPEM(f *testing.F) {
	_, certPEM, err := SelfSigned(3600e9, "localhost")
	if err != nil {
		f.Fatal(err)
	}
	f.Add(certPEM)
	f.Add(append(append([]byte{}, certPEM...), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: []byte{1}})...))
	f.Add([]byte("-----BEGIN CERTIFICATE-----\nZ2FyYmFnZQ==\n-----END CERTIFICATE-----\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		certs, err := CertificatesFromPEM(data)
		keys, blocks := 0, 0
		for rest := data; ; {
			var b *pem.Block
			if b, rest = pem.Decode(rest); b == nil {
				break
			}
			if strings.Contains(b.Type, "PRIVATE KEY") {
				keys++
			}
			if b.Type == "CERTIFICATE" {
				blocks++
			}
		}
		if keys > 0 && err == nil {
			t.Fatalf("a file with a private key block was accepted: %d certificates", len(certs))
		}
		if errors.Is(err, ErrPrivateKeyInPEM) && keys == 0 {
			t.Fatalf("no private key block, but err = %v", err)
		}
		if err == nil && len(certs) != blocks {
			t.Fatalf("%d certificates from %d CERTIFICATE blocks", len(certs), blocks)
		}
	})
}
