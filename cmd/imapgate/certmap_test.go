package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/imapgate/imapgate/auth"
	"github.com/imapgate/imapgate/auth/credstore"
	"github.com/imapgate/imapgate/proxy/proxytest"
)

// TestCertMapperRegisteredKeyFirstThenTheCAsField: a registered key maps
// to its user whoever issued it; a revoked or expired registration
// refuses the certificate even when its email SAN would map it; an
// unregistered certificate maps by the listener's field only when the
// listener's CA issued it for client authentication, names exactly one
// usable user, and is in date.
func TestCertMapperRegisteredKeyFirstThenTheCAsField(t *testing.T) {
	ca := proxytest.NewClientCA(t, "Devices CA")
	other := proxytest.NewClientCA(t, "Another CA")
	cas := x509.NewCertPool()
	cas.AddCert(ca.Cert)
	var later time.Duration // the clock runs later once the registrations are in
	clock := func() time.Time { return time.Now().Add(later) }
	store, err := credstore.OpenBolt(filepath.Join(t.TempDir(), "credentials.db"), credstore.Options{Now: clock})
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	ctx := context.Background()
	register := func(c proxytest.ClientCert, user, label string) credstore.ClientCert {
		r, err := store.AddClientCert(ctx, credstore.NewClientCert{User: user, Label: label, Certificate: c.Cert})
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	var self *proxytest.ClientCA // nil: self-signed
	phone := self.Issue(t, proxytest.ClientCertOptions{CommonName: "alice's phone"})
	phoneReg := register(phone, "alice", "phone")
	stolen := ca.Issue(t, proxytest.ClientCertOptions{CommonName: "bob", Email: "bob@example.com"})
	stolenReg := register(stolen, "bob", "stolen laptop")
	if _, err := store.Revoke(ctx, stolenReg.ID); err != nil {
		t.Fatal(err)
	}
	visitor := ca.Issue(t, proxytest.ClientCertOptions{CommonName: "carol", Email: "carol@example.com"})
	if _, err := store.AddClientCert(ctx, credstore.NewClientCert{User: "carol", Label: "visitor", Certificate: visitor.Cert, Expires: time.Now().Add(time.Second)}); err != nil {
		t.Fatal(err)
	}

	later = 2 * time.Second // the visitor's registration is over
	m := &certMapper{store: store, listeners: map[string]certField{
		"email": {cas: cas, field: certUserEmailSAN},
		"cn":    {cas: cas, field: certUserSubjectCN},
	}, now: clock}

	tests := []struct {
		name     string
		listener string
		cert     proxytest.ClientCert
		verified bool // the handshake verified the chain (require)
		user     string
		id       string
		reason   string
	}{
		{name: "registered, self-signed", listener: "email", cert: phone, user: "alice", id: phoneReg.ID},
		{name: "registered, on a listener with no field", listener: "plain", cert: phone, user: "alice", id: phoneReg.ID},
		{name: "registration revoked, its SAN not used", listener: "email", cert: stolen, reason: credstore.ReasonCertRevoked, id: stolenReg.ID},
		{name: "registration expired", listener: "email", cert: visitor, reason: credstore.ReasonCertExpired},
		{name: "the CA's, by email SAN", listener: "email", cert: ca.Issue(t, proxytest.ClientCertOptions{CommonName: "dave", Email: "dave@example.com"}), user: "dave@example.com"},
		{name: "the CA's, verified by the handshake", listener: "email", verified: true, cert: ca.Issue(t, proxytest.ClientCertOptions{Email: "erin@example.com"}), user: "erin@example.com"},
		{name: "the CA's, by subject CN", listener: "cn", cert: ca.Issue(t, proxytest.ClientCertOptions{CommonName: "frank"}), user: "frank"},
		{name: "the CA's, no email SAN", listener: "email", cert: ca.Issue(t, proxytest.ClientCertOptions{CommonName: "gina"}), reason: credstore.ReasonCertUnknown},
		{name: "the CA's, a SAN with a control character", listener: "email", cert: ca.Issue(t, proxytest.ClientCertOptions{Email: "h\x7f@example.com"}), reason: credstore.ReasonCertUnknown},
		{name: "another CA's, same SAN", listener: "email", cert: other.Issue(t, proxytest.ClientCertOptions{Email: "dave@example.com"}), reason: credstore.ReasonCertUnknown},
		{name: "self-signed, unregistered", listener: "email", cert: self.Issue(t, proxytest.ClientCertOptions{CommonName: "x", Email: "dave@example.com"}), reason: credstore.ReasonCertUnknown},
		{name: "the CA's, on a listener with no field", listener: "plain", cert: ca.Issue(t, proxytest.ClientCertOptions{Email: "dave@example.com"}), reason: credstore.ReasonCertUnknown},
		{name: "the CA's, expired", listener: "email", cert: ca.Issue(t, proxytest.ClientCertOptions{Email: "dave@example.com", NotAfter: time.Now()}), reason: credstore.ReasonCertExpired},
		{name: "registered, but its certificate expired", listener: "email", cert: self.Issue(t, proxytest.ClientCertOptions{CommonName: "renew me", Key: phone.Key, NotAfter: time.Now()}), reason: credstore.ReasonCertExpired},
		{name: "registered key, renewed certificate", listener: "email", cert: self.Issue(t, proxytest.ClientCertOptions{CommonName: "renewed", Key: phone.Key}), user: "alice", id: phoneReg.ID},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st := &tls.ConnectionState{PeerCertificates: []*x509.Certificate{tt.cert.Cert}}
			if tt.verified {
				st.VerifiedChains = [][]*x509.Certificate{{tt.cert.Cert, ca.Cert}}
			}
			user, cred, err := m.MapCert(ctx, auth.ConnState{TLS: st, Listener: tt.listener})
			if tt.reason != "" {
				var r *auth.Refusal
				if !errors.As(err, &r) || r.Reason != tt.reason {
					t.Fatalf("MapCert = %q, %v; want a %s refusal", user, err, tt.reason)
				}
				if tt.id != "" && r.Credential.ID != tt.id {
					t.Errorf("the refusal names %+v, want registration %s", r.Credential, tt.id)
				}
				return
			}
			if err != nil || user != tt.user || cred.Kind != auth.CredentialClientCert {
				t.Fatalf("MapCert = %q, %+v, %v; want %q", user, cred, err, tt.user)
			}
			switch {
			case tt.id != "" && cred.ID != tt.id:
				t.Errorf("credential %+v, want registration %s", cred, tt.id)
			case tt.id == "" && (!strings.HasPrefix(cred.ID, certKeyPrefix) || len(cred.ID) != len(certKeyPrefix)+16):
				t.Errorf("credential ID %q, want %s and 16 hex digits of the key", cred.ID, certKeyPrefix)
			}
		})
	}

	// A login records the registered key's use; one by a field has none.
	m.RecordUse(phoneReg.ID, netip.MustParseAddr("192.0.2.9"))
	m.RecordUse(certKeyPrefix+"0123456789abcdef", netip.MustParseAddr("192.0.2.9"))
	if l, _ := store.ListClientCerts(ctx, "alice"); len(l) != 1 || l[0].LastAddr != netip.MustParseAddr("192.0.2.9") {
		t.Errorf("alice's phone after a login: %+v", l)
	}

	store.Close()
	st := &tls.ConnectionState{PeerCertificates: []*x509.Certificate{phone.Cert}}
	var r *auth.Refusal
	if _, _, err := m.MapCert(ctx, auth.ConnState{TLS: st, Listener: "email"}); err == nil || errors.As(err, &r) {
		t.Errorf("a closed store: %v, want the store's error, not a refusal", err)
	}
}
