package tlsconf

import (
	"cmp"
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"time"
)

// ALPNProtocol is the ALPN protocol identifier for IMAP over TLS (RFC 7301
// registry). ServerConfig advertises it.
const ALPNProtocol = "imap"

// DefaultWatchInterval is the polling interval Watch uses when it is given
// a non-positive interval.
const DefaultWatchInterval = 30 * time.Second

// ParseVersion maps a configured TLS version ("1.0", "1.1", "1.2", "1.3")
// to its crypto/tls constant. The empty string means tls.VersionTLS12, the
// default. Anything else is an error that lists the allowed values.
//
// "1.0" and "1.1" exist for very old mail clients only; choosing them is
// the visible, unsafe setting.
func ParseVersion(s string) (uint16, error) {
	switch strings.TrimSpace(s) {
	case "":
		return tls.VersionTLS12, nil
	case "1.0":
		return tls.VersionTLS10, nil
	case "1.1":
		return tls.VersionTLS11, nil
	case "1.2":
		return tls.VersionTLS12, nil
	case "1.3":
		return tls.VersionTLS13, nil
	}
	return 0, fmt.Errorf("tlsconf: TLS version %q is not one of 1.0, 1.1, 1.2, 1.3", s)
}

// ServerConfig returns the tls.Config for client-facing listeners.
// Certificates come from store (see CertStore.GetCertificate), NextProtos
// is ["imap"], the TLS 1.2 cipher suites are ServerCipherSuites(minVersion),
// and session tickets keep Go's default (enabled, with keys rotated
// automatically). If minVersion is zero, tls.VersionTLS12 is used.
func ServerConfig(store *CertStore, minVersion uint16) *tls.Config {
	if minVersion == 0 {
		minVersion = tls.VersionTLS12
	}
	return &tls.Config{
		MinVersion:     minVersion,
		CipherSuites:   ServerCipherSuites(minVersion),
		GetCertificate: store.GetCertificate,
		NextProtos:     []string{ALPNProtocol},
	}
}

// ServerCipherSuites returns the TLS 1.0-1.2 cipher suites a client-facing
// listener with this minimum version offers (TLS 1.3's are fixed by Go).
// From TLS 1.2 up: ECDHE with AES-GCM or ChaCha20-Poly1305 only. Below
// (a listener dedicated to old clients, README "TLS policy"): nil, Go's
// defaults, which add ECDHE with AES-CBC, the only suites TLS 1.0 and 1.1
// have with forward secrecy.
//
// The modern list is Mozilla's "intermediate" profile less the DHE suites
// Go does not implement, in Go's preference order. Go's own default adds
// four ECDHE suites with AES-CBC and SHA-1, which scanners rightly flag
// (Lucky Thirteen) and which no client that speaks TLS 1.2 needs.
func ServerCipherSuites(minVersion uint16) []uint16 {
	if minVersion != 0 && minVersion < tls.VersionTLS12 {
		return nil
	}
	return []uint16{
		tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
		tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384, tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
		tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305, tls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305,
	}
}

// CertFiles names one certificate and its private key, both PEM. CertFile
// may hold the full chain, leaf first.
type CertFiles struct {
	CertFile, KeyFile string
}

// CertStore holds server certificates loaded from PEM files, plus any added
// in memory, and serves them by SNI. The zero value holds nothing and is not
// useful; build one with LoadCertStore. A CertStore is safe for concurrent
// use.
type CertStore struct {
	files []CertFiles // fixed at LoadCertStore

	reloadMu sync.Mutex // serialises Reload so an older read never overwrites a newer one

	mu        sync.RWMutex
	fromFiles []*tls.Certificate // one per files entry, same order
	stamps    []fileStamp        // what the files looked like when fromFiles was read
	added     []*tls.Certificate // from Add, kept across Reload
	byName    map[string][]*tls.Certificate
	all       []*tls.Certificate // fromFiles then added: the fallback order
}

// LoadCertStore reads every pair and returns a store serving them. The
// first pair is the fallback for clients that send no SNI or an unknown
// name. Errors name the file and the problem (missing file, no PEM block,
// key does not match certificate). Calling it with no pairs gives an empty
// store to fill with Add.
func LoadCertStore(pairs ...CertFiles) (*CertStore, error) {
	s := &CertStore{files: slices.Clone(pairs)}
	certs, stamps, err := loadAll(s.files)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	s.fromFiles, s.stamps = certs, stamps
	s.rebuildLocked()
	s.mu.Unlock()
	return s, nil
}

