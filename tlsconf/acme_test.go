package tlsconf

import (
	"bytes"
	"crypto/tls"
	"encoding/json"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"go.uber.org/zap"
)

func TestNewACMERefusesIncompleteOptions(t *testing.T) {
	dir := t.TempDir()
	for _, tt := range []struct {
		name string
		o    ACMEOptions
		want string
	}{
		{"no domains", ACMEOptions{StorageDir: dir}, "at least one domain"},
		{"wildcard without dns-01", ACMEOptions{Domains: []string{"*.example.com"}, StorageDir: dir}, "wildcard"},
		{"dns-01 without provider", ACMEOptions{Domains: []string{"a.example"}, Challenge: ChallengeDNS, StorageDir: dir}, "DNS provider"},
		{"unknown challenge", ACMEOptions{Domains: []string{"a.example"}, Challenge: "dns-02", StorageDir: dir}, "dns-02"},
		{"half an EAB", ACMEOptions{Domains: []string{"a.example"}, EABKeyID: "kid", StorageDir: dir}, "external account binding"},
		{"no storage", ACMEOptions{Domains: []string{"a.example"}}, "storage"},
		{"bad listener", ACMEOptions{Domains: []string{"a.example"}, ChallengeListen: "443", StorageDir: dir}, "challenge listener"},
		{"on-demand without allow-list", ACMEOptions{Domains: []string{"a.example"}, StorageDir: dir, OnDemand: &OnDemandPolicy{}}, "allow-list"},
	} {
		if _, err := NewACME(tt.o); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: err = %v, want %q", tt.name, err, tt.want)
		}
	}
	a, err := NewACME(ACMEOptions{Domains: []string{"a.example"}, StorageDir: filepath.Join(dir, "never")})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "never")); err == nil {
		t.Fatal("NewACME created the storage directory; only Start may")
	}
	if _, err := a.GetCertificate(&tls.ClientHelloInfo{ServerName: "a.example"}); err == nil {
		t.Fatal("a certificate before Start")
	}
	a.Close() // harmless before Start
}

func TestFileStorageIsPrivate(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "acme")
	if _, err := FileStorage(dir); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(dir)
	if err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("storage %v mode %v, want 0700", err, fi.Mode().Perm())
	}
	open := t.TempDir()
	os.Chmod(open, 0o755)
	if _, err := FileStorage(open); err == nil || !strings.Contains(err.Error(), "chmod 700") {
		t.Fatalf("a directory others can read: err = %v", err)
	}
}

func TestACMEServerConfigKeepsIMAPAndACMEProtocols(t *testing.T) {
	a, err := NewACME(ACMEOptions{Domains: []string{"a.example"}, StorageDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	c := a.ServerConfig(0)
	if !slices.Equal(c.NextProtos, []string{"imap", "acme-tls/1"}) || c.MinVersion != tls.VersionTLS12 {
		t.Fatalf("NextProtos %v MinVersion %x", c.NextProtos, c.MinVersion)
	}
	if c.SessionTicketsDisabled || c.SessionTicketKey != [32]byte{} || !slices.Equal(c.CipherSuites, ServerCipherSuites(0)) {
		t.Fatal("tickets must stay on with Go's own rotated keys, and cipher suites those of file certificates (ServerCipherSuites)")
	}
	if old := a.ServerConfig(tls.VersionTLS11); old.MinVersion != tls.VersionTLS11 || old.CipherSuites != nil {
		t.Fatal("minVersion not applied, or an old-client listener without Go's default suites")
	}
}

// TestSessionResumptionWithGoManagedTicketKeys: the listeners set no
// ticket keys, so crypto/tls makes and rotates its own (a new key every
// 24 hours, each accepted for 7 days); a returning client resumes.
func TestSessionResumptionWithGoManagedTicketKeys(t *testing.T) {
	cert, certPEM := mustSelfSigned(t, "localhost")
	store, err := LoadCertStore()
	if err != nil {
		t.Fatal(err)
	}
	store.Add(cert)
	for _, v := range []uint16{tls.VersionTLS12, tls.VersionTLS13} {
		ln, err := tls.Listen("tcp", "127.0.0.1:0", ServerConfig(store, tls.VersionTLS12))
		if err != nil {
			t.Fatal(err)
		}
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				c.(*tls.Conn).Handshake()
				c.Write([]byte("x"))
				c.Close()
			}
		}()
		cache := tls.NewLRUClientSessionCache(4)
		pool := poolOf(t, certPEM)
		var resumed []bool
		for range 2 {
			c, err := tls.Dial("tcp", ln.Addr().String(), &tls.Config{RootCAs: pool, ServerName: "localhost", ClientSessionCache: cache, MaxVersion: v})
			if err != nil {
				t.Fatal(err)
			}
			c.Read(make([]byte, 1)) // TLS 1.3 tickets arrive after the handshake
			resumed = append(resumed, c.ConnectionState().DidResume)
			c.Close()
		}
		ln.Close()
		if !slices.Equal(resumed, []bool{false, true}) {
			t.Errorf("TLS %x: resumed %v, want [false true]", v, resumed)
		}
	}
}

func TestZapEntriesGoToSlog(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	z := zapToSlog(log).Named("acme").With(zap.String("identifier", "a.example"))
	z.Info("trying to solve challenge", zap.Int("attempt", 2))
	z.Error("could not get certificate", zap.Error(os.ErrDeadlineExceeded))
	var lines []map[string]any
	for _, l := range strings.Split(strings.TrimSpace(buf.String()), "\n") {
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("not JSON: %q", l)
		}
		lines = append(lines, m)
	}
	if len(lines) != 2 {
		t.Fatalf("%d lines", len(lines))
	}
	if l := lines[0]; l["level"] != "DEBUG" || l["msg"] != "trying to solve challenge" || l["identifier"] != "a.example" || l["attempt"] != float64(2) || l["logger"] != "acme" {
		t.Errorf("info entry: %v", l)
	}
	if l := lines[1]; l["level"] != "ERROR" || l["error"] != os.ErrDeadlineExceeded.Error() {
		t.Errorf("error entry: %v", l)
	}

	// At the default Info level certmagic's chatter is dropped.
	buf.Reset()
	quiet := zapToSlog(slog.New(slog.NewJSONHandler(&buf, nil)))
	quiet.Info("chatter")
	if buf.Len() != 0 {
		t.Fatalf("info chatter logged at Info level: %s", buf.String())
	}
}
