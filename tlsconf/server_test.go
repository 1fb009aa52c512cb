package tlsconf

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestParseVersion(t *testing.T) {
	tests := []struct {
		in      string
		want    uint16
		wantErr bool
	}{
		{"", tls.VersionTLS12, false},
		{"1.0", tls.VersionTLS10, false},
		{"1.1", tls.VersionTLS11, false},
		{"1.2", tls.VersionTLS12, false},
		{"1.3", tls.VersionTLS13, false},
		{" 1.3 ", tls.VersionTLS13, false},
		{"1.4", 0, true},
		{"TLS1.2", 0, true},
		{"1", 0, true},
		{"ssl3", 0, true},
	}
	for _, tt := range tests {
		got, err := ParseVersion(tt.in)
		if tt.wantErr {
			if err == nil {
				t.Errorf("ParseVersion(%q) = %#x, want an error", tt.in, got)
			} else if !strings.Contains(err.Error(), "1.0, 1.1, 1.2, 1.3") || !strings.Contains(err.Error(), tt.in) {
				t.Errorf("ParseVersion(%q) error %q should name the input and list the allowed values", tt.in, err)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("ParseVersion(%q) = %#x, %v; want %#x", tt.in, got, err, tt.want)
		}
	}
}

func TestClientTrustingSelfSignedPEMCompletesHandshakeWithIMAPALPN(t *testing.T) {
	cert, certPEM := mustSelfSigned(t, "imap.example.test", "127.0.0.1")
	files := writePair(t, cert)

	if fi, err := os.Stat(files.KeyFile); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file mode: %v, %v; want 0600", fi.Mode(), err)
	}
	store, err := LoadCertStore(files)
	if err != nil {
		t.Fatal(err)
	}
	cfg := ServerConfig(store, tls.VersionTLS12)
	if cfg.SessionTicketsDisabled {
		t.Error("session tickets must stay enabled")
	}

	for _, v := range []uint16{tls.VersionTLS12, tls.VersionTLS13} {
		st, err := handshake(t, cfg, &tls.Config{
			ServerName: "imap.example.test",
			RootCAs:    poolOf(t, certPEM),
			NextProtos: []string{"imap"},
			MaxVersion: v,
		})
		if err != nil {
			t.Fatalf("TLS %#x handshake: %v", v, err)
		}
		if st.NegotiatedProtocol != "imap" {
			t.Errorf("TLS %#x: ALPN = %q, want imap", v, st.NegotiatedProtocol)
		}
		if got := st.PeerCertificates[0].SerialNumber; got.Cmp(cert.Leaf.SerialNumber) != 0 {
			t.Errorf("TLS %#x: served serial %v, want %v", v, got, cert.Leaf.SerialNumber)
		}
	}
}

func TestServerConfigRefusesClientsBelowMinVersion(t *testing.T) {
	cert, certPEM := mustSelfSigned(t, "imap.example.test")
	store, _ := LoadCertStore()
	store.Add(cert)

	if got := ServerConfig(store, 0).MinVersion; got != tls.VersionTLS12 {
		t.Errorf("ServerConfig(store, 0).MinVersion = %#x, want TLS 1.2", got)
	}
	_, err := handshake(t, ServerConfig(store, tls.VersionTLS13), &tls.Config{
		ServerName: "imap.example.test",
		RootCAs:    poolOf(t, certPEM),
		MaxVersion: tls.VersionTLS12,
	})
	if err == nil {
		t.Fatal("a TLS 1.2 client connected to a TLS 1.3-only listener")
	}
}

