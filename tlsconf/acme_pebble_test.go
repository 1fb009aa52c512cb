package tlsconf

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/letsencrypt/pebble/v2/ca"
	"github.com/letsencrypt/pebble/v2/db"
	"github.com/letsencrypt/pebble/v2/va"
	"github.com/letsencrypt/pebble/v2/wfe"
)

// inProcessPebble runs Pebble's CA inside the test: its web front end on
// an httptest TLS server, validation switched off (PEBBLE_VA_ALWAYS_VALID;
// the real validation of every challenge is tested end to end in
// cmd/imapgate against the Pebble binary). It returns the directory URL,
// the pool to trust for its HTTPS, and the pool of its issuing root.
func inProcessPebble(t *testing.T) (dirURL string, https, roots *x509.CertPool) {
	t.Helper()
	return inProcessPebbleValidating(t, nil)
}

// pebbleVA is where a validating in-process Pebble checks challenges: the
// ports it connects to for HTTP-01 and TLS-ALPN-01, and the DNS server
// (TCP, "host:port") it resolves the names with.
type pebbleVA struct {
	HTTPPort, TLSPort int
	DNS               string
}

// inProcessPebbleValidating is inProcessPebble, validating every challenge
// for real as v says (nil: validation switched off).
func inProcessPebbleValidating(t *testing.T, v *pebbleVA) (dirURL string, https, roots *x509.CertPool) {
	t.Helper()
	if v == nil {
		t.Setenv("PEBBLE_VA_ALWAYS_VALID", "1")
		v = &pebbleVA{}
	} else {
		t.Setenv("PEBBLE_VA_ALWAYS_VALID", "0")
	}
	t.Setenv("PEBBLE_VA_NOSLEEP", "1")
	t.Setenv("PEBBLE_WFE_NONCEREJECT", "0")
	logger := log.New(io.Discard, "", 0)
	store := db.NewMemoryStore()
	authority := ca.New(logger, store, "", "ecdsa", 0, 1, map[string]ca.Profile{"default": {Description: "tests", ValidityPeriod: 3600}})
	validator := va.New(logger, v.HTTPPort, v.TLSPort, false, v.DNS, store)
	front := wfe.New(logger, store, validator, authority, []string{"pebble.letsencrypt.org"}, false, false, 0, 0)
	srv := httptest.NewTLSServer(front.Handler())
	t.Cleanup(srv.Close)

	rec := httptest.NewRecorder()
	front.ManagementHandler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, wfe.RootCertPath+"0", nil))
	roots = x509.NewCertPool()
	if !roots.AppendCertsFromPEM(rec.Body.Bytes()) {
		t.Fatalf("pebble root: %q", rec.Body.String())
	}
	https = x509.NewCertPool()
	https.AddCert(srv.Certificate())
	return srv.URL + wfe.DirectoryPath, https, roots
}

// TestACMEWithInProcessPebble: certmagic, driven by ACME, gets one
// certificate per configured name from an empty storage, serves each by
// SNI, and logs the issuance.
func TestACMEWithInProcessPebble(t *testing.T) {
	dirURL, https, roots := inProcessPebble(t)
	var logs strings.Builder
	names := []string{"one.inprocess.test", "two.inprocess.test", "three.inprocess.test"}
	a, err := NewACME(ACMEOptions{
		Domains:         names,
		CA:              dirURL,
		CARoots:         https,
		StorageDir:      filepath.Join(t.TempDir(), "acme"),
		ChallengeListen: "127.0.0.1:0",
		Log:             slog.New(slog.NewJSONHandler(&syncWriter{w: &logs}, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := a.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	if addr := a.ChallengeAddr(); !strings.HasPrefix(addr, "127.0.0.1:") || strings.HasSuffix(addr, ":0") {
		t.Fatalf("challenge responder on %q", addr)
	}

	cfg := a.ServerConfig(0)
	for _, name := range names {
		var chain []*x509.Certificate
		deadline := time.Now().Add(30 * time.Second)
		for {
			var err error
			if chain, err = pipeHandshake(cfg, name, roots); err == nil {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: no verified handshake: %v (last failure: %v)", name, err, a.Failure(name))
			}
			time.Sleep(50 * time.Millisecond)
		}
		if !slices.Equal(chain[0].DNSNames, []string{name}) {
			t.Fatalf("%s got a certificate for %v", name, chain[0].DNSNames)
		}
	}
	if got := len(a.Leaves()); got != len(names) {
		t.Fatalf("Leaves() = %d certificates, want %d", got, len(names))
	}
	deadline := time.Now().Add(5 * time.Second)
	for strings.Count(logs.String(), `"msg":"certificate issued"`) < len(names) {
		if time.Now().After(deadline) {
			t.Fatalf("issuance not logged for every name:\n%s", logs.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// pipeHandshake runs a TLS handshake over a pipe between cfg and a client
// verifying name against roots, and returns the verified chain.
func pipeHandshake(cfg *tls.Config, name string, roots *x509.CertPool) ([]*x509.Certificate, error) {
	c, s := net.Pipe()
	defer c.Close()
	defer s.Close()
	srv := tls.Server(s, cfg)
	go srv.Handshake()
	cl := tls.Client(c, &tls.Config{ServerName: name, RootCAs: roots, NextProtos: []string{"imap"}})
	cl.SetDeadline(time.Now().Add(10 * time.Second))
	if err := cl.Handshake(); err != nil {
		return nil, err
	}
	return cl.ConnectionState().VerifiedChains[0], nil
}
