package tlsconf

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// noCA is a CA directory nobody serves: tests that must never obtain a
// certificate point there, so a mistake fails fast on loopback.
const noCA = "https://127.0.0.1:1/directory"

// loopbackDNS is a DNS server on loopback (TCP, as Pebble asks) that
// answers every A query with 127.0.0.1 and no AAAA, so Pebble's
// validation of any name reaches a responder on 127.0.0.1.
func loopbackDNS(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &dns.Server{Listener: ln, Handler: dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(r)
		if q := r.Question[0]; q.Qtype == dns.TypeA {
			m.Answer = append(m.Answer, &dns.A{Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 60}, A: net.IPv4(127, 0, 0, 1)})
		}
		w.WriteMsg(m)
	})}
	started := make(chan struct{})
	srv.NotifyStartedFunc = func() { close(started) }
	go srv.ActivateAndServe()
	<-started
	t.Cleanup(func() { srv.Shutdown() })
	return ln.Addr().String()
}

// flakyListener fails its first Fail accepts with Err, as a process out
// of descriptors sees them, then accepts for real. It counts the
// connections it handed out that are still open.
type flakyListener struct {
	net.Listener
	Fail int
	Err  syscall.Errno

	mu                     sync.Mutex
	failed, accepted, open int
	maxOpen                int
}

func (l *flakyListener) Accept() (net.Conn, error) {
	l.mu.Lock()
	if l.failed < l.Fail {
		l.failed++
		l.mu.Unlock()
		return nil, &net.OpError{Op: "accept", Net: "tcp", Addr: l.Addr(), Err: os.NewSyscallError("accept4", l.Err)}
	}
	l.mu.Unlock()
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	l.mu.Lock()
	l.accepted++
	l.open++
	l.maxOpen = max(l.maxOpen, l.open)
	l.mu.Unlock()
	return &countedConn{Conn: c, l: l}, nil
}

func (l *flakyListener) counts() (failed, accepted, maxOpen int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.failed, l.accepted, l.maxOpen
}

type countedConn struct {
	net.Conn
	l    *flakyListener
	once sync.Once
}

func (c *countedConn) Close() error {
	c.once.Do(func() {
		c.l.mu.Lock()
		c.l.open--
		c.l.mu.Unlock()
	})
	return c.Conn.Close()
}

// logLines parses the JSON lines written so far.
func logLines(t *testing.T, w *syncWriter) []map[string]any {
	t.Helper()
	w.mu.Lock()
	text := w.w.(*strings.Builder).String()
	w.mu.Unlock()
	var out []map[string]any
	sc := bufio.NewScanner(strings.NewReader(text))
	for sc.Scan() {
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatalf("log line not JSON: %q", sc.Text())
		}
		out = append(out, m)
	}
	return out
}

// withMsg returns the lines whose msg is msg.
func withMsg(lines []map[string]any, msg string) []map[string]any {
	var out []map[string]any
	for _, l := range lines {
		if l["msg"] == msg {
			out = append(out, l)
		}
	}
	return out
}

// accountedFor is how many events lines stand for: one for each line
// written for an event, and the count of each line that says how many it
// left out.
func accountedFor(lines []map[string]any) int {
	n := 0
	for _, l := range lines {
		if s, ok := l["suppressed"].(float64); ok {
			n += int(s)
		} else {
			n++
		}
	}
	return n
}

