package proxy

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/imapgate/imapgate/auth/credstore"
	"github.com/imapgate/imapgate/proxy/internal/imapwire"
	"github.com/imapgate/imapgate/tlsconf"
)

// The CPU time of one login, per mechanism (README "Performance"): the
// proxy's own work for a client that connects over implicit TLS (a full
// handshake, no resumption), authenticates and logs out, with an upstream
// that answers at once. The client and the upstream run in a child process
// (this test binary again, TestLoginCPUChild), so the process's CPU time
// (getrusage) is the proxy's alone: the client's handshake and its SCRAM
// key derivation are not counted, nor the upstream's work.
//
//	go test -run '^$' -bench LoginCPU -benchtime 2000x ./proxy/

// loginCPUCase is one way of logging in: what the proxy is configured
// with, and what the child client sends.
type loginCPUCase struct {
	name string
	// configure sets up the proxy's side: mechanisms, verifiers,
	// stores. It returns the environment the child client needs
	// (IMAPGATE_LOGINCPU_*).
	configure func(b *testing.B, cfg *Config) []string
}

var loginCPUCases = []loginCPUCase{
	{name: "PLAIN-passthrough", configure: func(*testing.B, *Config) []string {
		return []string{"IMAPGATE_LOGINCPU_IR=" + plainIR(testUser, testPass)}
	}},
	{name: "PLAIN-app-password", configure: func(b *testing.B, cfg *Config) []string {
		store, err := credstore.OpenBolt(filepath.Join(b.TempDir(), "credentials.db"), credstore.Options{})
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { store.Close() })
		_, secret, err := store.AddAppPassword(context.Background(), credstore.NewAppPassword{User: testUser, Label: "phone"})
		if err != nil {
			b.Fatal(err)
		}
		cfg.AppPasswords = store
		return []string{"IMAPGATE_LOGINCPU_IR=" + plainIR(testUser, secret.Reveal())}
	}},
}

func BenchmarkLoginCPU(b *testing.B) {
	for _, c := range loginCPUCases {
		b.Run(c.name, func(b *testing.B) { benchLoginCPU(b, c) })
	}
}

func benchLoginCPU(b *testing.B, c loginCPUCase) {
	cert, certPEM, err := tlsconf.SelfSigned(time.Hour, "localhost", "127.0.0.1")
	if err != nil {
		b.Fatal(err)
	}
	store, err := tlsconf.LoadCertStore()
	if err != nil {
		b.Fatal(err)
	}
	store.Add(cert)
	upLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	upFile, err := upLn.(*net.TCPListener).File()
	if err != nil {
		b.Fatal(err)
	}
	defer upFile.Close()
	cfg := &Config{
		Upstream: &Upstream{Address: upLn.Addr().String(), TLS: UpstreamPlaintext, Master: &MasterLogin{User: "master", Secret: NewSecret("master-secret")}},
		Audit:    NewAuditor(discard{}, nil),
	}
	upLn.Close() // the child serves it, from upFile
	env := c.configure(b, cfg)
	srv := NewServer(cfg)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	go srv.Serve(ln, Listener{Name: "implicit", Mode: TLSImplicit, TLSConfig: tlsconf.ServerConfig(store, 0)})
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
	}()
	caFile := b.TempDir() + "/ca.pem"
	if err := os.WriteFile(caFile, certPEM, 0o600); err != nil {
		b.Fatal(err)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestLoginCPUChild$", "-test.count=1")
	cmd.Env = append(os.Environ(), env...)
	cmd.Env = append(cmd.Env,
		"IMAPGATE_LOGINCPU_CHILD=1",
		"IMAPGATE_LOGINCPU_PROXY="+ln.Addr().String(),
		"IMAPGATE_LOGINCPU_CA="+caFile,
		"IMAPGATE_LOGINCPU_N="+strconv.Itoa(b.N))
	cmd.ExtraFiles = []*os.File{upFile} // fd 3 in the child
	cmd.Stderr = os.Stderr
	before := cpuTime(b)
	b.ResetTimer()
	out, err := cmd.Output()
	b.StopTimer()
	used := cpuTime(b) - before
	if err != nil || !strings.Contains(string(out), "logins ok") {
		b.Fatalf("child client: %v\n%s", err, out)
	}
	b.ReportMetric(float64(used.Microseconds())/float64(b.N), "cpu-µs/login")
}

// cpuTime is the process's user and system CPU time so far.
func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }

