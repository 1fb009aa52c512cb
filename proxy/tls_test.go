package proxy

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"net"
	"strings"
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
