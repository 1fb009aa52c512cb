package tlsconf

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"net"
	"os"
	"testing"
	"time"
)

func TestSelfSignedCoversNamesAndIPs(t *testing.T) {
	before := time.Now()
	cert, certPEM, err := SelfSigned(24*time.Hour, "localhost", "127.0.0.1", "::1", "imap.example.test")
	if err != nil {
		t.Fatal(err)
	}
	leaf := cert.Leaf
	if leaf == nil {
		t.Fatal("Leaf not set")
	}
	key, ok := cert.PrivateKey.(*ecdsa.PrivateKey)
	if !ok || key.Curve != elliptic.P256() {
		t.Errorf("key is %T, want ECDSA P-256", cert.PrivateKey)
	}
	if got, want := leaf.DNSNames, []string{"localhost", "imap.example.test"}; !equalStrings(got, want) {
		t.Errorf("DNSNames = %v, want %v", got, want)
	}
	if len(leaf.IPAddresses) != 2 || !leaf.IPAddresses[0].Equal(net.ParseIP("127.0.0.1")) || !leaf.IPAddresses[1].Equal(net.ParseIP("::1")) {
		t.Errorf("IPAddresses = %v", leaf.IPAddresses)
	}
	if d := before.Add(-time.Hour).Sub(leaf.NotBefore); d < -time.Minute || d > time.Minute {
		t.Errorf("NotBefore = %v, want about an hour ago", leaf.NotBefore)
	}
	if d := before.Add(24 * time.Hour).Sub(leaf.NotAfter); d < -time.Minute || d > time.Minute {
		t.Errorf("NotAfter = %v, want about a day from now", leaf.NotAfter)
	}
	b, _ := pem.Decode(certPEM)
	if b == nil || b.Type != "CERTIFICATE" || string(b.Bytes) != string(cert.Certificate[0]) {
		t.Error("returned PEM is not the certificate")
	}
	// The PEM works as a client's CA file for every name.
	pool := poolOf(t, certPEM)
	for _, name := range []string{"localhost", "127.0.0.1", "imap.example.test"} {
		if _, err := leaf.Verify(x509.VerifyOptions{Roots: pool, DNSName: name}); err != nil {
			t.Errorf("verify for %s: %v", name, err)
		}
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: pool, DNSName: "other.example.test"}); err == nil {
		t.Error("certificate verified for a name it does not carry")
	}
}

func TestSelfSignedRejectsBadArguments(t *testing.T) {
	if _, _, err := SelfSigned(0, "x"); err == nil {
		t.Error("zero validity accepted")
	}
	if _, _, err := SelfSigned(time.Hour); err == nil {
		t.Error("no names accepted")
	}
}

func TestWritePEMFilesRoundTrip(t *testing.T) {
	cert, _ := mustSelfSigned(t, "imap.example.test")
	dir := t.TempDir()
	certFile, keyFile, err := WritePEMFiles(dir, cert)
	if err != nil {
		t.Fatal(err)
	}
	for file, perm := range map[string]os.FileMode{certFile: 0o644, keyFile: 0o600} {
		fi, err := os.Stat(file)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != perm {
			t.Errorf("%s mode %v, want %v", file, fi.Mode().Perm(), perm)
		}
	}
	loaded, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	if !loaded.Leaf.Equal(cert.Leaf) {
		t.Error("loaded certificate differs")
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 2 {
		t.Errorf("dir has %d entries, want only cert.pem and key.pem", len(entries))
	}
}

func equalStrings(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
