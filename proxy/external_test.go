package proxy

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/imapgate/imapgate/auth"
	"github.com/imapgate/imapgate/policy"
	"github.com/imapgate/imapgate/proxy/memupstream"
	"github.com/imapgate/imapgate/proxy/proxytest"
	"github.com/imapgate/imapgate/tlsconf"
)

// keyMapper maps certificates by their public key, as registered keys do
// (README "Client certificates"); revoke takes one away.
type keyMapper struct {
	mu    sync.Mutex
	users map[string]auth.Credential // by string(RawSubjectPublicKeyInfo); Label is the user
	gone  map[string]bool
	uses  int
}

func (m *keyMapper) MapCert(_ context.Context, cs auth.ConnState) (string, auth.Credential, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	key := string(cs.TLS.PeerCertificates[0].RawSubjectPublicKeyInfo)
	if m.gone[key] {
		return "", auth.Credential{}, &auth.Refusal{Reason: "cert_revoked"}
	}
	c, ok := m.users[key]
	if !ok {
		return "", auth.Credential{}, &auth.Refusal{Reason: "cert_unknown"}
	}
	return c.Label, c, nil
}

func (m *keyMapper) RecordUse(string, netip.Addr) {
	m.mu.Lock()
	m.uses++
	m.mu.Unlock()
}

func (m *keyMapper) revoke(c proxytest.ClientCert) {
	m.mu.Lock()
	m.gone[string(c.Cert.RawSubjectPublicKeyInfo)] = true
	m.mu.Unlock()
}

func (m *keyMapper) restore(c proxytest.ClientCert) {
	m.mu.Lock()
	delete(m.gone, string(c.Cert.RawSubjectPublicKeyInfo))
	m.mu.Unlock()
}

// externalProxy is a proxy whose listeners ask for client certificates
// (client_certs mode), in front of an in-memory upstream that takes the
// master's Dovecot LOGIN form for testUser.
type externalProxy struct {
	srv                *Server
	implicit, starttls string
	roots              *x509.CertPool
	audit              *syncBuffer
	certs              *keyMapper
	phone              proxytest.ClientCert // registered for testUser
}

func startExternalProxy(tb testing.TB, cc tlsconf.ClientCerts, mod ...func(*Config)) *externalProxy {
	tb.Helper()
	up, err := memupstream.Start(map[string]string{testUser + "*" + testMasterUser: testMasterSecret})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { up.Close() })
	cert, certPEM, err := tlsconf.SelfSigned(time.Hour, "localhost")
	if err != nil {
		tb.Fatal(err)
	}
	store, _ := tlsconf.LoadCertStore()
	store.Add(cert)
	var self *proxytest.ClientCA
	phone := self.Issue(tb, proxytest.ClientCertOptions{CommonName: "alice's phone"})
	ep := &externalProxy{roots: x509.NewCertPool(), audit: &syncBuffer{}, phone: phone,
		certs: &keyMapper{users: map[string]auth.Credential{
			string(phone.Cert.RawSubjectPublicKeyInfo): {Kind: auth.CredentialClientCert, ID: "k3f9x2ab", Label: testUser},
		}, gone: map[string]bool{}}}
	ep.roots.AppendCertsFromPEM(certPEM)
	cfg := &Config{
		Upstream: &Upstream{Address: up.Addr, TLS: UpstreamPlaintext, ConnectTimeout: 3 * time.Second,
			Master: &MasterLogin{User: testMasterUser, Secret: NewSecret(testMasterSecret), Form: MasterDovecotLogin}},
		Mechanisms: []string{auth.Plain, auth.External},
		Verifiers:  &auth.Verifiers{Certs: ep.certs},
		Audit:      NewAuditor(ep.audit, nil),
	}
	for _, m := range mod {
		m(cfg)
	}
	ep.srv = NewServer(cfg)
	for _, mode := range []TLSMode{TLSImplicit, TLSStartTLS} {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			tb.Fatal(err)
		}
		if mode == TLSImplicit {
			ep.implicit = ln.Addr().String()
		} else {
			ep.starttls = ln.Addr().String()
		}
		tc := tlsconf.ServerConfig(store, 0)
		cc.Apply(tc)
		go ep.srv.Serve(ln, Listener{Name: string(mode), Mode: mode, TLSConfig: tc})
	}
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		ep.srv.Shutdown(ctx)
	})
	return ep
}

