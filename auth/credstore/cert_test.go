package credstore

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestParseCertificatePEM(t *testing.T) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	leaf, leafPEM := newCert(t, "device", key)
	_, caPEM := newCert(t, "issuer", nil)
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
	ecKeyPEM := pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: []byte("not parsed")})

	// The files an admin may be handed, written out as they would be.
	dir := t.TempDir()
	for _, tc := range []struct {
		name    string
		file    []byte
		wantErr string // "" for the leaf
	}{
		{"certificate.pem", leafPEM, ""},
		{"chain.pem", append(bytes.Clone(leafPEM), caPEM...), ""},
		{"with text around.pem", append(append([]byte("Subject: device\n"), leafPEM...), "trailer\n"...), ""},
		{"certificate and key.pem", append(bytes.Clone(leafPEM), keyPEM...), "private key"},
		{"key first.pem", append(bytes.Clone(ecKeyPEM), leafPEM...), "private key"},
		{"key only.pem", keyPEM, "private key"},
		{"empty.pem", nil, "no CERTIFICATE"},
		{"der.crt", leaf.Raw, "no CERTIFICATE"},
		{"broken.pem", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte("garbage")}), "certificate 1:"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(dir, tc.name)
			if err := os.WriteFile(path, tc.file, 0o600); err != nil {
				t.Fatal(err)
			}
			data, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			cert, err := ParseCertificatePEM(data)
			if tc.wantErr != "" {
				if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err %v, want ErrInvalid saying %q", err, tc.wantErr)
				}
				return
			}
			if err != nil || !cert.Equal(leaf) {
				t.Fatalf("got %v, %v; want the device's certificate", cert, err)
			}
		})
	}
}

func TestClientCertificateOpensItsUsersMailboxByItsKey(t *testing.T) {
	s := openTestStore(t, nil)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := newCert(t, "alice's laptop", key)
	c, err := s.AddClientCert(context.Background(), NewClientCert{User: "alice", Label: "laptop", Certificate: cert})
	if err != nil {
		t.Fatal(err)
	}
	if c.Fingerprint != SPKIFingerprint(cert) || c.Subject != "CN=alice's laptop" || !c.NotAfter.Equal(cert.NotAfter) {
		t.Fatalf("registration: %+v", c)
	}
	renewed, _ := newCert(t, "alice's laptop, renewed", key)
	stranger, _ := newCert(t, "alice's laptop", nil) // same name, another key
	for _, tc := range []struct {
		name   string
		cert   *x509.Certificate
		reason string
	}{
		{"the registered certificate", cert, ""},
		{"renewed with the same key", renewed, ""},
		{"the same subject with another key", stranger, ReasonCertUnknown},
	} {
		got, err := s.VerifyClientCert(context.Background(), SPKIFingerprint(tc.cert), testAddr)
		if Reason(err) != tc.reason {
			t.Errorf("%s: reason %q (err %v), want %q", tc.name, Reason(err), err, tc.reason)
		}
		if tc.reason == "" && (got.User != "alice" || got.ID != c.ID) {
			t.Errorf("%s: %+v, want alice's laptop", tc.name, got)
		}
	}
	if l, _ := s.ListClientCerts(context.Background(), "alice"); len(l) != 1 || l[0].LastAddr != testAddr {
		t.Fatalf("list: %+v, want the laptop, used", l)
	}
	if l, _ := s.ListAppPasswords(context.Background(), "alice"); len(l) != 0 {
		t.Fatalf("a certificate is listed as an app password: %+v", l)
	}

	// Registering the key again is refused, under any label or user.
	if _, err := s.AddClientCert(context.Background(), NewClientCert{User: "bob", Label: "laptop", Certificate: renewed}); !errors.Is(err, ErrCertExists) {
		t.Fatalf("the same key for bob: %v, want ErrCertExists", err)
	}
	// A certificate and an app password may share a label.
	s.add(t, NewAppPassword{User: "alice", Label: "laptop"})
	if _, err := s.AddClientCert(context.Background(), NewClientCert{User: "alice", Label: "laptop", Certificate: stranger}); !errors.Is(err, ErrLabelTaken) {
		t.Fatalf("a second certificate labelled laptop: %v, want ErrLabelTaken", err)
	}
}

