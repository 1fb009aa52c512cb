package scram

import (
	"bufio"
	"bytes"
	"context"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/xdg-go/scram"
)

// TestLibpqAgreesOnTLSServerEndPoint checks this package's
// tls-server-end-point data against an implementation that shares nothing
// with it: PostgreSQL's libpq (through psql) computes it with OpenSSL from
// the certificate it received, and binds its SCRAM-SHA-256-PLUS to it
// (libpq supports no other binding type). No IMAP client available on
// Debian binds with tls-server-end-point (gsasl 2.2.0 offers tls-exporter
// and tls-unique only), so the test speaks just enough of PostgreSQL's
// protocol (its SASL authentication, protocol version 3) to carry the
// exchange.
//
// libpq sends an empty SCRAM username ("n=", the database user goes in the
// startup message), which an Exchange refuses, so the server side here is
// xdg-go's conversation given ConnState's binding data: what is checked is
// that the client's c= equals the GS2 header followed by that data, and
// that the whole exchange completes with psql accepting the server's
// signature. The certificates cover each hash rule of RFC 5929 section
// 4.1: SHA-256, SHA-384, SHA-512, and SHA-1 (which is hashed with SHA-256).
func TestLibpqAgreesOnTLSServerEndPoint(t *testing.T) {
	requireTool(t, "psql", "Debian's postgresql-client, which .ci/run must list")
	// libpq's SCRAM username is empty: the keys are the password's.
	keys := newMemStore(t, map[string]string{"": alicePassword}).keys[""]
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		cert testCert
	}{
		{"ECDSA P-256 SHA-256", ecdsaCert(t, elliptic.P256(), x509.ECDSAWithSHA256)},
		{"ECDSA P-384 SHA-384", ecdsaCert(t, elliptic.P384(), x509.ECDSAWithSHA384)},
		{"RSA SHA-512", newCert(t, rsaKey, x509.SHA512WithRSA)},
		{"ECDSA P-256 SHA-1", ecdsaCert(t, elliptic.P256(), x509.ECDSAWithSHA1)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			result := make(chan pgResult, 1)
			go servePostgresSCRAM(ln, tc.cert, keys, result)
			_, port, _ := net.SplitHostPort(ln.Addr().String())
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			cmd := exec.CommandContext(ctx, "psql", "-X", "-w", "-c", `\q`,
				"host=127.0.0.1 port="+port+" user=alice dbname=mail sslmode=require channel_binding=require connect_timeout=10")
			cmd.Env = append(os.Environ(), "PGPASSWORD="+alicePassword)
			out, runErr := cmd.CombinedOutput()
			res := <-result
			if res.err != nil {
				t.Fatalf("server: %v; psql (%v) said:\n%s", res.err, runErr, out)
			}
			if res.gs2Header != "p=tls-server-end-point,," {
				t.Fatalf("psql bound with the GS2 header %q", res.gs2Header)
			}
			if !bytes.Equal(res.clientCB, res.serverCB) {
				t.Fatalf("psql's tls-server-end-point data %x, ConnState's %x", res.clientCB, res.serverCB)
			}
			if runErr != nil || !res.terminated {
				t.Fatalf("psql exit %v, said goodbye %v: it did not accept the server's signature:\n%s", runErr, res.terminated, out)
			}
		})
	}
}

type pgResult struct {
	gs2Header  string
	clientCB   []byte // the binding data psql sent
	serverCB   []byte // ConnState's
	terminated bool   // psql sent Terminate after AuthenticationOk
	err        error
}