// clientTLS is a client's TLS config presenting cert (none when nil)
// whatever CAs the server names, as openssl s_client -cert does (Go's
// client, given Certificates, sends only one those CAs issued).
func (ep *externalProxy) clientTLS(cert *proxytest.ClientCert) *tls.Config {
	c := &tls.Config{RootCAs: ep.roots, ServerName: "localhost"}
	if cert != nil {
		c.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &cert.TLS, nil }
	}
	return c
}

// dial connects with implicit TLS, or plaintext then STARTTLS, presenting
// cert, and returns the client after the greeting (and STARTTLS).
func (ep *externalProxy) dial(t testing.TB, starttls bool, cert *proxytest.ClientCert) *textClient {
	t.Helper()
	if !starttls {
		conn, err := tls.Dial("tcp", ep.implicit, ep.clientTLS(cert))
		if err != nil {
			t.Fatal(err)
		}
		c := &textClient{t: t, conn: conn, r: bufio.NewReader(conn)}
		t.Cleanup(func() { conn.Close() })
		c.expect("* OK ")
		return c
	}
	conn, err := net.Dial("tcp", ep.starttls)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	c := &textClient{t: t, conn: conn, r: bufio.NewReader(conn)}
	c.expect("* OK ")
	c.send("s1 STARTTLS")
	c.expect("s1 OK")
	tc := tls.Client(conn, ep.clientTLS(cert))
	if err := tc.Handshake(); err != nil {
		t.Fatal(err)
	}
	c.conn, c.r = tc, bufio.NewReader(tc)
	return c
}

// TestExternalLogsTheCertificatesUserInThroughTheMaster: over implicit TLS
// and after STARTTLS, a registered certificate is offered EXTERNAL and
// logs its own user in through the master login, audited with the
// certificate's credential; AUTHENTICATE EXTERNAL without an initial
// response gets the empty challenge first.
func TestExternalLogsTheCertificatesUserInThroughTheMaster(t *testing.T) {
	ep := startExternalProxy(t, tlsconf.ClientCerts{Mode: tlsconf.ClientCertsRequest})
	for _, tt := range []struct {
		name     string
		starttls bool
		ir       bool
	}{
		{"implicit TLS, SASL-IR", false, true},
		{"STARTTLS, SASL-IR", true, true},
		{"implicit TLS, a continuation", false, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c := ep.dial(t, tt.starttls, &ep.phone)
			c.send("c CAPABILITY")
			if caps := c.expect("* CAPABILITY"); !strings.Contains(caps, " AUTH=EXTERNAL") || !strings.Contains(caps, " AUTH=PLAIN") {
				t.Fatalf("capabilities %q, want AUTH=PLAIN and AUTH=EXTERNAL", caps)
			}
			c.expect("c OK")
			if tt.ir {
				c.send("a AUTHENTICATE EXTERNAL =")
			} else {
				c.send("a AUTHENTICATE EXTERNAL")
				c.expect("+ ")
				c.send("")
			}
			c.expect("a OK")
			c.send("b SELECT INBOX")
			c.expect("b OK")
		})
	}
	var ok int
	for _, ev := range ep.audit.events(t) {
		if ev.Event == EventAuth && ev.Result == ResultSuccess && ev.Mechanism == auth.External && ev.User == testUser &&
			ev.Credential == auth.CredentialClientCert && ev.CredentialID == "k3f9x2ab" {
			ok++
		}
	}
	if ok != 3 {
		t.Errorf("audit: %d EXTERNAL successes naming the certificate, want 3", ok)
	}
}

