package credstore

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"math/big"
	"net/netip"
	"path/filepath"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// testAddr is the client address of the tests' logins.
var testAddr = netip.MustParseAddr("192.0.2.7")

func b64(b []byte) string { return base64.StdEncoding.EncodeToString(b) }

// clock is a settable Options.Now.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock { return &clock{t: time.Date(2026, 3, 1, 9, 0, 0, 0, time.UTC)} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// testStore is a Bolt in a fresh directory with a settable clock.
type testStore struct {
	*Bolt
	path  string
	clock *clock
}

// openTestStore opens a store in a fresh directory; set adjusts the
// options (the clock is set already).
func openTestStore(t testing.TB, set func(*Options)) *testStore {
	t.Helper()
	return reopenTestStore(t, filepath.Join(t.TempDir(), "state", "credentials.db"), newClock(), set)
}

func reopenTestStore(t testing.TB, path string, c *clock, set func(*Options)) *testStore {
	t.Helper()
	opts := Options{Now: c.Now}
	if set != nil {
		set(&opts)
	}
	b, err := OpenBolt(path, opts)
	if err != nil {
		t.Fatalf("OpenBolt: %v", err)
	}
	t.Cleanup(func() { b.Close() })
	return &testStore{Bolt: b, path: path, clock: c}
}

func (s *testStore) add(t testing.TB, req NewAppPassword) (AppPassword, Secret) {
	t.Helper()
	p, secret, err := s.AddAppPassword(context.Background(), req)
	if err != nil {
		t.Fatalf("AddAppPassword(%+v): %v", req, err)
	}
	return p, secret
}

func (s *testStore) verify(user, password, listener string) (AppPassword, error) {
	return s.VerifyAppPassword(context.Background(), AppPasswordAttempt{
		User: user, Password: password, Listener: listener, Addr: testAddr,
	})
}

// fill gives user n more app passwords in one transaction: real digests
// and indexes, without the SCRAM keys (n PBKDF2s would be the test's
// whole run time).
func (s *testStore) fill(t testing.TB, user string, n int) {
	t.Helper()
	err := s.db.Update(func(tx *bolt.Tx) error {
		for i := range n {
			canonical, _ := newSecret()
			r := &record{
				Kind: KindAppPassword, ID: newID(), User: user, Label: fmt.Sprintf("filler %d", i),
				Created: s.now(), Key: s.keys.digest(canonical),
			}
			if err := insert(tx, r); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("fill: %v", err)
	}
}

// newCert makes a self-signed client certificate for key (a new P-256 key
// if nil) and returns it with its PEM.
func newCert(t testing.TB, cn string, key crypto.Signer) (*x509.Certificate, []byte) {
	t.Helper()
	if key == nil {
		var err error
		if key, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader); err != nil {
			t.Fatal(err)
		}
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: cn},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(365 * 24 * time.Hour),
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return cert, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}
