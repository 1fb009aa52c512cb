package tlsconf

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"
)

// SelfSigned makes a throwaway ECDSA P-256 certificate for the demo and
// tests, valid for names (strings that parse as IP addresses become IP
// SANs, the rest DNS names) from one hour ago for validFor. The first name
// is also the subject CN. It returns the certificate with Leaf set and the
// certificate's PEM, which clients can use as their CA file.
func SelfSigned(validFor time.Duration, names ...string) (tls.Certificate, []byte, error) {
	if validFor <= 0 {
		return tls.Certificate{}, nil, fmt.Errorf("tlsconf: self-signed validity %v is not positive", validFor)
	}
	if len(names) == 0 {
		return tls.Certificate{}, nil, errors.New("tlsconf: self-signed certificate needs at least one name")
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, nil, fmt.Errorf("tlsconf: generate key: %w", err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
	if err != nil {
		return tls.Certificate{}, nil, fmt.Errorf("tlsconf: generate serial: %w", err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: names[0], Organization: []string{"imapgate self-signed"}},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(validFor),
		// Self-signed and handed to clients as their CA file, so it is
		// its own root, as net/http/httptest does it.
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	for _, n := range names {
		if ip := net.ParseIP(n); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, n)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return tls.Certificate{}, nil, fmt.Errorf("tlsconf: create certificate: %w", err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return tls.Certificate{}, nil, fmt.Errorf("tlsconf: parse created certificate: %w", err)
	}
	cert := tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}
	return cert, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), nil
}

// WritePEMFiles writes cert's chain to dir/cert.pem (mode 0644) and its
// private key, PKCS #8, to dir/key.pem (mode 0600), for tests and the demo.
// Each file is written to a temporary name and renamed into place, so a
// reader never sees half a file; existing files are replaced.
func WritePEMFiles(dir string, cert tls.Certificate) (certFile, keyFile string, err error) {
	if len(cert.Certificate) == 0 {
		return "", "", errors.New("tlsconf: write PEM: certificate is empty")
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(cert.PrivateKey)
	if err != nil {
		return "", "", fmt.Errorf("tlsconf: write PEM: marshal private key: %w", err)
	}
	var chain []byte
	for _, der := range cert.Certificate {
		chain = append(chain, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})...)
	}
	certFile = filepath.Join(dir, "cert.pem")
	keyFile = filepath.Join(dir, "key.pem")
	if err := writeFileAtomic(certFile, chain, 0o644); err != nil {
		return "", "", err
	}
	if err := writeFileAtomic(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		return "", "", err
	}
	return certFile, keyFile, nil
}

// writeFileAtomic writes data to a temporary file next to path (created
// 0600, so a key is never readable by others) and renames it over path.
func writeFileAtomic(path string, data []byte, perm os.FileMode) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return fmt.Errorf("tlsconf: write %s: %w", path, err)
	}
	tmp := f.Name()
	_, err = f.Write(data)
	if err == nil {
		err = f.Chmod(perm)
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("tlsconf: write %s: %w", path, err)
	}
	return nil
}