func TestSNIPicksTheCertificateForTheRequestedName(t *testing.T) {
	first, firstPEM := mustSelfSigned(t, "first.example.test")
	wild, wildPEM := mustSelfSigned(t, "*.example.com")
	exact, exactPEM := mustSelfSigned(t, "mail.example.com", "imap.other.test")

	store, err := LoadCertStore(writePair(t, first), writePair(t, wild))
	if err != nil {
		t.Fatal(err)
	}
	store.Add(exact)
	cfg := ServerConfig(store, 0)
	pool := poolOf(t, firstPEM, wildPEM, exactPEM)

	tests := []struct {
		sni  string
		want tls.Certificate
	}{
		{"mail.example.com", exact},         // exact beats wildcard
		{"MAIL.Example.COM", exact},         // case does not matter
		{"imap.other.test", exact},          // second SAN
		{"webmail.example.com", wild},       // wildcard, one label
		{"a.b.example.com", first},          // wildcard covers one label only: fallback
		{"first.example.test", first},       //
		{"unknown.example.net", first},      // unknown: first pair
		{"", first},                         // no SNI: first pair
		{"webmail.example.com.", wild},      // trailing dot (not sent by Go clients; via GetCertificate only)
		{"imap.example.com", wild},          //
		{"example.com", first},              // the wildcard does not cover the apex
		{"first.example.test.other", first}, //
	}
	for _, tt := range tests {
		t.Run(tt.sni, func(t *testing.T) {
			got, err := store.GetCertificate(&tls.ClientHelloInfo{ServerName: tt.sni})
			if err != nil {
				t.Fatal(err)
			}
			if got.Leaf.SerialNumber.Cmp(tt.want.Leaf.SerialNumber) != 0 {
				t.Errorf("GetCertificate(%q) = %v, want %v", tt.sni, got.Leaf.DNSNames, tt.want.Leaf.DNSNames)
			}
			if tt.sni == "" || strings.HasSuffix(tt.sni, ".") || tt.want.Leaf == first.Leaf {
				return // a real client would not verify these names against what it gets
			}
			st, err := handshake(t, cfg, &tls.Config{ServerName: tt.sni, RootCAs: pool})
			if err != nil {
				t.Fatalf("handshake for %q: %v", tt.sni, err)
			}
			if st.PeerCertificates[0].SerialNumber.Cmp(tt.want.Leaf.SerialNumber) != 0 {
				t.Errorf("handshake for %q got %v", tt.sni, st.PeerCertificates[0].DNSNames)
			}
		})
	}
}

func TestModernClientsGetECDSAAndOldClientsGetRSA(t *testing.T) {
	ec, ecPEM := mustSelfSigned(t, "mail.example.com")
	rs, rsPEM := rsaSelfSigned(t, "mail.example.com")
	pool := poolOf(t, ecPEM, rsPEM)

	modern := &tls.Config{ServerName: "mail.example.com", RootCAs: pool}
	// An old client: TLS 1.2 with only RSA-authenticated cipher suites.
	old := &tls.Config{
		ServerName:   "mail.example.com",
		RootCAs:      pool,
		MaxVersion:   tls.VersionTLS12,
		CipherSuites: []uint16{tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256, tls.TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA},
	}
	tests := []struct {
		name   string
		order  []tls.Certificate
		client *tls.Config
		want   x509.PublicKeyAlgorithm
	}{
		{"modern, ECDSA configured first", []tls.Certificate{ec, rs}, modern, x509.ECDSA},
		{"modern, RSA configured first", []tls.Certificate{rs, ec}, modern, x509.ECDSA},
		{"old, ECDSA configured first", []tls.Certificate{ec, rs}, old, x509.RSA},
		{"old, RSA configured first", []tls.Certificate{rs, ec}, old, x509.RSA},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var files []CertFiles
			for _, c := range tt.order {
				files = append(files, writePair(t, c))
			}
			store, err := LoadCertStore(files...)
			if err != nil {
				t.Fatal(err)
			}
			st, err := handshake(t, ServerConfig(store, 0), tt.client)
			if err != nil {
				t.Fatal(err)
			}
			if got := st.PeerCertificates[0].PublicKeyAlgorithm; got != tt.want {
				t.Errorf("client got a %v certificate, want %v", got, tt.want)
			}
		})
	}
}