// TestChallengeResponderOutlastsAcceptErrors: the challenge listener fails
// its first accepts as a process out of descriptors (EMFILE) or buffers
// (ENOBUFS, which net/http's own loop gives up on) does; the responder
// backs off, goes on, and the CA's real validation of the name is answered:
// Pebble, validating for real against the responder, issues the
// certificate. One log line says so, and Close adds the count of the
// retries left out.
func TestChallengeResponderOutlastsAcceptErrors(t *testing.T) {
	for _, tt := range []struct {
		challenge string
		err       syscall.Errno
	}{
		{ChallengeTLSALPN, syscall.EMFILE},
		{ChallengeHTTP, syscall.ENOBUFS},
	} {
		t.Run(tt.challenge, func(t *testing.T) {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			flaky := &flakyListener{Listener: ln, Fail: 3, Err: tt.err}
			v := &pebbleVA{DNS: loopbackDNS(t)}
			if tt.challenge == ChallengeHTTP {
				v.HTTPPort = ln.Addr().(*net.TCPAddr).Port
			} else {
				v.TLSPort = ln.Addr().(*net.TCPAddr).Port
			}
			dirURL, https, roots := inProcessPebbleValidating(t, v)
			logs := &syncWriter{w: &strings.Builder{}}
			name := "flaky-" + tt.challenge + ".responder.test"
			a, err := NewACME(ACMEOptions{
				Domains:         []string{name},
				CA:              dirURL,
				CARoots:         https,
				StorageDir:      filepath.Join(t.TempDir(), "acme"),
				Challenge:       tt.challenge,
				ChallengeListen: ln.Addr().String(),
				Log:             slog.New(slog.NewJSONHandler(logs, nil)),
			})
			if err != nil {
				t.Fatal(err)
			}
			a.listen = func(context.Context, string, string) (net.Listener, error) { return flaky, nil }
			if err := a.Start(context.Background()); err != nil {
				t.Fatal(err)
			}
			defer a.Close()

			cfg := a.ServerConfig(0)
			deadline := time.Now().Add(40 * time.Second)
			for {
				if _, err := pipeHandshake(cfg, name, roots); err == nil {
					break
				} else if time.Now().After(deadline) {
					failed, _, _ := flaky.counts()
					t.Fatalf("no certificate after %d failed accepts: %v (last failure: %v)", failed, err, a.Failure(name))
				}
				time.Sleep(50 * time.Millisecond)
			}
			if failed, accepted, _ := flaky.counts(); failed != 3 || accepted == 0 {
				t.Fatalf("%d accepts failed and %d succeeded; want 3, then the CA's", failed, accepted)
			}
			a.Close()
			lines := withMsg(logLines(t, logs), "ACME challenge responder: accept failed; retrying")
			if len(lines) != 2 || accountedFor(lines) != 3 || !strings.Contains(fmt.Sprint(lines[0]["err"]), tt.err.Error()) {
				t.Fatalf("accept failures logged as %v; want one line with the error, then one with suppressed 2", lines)
			}
		})
	}
}

