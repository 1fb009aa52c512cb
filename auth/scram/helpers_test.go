package scram

import (
	"bufio"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/xdg-go/scram"
)

// testCert is a self-signed server certificate for "localhost".
type testCert struct {
	tls  tls.Certificate
	leaf *x509.Certificate
}

// newCert makes a certificate for key, signed with alg (0: the key's
// default).
func newCert(t testing.TB, key crypto.Signer, alg x509.SignatureAlgorithm) testCert {
	t.Helper()
	tmpl := &x509.Certificate{
		SerialNumber:       big.NewInt(time.Now().UnixNano()),
		Subject:            pkix.Name{CommonName: "localhost"},
		DNSNames:           []string{"localhost"},
		IPAddresses:        []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore:          time.Now().Add(-time.Hour),
		NotAfter:           time.Now().Add(time.Hour),
		KeyUsage:           x509.KeyUsageDigitalSignature,
		ExtKeyUsage:        []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		SignatureAlgorithm: alg,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatalf("certificate with %v: %v", alg, err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return testCert{tls: tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, leaf: leaf}
}

func ecdsaCert(t testing.TB, curve elliptic.Curve, alg x509.SignatureAlgorithm) testCert {
	t.Helper()
	key, err := ecdsa.GenerateKey(curve, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return newCert(t, key, alg)
}

func ed25519Cert(t testing.TB) testCert {
	t.Helper()
	_, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return newCert(t, key, 0)
}

// tlsVersions are the versions the conversations run on.
var tlsVersions = []struct {
	name    string
	version uint16
}{{"TLS1.3", tls.VersionTLS13}, {"TLS1.2", tls.VersionTLS12}}

// tlsPair is a TLS connection over loopback, both ends handshaken.
type tlsPair struct {
	client, server *tls.Conn
	conn           ConnState // the server's view, for an Exchange
}

// clientState is the client's view of the connection.
func (p tlsPair) clientState() tls.ConnectionState { return p.client.ConnectionState() }

// newTLSPair connects a client to a server presenting cert, at exactly
// version.
func newTLSPair(t testing.TB, cert testCert, version uint16) tlsPair {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan *tls.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			accepted <- nil
			return
		}
		s := tls.Server(c, &tls.Config{Certificates: []tls.Certificate{cert.tls}, MinVersion: version, MaxVersion: version})
		if err := s.Handshake(); err != nil {
			s.Close()
			accepted <- nil
			return
		}
		accepted <- s
	}()
	raw, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	client := tls.Client(raw, &tls.Config{InsecureSkipVerify: true, MinVersion: version, MaxVersion: version}) //nolint:gosec // a test's self-signed certificate
	if err := client.Handshake(); err != nil {
		t.Fatalf("client handshake: %v", err)
	}
	server := <-accepted
	if server == nil {
		t.Fatal("server handshake failed")
	}
	t.Cleanup(func() { client.Close(); server.Close() })
	st := server.ConnectionState()
	return tlsPair{client: client, server: server, conn: ConnState{TLS: &st, Certificate: cert.leaf}}
}

// memStore is an in-memory credential store: login name -> keys derived
// from the password at MinIterations, as auth/credstore derives them.
type memStore struct {
	mu      sync.Mutex
	keys    map[string]StoredCredentials
	lookups atomic.Int32
}

// errNoSuchLogin is the store's own error for a name it does not have; the
// lookup wraps it in ErrUnknownUser, as the integration's adapter wraps
// credstore's errors.
var errNoSuchLogin = errors.New("memstore: no such login")

func newMemStore(t testing.TB, users map[string]string) *memStore {
	t.Helper()
	s := &memStore{keys: map[string]StoredCredentials{}}
	for login, password := range users {
		s.add(t, login, password, MinIterations)
	}
	return s
}

func (s *memStore) add(t testing.TB, login, password string, iters int) StoredCredentials {
	t.Helper()
	// The keys depend on the password only; the login is kept as given.
	c, err := scram.SHA256.NewClient("", password, "")
	if err != nil {
		t.Fatal(err)
	}
	salt := make([]byte, 16)
	rand.Read(salt)
	keys, err := c.GetStoredCredentialsWithError(scram.KeyFactors{Salt: string(salt), Iters: iters})
	if err != nil {
		t.Fatal(err)
	}
	s.mu.Lock()
	s.keys[login] = keys
	s.mu.Unlock()
	return keys
}

func (s *memStore) lookup(_ context.Context, login string) (StoredCredentials, error) {
	s.lookups.Add(1)
	s.mu.Lock()
	defer s.mu.Unlock()
	k, ok := s.keys[login]
	if !ok {
		return StoredCredentials{}, fmt.Errorf("%w: %w", ErrUnknownUser, errNoSuchLogin)
	}
	return k, nil
}

func newTestServer(t testing.TB, store *memStore, opts Options) *Server {
	t.Helper()
	srv, err := NewServer(store.lookup, opts)
	if err != nil {
		t.Fatal(err)
	}
	return srv
}

// The line protocol the conversations use over a connection: the client
// sends base64 lines; the server answers "+ B64" to go on, "OK B64" with
// the server-final message, or "NO" (whatever the reason: the client must
// learn nothing more).

// outcome is what the server side of a conversation ended with.
type outcome struct {
	id  Identity
	err error
}

// serveSASL runs x over conn until the exchange ends.
func serveSASL(ctx context.Context, conn io.ReadWriter, x *Exchange) outcome {
	r := bufio.NewReader(conn)
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return outcome{x.Identity(), fmt.Errorf("test server: read: %w", err)}
		}
		msg, err := base64.StdEncoding.DecodeString(strings.TrimSpace(line))
		if err != nil {
			return outcome{x.Identity(), fmt.Errorf("test server: base64: %w", err)}
		}
		out, done, err := x.Step(ctx, msg)
		switch {
		case err != nil:
			fmt.Fprintf(conn, "NO\n")
			return outcome{x.Identity(), err}
		case done:
			fmt.Fprintf(conn, "OK %s\n", base64.StdEncoding.EncodeToString(out))
			return outcome{x.Identity(), nil}
		}
		fmt.Fprintf(conn, "+ %s\n", base64.StdEncoding.EncodeToString(out))
	}
}

