package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
	"log"
	"math/big"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapserver"
	"github.com/emersion/go-imap/v2/imapserver/imapmemserver"
	"github.com/imapgate/imapgate/proxy/memupstream"
)

const (
	testUser = "user1"
	testPass = "pass1-Secret!"
)

var noSource netip.Addr

func itoa(n int) string { return strconv.Itoa(n) }

// testContext is bounded so that a hung test fails instead of waiting
// for the test binary's timeout.
func testContext(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// startUpstream starts memupstream with users user1..userN (all with
// testPass) and the given messages in user1's INBOX.
func startUpstream(t testing.TB, users int, messages ...[]byte) *memupstream.Server {
	t.Helper()
	m := map[string]string{}
	for i := 1; i <= users; i++ {
		m["user"+itoa(i)] = testPass
	}
	up, err := memupstream.Start(m)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { up.Close() })
	for _, msg := range messages {
		if err := up.AddMessage(testUser, "INBOX", msg); err != nil {
			t.Fatal(err)
		}
	}
	return up
}

// testMessage is message i of about size bytes, with CRLF line ends.
func testMessage(i, size int) []byte {
	var b strings.Builder
	fmt.Fprintf(&b, "From: sender%d@example.org\r\nTo: user1@example.net\r\nSubject: message %d\r\nMessage-ID: <%d@imapbench.test>\r\n\r\n", i%7, i, i)
	line := fmt.Sprintf("line of message %d: the quick brown fox jumps over the lazy dog\r\n", i)
	for b.Len()+len(line) <= size {
		b.WriteString(line)
	}
	return []byte(b.String())
}

// plainTarget is the memupstream u as imapbench reaches it: plaintext,
// AUTHENTICATE PLAIN.
func plainTarget(up *memupstream.Server) target {
	return target{Addr: up.Addr, TLS: tlsNone, User: testUser, Password: testPass, Timeout: 10 * time.Second}
}

// tlsServer is an in-memory IMAP server with TLS: implicit on one
// listener, STARTTLS on the other.
type tlsServer struct {
	implicit, starttls string
	caFile             string
	roots              *x509.CertPool
}

func startTLSServer(t testing.TB) *tlsServer {
	t.Helper()
	cert, certPEM := selfSigned(t)
	mem := imapmemserver.New()
	u := imapmemserver.NewUser(testUser, testPass)
	if err := u.Create("INBOX", nil); err != nil {
		t.Fatal(err)
	}
	mem.AddUser(u)
	srv := imapserver.New(&imapserver.Options{
		NewSession: func(*imapserver.Conn) (imapserver.Session, *imapserver.GreetingData, error) {
			return mem.NewSession(), nil, nil
		},
		Caps:      imap.CapSet{imap.CapIMAP4rev1: {}, imap.CapIdle: {}, imap.CapSASLIR: {}, imap.CapLiteralPlus: {}},
		TLSConfig: &tls.Config{Certificates: []tls.Certificate{cert}},
		Logger:    log.New(io.Discard, "", 0),
	})
	plain, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	implicit, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		plain.Close()
		t.Fatal(err)
	}
	done := make(chan struct{}, 2)
	go serveIMAP(srv, plain, done)
	go serveIMAP(srv, tls.NewListener(implicit, &tls.Config{Certificates: []tls.Certificate{cert}}), done)
	t.Cleanup(func() {
		srv.Close()
		plain.Close()
		implicit.Close()
		<-done
		<-done
	})
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(caFile, certPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(certPEM)
	return &tlsServer{implicit: implicit.Addr().String(), starttls: plain.Addr().String(), caFile: caFile, roots: roots}
}

func serveIMAP(srv *imapserver.Server, ln net.Listener, done chan<- struct{}) {
	defer func() { done <- struct{}{} }()
	srv.Serve(ln)
}

// selfSigned is a certificate for 127.0.0.1 and localhost, its own CA.
func selfSigned(t testing.TB) (tls.Certificate, []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "imapbench test"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		DNSNames:              []string{"localhost"},
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1)},
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}