func TestRevokedAndExpiredClientCertificatesFailWithTheirReasons(t *testing.T) {
	var told []Revoked
	s := openTestStore(t, func(o *Options) { o.OnRevoke = func(r Revoked) { told = append(told, r) } })
	stolen, _ := newCert(t, "stolen", nil)
	temp, _ := newCert(t, "temporary", nil)
	sc, err := s.AddClientCert(context.Background(), NewClientCert{User: "alice", Label: "stolen laptop", Certificate: stolen})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.AddClientCert(context.Background(), NewClientCert{User: "alice", Label: "visitor", Certificate: temp, Expires: s.clock.Now().Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.RevokeLabel(context.Background(), KindClientCert, "alice", "stolen laptop"); err != nil {
		t.Fatal(err)
	}
	if len(told) != 1 || told[0].Kind != KindClientCert || told[0].ID != sc.ID {
		t.Fatalf("told %+v, want the stolen laptop's revocation", told)
	}
	s.clock.Advance(time.Hour)
	for _, tc := range []struct {
		name   string
		cert   *x509.Certificate
		err    error
		reason string
	}{
		{"revoked", stolen, ErrRevoked, ReasonCertRevoked},
		{"expired", temp, ErrExpired, ReasonCertExpired},
	} {
		_, err := s.VerifyClientCert(context.Background(), SPKIFingerprint(tc.cert), testAddr)
		if !errors.Is(err, tc.err) || Reason(err) != tc.reason {
			t.Errorf("%s: %v, reason %q; want %v, %q", tc.name, err, Reason(err), tc.err, tc.reason)
		}
	}
	// A key revoked by mistake can be registered again.
	again, err := s.AddClientCert(context.Background(), NewClientCert{User: "alice", Label: "laptop, found again", Certificate: stolen})
	if err != nil {
		t.Fatalf("registering a revoked key again: %v", err)
	}
	if got, err := s.VerifyClientCert(context.Background(), SPKIFingerprint(stolen), testAddr); err != nil || got.ID != again.ID {
		t.Fatalf("the key registered again: %+v, %v", got, err)
	}
	if _, err := s.Revoke(context.Background(), sc.ID); !errors.Is(err, ErrNotFound) {
		t.Fatalf("the replaced tombstone: %v, want ErrNotFound", err)
	}
}

// TestLookupClientCertRecordsNoUse: offering EXTERNAL looks the key up
// without making it "last used"; the login (VerifyClientCert) does. Both
// refuse a revoked key alike.
func TestLookupClientCertRecordsNoUse(t *testing.T) {
	s := openTestStore(t, nil)
	cert, _ := newCert(t, "alice's phone", nil)
	c, err := s.AddClientCert(context.Background(), NewClientCert{User: "alice", Label: "phone", Certificate: cert})
	if err != nil {
		t.Fatal(err)
	}
	got, err := s.LookupClientCert(context.Background(), SPKIFingerprint(cert))
	if err != nil || got.ID != c.ID || got.User != "alice" {
		t.Fatalf("LookupClientCert = %+v, %v", got, err)
	}
	if l, _ := s.ListClientCerts(context.Background(), "alice"); len(l) != 1 || !l[0].LastUsed.IsZero() {
		t.Fatalf("after a lookup: %+v, want never used", l)
	}
	if _, err := s.VerifyClientCert(context.Background(), SPKIFingerprint(cert), testAddr); err != nil {
		t.Fatal(err)
	}
	if l, _ := s.ListClientCerts(context.Background(), "alice"); len(l) != 1 || l[0].LastUsed.IsZero() || l[0].LastAddr != testAddr {
		t.Fatalf("after a login: %+v, want used from %v", l, testAddr)
	}
	if _, err := s.Revoke(context.Background(), c.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := s.LookupClientCert(context.Background(), SPKIFingerprint(cert)); Reason(err) != ReasonCertRevoked {
		t.Fatalf("a revoked key: %v, want %s", err, ReasonCertRevoked)
	}
}