// TestExternalNotOfferedToAnUnknownCertificateOrNone: a certificate that
// maps to no user, or none, sees no AUTH=EXTERNAL, and AUTHENTICATE
// EXTERNAL is refused as mechanism_not_allowed; PLAIN still works.
func TestExternalNotOfferedToAnUnknownCertificateOrNone(t *testing.T) {
	ep := startExternalProxy(t, tlsconf.ClientCerts{Mode: tlsconf.ClientCertsRequest})
	var self *proxytest.ClientCA
	stranger := self.Issue(t, proxytest.ClientCertOptions{CommonName: "stranger"})
	for _, cert := range []*proxytest.ClientCert{&stranger, nil} {
		c := ep.dial(t, false, cert)
		c.send("c CAPABILITY")
		if caps := c.expect("* CAPABILITY"); strings.Contains(caps, "EXTERNAL") {
			t.Errorf("capabilities %q offer EXTERNAL", caps)
		}
		c.expect("c OK")
		c.send("a AUTHENTICATE EXTERNAL =")
		c.expect("a NO ")
	}
	var refused int
	for _, ev := range ep.audit.events(t) {
		if ev.Event == EventAuth && ev.Reason == ReasonMechanismNotAllowed {
			refused++
		}
	}
	if refused != 2 {
		t.Errorf("audit: %d mechanism_not_allowed, want 2", refused)
	}
}

// TestExternalRevokedBetweenCapabilityAndLogin: the registration revoked
// after CAPABILITY offered EXTERNAL fails the login as cert_revoked,
// counted like a wrong password; EndCredential ends the sessions logged
// in with it.
func TestExternalRevokedBetweenCapabilityAndLogin(t *testing.T) {
	ep := startExternalProxy(t, tlsconf.ClientCerts{Mode: tlsconf.ClientCertsRequest})
	idle := ep.dial(t, false, &ep.phone)
	idle.send("a AUTHENTICATE EXTERNAL =")
	idle.expect("a OK")
	idle.send("b IDLE")
	idle.expect("+ ")

	c := ep.dial(t, false, &ep.phone)
	c.send("c CAPABILITY")
	c.expect("c OK")
	ep.certs.revoke(ep.phone)
	if n := ep.srv.EndCredential("k3f9x2ab"); n != 1 {
		t.Errorf("EndCredential ended %d sessions, want 1", n)
	}
	idle.expectClosed()
	c.send("a AUTHENTICATE EXTERNAL =")
	c.expect("a NO [AUTHENTICATIONFAILED]")
	var revoked, ended int
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) { // the audit writer is asynchronous
		revoked, ended = 0, 0
		for _, ev := range ep.audit.events(t) {
			if ev.Event == EventAuth && ev.Result == ResultFailure && ev.Reason == "cert_revoked" && ev.User == testUser {
				revoked++
			}
			if ev.Event == EventSessionEnd && ev.Reason == endCredentialRevoked {
				ended++
			}
		}
		if revoked >= 1 && ended >= 1 || time.Now().After(deadline) {
			break
		}
	}
	if revoked != 1 || ended != 1 {
		t.Errorf("audit: %d cert_revoked failures for %s, %d sessions ended as credential_revoked; want 1 and 1", revoked, testUser, ended)
	}
}