// Reload re-reads every pair given to LoadCertStore. On any error the store
// keeps serving the certificates it had and Reload returns the error.
// Certificates added with Add are kept. Call it on SIGHUP; Watch calls it
// when the files change.
func (s *CertStore) Reload() error {
	s.reloadMu.Lock()
	defer s.reloadMu.Unlock()
	certs, stamps, err := loadAll(s.files)
	if err != nil {
		return err
	}
	s.mu.Lock()
	s.fromFiles, s.stamps = certs, stamps
	s.rebuildLocked()
	s.mu.Unlock()
	return nil
}

// Add adds an in-memory certificate (used by the demo and tests). It is
// served after the file certificates in fallback order and survives
// Reload. If cert.Leaf is nil it is parsed from cert.Certificate[0]; a
// certificate whose leaf cannot be parsed is still served as a fallback but
// matches no name.
func (s *CertStore) Add(cert tls.Certificate) {
	if cert.Leaf == nil && len(cert.Certificate) > 0 {
		if leaf, err := x509.ParseCertificate(cert.Certificate[0]); err == nil {
			cert.Leaf = leaf
		}
	}
	s.mu.Lock()
	s.added = append(s.added, &cert)
	s.rebuildLocked()
	s.mu.Unlock()
}

// Leaves returns the current leaf certificates, file certificates first,
// for expiry metrics. Certificates without a parsed leaf are skipped.
func (s *CertStore) Leaves() []*x509.Certificate {
	s.mu.RLock()
	defer s.mu.RUnlock()
	leaves := make([]*x509.Certificate, 0, len(s.all))
	for _, c := range s.all {
		if c.Leaf != nil {
			leaves = append(leaves, c.Leaf)
		}
	}
	return leaves
}

// GetCertificate chooses the certificate for a handshake; it is meant for
// tls.Config.GetCertificate. The SNI name (case and a trailing dot ignored)
// is matched exactly against the certificates' DNS names, then as a
// wildcard (mail.example.com matches *.example.com), and if neither
// matches, every certificate in load order is a candidate (the first pair
// first). Among the candidates it returns the first the client supports
// (hello.SupportsCertificate), trying ECDSA before Ed25519 before RSA for a
// named match, so modern clients get ECDSA and old ones RSA. If the client
// supports none, it returns the first candidate and lets the handshake
// report the mismatch.
func (s *CertStore) GetCertificate(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
	name := strings.TrimSuffix(strings.ToLower(hello.ServerName), ".")

	s.mu.RLock()
	candidates := s.byName[name]
	if len(candidates) == 0 && name != "" {
		if i := strings.IndexByte(name, '.'); i > 0 {
			candidates = s.byName["*"+name[i:]]
		}
	}
	if len(candidates) == 0 {
		candidates = s.all
	}
	s.mu.RUnlock()

	if len(candidates) == 0 {
		return nil, errors.New("tlsconf: no server certificate configured")
	}
	for _, c := range candidates {
		if hello.SupportsCertificate(c) == nil {
			return c, nil
		}
	}
	return candidates[0], nil
}

// rebuildLocked recomputes the SNI index. s.mu must be held for writing.
func (s *CertStore) rebuildLocked() {
	all := make([]*tls.Certificate, 0, len(s.fromFiles)+len(s.added))
	all = append(all, s.fromFiles...)
	all = append(all, s.added...)
	byName := make(map[string][]*tls.Certificate)
	for _, c := range all {
		if c.Leaf == nil {
			continue
		}
		for _, n := range c.Leaf.DNSNames {
			n = strings.TrimSuffix(strings.ToLower(n), ".")
			if !slices.Contains(byName[n], c) {
				byName[n] = append(byName[n], c)
			}
		}
	}
	for _, list := range byName {
		slices.SortStableFunc(list, func(a, b *tls.Certificate) int {
			return cmp.Compare(keyRank(a), keyRank(b))
		})
	}
	s.all, s.byName = all, byName
}