// TestChallengeResponderHoldsItsConnectionCap: twelve peers connect to the
// TLS-ALPN-01 responder and send nothing. At most the cap (4 here) are
// served at once, each loses its slot after the connection timeout, every
// one is closed in the end, and a validation arriving after them is
// answered at once.
func TestChallengeResponderHoldsItsConnectionCap(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	flaky := &flakyListener{Listener: ln}
	a, err := NewACME(ACMEOptions{
		OnDemand:        &OnDemandPolicy{Allow: []string{"nothing.test"}},
		CA:              noCA,
		StorageDir:      filepath.Join(t.TempDir(), "acme"),
		ChallengeListen: ln.Addr().String(),
		Log:             slog.New(slog.NewJSONHandler(io.Discard, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	a.listen = func(context.Context, string, string) (net.Listener, error) { return flaky, nil }
	a.maxChalConns = 4
	a.chalTimeout = 300 * time.Millisecond
	if err := a.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer a.Close()

	const peers = 12
	results := make(chan error, peers)
	for range peers {
		go func() {
			c, err := net.Dial("tcp", ln.Addr().String())
			if err != nil {
				results <- err
				return
			}
			defer c.Close()
			c.SetReadDeadline(time.Now().Add(20 * time.Second))
			_, err = io.Copy(io.Discard, c) // nil once the responder closes
			results <- err
		}()
	}
	for range peers {
		if err := <-results; err != nil && !errors.Is(err, syscall.ECONNRESET) {
			t.Fatalf("a silent peer was not closed by the responder: %v", err)
		}
	}
	if _, accepted, maxOpen := flaky.counts(); accepted != peers || maxOpen != 4 {
		t.Fatalf("%d peers accepted, at most %d at once; want %d, at most 4", accepted, maxOpen, peers)
	}

	c, err := net.DialTimeout("tcp", ln.Addr().String(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	err = tls.Client(c, &tls.Config{ServerName: "nothing-pending.test", NextProtos: []string{ACMEProtocol}, InsecureSkipVerify: true}).Handshake()
	var remote *net.OpError
	if !errors.As(err, &remote) || remote.Op != "remote error" {
		t.Fatalf("a validation after the flood: %v, want the responder's alert (no challenge pending)", err)
	}
}

// TestBogusHellosAndRefusedNamesLogBoundedLines: a flood of TLS-ALPN-01
// hellos for names with no challenge pending (on the responder and on a
// client-facing listener) and of On-Demand names that are refused (outside
// the allow-list, or not resolving) writes one line per kind while the
// flood lasts, and at Close one more per kind with the count left out;
// certmagic writes none of its own.
func TestBogusHellosAndRefusedNamesLogBoundedLines(t *testing.T) {
	logs := &syncWriter{w: &strings.Builder{}}
	a, err := NewACME(ACMEOptions{
		OnDemand:        &OnDemandPolicy{Allow: []string{".customers.test"}, Resolver: &zone{}},
		CA:              noCA,
		StorageDir:      filepath.Join(t.TempDir(), "acme"),
		ChallengeListen: "127.0.0.1:0",
		Log:             slog.New(slog.NewJSONHandler(logs, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	a.logEvery = time.Hour
	if err := a.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer a.Close()

	const flood = 100
	client := func(name string, protos ...string) *tls.Config {
		return &tls.Config{ServerName: name, NextProtos: protos, InsecureSkipVerify: true}
	}
	for i := range flood {
		c, err := net.DialTimeout("tcp", a.ChallengeAddr(), 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(5 * time.Second))
		if err := tls.Client(c, client(fmt.Sprintf("bogus%d.example.net", i), ACMEProtocol)).Handshake(); err == nil {
			t.Fatal("a bogus TLS-ALPN-01 hello got a certificate from the responder")
		}
		c.Close()
		for _, hello := range []*tls.Config{
			client(fmt.Sprintf("bogus-client%d.example.net", i), ACMEProtocol),
			client(fmt.Sprintf("evil%d.example.org", i), "imap"),
			client(fmt.Sprintf("x%d.customers.test", i), "imap"),
		} {
			if err := boundedHandshake(a.ServerConfig(0), hello); err == nil {
				t.Fatalf("%s got a certificate", hello.ServerName)
			}
		}
	}

	lines := logLines(t, logs)
	if len(lines) != 3 {
		t.Fatalf("%d log lines during a flood of %d hellos, want 3 (one per kind):\n%v", len(lines), 4*flood, lines)
	}
	a.Close()
	lines = logLines(t, logs)
	bogus := withMsg(lines, "TLS-ALPN-01 hello for a name with no challenge pending; refused")
	refused := withMsg(lines, "on-demand certificate refused")
	if len(bogus) != 2 || accountedFor(bogus) != 2*flood {
		t.Errorf("bogus hellos: %v; want 2 lines accounting for %d", bogus, 2*flood)
	}
	if len(refused) != 4 || accountedFor(refused) != 2*flood {
		t.Errorf("refused names: %v; want 4 lines accounting for %d", refused, 2*flood)
	}
	if len(lines) != len(bogus)+len(refused) {
		t.Errorf("other lines: %v", lines)
	}
}

// boundedHandshake runs a handshake over a pipe whose server side gives
// up after 3 seconds, even inside GetCertificate (a name that wrongly
// reached the CA would otherwise hold the test for certmagic's retries).
func boundedHandshake(server, client *tls.Config) error {
	c, s := net.Pipe()
	defer c.Close()
	defer s.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	done := make(chan struct{})
	go func() {
		defer close(done)
		if tls.Server(s, server).HandshakeContext(ctx) != nil {
			s.Close()
		}
	}()
	err := tls.Client(c, client).Handshake()
	c.Close()
	<-done
	return err
}

// TestRepeatLogAccountsForEveryLine: lines within an interval are counted,
// the interval's end writes the count with the latest line's attributes,
// and after a quiet interval the next line is written at once.
func TestRepeatLogAccountsForEveryLine(t *testing.T) {
	logs := &syncWriter{w: &strings.Builder{}}
	r := newRepeatLog(slog.New(slog.NewJSONHandler(logs, nil)), slog.LevelWarn, "noise", 50*time.Millisecond)
	for i := range 3 {
		r.Log("n", i)
	}
	var lines []map[string]any
	waitUntil(t, func() bool { lines = logLines(t, logs); return len(lines) >= 2 })
	if accountedFor(lines) != 3 || lines[0]["n"] != float64(0) || lines[len(lines)-1]["n"] != float64(2) {
		t.Fatalf("lines %v: want the first at once, then the count with the latest attributes", lines)
	}
	waitUntil(t, func() bool { r.mu.Lock(); defer r.mu.Unlock(); return r.timer == nil })
	r.Log("n", 3)
	if lines = logLines(t, logs); lines[len(lines)-1]["n"] != float64(3) {
		t.Fatalf("after a quiet interval the line waited: %v", lines)
	}
	r.Close()
	r.Log("n", 4)
	r.Close()
	if got := logLines(t, logs); len(got) != len(lines) {
		t.Fatalf("lines after Close: %v", got[len(lines):])
	}
}

// waitUntil polls cond for up to 5 seconds.
func waitUntil(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met in 5s")
		}
		time.Sleep(10 * time.Millisecond)
	}
}