// TestExternalSpendsAndHonoursTheSameBudgets: an EXTERNAL refusal (a
// certificate revoked between CAPABILITY and AUTHENTICATE) counts in the
// user's budget like a wrong password, and once a wrong password has spent
// the rest, a good certificate for that user is refused as locked too.
func TestExternalSpendsAndHonoursTheSameBudgets(t *testing.T) {
	ep := startExternalProxy(t, tlsconf.ClientCerts{Mode: tlsconf.ClientCertsRequest}, func(c *Config) {
		c.MaxAuthFailures = 10
		c.Policy = policy.NewGuard(nil, policy.Budgets{PerIP: 10, PerNetwork: 50, PerUser: 2, PerDevice: 2, Window: time.Hour, Delay: time.Millisecond}, nil)
	})
	c := ep.dial(t, false, &ep.phone)
	c.send("c CAPABILITY")
	c.expect("c OK")
	ep.certs.revoke(ep.phone)
	c.send("a AUTHENTICATE EXTERNAL =")
	c.expect("a NO [AUTHENTICATIONFAILED]")
	ep.certs.restore(ep.phone)
	c.send("b AUTHENTICATE PLAIN " + plainIR(testUser, "a wrong guess"))
	c.expect("b NO [AUTHENTICATIONFAILED]")
	c = ep.dial(t, false, &ep.phone) // this connection keeps the refusal
	c.send("d AUTHENTICATE EXTERNAL =")
	c.expect("d NO")
	var reasons []string
	for _, ev := range ep.audit.events(t) {
		if ev.Event == EventAuth {
			reasons = append(reasons, ev.Result+"/"+ev.Reason)
		}
	}
	want := []string{ResultFailure + "/cert_revoked", ResultFailure + "/" + ReasonBadCredentials, ResultLocked + "/" + ReasonUserLocked}
	if !slices.Equal(reasons, want) {
		t.Errorf("auth events %q, want %q", reasons, want)
	}
}

// TestRequiredClientCertificateFailuresAreAudited: where a certificate is
// required, a handshake without one, with one the client CAs did not
// issue, or with an expired one fails, and the tls event says which.
func TestRequiredClientCertificateFailuresAreAudited(t *testing.T) {
	ca := proxytest.NewClientCA(t, "Devices CA")
	cas := x509.NewCertPool()
	cas.AddCert(ca.Cert)
	ep := startExternalProxy(t, tlsconf.ClientCerts{Mode: tlsconf.ClientCertsRequire, CAs: cas})
	foreign := proxytest.NewClientCA(t, "Other CA").Issue(t, proxytest.ClientCertOptions{CommonName: "alice"})
	expired := ca.Issue(t, proxytest.ClientCertOptions{CommonName: "alice", NotBefore: time.Now().Add(-48 * time.Hour), NotAfter: time.Now().Add(-time.Hour)})
	for _, tt := range []struct {
		name   string
		cert   *proxytest.ClientCert
		reason string
	}{
		{"none", nil, ReasonClientCertRequired},
		{"another CA's", &foreign, ReasonClientCertUntrusted},
		{"expired", &expired, ReasonClientCertExpired},
	} {
		t.Run(tt.name, func(t *testing.T) {
			defer func() {
				if t.Failed() {
					t.Logf("audit:\n%s", ep.audit.String())
				}
			}()
			conn, err := tls.Dial("tcp", ep.implicit, ep.clientTLS(tt.cert))
			if err == nil {
				// TLS 1.3: the client learns of the refusal on its first read.
				conn.SetReadDeadline(time.Now().Add(5 * time.Second))
				_, err = conn.Read(make([]byte, 1))
				conn.Close()
			}
			if err == nil {
				t.Fatal("the handshake succeeded")
			}
			waitFor(t, func() bool {
				for _, ev := range ep.audit.events(t) {
					if ev.Event == EventTLS && ev.Result == ResultFailed && ev.Reason == tt.reason {
						return true
					}
				}
				return false
			})
		})
	}
	issued := ca.Issue(t, proxytest.ClientCertOptions{CommonName: "alice"})
	c := ep.dial(t, false, &issued)
	c.send("a CAPABILITY")
	if caps := c.expect("* CAPABILITY"); strings.Contains(caps, "EXTERNAL") {
		t.Errorf("a CA's certificate that maps to no user is offered EXTERNAL: %q", caps)
	}
}
