package tlsconf

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// mustSelfSigned is SelfSigned for tests.
func mustSelfSigned(t *testing.T, names ...string) (tls.Certificate, []byte) {
	t.Helper()
	cert, certPEM, err := SelfSigned(time.Hour, names...)
	if err != nil {
		t.Fatalf("SelfSigned(%v): %v", names, err)
	}
	return cert, certPEM
}

// rsaSelfSigned makes an RSA certificate, the kind old clients need.
func rsaSelfSigned(t *testing.T, names ...string) (tls.Certificate, []byte) {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(time.Now().UnixNano()),
		Subject:               pkix.Name{CommonName: names[0]},
		DNSNames:              names,
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf},
		pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

// writePair writes cert into a fresh directory and returns its files.
func writePair(t *testing.T, cert tls.Certificate) CertFiles {
	t.Helper()
	c, k, err := WritePEMFiles(t.TempDir(), cert)
	if err != nil {
		t.Fatal(err)
	}
	return CertFiles{CertFile: c, KeyFile: k}
}

// replacePair writes cert over an existing pair (atomically, like certbot).
func replacePair(t *testing.T, files CertFiles, cert tls.Certificate) {
	t.Helper()
	c, k, err := WritePEMFiles(filepath.Dir(files.CertFile), cert)
	if err != nil {
		t.Fatal(err)
	}
	if c != files.CertFile || k != files.KeyFile {
		t.Fatalf("WritePEMFiles wrote %s, %s; want %s, %s", c, k, files.CertFile, files.KeyFile)
	}
}

// poolOf trusts the given PEM certificates.
func poolOf(t *testing.T, pems ...[]byte) *x509.CertPool {
	t.Helper()
	pool := x509.NewCertPool()
	for _, p := range pems {
		if !pool.AppendCertsFromPEM(p) {
			t.Fatal("bad PEM")
		}
	}
	return pool
}

// handshake runs a client handshake against server over net.Pipe and
// returns the client's view of the connection.
func handshake(t *testing.T, server, client *tls.Config) (tls.ConnectionState, error) {
	t.Helper()
	c, s := net.Pipe()
	defer c.Close()
	defer s.Close()
	deadline := time.Now().Add(10 * time.Second)
	c.SetDeadline(deadline)
	s.SetDeadline(deadline)

	srv := tls.Server(s, server)
	done := make(chan error, 1)
	go func() {
		err := srv.Handshake()
		if err != nil {
			s.Close() // unblock a client still waiting for our flight
		}
		done <- err
	}()
	cli := tls.Client(c, client)
	err := cli.Handshake()
	if err != nil {
		c.Close()
	}
	<-done
	return cli.ConnectionState(), err
}

// serveTLS accepts TLS connections on 127.0.0.1 with cert, finishing each
// handshake, until the test ends. It sends each ClientHello's SNI on sni.
func serveTLS(t *testing.T, cert tls.Certificate, sni chan<- string) string {
	t.Helper()
	cfg := &tls.Config{
		Certificates: []tls.Certificate{cert},
		GetConfigForClient: func(h *tls.ClientHelloInfo) (*tls.Config, error) {
			if sni != nil {
				select {
				case sni <- h.ServerName:
				default:
				}
			}
			return nil, nil
		},
	}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", cfg)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	t.Cleanup(func() { ln.Close(); <-done })
	go func() {
		defer close(done)
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			conn.SetDeadline(time.Now().Add(10 * time.Second))
			conn.(*tls.Conn).Handshake()
			conn.Close()
		}
	}()
	return ln.Addr().String()
}

func writeFile(t *testing.T, path string, data []byte) {
	t.Helper()
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
}

// syncWriter serialises writes to w (loggers write from many goroutines).
type syncWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (s *syncWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(p)
}
