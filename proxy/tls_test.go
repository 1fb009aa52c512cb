package proxy

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/imapgate/imapgate/tlsconf"
)

// TestACMEChallengeHandshakeGetsNoGreeting: a listener whose certificates
// come from ACME also offers acme-tls/1; a CA validating TLS-ALPN-01 there
// completes the handshake and must then be closed, not greeted as an IMAP
// client (RFC 8737 section 3).
func TestACMEChallengeHandshakeGetsNoGreeting(t *testing.T) {
	cert, certPEM, err := tlsconf.SelfSigned(time.Hour, "localhost")
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(certPEM)
	audit := &syncBuffer{}
	srv := NewServer(&Config{Upstream: &Upstream{Address: "127.0.0.1:1"}, Audit: NewAuditor(audit, nil)})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	tc := &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{"imap", "acme-tls/1"}}
	go srv.Serve(ln, Listener{Name: "acme", Mode: TLSImplicit, TLSConfig: tc})
	defer srv.Shutdown(context.Background())
	for _, proto := range []string{"acme-tls/1", "imap"} {
		c, err := tls.Dial("tcp", ln.Addr().String(), &tls.Config{RootCAs: roots, ServerName: "localhost", NextProtos: []string{proto}})
		if err != nil {
			t.Fatalf("%s: %v", proto, err)
		}
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		line, err := bufio.NewReader(c).ReadString('\n')
		c.Close()
		switch proto {
		case "acme-tls/1":
			if err == nil || line != "" {
				t.Errorf("acme-tls/1 connection got %q, %v; want it closed without a greeting", line, err)
			}
		default:
			if !strings.HasPrefix(line, "* OK") {
				t.Errorf("imap connection got %q, %v; want the greeting", line, err)
			}
		}
	}
	if !strings.Contains(audit.String(), `"reason":"acme_challenge"`) {
		t.Errorf("no tls event with reason acme_challenge:\n%s", audit.String())
	}
}

// TestCipherSuiteNamesAreCryptoTLSs: the audit's tls_cipher words are
// crypto/tls's names, for every suite it knows.
func TestCipherSuiteNamesAreCryptoTLSs(t *testing.T) {
	for _, c := range append(tls.CipherSuites(), tls.InsecureCipherSuites()...) {
		if got := cipherSuiteName(c.ID); got != c.Name {
			t.Errorf("cipherSuiteName(%#04x) = %q, want %q", c.ID, got, c.Name)
		}
	}
	if got, want := cipherSuiteName(0x1234), tls.CipherSuiteName(0x1234); got != want {
		t.Errorf("unknown suite: %q, want %q", got, want)
	}
}

// TestReloadedTLSConfigServesItsCertificateFromTheNextHandshake: a
// listener whose config comes from GetConfigForClient (how serve reloads
// certificates) serves the new config's certificate from the first
// handshake after the swap, though Serve reuses its copy of a config
// from handshake to handshake.
func TestReloadedTLSConfigServesItsCertificateFromTheNextHandshake(t *testing.T) {
	roots := x509.NewCertPool()
	var configs [2]*tls.Config
	for i := range configs {
		cert, certPEM, err := tlsconf.SelfSigned(time.Hour, "localhost", "127.0.0.1")
		if err != nil {
			t.Fatal(err)
		}
		roots.AppendCertsFromPEM(certPEM)
		store, err := tlsconf.LoadCertStore()
		if err != nil {
			t.Fatal(err)
		}
		store.Add(cert)
		configs[i] = tlsconf.ServerConfig(store, 0)
	}
	var live atomic.Pointer[tls.Config]
	live.Store(configs[0])
	tp := startProxy(t, nil)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go tp.srv.Serve(ln, Listener{Name: "live", Mode: TLSImplicit, TLSConfig: &tls.Config{
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) { return live.Load(), nil }}})
	served := func() []byte {
		t.Helper()
		conn, err := tls.Dial("tcp", ln.Addr().String(), &tls.Config{RootCAs: roots, ServerName: "localhost"})
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		return conn.ConnectionState().PeerCertificates[0].Raw
	}
	first := served()
	if again := served(); !bytes.Equal(again, first) {
		t.Fatal("the same config served two certificates")
	}
	live.Store(configs[1])
	if after := served(); bytes.Equal(after, first) {
		t.Error("after the config was swapped the handshake still served the old certificate")
	}
}
