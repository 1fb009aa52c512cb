package main

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
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

	"github.com/imapgate/imapgate/proxy/proxytest"
)

// childProc is a process a test started and stops by its PID.
type childProc struct {
	cmd    *exec.Cmd
	out    *lockedBuffer
	exited chan struct{}
	err    error
}

// startChildProc starts argv with its output in a buffer; the cleanup
// stops it.
func startChildProc(t *testing.T, argv ...string) *childProc {
	t.Helper()
	c := &childProc{cmd: exec.Command(argv[0], argv[1:]...), out: &lockedBuffer{}, exited: make(chan struct{})}
	c.cmd.Stdout, c.cmd.Stderr = c.out, c.out
	if err := c.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go c.wait()
	t.Cleanup(func() { c.stop() })
	return c
}

// stop sends SIGTERM and waits for the exit, sending SIGKILL after 45 s
// (beyond any test's shutdown_timeout).
// It returns how long the process took to exit after SIGTERM.
func (c *childProc) stop() time.Duration {
	start := time.Now()
	c.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-c.exited:
	case <-time.After(45 * time.Second):
		c.cmd.Process.Kill()
		<-c.exited
	}
	return time.Since(start)
}

func (c *childProc) wait() {
	c.err = c.cmd.Wait()
	close(c.exited)
}

// waitListening waits until addr accepts a TCP connection, failing if
// the child exits first.
func (c *childProc) waitListening(t *testing.T, addr string, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		conn, err := net.Dial("tcp", addr)
		if err == nil {
			conn.Close()
			return
		}
		select {
		case <-c.exited:
			t.Fatalf("%s exited (%v): %s", c.cmd.Path, c.err, tail(c.out.String(), 4000))
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s did not listen on %s within %v: %s", c.cmd.Path, addr, within, tail(c.out.String(), 4000))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// cpuTicks returns the user and system clock ticks pid has used
// (/proc/PID/stat fields 14 and 15).
func cpuTicks(t *testing.T, pid int) int {
	t.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatal(err)
	}
	// The command name, field 2, is in parentheses and may hold spaces.
	fields := strings.Fields(string(data[strings.LastIndexByte(string(data), ')')+2:]))
	utime, _ := strconv.Atoi(fields[11])
	stime, _ := strconv.Atoi(fields[12])
	return utime + stime
}

// greetedTLS dials addr, completes TLS and reads the greeting, all
// within d.
func greetedTLS(addr string, roots *x509.CertPool, d time.Duration) (net.Conn, error) {
	conn, err := net.DialTimeout("tcp", addr, d)
	if err != nil {
		return nil, err
	}
	conn.SetDeadline(time.Now().Add(d))
	tc := tls.Client(conn, &tls.Config{RootCAs: roots, ServerName: "localhost"})
	line, err := bufio.NewReader(tc).ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "* OK") {
		conn.Close()
		return nil, fmt.Errorf("no greeting (%q): %w", line, err)
	}
	conn.SetDeadline(time.Time{})
	return tc, nil
}

