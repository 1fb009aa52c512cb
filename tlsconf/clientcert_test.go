package tlsconf_test

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/imapgate/imapgate/proxy/proxytest"
	"github.com/imapgate/imapgate/tlsconf"
)

// serverHandshake runs one handshake over net.Pipe and returns what the
// server saw: its connection state and error.
func serverHandshake(t *testing.T, server, client *tls.Config) (tls.ConnectionState, error) {
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
		if err == nil {
			// TLS 1.3: the server's verdict on the client's certificate
			// comes after the client's handshake is over; one byte
			// through shows both sides agree.
			_, err = srv.Write([]byte{'x'})
		}
		s.Close()
		done <- err
	}()
	cli := tls.Client(c, client)
	if err := cli.Handshake(); err == nil {
		cli.Read(make([]byte, 1))
	}
	c.Close()
	err := <-done
	return srv.ConnectionState(), err
}

// TestListenerClientCertModes: request takes any certificate or none and
// leaves judging it to the mapping; require refuses a handshake without
// one, and with client CAs one they did not issue or that expired, but
// never an ACME CA's TLS-ALPN-01 validation; the CertificateRequest names
// the client CAs either way, so a device picks the right certificate.
func TestListenerClientCertModes(t *testing.T) {
	serverCert, serverPEM, err := tlsconf.SelfSigned(time.Hour, "localhost")
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(serverPEM)
	ca := proxytest.NewClientCA(t, "Devices CA")
	other := proxytest.NewClientCA(t, "Some other CA")
	cas := x509.NewCertPool()
	cas.AddCert(ca.Cert)

	issued := ca.Issue(t, proxytest.ClientCertOptions{CommonName: "alice", Email: "alice@example.com"})
	foreign := other.Issue(t, proxytest.ClientCertOptions{CommonName: "alice", Email: "alice@example.com"})
	selfSigned := (*proxytest.ClientCA)(nil).Issue(t, proxytest.ClientCertOptions{CommonName: "alice's phone"})
	expired := ca.Issue(t, proxytest.ClientCertOptions{CommonName: "alice", NotBefore: time.Now().Add(-48 * time.Hour), NotAfter: time.Now().Add(-time.Hour)})

	tests := []struct {
		name     string
		cc       tlsconf.ClientCerts
		cert     *proxytest.ClientCert
		acme     bool
		wantErr  func(error) bool
		verified bool // the handshake verified a chain
	}{
		{name: "off, a certificate offered", cc: tlsconf.ClientCerts{}, cert: &issued},
		{name: "request, none", cc: tlsconf.ClientCerts{Mode: tlsconf.ClientCertsRequest, CAs: cas}},
		{name: "request, issued", cc: tlsconf.ClientCerts{Mode: tlsconf.ClientCertsRequest, CAs: cas}, cert: &issued},
		{name: "request, another CA's", cc: tlsconf.ClientCerts{Mode: tlsconf.ClientCertsRequest, CAs: cas}, cert: &foreign},
		{name: "request, self-signed, no CAs", cc: tlsconf.ClientCerts{Mode: tlsconf.ClientCertsRequest}, cert: &selfSigned},
		{name: "require, none", cc: tlsconf.ClientCerts{Mode: tlsconf.ClientCertsRequire, CAs: cas},
			wantErr: func(err error) bool { return errors.Is(err, tlsconf.ErrClientCertRequired) }},
		{name: "require, issued", cc: tlsconf.ClientCerts{Mode: tlsconf.ClientCertsRequire, CAs: cas}, cert: &issued, verified: true},
		{name: "require, another CA's", cc: tlsconf.ClientCerts{Mode: tlsconf.ClientCertsRequire, CAs: cas}, cert: &foreign,
			wantErr: func(err error) bool { var v *tls.CertificateVerificationError; return errors.As(err, &v) }},
		{name: "require, expired", cc: tlsconf.ClientCerts{Mode: tlsconf.ClientCertsRequire, CAs: cas}, cert: &expired,
			wantErr: func(err error) bool {
				var inv x509.CertificateInvalidError
				return errors.As(err, &inv) && inv.Reason == x509.Expired
			}},
		{name: "require without CAs, self-signed", cc: tlsconf.ClientCerts{Mode: tlsconf.ClientCertsRequire}, cert: &selfSigned},
		{name: "require without CAs, none", cc: tlsconf.ClientCerts{Mode: tlsconf.ClientCertsRequire},
			wantErr: func(err error) bool { return errors.Is(err, tlsconf.ErrClientCertRequired) }},
		{name: "require, an ACME validation without one", cc: tlsconf.ClientCerts{Mode: tlsconf.ClientCertsRequire, CAs: cas}, acme: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			server := &tls.Config{Certificates: []tls.Certificate{serverCert}, NextProtos: []string{tlsconf.ALPNProtocol, tlsconf.ACMEProtocol}}
			tt.cc.Apply(server)
			var acceptable [][]byte
			asked := false
			client := &tls.Config{RootCAs: roots, ServerName: "localhost", NextProtos: []string{tlsconf.ALPNProtocol},
				GetClientCertificate: func(cri *tls.CertificateRequestInfo) (*tls.Certificate, error) {
					asked, acceptable = true, cri.AcceptableCAs
					if tt.cert == nil {
						return &tls.Certificate{}, nil
					}
					return &tt.cert.TLS, nil
				}}
			if tt.acme {
				client.NextProtos = []string{tlsconf.ACMEProtocol}
			}
			st, err := serverHandshake(t, server, client)
			if tt.wantErr != nil {
				if err == nil || !tt.wantErr(err) {
					t.Fatalf("server handshake err = %v", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("server handshake: %v", err)
			}
			off := tt.cc.Mode == ""
			if asked == off {
				t.Errorf("CertificateRequest sent: %v, mode %q", asked, tt.cc.Mode)
			}
			if tt.cc.CAs != nil && (len(acceptable) != 1 || !bytes.Equal(acceptable[0], ca.Cert.RawSubject)) {
				t.Errorf("acceptable CAs = %q, want the devices CA", acceptable)
			}
			if got := len(st.PeerCertificates) > 0; got != (tt.cert != nil && !off) {
				t.Errorf("server saw a client certificate: %v", got)
			}
			if got := len(st.VerifiedChains) > 0; got != tt.verified {
				t.Errorf("verified chains: %v, want %v", got, tt.verified)
			}
		})
	}
}

func TestLoadClientCAs(t *testing.T) {
	dir := t.TempDir()
	ca := proxytest.NewClientCA(t, "Devices CA")
	device := ca.Issue(t, proxytest.ClientCertOptions{CommonName: "alice"})
	write := func(name string, data []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	pool, err := tlsconf.LoadClientCAs(write("ca.pem", ca.PEM))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := device.Cert.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Errorf("a device certificate does not verify against the loaded CAs: %v", err)
	}
	for name, data := range map[string][]byte{
		"empty.pem":    nil,
		"withkey.pem":  append(append([]byte{}, ca.PEM...), device.KeyPEM...),
		"garbage.pem":  []byte("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"),
		"onlykey.pem":  device.KeyPEM,
		"missing.pem/": nil,
	} {
		path := filepath.Join(dir, name)
		if !strings.HasSuffix(name, "/") {
			path = write(name, data)
		}
		if _, err := tlsconf.LoadClientCAs(path); err == nil || !strings.Contains(err.Error(), "client CAs") {
			t.Errorf("LoadClientCAs(%s) = %v, want an error naming client CAs", name, err)
		}
	}
}