// servePostgresSCRAM accepts one connection: SSLRequest, TLS, startup,
// SCRAM-SHA-256-PLUS (RFC 5802 framed as PostgreSQL's AuthenticationSASL
// messages), AuthenticationOk, ReadyForQuery, and waits for Terminate.
func servePostgresSCRAM(ln net.Listener, cert testCert, keys StoredCredentials, result chan<- pgResult) {
	var res pgResult
	defer func() { result <- res }()
	fail := func(format string, args ...any) { res.err = fmt.Errorf(format, args...) }
	c, err := ln.Accept()
	if err != nil {
		fail("accept: %v", err)
		return
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(20 * time.Second))

	// SSLRequest: length 8, code 80877103.
	var req [8]byte
	if _, err := io.ReadFull(c, req[:]); err != nil || binary.BigEndian.Uint32(req[4:]) != 80877103 {
		fail("no SSLRequest: %v %x", err, req)
		return
	}
	c.Write([]byte{'S'})
	tc := tls.Server(c, &tls.Config{Certificates: []tls.Certificate{cert.tls}, MinVersion: tls.VersionTLS13})
	if err := tc.Handshake(); err != nil {
		fail("TLS: %v", err)
		return
	}
	cs := tc.ConnectionState()
	res.serverCB, err = ConnState{TLS: &cs, Certificate: cert.leaf}.bindingData(TLSServerEndPoint)
	if err != nil {
		fail("no tls-server-end-point for this certificate: %v", err)
		return
	}
	rd := bufio.NewReader(tc)

	// StartupMessage: length, version 3.0, then key/value pairs.
	if _, err := readPGMessage(rd, false); err != nil {
		fail("startup: %v", err)
		return
	}
	writePGAuth(tc, 10, []byte("SCRAM-SHA-256-PLUS\x00SCRAM-SHA-256\x00\x00")) // AuthenticationSASL

	body, err := readPGMessage(rd, true) // SASLInitialResponse
	if err != nil {
		fail("SASLInitialResponse: %v", err)
		return
	}
	mech, rest, _ := bytes.Cut(body, []byte{0})
	if string(mech) != string(SHA256Plus) || len(rest) < 4 {
		fail("psql chose %q", mech)
		return
	}
	clientFirst := rest[4:]
	first, _, _ := strings.Cut(string(clientFirst), ",n=")
	res.gs2Header = first + ","

	xs, _ := scram.SHA256.NewServer(func(string) (StoredCredentials, error) { return keys, nil })
	conv := xs.NewConversationWithChannelBindingRequired(scram.ChannelBinding{Type: scram.ChannelBindingTLSServerEndpoint, Data: res.serverCB})
	serverFirst, err := conv.Step(string(clientFirst))
	if err != nil {
		fail("client-first %q: %v", clientFirst, err)
		return
	}
	writePGAuth(tc, 11, []byte(serverFirst)) // AuthenticationSASLContinue

	clientFinal, err := readPGMessage(rd, true) // SASLResponse
	if err != nil {
		fail("SASLResponse: %v", err)
		return
	}
	if c, ok := strings.CutPrefix(strings.Split(string(clientFinal), ",")[0], "c="); ok {
		cb, _ := base64.StdEncoding.DecodeString(c)
		res.clientCB = bytes.TrimPrefix(cb, []byte(res.gs2Header))
	}
	serverFinal, err := conv.Step(string(clientFinal))
	if err != nil {
		fail("client-final: %s (%v)", serverFinal, errors.Unwrap(err))
		return
	}
	writePGAuth(tc, 12, []byte(serverFinal)) // AuthenticationSASLFinal
	writePGAuth(tc, 0, nil)                  // AuthenticationOk
	writePGMessage(tc, 'S', []byte("server_version\x0015.0\x00"))
	writePGMessage(tc, 'Z', []byte{'I'}) // ReadyForQuery, idle
	for {
		typ, err := rd.ReadByte()
		if err != nil {
			return // psql left without Terminate: res.terminated stays false
		}
		if _, err := readPGBody(rd); err != nil {
			return
		}
		if typ == 'X' {
			res.terminated = true
			return
		}
	}
}

// readPGMessage reads one frontend message: a type byte (none for the
// startup message), a length that counts itself, the body.
func readPGMessage(rd *bufio.Reader, typed bool) ([]byte, error) {
	if typed {
		if _, err := rd.ReadByte(); err != nil {
			return nil, err
		}
	}
	return readPGBody(rd)
}

func readPGBody(rd *bufio.Reader) ([]byte, error) {
	var n [4]byte
	if _, err := io.ReadFull(rd, n[:]); err != nil {
		return nil, err
	}
	size := int(binary.BigEndian.Uint32(n[:])) - 4
	if size < 0 || size > 1<<16 {
		return nil, fmt.Errorf("message length %d", size)
	}
	body := make([]byte, size)
	_, err := io.ReadFull(rd, body)
	return body, err
}

func writePGMessage(w io.Writer, typ byte, body []byte) {
	msg := []byte{typ, 0, 0, 0, 0}
	binary.BigEndian.PutUint32(msg[1:], uint32(4+len(body)))
	w.Write(append(msg, body...))
}

// writePGAuth writes an Authentication message of the given code.
func writePGAuth(w io.Writer, code uint32, data []byte) {
	body := binary.BigEndian.AppendUint32(nil, code)
	writePGMessage(w, 'R', append(body, data...))
}