// TestLoginCPUChild is the client and the upstream of BenchmarkLoginCPU,
// run in a child process; it does nothing in a normal test run.
func TestLoginCPUChild(t *testing.T) {
	if os.Getenv("IMAPGATE_LOGINCPU_CHILD") != "1" {
		t.Skip("the child process of BenchmarkLoginCPU")
	}
	ln, err := net.FileListener(os.NewFile(3, "upstream"))
	if err != nil {
		t.Fatal(err)
	}
	go serveInstantUpstream(ln)
	n, _ := strconv.Atoi(os.Getenv("IMAPGATE_LOGINCPU_N"))
	pem, err := os.ReadFile(os.Getenv("IMAPGATE_LOGINCPU_CA"))
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(pem)
	tc := &tls.Config{RootCAs: roots, ServerName: "localhost"}
	if f := os.Getenv("IMAPGATE_LOGINCPU_CLIENT_CERT"); f != "" {
		pair, err := tls.LoadX509KeyPair(f, os.Getenv("IMAPGATE_LOGINCPU_CLIENT_KEY"))
		if err != nil {
			t.Fatal(err)
		}
		tc.Certificates = []tls.Certificate{pair}
	}
	mech := os.Getenv("IMAPGATE_LOGINCPU_MECH")
	if mech == "" {
		mech = "PLAIN"
	}
	for i := range n {
		if err := childLogin(os.Getenv("IMAPGATE_LOGINCPU_PROXY"), tc, mech, os.Getenv("IMAPGATE_LOGINCPU_IR")); err != nil {
			t.Fatalf("login %d: %v", i, err)
		}
	}
	fmt.Println("logins ok")
}

// childLogin connects, authenticates with mech and the initial response
// ir (base64), and logs out.
func childLogin(addr string, tc *tls.Config, mech, ir string) error {
	conn, err := tls.Dial("tcp", addr, tc)
	if err != nil {
		return err
	}
	defer conn.Close()
	r := bufio.NewReader(conn)
	if _, err := imapwire.ReadLine(r, 4096); err != nil {
		return fmt.Errorf("greeting: %w", err)
	}
	if _, err := fmt.Fprintf(conn, "a AUTHENTICATE %s %s\r\n", mech, ir); err != nil {
		return err
	}
	for {
		line, err := imapwire.ReadLine(r, 64<<10)
		if err != nil {
			return fmt.Errorf("AUTHENTICATE: %w", err)
		}
		if strings.HasPrefix(string(line), "a OK") {
			break
		}
		if strings.HasPrefix(string(line), "a ") {
			return fmt.Errorf("AUTHENTICATE: %s", line)
		}
		if strings.HasPrefix(string(line), "+") { // a challenge the case cannot answer
			return fmt.Errorf("unexpected challenge %q", line)
		}
	}
	if _, err := conn.Write([]byte("b LOGOUT\r\n")); err != nil {
		return err
	}
	for {
		line, err := imapwire.ReadLine(r, 4096)
		if err != nil || strings.HasPrefix(string(line), "b ") {
			return nil
		}
	}
}

// serveInstantUpstream accepts every login at once: the upstream of
// BenchmarkLoginCPU, whose cost is not what is measured.
func serveInstantUpstream(ln net.Listener) {
	for {
		conn, err := ln.Accept()
		if err != nil {
			return
		}
		go instantUpstreamSession(conn)
	}
}

func instantUpstreamSession(conn net.Conn) {
	defer conn.Close()
	r := bufio.NewReader(conn)
	w := bufio.NewWriter(conn)
	w.WriteString("* OK [CAPABILITY IMAP4rev1 SASL-IR AUTH=PLAIN ID] ready\r\n")
	w.Flush()
	for {
		line, err := imapwire.ReadLine(r, 64<<10)
		if err != nil {
			return
		}
		tag, rest, _ := strings.Cut(string(line), " ")
		verb, _, _ := strings.Cut(rest, " ")
		switch strings.ToUpper(verb) {
		case "CAPABILITY":
			w.WriteString("* CAPABILITY IMAP4rev1 SASL-IR AUTH=PLAIN ID IDLE\r\n" + tag + " OK done\r\n")
		case "AUTHENTICATE", "LOGIN":
			w.WriteString(tag + " OK [CAPABILITY IMAP4rev1 IDLE MOVE] logged in\r\n")
		case "LOGOUT":
			w.WriteString("* BYE bye\r\n" + tag + " OK done\r\n")
			w.Flush()
			return
		case "ID":
			w.WriteString("* ID NIL\r\n" + tag + " OK done\r\n")
		default:
			w.WriteString(tag + " OK done\r\n")
		}
		w.Flush()
	}
}

// encodeIR is a SASL-IR initial response for msg (RFC 4959).
func encodeIR(msg string) string {
	if msg == "" {
		return "="
	}
	return base64.StdEncoding.EncodeToString([]byte(msg))
}