// loginResult is what the client side saw.
type loginResult struct {
	serverFirst string // the server-first message, decoded
	accepted    bool   // the server said OK
	verified    bool   // and the client checked the server's signature
}

// clientLogin runs xdg-go's client conversation cc over conn.
func clientLogin(conn io.ReadWriter, cc *scram.ClientConversation) (loginResult, error) {
	var res loginResult
	r := bufio.NewReader(conn)
	msg, err := cc.Step("")
	if err != nil {
		return res, fmt.Errorf("client-first: %w", err)
	}
	for {
		fmt.Fprintf(conn, "%s\n", base64.StdEncoding.EncodeToString([]byte(msg)))
		line, err := r.ReadString('\n')
		if err != nil {
			return res, fmt.Errorf("client: read: %w", err)
		}
		word, b64, _ := strings.Cut(strings.TrimSpace(line), " ")
		in, _ := base64.StdEncoding.DecodeString(b64)
		switch word {
		case "NO":
			return res, nil
		case "OK":
			res.accepted = true
			_, err := cc.Step(string(in))
			res.verified = err == nil && cc.Valid()
			return res, nil
		}
		if res.serverFirst == "" {
			res.serverFirst = string(in)
		}
		if msg, err = cc.Step(string(in)); err != nil {
			return res, fmt.Errorf("client step: %w", err)
		}
	}
}

// converse runs one whole conversation between cc on clientSide and x on
// serverSide, each in its own goroutine as over a network.
func converse(t testing.TB, clientSide, serverSide io.ReadWriter, x *Exchange, cc *scram.ClientConversation) (loginResult, outcome) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if d, ok := clientSide.(interface{ SetDeadline(time.Time) error }); ok {
		d.SetDeadline(time.Now().Add(10 * time.Second))
	}
	if d, ok := serverSide.(interface{ SetDeadline(time.Time) error }); ok {
		d.SetDeadline(time.Now().Add(10 * time.Second))
	}
	served := make(chan outcome, 1)
	go func() { served <- serveSASL(ctx, serverSide, x) }()
	res, err := clientLogin(clientSide, cc)
	if err != nil {
		t.Fatalf("client: %v", err)
	}
	return res, <-served
}

// newClient is xdg-go's SCRAM-SHA-256 client for login and password.
func newClient(t testing.TB, login, password, authzid string) *scram.Client {
	t.Helper()
	c, err := scram.SHA256.NewClient(login, password, authzid)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// exchange starts a server exchange or fails the test.
func exchange(t testing.TB, srv *Server, mech Mechanism, conn ConnState, opts ExchangeOptions) *Exchange {
	t.Helper()
	x, err := srv.NewExchange(mech, conn, opts)
	if err != nil {
		t.Fatalf("NewExchange(%s): %v", mech, err)
	}
	return x
}

// relay is a man in the middle: it terminates the client's TLS with its
// own certificate and opens its own TLS session to the server, copying
// the bytes between the two. It returns the client's connection (to the
// relay) and the server's (from the relay).
func relay(t testing.TB, serverCert, relayCert testCert, version uint16) (toRelay, atServer tlsPair) {
	t.Helper()
	toRelay = newTLSPair(t, relayCert, version)   // the client and the relay
	atServer = newTLSPair(t, serverCert, version) // the relay and the server
	go copyRelay(atServer.client, toRelay.server)
	go copyRelay(toRelay.server, atServer.client)
	return toRelay, atServer
}

// copyRelay copies one direction of the relay.
func copyRelay(dst, src net.Conn) { _, _ = io.Copy(dst, src) }
