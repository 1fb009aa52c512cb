package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

var (
	benchOnce sync.Once
	benchBin  string
	benchErr  error
)

// imapbenchBinary builds cmd/imapbench once per test run: its upstream
// subcommand is the in-memory IMAP server in a process of its own.
func imapbenchBinary(t *testing.T) string {
	t.Helper()
	benchOnce.Do(func() {
		dir := filepath.Dir(imapgateBinary(t)) // removed by TestMain
		benchBin = filepath.Join(dir, "imapbench")
		if out, err := exec.Command("go", "build", "-o", benchBin, "../imapbench").CombinedOutput(); err != nil {
			benchErr = fmt.Errorf("go build ../imapbench: %v\n%s", err, out)
		}
	})
	if benchErr != nil {
		t.Fatal(benchErr)
	}
	return benchBin
}

// idlePhone is one logged-in session in IDLE, read until the proxy
// closes it.
type idlePhone struct {
	conn   *tls.Conn
	sniff  *alertSniffer
	r      *bufio.Reader
	bye    bool          // an untagged BYE arrived
	clean  bool          // the stream ended with a TLS alert (close_notify) and then io.EOF
	err    error         // how it ended otherwise
	closed time.Duration // after SIGTERM
}

// openIdlePhone logs in as user, selects INBOX and starts IDLE.
func openIdlePhone(g *floodGate, src net.IP, user string) (*idlePhone, error) {
	raw, err := dialSource(context.Background(), src, g.implicit)
	if err != nil {
		return nil, err
	}
	raw.SetDeadline(time.Now().Add(60 * time.Second))
	// TLS 1.2, whose record headers show an alert: TLS 1.3 encrypts the
	// record type, and crypto/tls reads a clean TCP end as io.EOF too.
	sniff := &alertSniffer{Conn: raw}
	c := tls.Client(sniff, &tls.Config{RootCAs: g.roots, ServerName: "localhost", MaxVersion: tls.VersionTLS12})
	p := &idlePhone{conn: c, sniff: sniff, r: bufio.NewReaderSize(c, 1024)}
	expect := func(prefix string) error {
		for {
			line, err := p.r.ReadString('\n')
			if err != nil {
				return fmt.Errorf("waiting for %q: %w", prefix, err)
			}
			if strings.HasPrefix(line, prefix) {
				return nil
			}
			if tag, _, _ := strings.Cut(prefix, " "); tag != "*" && tag != "+" && strings.HasPrefix(line, tag+" ") {
				return fmt.Errorf("got %q, want %q", line, prefix)
			}
		}
	}
	steps := []struct{ send, want string }{
		{"", "* OK"},
		{"a AUTHENTICATE PLAIN " + plainIR(user, benchPassword), "a OK"},
		{"b SELECT INBOX", "b OK"},
		{"c IDLE", "+"},
	}
	for _, st := range steps {
		if st.send != "" {
			if _, err := io.WriteString(c, st.send+"\r\n"); err != nil {
				raw.Close()
				return nil, err
			}
		}
		if err := expect(st.want); err != nil {
			raw.Close()
			return nil, err
		}
	}
	raw.SetDeadline(time.Time{})
	return p, nil
}

// readToEnd reads what the proxy sends until the connection ends.
func (p *idlePhone) readToEnd(sigterm *atomic.Int64) {
	p.conn.SetReadDeadline(time.Now().Add(2 * time.Minute))
	for {
		line, err := p.r.ReadString('\n')
		if strings.HasPrefix(line, "* BYE") {
			p.bye = true
		}
		if err != nil {
			p.closed = time.Since(time.Unix(0, sigterm.Load()))
			p.clean = errors.Is(err, io.EOF) && p.sniff.alerts == 1
			if !p.clean {
				p.err = fmt.Errorf("%w after %d alerts", err, p.sniff.alerts)
			}
			p.conn.Close()
			return
		}
	}
}

