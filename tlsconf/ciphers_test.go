package tlsconf

import (
	"crypto/tls"
	"strings"
	"testing"
)

// TestDefaultListenerOffersNoCBCAndOldClientListenerDoes: a TLS 1.2 client
// that offers only AES-CBC suites (what Lucky Thirteen needs) gets no
// handshake from a default listener, whose TLS 1.2 suites are ECDHE with
// an AEAD (Mozilla "intermediate"); a listener for old clients
// (min_version 1.0) still serves it, and a TLS 1.0 client, which has no
// AEAD suite at all.
func TestDefaultListenerOffersNoCBCAndOldClientListenerDoes(t *testing.T) {
	ec, ecPEM := mustSelfSigned(t, "imap.example.test")
	rs, rsPEM := rsaSelfSigned(t, "imap.example.test")
	store, _ := LoadCertStore()
	store.Add(ec)
	store.Add(rs)
	pool := poolOf(t, ecPEM, rsPEM)
	client := func(maxVersion uint16, suites ...uint16) *tls.Config {
		return &tls.Config{ServerName: "imap.example.test", RootCAs: pool, MinVersion: tls.VersionTLS10, MaxVersion: maxVersion, CipherSuites: suites}
	}
	cbc := []uint16{
		tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA, tls.TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA,
		tls.TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA, tls.TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA,
	}
	tests := []struct {
		name       string
		minVersion uint16
		client     *tls.Config
		want       uint16 // the suite negotiated; 0: no handshake
	}{
		{"default listener, TLS 1.2 client offering only CBC", 0, client(tls.VersionTLS12, cbc...), 0},
		{"TLS 1.2 listener, TLS 1.2 client offering only CBC", tls.VersionTLS12, client(tls.VersionTLS12, cbc...), 0},
		{"default listener, TLS 1.2 client offering CBC and GCM", 0, client(tls.VersionTLS12, append(cbc, tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256)...), tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256},
		{"default listener, TLS 1.2 client offering ChaCha20", 0, client(tls.VersionTLS12, tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305), tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305},
		{"default listener, TLS 1.3 client", 0, client(0), tls.TLS_AES_128_GCM_SHA256},
		{"old-client listener, TLS 1.2 client offering only CBC", tls.VersionTLS10, client(tls.VersionTLS12, cbc[0]), cbc[0]},
		{"old-client listener, TLS 1.0 client", tls.VersionTLS10, client(tls.VersionTLS10, cbc[1]), cbc[1]},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st, err := handshake(t, ServerConfig(store, tt.minVersion), tt.client)
			switch {
			case tt.want == 0 && err == nil:
				t.Fatalf("handshake with %s succeeded, want it refused", tls.CipherSuiteName(st.CipherSuite))
			case tt.want != 0 && err != nil:
				t.Fatalf("handshake failed: %v", err)
			case tt.want != 0 && st.CipherSuite != tt.want:
				t.Fatalf("negotiated %s, want %s", tls.CipherSuiteName(st.CipherSuite), tls.CipherSuiteName(tt.want))
			}
		})
	}
}

// TestEveryModernSuiteIsECDHEWithAnAEAD keeps the list honest should it
// ever be edited: forward secrecy, an AEAD, nothing Go calls insecure; and
// only a listener for old clients falls back to Go's defaults.
func TestEveryModernSuiteIsECDHEWithAnAEAD(t *testing.T) {
	secure := map[uint16]bool{}
	for _, cs := range tls.CipherSuites() {
		secure[cs.ID] = true
	}
	for _, v := range []uint16{0, tls.VersionTLS12, tls.VersionTLS13} {
		suites := ServerCipherSuites(v)
		if len(suites) == 0 {
			t.Fatalf("ServerCipherSuites(%#x) is empty, which means Go's defaults, with CBC", v)
		}
		for _, id := range suites {
			name := tls.CipherSuiteName(id)
			aead := strings.Contains(name, "_GCM_") || strings.Contains(name, "CHACHA20_POLY1305")
			if !secure[id] || !strings.HasPrefix(name, "TLS_ECDHE_") || !aead {
				t.Errorf("ServerCipherSuites(%#x) has %s: want ECDHE with AES-GCM or ChaCha20-Poly1305", v, name)
			}
		}
	}
	for _, v := range []uint16{tls.VersionTLS10, tls.VersionTLS11} {
		if suites := ServerCipherSuites(v); suites != nil {
			t.Errorf("ServerCipherSuites(%#x) = %d suites, want nil (Go's defaults, with the CBC suites TLS 1.0 needs)", v, len(suites))
		}
	}
}