// TestOutOfDescriptorsAcceptWaitsAndServesAgainAtOnce: imapgate serve,
// run with RLIMIT_NOFILE at 64 and max_connections far above it, is
// filled with pre-auth connections until accept fails with EMFILE. It
// does not spin (CPU while out of descriptors), keeps its listener, logs
// the run of failures once, counts it in imapgate_accept_errors_total,
// the session already relaying answers throughout, and a waiting client
// is served as soon as a session ends and frees a descriptor.
func TestOutOfDescriptorsAcceptWaitsAndServesAgainAtOnce(t *testing.T) {
	proxytest.RequireTool(t, "prlimit")
	bin := imapgateBinary(t)
	dir := t.TempDir()
	certFile, keyFile, certPEM := writeCertFiles(t, dir)
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(certPEM)
	ports := proxytest.FreePorts(t, 2)
	addr, metricsAddr := ports[0], ports[1]
	cfg := fmt.Sprintf(`shutdown_timeout = "2s"

[[listen]]
address = %q

[tls]
cert_file = %q
key_file = %q

[upstream]
address = %q
tls = "none"

[policy]
failure_delay = "0s"
max_connections = 20000
max_connections_per_ip = 0

[metrics]
listen = %q

[audit]
output = %q
`, addr, certFile, keyFile, startMemUpstream(t), metricsAddr, filepath.Join(dir, "audit.log"))
	path := filepath.Join(dir, "imapgate.toml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	const nofile = 64
	gate := startChildProc(t, "prlimit", fmt.Sprintf("--nofile=%d:%d", nofile, nofile), "--", bin, "serve", "--config", path)
	gate.waitListening(t, addr, 10*time.Second)
	pid := gate.cmd.Process.Pid // prlimit execs imapgate: same PID

	relayed, err := greetedTLS(addr, roots, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer relayed.Close()
	phone := &client{t: t, conn: relayed, r: bufio.NewReader(relayed)}
	phone.send("a AUTHENTICATE PLAIN " + plainIR(acmeUser, acmePassword))
	phone.expect("a OK")

	// Fill the proxy: every pre-auth connection holds one descriptor.
	var held []net.Conn
	defer func() {
		for _, c := range held {
			c.Close()
		}
	}()
	for len(held) < nofile {
		c, err := greetedTLS(addr, roots, time.Second)
		if err != nil {
			break // accept fails: this one waits in the listen backlog
		}
		held = append(held, c)
	}
	if len(held) == nofile {
		t.Fatalf("%d connections held and accept still works: the limit did not apply", len(held))
	}
	t.Logf("out of descriptors after %d pre-auth connections (RLIMIT_NOFILE %d)", len(held), nofile)

	// Out of descriptors for 3 s: the back-off reaches its 1 s ceiling.
	before := cpuTicks(t, pid)
	start := time.Now()
	for i := 0; time.Since(start) < 3*time.Second; i++ {
		phone.send(fmt.Sprintf("n%d NOOP", i))
		phone.expect(fmt.Sprintf("n%d OK", i))
		time.Sleep(250 * time.Millisecond)
	}
	ticks := cpuTicks(t, pid) - before
	t.Logf("CPU while out of descriptors: %d clock ticks in %v", ticks, time.Since(start).Round(time.Millisecond))
	if ticks > 30 { // 10% of a core at 100 ticks/s
		t.Errorf("imapgate used %d clock ticks in 3 s out of descriptors: it spins", ticks)
	}

	// A client waits in the backlog; one session ends.
	waiting := make(chan error, 1)
	var served time.Time
	var late net.Conn // both written before the send on waiting
	go func() {
		var err error
		late, err = greetedTLS(addr, roots, 10*time.Second)
		served = time.Now()
		waiting <- err
	}()
	select {
	case err := <-waiting:
		if late != nil {
			late.Close()
		}
		t.Fatalf("a client was served while out of descriptors (%v)", err)
	case <-time.After(500 * time.Millisecond):
	}
	freed := time.Now()
	for _, c := range held[:4] {
		c.Close()
	}
	held = held[4:]
	if err := <-waiting; err != nil {
		t.Fatalf("the waiting client was not served once descriptors were freed: %v\n%s", err, tail(gate.out.String(), 3000))
	}
	defer late.Close()
	recovery := served.Sub(freed)
	t.Logf("served %v after 4 sessions ended", recovery.Round(time.Millisecond))
	if recovery > 200*time.Millisecond {
		t.Errorf("the waiting client was served %v after descriptors were freed, want at once (under 200ms)", recovery)
	}
	phone.send("z NOOP")
	phone.expect("z OK")

	fams := scrape(t, metricsAddr)
	if n := value(fams, "imapgate_accept_errors_total"); n < 1 {
		t.Errorf("imapgate_accept_errors_total = %v after a run of EMFILE", n)
	}
	log := gate.out.String()
	if n := strings.Count(log, `"msg":"accept failed; retrying until it succeeds"`); n != 1 {
		t.Errorf("%d accept failure lines in under 10 s, want 1 (at most one per 10 s):\n%s", n, tail(log, 3000))
	}
	if !strings.Contains(log, `"msg":"accepting again"`) || !strings.Contains(log, "too many open files") {
		t.Errorf("no log of the run of EMFILE and of its end:\n%s", tail(log, 3000))
	}
}
