package scram

import (
	"bufio"
	"context"
	"crypto/elliptic"
	"crypto/tls"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// requireTool skips the test when a program it drives is missing, or
// fails it when CI=true, where .ci/run installed them all (as
// proxy/proxytest's RequireTool does).
func requireTool(t *testing.T, name, why string) {
	t.Helper()
	if _, err := exec.LookPath(name); err == nil {
		return
	}
	msg := fmt.Sprintf("%s not installed (%s): run .ci/run, it installs the tools the tests use", name, why)
	switch strings.ToLower(os.Getenv("CI")) {
	case "true", "1", "yes":
		t.Fatal(msg)
	}
	t.Skip(msg)
}

// imapResponder is just enough of an IMAP server (RFC 9051) for one
// STARTTLS and one AUTHENTICATE (RFC 4959) run by an Exchange: greeting,
// CAPABILITY, STARTTLS, AUTHENTICATE, LOGOUT.
type imapResponder struct {
	ln      net.Listener
	srv     *Server
	cert    testCert
	version uint16 // the only TLS version the responder speaks
	result  chan imapResult
}

type imapResult struct {
	mech     Mechanism
	outcome  outcome
	loggedIn bool // the tagged OK was sent
	logout   bool // and the client went on to LOGOUT
}

func startIMAPResponder(t *testing.T, srv *Server, cert testCert, version uint16) *imapResponder {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &imapResponder{ln: ln, srv: srv, cert: cert, version: version, result: make(chan imapResult, 1)}
	t.Cleanup(func() { ln.Close() })
	go r.serve()
	return r
}

func (r *imapResponder) serve() {
	var res imapResult
	defer func() { r.result <- res }()
	c, err := r.ln.Accept()
	if err != nil {
		res.outcome.err = err
		return
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(20 * time.Second))
	var conn net.Conn = c
	var state ConnState
	rd := bufio.NewReader(conn)
	capabilities := func() string {
		if state.TLS == nil {
			return "IMAP4rev1 STARTTLS LOGINDISABLED"
		}
		caps := "IMAP4rev1 AUTH=SCRAM-SHA-256"
		if state.OffersPlus() {
			caps += " AUTH=SCRAM-SHA-256-PLUS"
		}
		return caps
	}
	fmt.Fprintf(conn, "* OK [CAPABILITY %s] test responder\r\n", capabilities())
	for {
		line, err := rd.ReadString('\n')
		if err != nil {
			if res.outcome.err == nil && !res.loggedIn {
				res.outcome.err = fmt.Errorf("responder: %w", err)
			}
			return
		}
		f := strings.Fields(line)
		if len(f) < 2 {
			fmt.Fprintf(conn, "* BAD no command\r\n")
			continue
		}
		tag, cmd := f[0], strings.ToUpper(f[1])
		switch {
		case cmd == "CAPABILITY":
			fmt.Fprintf(conn, "* CAPABILITY %s\r\n%s OK done\r\n", capabilities(), tag)
		case cmd == "STARTTLS" && state.TLS == nil:
			fmt.Fprintf(conn, "%s OK begin TLS\r\n", tag)
			tc := tls.Server(c, &tls.Config{Certificates: []tls.Certificate{r.cert.tls}, MinVersion: r.version, MaxVersion: r.version})
			if err := tc.Handshake(); err != nil {
				res.outcome.err = fmt.Errorf("responder: TLS handshake: %w", err)
				return
			}
			cs := tc.ConnectionState()
			state = ConnState{TLS: &cs, Certificate: r.cert.leaf}
			conn, rd = tc, bufio.NewReader(tc)
		case cmd == "AUTHENTICATE" && len(f) >= 3:
			res.mech = Mechanism(strings.ToUpper(f[2]))
			res.outcome = r.authenticate(conn, rd, res.mech, state, f[3:])
			if res.outcome.err != nil {
				fmt.Fprintf(conn, "%s NO [AUTHENTICATIONFAILED] authentication failed\r\n", tag)
				return
			}
			res.loggedIn = true
			fmt.Fprintf(conn, "%s OK [CAPABILITY IMAP4rev1] logged in\r\n", tag)
		case cmd == "LOGOUT":
			res.logout = true
			fmt.Fprintf(conn, "* BYE\r\n%s OK done\r\n", tag)
			return
		default:
			fmt.Fprintf(conn, "%s BAD not in this test\r\n", tag)
		}
	}
}

// authenticate runs one AUTHENTICATE: initial response or "+ ", then
// challenges until the Exchange is done; the server-final message goes as
// a last challenge whose (empty) answer precedes the tagged OK.
func (r *imapResponder) authenticate(conn net.Conn, rd *bufio.Reader, mech Mechanism, state ConnState, ir []string) outcome {
	x, err := r.srv.NewExchange(mech, state, ExchangeOptions{})
	if err != nil {
		return outcome{err: err}
	}
	ctx := context.Background()
	readResponse := func() ([]byte, error) {
		line, err := rd.ReadString('\n')
		if err != nil {
			return nil, err
		}
		line = strings.TrimRight(line, "\r\n")
		if line == "*" {
			return nil, errors.New("client cancelled")
		}
		return base64.StdEncoding.DecodeString(line)
	}
	var msg []byte
	if len(ir) > 0 && ir[0] != "=" {
		if msg, err = base64.StdEncoding.DecodeString(ir[0]); err != nil {
			return outcome{err: err}
		}
	}
	for {
		out, done, err := x.Step(ctx, msg)
		if err != nil {
			return outcome{x.Identity(), err}
		}
		fmt.Fprintf(conn, "+ %s\r\n", base64.StdEncoding.EncodeToString(out))
		if msg, err = readResponse(); err != nil {
			return outcome{x.Identity(), fmt.Errorf("responder: %w", err)}
		}
		if done {
			if len(msg) != 0 {
				return outcome{x.Identity(), errors.New("responder: non-empty answer to the server-final message")}
			}
			return outcome{x.Identity(), nil}
		}
	}
}

// runGsasl logs in as login with password through GNU SASL's command-line
// client, IMAP with STARTTLS, trusting the responder's certificate.
// extra are more options (-m MECH, --priority ...).
func runGsasl(t *testing.T, port string, cert testCert, login, password string, extra ...string) (string, error) {
	t.Helper()
	ca := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.leaf.Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	args := append([]string{"--client", "--imap", "--starttls", "--x509-ca-file=" + ca, "--hostname=localhost",
		"--connect=127.0.0.1:" + port, "-a", login, "-p", password}, extra...)
	cmd := exec.CommandContext(ctx, "gsasl", args...)
	cmd.Stdin = strings.NewReader("")
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// TestGsaslLogsInWithSCRAMSHA256Plus is the exchange against another
// implementation: GNU SASL's gsasl (with GnuTLS), over IMAP STARTTLS. On
// TLS 1.3 it binds with tls-exporter; on TLS 1.2 it sends tls-unique
// (gsasl 2.2.0 knows no tls-server-end-point: TestLibpqAgreesOnTLSServerEndPoint
// has another implementation of it). A client that gets the server's
// signature right goes on to LOGOUT.
//
// gsasl cannot show the downgrade check: when it holds channel-binding
// data it refuses plain SCRAM-SHA-256 on its own ("mechanism error")
// before sending anything, so it never sends "y"; xdg-go's client does
// (TestClientThatCouldBindButSawNoPlusIsRefusedAsDowngrade).
func TestGsaslLogsInWithSCRAMSHA256Plus(t *testing.T) {
	requireTool(t, "gsasl", "Debian's gsasl")
	store := newMemStore(t, map[string]string{alice: alicePassword})
	srv := newTestServer(t, store, Options{})
	cert := ecdsaCert(t, elliptic.P256(), 0)
	for _, tc := range []struct {
		name     string
		version  uint16
		password string
		extra    []string
		mech     Mechanism
		binding  BindingType
		reason   string // "" for success
	}{
		{"TLS 1.3, tls-exporter", tls.VersionTLS13, alicePassword, []string{"-m", "SCRAM-SHA-256-PLUS"}, SHA256Plus, TLSExporter, ""},
		{"TLS 1.3, the mechanism gsasl picks itself", tls.VersionTLS13, alicePassword, nil, SHA256Plus, TLSExporter, ""},
		{"TLS 1.3, a wrong password", tls.VersionTLS13, "k3f9-x2ab-7hmq-4r8s-w2zt-9cdu-6vnz", []string{"-m", "SCRAM-SHA-256-PLUS"}, SHA256Plus, TLSExporter, ReasonBadProof},
		{"TLS 1.3, without channel binding", tls.VersionTLS13, alicePassword, []string{"-m", "SCRAM-SHA-256", "--no-cb"}, SHA256, "", ""},
		{"TLS 1.2 with the extended master secret, tls-unique", tls.VersionTLS12, alicePassword, []string{"-m", "SCRAM-SHA-256-PLUS"}, SHA256Plus, TLSUnique, ""},
		// Without the extended master secret tls-unique is open to the
		// triple handshake (RFC 7627): not offered, so refused.
		{"TLS 1.2 without the extended master secret, tls-unique", tls.VersionTLS12, alicePassword, []string{"-m", "SCRAM-SHA-256-PLUS", "--priority=NORMAL:%NO_SESSION_HASH"}, SHA256Plus, TLSUnique, ReasonChannelBindingMismatch},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := startIMAPResponder(t, srv, cert, tc.version)
			_, port, _ := net.SplitHostPort(r.ln.Addr().String())
			out, err := runGsasl(t, port, cert, alice, tc.password, tc.extra...)
			res := <-r.result
			if res.mech != tc.mech || res.outcome.id.Binding != tc.binding {
				t.Fatalf("gsasl used %s with binding %q, want %s with %q; it said:\n%s", res.mech, res.outcome.id.Binding, tc.mech, tc.binding, out)
			}
			if Reason(res.outcome.err) != tc.reason {
				t.Fatalf("server: %v (reason %q), want reason %q; gsasl said:\n%s", res.outcome.err, Reason(res.outcome.err), tc.reason, out)
			}
			if ok := tc.reason == ""; ok != (err == nil && res.loggedIn && res.logout) {
				t.Fatalf("gsasl exit %v, logged in %v, logged out %v; want success %v; it said:\n%s", err, res.loggedIn, res.logout, ok, out)
			}
			if res.outcome.id.Login != alice {
				t.Fatalf("login %q, want %q", res.outcome.id.Login, alice)
			}
			if strings.Contains(out, tc.password) {
				t.Fatal("gsasl printed the password")
			}
		})
	}
}