func TestLoadCertStoreErrorsNameTheFileAndTheProblem(t *testing.T) {
	cert, _ := mustSelfSigned(t, "a.example.test")
	other, _ := mustSelfSigned(t, "b.example.test")
	good := writePair(t, cert)
	otherFiles := writePair(t, other)
	dir := t.TempDir()
	garbage := filepath.Join(dir, "garbage.pem")
	writeFile(t, garbage, []byte("not a PEM file\n"))

	tests := []struct {
		name  string
		files CertFiles
		want  []string
	}{
		{"missing certificate", CertFiles{filepath.Join(dir, "nope.pem"), good.KeyFile}, []string{"nope.pem", "no such file"}},
		{"missing key", CertFiles{good.CertFile, filepath.Join(dir, "nokey.pem")}, []string{"nokey.pem", "no such file"}},
		{"key given as certificate", CertFiles{good.KeyFile, good.KeyFile}, []string{good.KeyFile, "no PEM CERTIFICATE"}},
		{"certificate given as key", CertFiles{good.CertFile, good.CertFile}, []string{good.CertFile, "no PEM PRIVATE KEY"}},
		{"garbage certificate", CertFiles{garbage, good.KeyFile}, []string{garbage, "no PEM CERTIFICATE"}},
		{"key of another certificate", CertFiles{good.CertFile, otherFiles.KeyFile}, []string{good.CertFile, otherFiles.KeyFile, "does not match"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			store, err := LoadCertStore(good, tt.files)
			if err == nil {
				t.Fatalf("LoadCertStore succeeded: %v", store.Leaves())
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
		})
	}
}

func TestEmptyStoreFailsHandshakeWithClearError(t *testing.T) {
	store, err := LoadCertStore()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := store.GetCertificate(&tls.ClientHelloInfo{ServerName: "x"}); err == nil || !strings.Contains(err.Error(), "no server certificate") {
		t.Errorf("GetCertificate on empty store: %v", err)
	}
	if n := len(store.Leaves()); n != 0 {
		t.Errorf("empty store has %d leaves", n)
	}
}

func TestReloadServesNewCertificateAndKeepsOldOneWhenFilesBreak(t *testing.T) {
	v1, pem1 := mustSelfSigned(t, "imap.example.test")
	v2, pem2 := mustSelfSigned(t, "imap.example.test")
	demo, _ := mustSelfSigned(t, "demo.example.test")
	files := writePair(t, v1)
	store, err := LoadCertStore(files)
	if err != nil {
		t.Fatal(err)
	}
	store.Add(demo)
	cfg := ServerConfig(store, 0)
	client := &tls.Config{ServerName: "imap.example.test", RootCAs: poolOf(t, pem1, pem2)}

	served := func() *x509.Certificate {
		t.Helper()
		st, err := handshake(t, cfg, client)
		if err != nil {
			t.Fatal(err)
		}
		return st.PeerCertificates[0]
	}
	if got := served(); !got.Equal(v1.Leaf) {
		t.Fatal("before reload: not serving v1")
	}

	replacePair(t, files, v2)
	if got := served(); !got.Equal(v1.Leaf) {
		t.Fatal("certificate changed without Reload")
	}
	if err := store.Reload(); err != nil {
		t.Fatal(err)
	}
	if got := served(); !got.Equal(v2.Leaf) {
		t.Fatal("after Reload: not serving v2")
	}

	writeFile(t, files.KeyFile, []byte("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"))
	err = store.Reload()
	if err == nil || !strings.Contains(err.Error(), files.KeyFile) {
		t.Fatalf("Reload with broken key = %v, want an error naming %s", err, files.KeyFile)
	}
	if got := served(); !got.Equal(v2.Leaf) {
		t.Fatal("after failed Reload: not serving v2 any more")
	}

	// The in-memory certificate survives reloads.
	got, err := store.GetCertificate(&tls.ClientHelloInfo{ServerName: "demo.example.test"})
	if err != nil || !got.Leaf.Equal(demo.Leaf) {
		t.Errorf("added certificate lost after Reload: %v, %v", got, err)
	}
	if leaves := store.Leaves(); len(leaves) != 2 || !leaves[0].Equal(v2.Leaf) || !leaves[1].Equal(demo.Leaf) {
		t.Errorf("Leaves() = %d certificates, want v2 then demo", len(leaves))
	}
}

func TestWatchReloadsChangedFilesAndReportsBrokenOnes(t *testing.T) {
	v1, _ := mustSelfSigned(t, "imap.example.test")
	v2, _ := mustSelfSigned(t, "imap.example.test")
	v3, _ := mustSelfSigned(t, "imap.example.test")
	files := writePair(t, v1)
	store, err := LoadCertStore(files)
	if err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithCancel(context.Background())
	var (
		mu   sync.Mutex
		errs []error
	)
	done := make(chan struct{})
	go func() {
		defer close(done)
		store.Watch(ctx, 5*time.Millisecond, func(err error) {
			mu.Lock()
			errs = append(errs, err)
			mu.Unlock()
		})
	}()
	defer func() {
		cancel()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			t.Error("Watch did not return after cancel")
		}
	}()

	serving := func() *x509.Certificate {
		c, err := store.GetCertificate(&tls.ClientHelloInfo{ServerName: "imap.example.test"})
		if err != nil {
			t.Fatal(err)
		}
		return c.Leaf
	}
	waitFor := func(what string, cond func() bool) {
		t.Helper()
		for deadline := time.Now().Add(5 * time.Second); !cond(); {
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting for %s", what)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}

	replacePair(t, files, v2)
	waitFor("Watch to load v2", func() bool { return serving().Equal(v2.Leaf) })

	writeFile(t, files.CertFile, []byte("garbage\n"))
	waitFor("Watch to report the broken file", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(errs) > 0
	})
	mu.Lock()
	if !strings.Contains(errs[0].Error(), files.CertFile) {
		t.Errorf("Watch reported %q, want it to name %s", errs[0], files.CertFile)
	}
	mu.Unlock()
	if !serving().Equal(v2.Leaf) {
		t.Fatal("broken file replaced the served certificate")
	}

	replacePair(t, files, v3)
	waitFor("Watch to load v3 after the files were fixed", func() bool { return serving().Equal(v3.Leaf) })
}
