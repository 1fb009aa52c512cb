package main

// Client certificates to users, for EXTERNAL (README "Client
// certificates"): the listeners' TLS settings and the auth.CertMapper.

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"time"

	"github.com/imapgate/imapgate/auth"
	"github.com/imapgate/imapgate/auth/credstore"
	"github.com/imapgate/imapgate/tlsconf"
)

// certKeyPrefix starts the credential ID of a certificate mapped by a
// subject field, which has no registration: its key's fingerprint, so the
// audit and `imapgate kick --credential` can name it. Store IDs never
// contain '-'.
const certKeyPrefix = "spki-"

// certMapper is the auth.CertMapper of a config: a key registered in the
// credential store maps to its user first; else, a certificate that one
// of the listener's client_ca_file CAs issued for client authentication
// maps to the user its client_cert_user field names. A registration
// revoked or expired refuses the certificate: it never falls back to the
// field, or revoking would not cut off a CA-issued device.
type certMapper struct {
	// store holds the registered keys (auth.app_passwords, opened by
	// serve: gateway.install sets it). Nil: none are registered.
	store credstore.Store
	// listeners are the field mappings, by listener name; a listener
	// not in it maps by registered keys only.
	listeners map[string]certField
	now       func() time.Time // nil: time.Now
}

// certField is one listener's mapping by a subject field.
type certField struct {
	cas   *x509.CertPool // client_ca_file
	field string         // client_cert_user
}

// listenerClientCerts reads the client certificate settings of the
// listeners: what each asks for in its handshake (parallel to cfg.Listen),
// and the mapper, nil when none asks.
func listenerClientCerts(cfg *Config) ([]tlsconf.ClientCerts, *certMapper, error) {
	ccs := make([]tlsconf.ClientCerts, len(cfg.Listen))
	var m *certMapper
	for i, l := range cfg.Listen {
		if !l.asksClientCerts() {
			continue
		}
		ccs[i].Mode = tlsconf.ClientCertMode(l.ClientCerts)
		if m == nil {
			m = &certMapper{listeners: map[string]certField{}}
		}
		if l.ClientCAFile == "" {
			continue
		}
		pool, err := tlsconf.LoadClientCAs(l.ClientCAFile)
		if err != nil {
			return nil, nil, fmt.Errorf("listen[%d].client_ca_file: %w", i, err)
		}
		ccs[i].CAs = pool
		if l.ClientCertUser != "" {
			m.listeners[l.Address] = certField{cas: pool, field: l.ClientCertUser}
		}
	}
	return ccs, m, nil
}

func (m *certMapper) clock() time.Time {
	if m.now == nil {
		return time.Now()
	}
	return m.now()
}

// refuse is a certificate that maps to no user.
func refuse(reason, why string) error {
	return &auth.Refusal{Reason: reason, Err: errors.New(why)}
}

// MapCert implements auth.CertMapper.
func (m *certMapper) MapCert(ctx context.Context, cs auth.ConnState) (string, auth.Credential, error) {
	if cs.TLS == nil || len(cs.TLS.PeerCertificates) == 0 {
		return "", auth.Credential{}, refuse(credstore.ReasonCertUnknown, "no client certificate")
	}
	leaf := cs.TLS.PeerCertificates[0]
	now := m.clock()
	if now.Before(leaf.NotBefore) || now.After(leaf.NotAfter) {
		// A registered key's certificate is checked by nobody else.
		return "", auth.Credential{}, refuse(credstore.ReasonCertExpired, "the client certificate is out of date")
	}
	fp := credstore.SPKIFingerprint(leaf)
	if m.store != nil {
		c, err := m.store.LookupClientCert(ctx, fp)
		var ce *credstore.CredentialError
		switch {
		case err == nil:
			return c.User, auth.Credential{Kind: auth.CredentialClientCert, ID: c.ID, Label: c.Label}, nil
		case errors.Is(err, credstore.ErrUnknown):
			// Not registered: the subject field may name the user.
		case errors.As(err, &ce):
			cred := auth.Credential{Kind: auth.CredentialClientCert, ID: ce.ID, Label: ce.Label}
			return "", cred, &auth.Refusal{Reason: ce.Reason(), User: ce.User, Credential: cred, Err: err}
		default:
			return "", auth.Credential{}, err
		}
	}
	f, ok := m.listeners[cs.Listener]
	if !ok {
		return "", auth.Credential{}, refuse(credstore.ReasonCertUnknown, "the key is not registered")
	}
	if !issuedBy(cs.TLS, f.cas, now) {
		return "", auth.Credential{}, refuse(credstore.ReasonCertUnknown, "the key is not registered and client_ca_file did not issue the certificate")
	}
	user := f.user(leaf)
	if user == "" || auth.CheckUsername(user) != nil {
		return "", auth.Credential{}, refuse(credstore.ReasonCertUnknown, "the certificate names no usable user in "+f.field)
	}
	return user, auth.Credential{Kind: auth.CredentialClientCert, ID: certKeyPrefix + fp.String()[:16]}, nil
}

// issuedBy reports whether a CA of cas issued the client's certificate for
// client authentication, valid now: the handshake verified it already
// (client_certs = "require"), or, asked for only, it is verified here.
func issuedBy(st *tls.ConnectionState, cas *x509.CertPool, now time.Time) bool {
	if len(st.VerifiedChains) > 0 {
		return true
	}
	inter := x509.NewCertPool()
	for _, c := range st.PeerCertificates[1:] {
		inter.AddCert(c)
	}
	_, err := st.PeerCertificates[0].Verify(x509.VerifyOptions{
		Roots: cas, Intermediates: inter, CurrentTime: now,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	})
	return err == nil
}

// user returns the user cert names in the field; "" when it names none,
// or more than one.
func (f certField) user(cert *x509.Certificate) string {
	switch f.field {
	case certUserEmailSAN:
		if len(cert.EmailAddresses) == 1 {
			return cert.EmailAddresses[0]
		}
	case certUserSubjectCN:
		return cert.Subject.CommonName
	}
	return ""
}

// RecordUse implements auth.CertMapper: a registered certificate's last
// use goes to the store; one mapped by its field has no registration.
func (m *certMapper) RecordUse(id string, addr netip.Addr) {
	if m.store != nil && !strings.HasPrefix(id, certKeyPrefix) {
		m.store.RecordUse(id, addr)
	}
}