// keyRank orders certificates for one name: ECDSA is smallest and fastest,
// Ed25519 is rarely supported by mail clients, RSA is for old clients.
func keyRank(c *tls.Certificate) int {
	switch c.PrivateKey.(type) {
	case *ecdsa.PrivateKey:
		return 0
	case ed25519.PrivateKey:
		return 1
	case *rsa.PrivateKey:
		return 2
	}
	return 3
}

// loadAll reads every pair, failing on the first bad one.
func loadAll(files []CertFiles) ([]*tls.Certificate, []fileStamp, error) {
	certs := make([]*tls.Certificate, 0, len(files))
	// Stat before reading: a change after the stat shows up as a
	// difference on the next Watch poll and is read again.
	stamps := statAll(files)
	for _, f := range files {
		c, err := loadPair(f)
		if err != nil {
			return nil, nil, err
		}
		certs = append(certs, c)
	}
	return certs, stamps, nil
}

// loadPair reads and checks one certificate and key.
func loadPair(f CertFiles) (*tls.Certificate, error) {
	certPEM, err := os.ReadFile(f.CertFile)
	if err != nil {
		return nil, fmt.Errorf("tlsconf: read certificate: %w", err)
	}
	keyPEM, err := os.ReadFile(f.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("tlsconf: read private key: %w", err)
	}
	if !hasPEMBlock(certPEM, func(t string) bool { return t == "CERTIFICATE" }) {
		return nil, fmt.Errorf("tlsconf: %s: no PEM CERTIFICATE block (is it the key file, or DER?)", f.CertFile)
	}
	if !hasPEMBlock(keyPEM, func(t string) bool { return strings.HasSuffix(t, "PRIVATE KEY") }) {
		return nil, fmt.Errorf("tlsconf: %s: no PEM PRIVATE KEY block (is it the certificate file, or DER?)", f.KeyFile)
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("tlsconf: certificate %s with key %s: %w", f.CertFile, f.KeyFile, err)
	}
	if cert.Leaf == nil {
		leaf, err := x509.ParseCertificate(cert.Certificate[0])
		if err != nil {
			return nil, fmt.Errorf("tlsconf: %s: parse certificate: %w", f.CertFile, err)
		}
		cert.Leaf = leaf
	}
	return &cert, nil
}

func hasPEMBlock(data []byte, typeOK func(string) bool) bool {
	for {
		var b *pem.Block
		b, data = pem.Decode(data)
		if b == nil {
			return false
		}
		if typeOK(b.Type) {
			return true
		}
	}
}

// Watch polls the certificate and key files every interval (if every <= 0,
// DefaultWatchInterval) and calls Reload when any file's size, modification
// time or identity (a rename over it) changes. A failed reload is reported
// to onErr (if non-nil) and retried only after the files change again, so a
// certificate and key replaced one after the other load once both are in
// place. Watch blocks until ctx is done; run it in its own goroutine.
func (s *CertStore) Watch(ctx context.Context, every time.Duration, onErr func(error)) {
	if every <= 0 {
		every = DefaultWatchInterval
	}
	s.mu.RLock()
	seen := s.stamps
	s.mu.RUnlock()

	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		now := statAll(s.files)
		if stampsEqual(seen, now) {
			continue
		}
		seen = now
		if err := s.Reload(); err != nil && onErr != nil {
			onErr(err)
		}
	}
}

// fileStamp is what Watch compares: a missing file is a stamp too, so
// its reappearance is a change.
type fileStamp struct {
	cert, key os.FileInfo // nil if the stat failed
}

func statAll(files []CertFiles) []fileStamp {
	stamps := make([]fileStamp, len(files))
	for i, f := range files {
		stamps[i].cert, _ = os.Stat(f.CertFile)
		stamps[i].key, _ = os.Stat(f.KeyFile)
	}
	return stamps
}

func stampsEqual(a, b []fileStamp) bool {
	return slices.EqualFunc(a, b, func(x, y fileStamp) bool {
		return sameInfo(x.cert, y.cert) && sameInfo(x.key, y.key)
	})
}

func sameInfo(a, b os.FileInfo) bool {
	if a == nil || b == nil {
		return a == nil && b == nil
	}
	return a.Size() == b.Size() && a.ModTime().Equal(b.ModTime()) && os.SameFile(a, b)
}