// TestSIGTERMClosesIdleSessionsCleanlyWithinShutdownTimeout: imapgate serve
// in its own process holds 9,500 phones in IDLE (through an in-memory
// upstream in a third process: 19,000 descriptors in the proxy); SIGTERM
// gives every one of them an untagged BYE and a TLS close_notify, all
// within shutdown_timeout, and the process exits 0.
func TestSIGTERMClosesIdleSessionsCleanlyWithinShutdownTimeout(t *testing.T) {
	if testing.Short() {
		t.Skip("9,500 sessions: about a minute")
	}
	const sessions = 9_500
	const shutdownTimeout = 30 * time.Second // the default
	g := startFloodGate(t, "")

	phones := make([]*idlePhone, sessions)
	var next, failed atomic.Int64
	var firstErr atomic.Value
	var wg sync.WaitGroup
	start := time.Now()
	for range 32 {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= sessions {
					return
				}
				p, err := openIdlePhone(g, hostileSource(i), fmt.Sprintf("user%d", 1+i%100))
				if err != nil {
					failed.Add(1)
					firstErr.CompareAndSwap(nil, err)
					continue
				}
				phones[i] = p
			}
		})
	}
	wg.Wait()
	t.Logf("%d sessions in IDLE in %v", sessions-int(failed.Load()), time.Since(start).Round(time.Millisecond))
	if f := failed.Load(); f > 0 {
		for _, p := range phones {
			if p != nil {
				p.conn.Close()
			}
		}
		t.Fatalf("%d of %d sessions did not reach IDLE: %v", f, sessions, firstErr.Load())
	}
	rss := rssKiB(t, g.pid())
	// Phones idle for longer than the relay's 2 s before it parks them, as
	// they do for most of their 29 minutes of IDLE.
	time.Sleep(3 * time.Second)

	var sigterm atomic.Int64
	for _, p := range phones {
		wg.Go(func() { p.readToEnd(&sigterm) })
	}
	sigterm.Store(time.Now().UnixNano())
	exited := g.proc.stop()
	wg.Wait()

	var last time.Duration
	var noBye, notClean int
	var example error
	for _, p := range phones {
		last = max(last, p.closed)
		if !p.bye {
			noBye++
		}
		if !p.clean {
			notClean++
			example = cmpOr(example, p.err)
		}
	}
	t.Logf("SIGTERM with %d idle sessions (proxy RSS %d KiB): last session closed after %v, process exited after %v; %d without BYE, %d without close_notify",
		sessions, rss, last.Round(time.Millisecond), exited.Round(time.Millisecond), noBye, notClean)
	if g.proc.err != nil {
		t.Errorf("imapgate serve exited with %v after SIGTERM:\n%s", g.proc.err, tail(g.proc.out.String(), 3000))
	}
	if last > shutdownTimeout || exited > shutdownTimeout {
		t.Errorf("the last session closed %v and the process exited %v after SIGTERM, want both within shutdown_timeout (%v)", last, exited, shutdownTimeout)
	}
	if noBye > 0 {
		t.Errorf("%d of %d idle sessions got no * BYE", noBye, sessions)
	}
	if notClean > 0 {
		t.Errorf("%d of %d sessions ended without TLS close_notify (%v)", notClean, sessions, example)
	}
	ends := auditReasons(t, g.auditFile, "session_end")
	if ends["shutdown"] != sessions {
		t.Errorf("session_end reasons %v, want %d shutdown", ends, sessions)
	}
}

// alertSniffer counts the TLS alert records (type 21) that arrive,
// following the record headers of the raw stream. Under TLS 1.2 a
// close_notify is such a record; an idle session gets no other.
type alertSniffer struct {
	net.Conn
	hdr    [5]byte
	have   int // header bytes collected
	left   int // body bytes of the current record still to come
	alerts int
}

func (a *alertSniffer) Read(p []byte) (int, error) {
	n, err := a.Conn.Read(p)
	for b := p[:n]; len(b) > 0; {
		if a.left > 0 {
			k := min(a.left, len(b))
			a.left -= k
			b = b[k:]
			continue
		}
		a.hdr[a.have] = b[0]
		a.have++
		b = b[1:]
		if a.have == len(a.hdr) {
			if a.hdr[0] == 21 {
				a.alerts++
			}
			a.left = int(a.hdr[3])<<8 | int(a.hdr[4])
			a.have = 0
		}
	}
	return n, err
}

// cmpOr returns the first non-nil error.
func cmpOr(errs ...error) error {
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}
