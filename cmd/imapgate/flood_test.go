package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/imapgate/imapgate/proxy/proxytest"
)

// These tests attack a real imapgate serve process, started from the
// built binary so that its descriptors are its own: 10,000 hostile
// connections in the test process and 10,000 in the proxy stay under the
// 20,000 a process may open here. README "Floods and slow clients".

// floodGate is imapgate serve in its own process with the default
// connection limits.
type floodGate struct {
	proc               *childProc
	implicit, starttls string
	roots              *x509.CertPool
	caFile             string
	auditFile          string
	config             string
}

// startFloodGate runs the built binary with a config whose [policy] has
// the given extra lines, in front of an in-memory upstream in a process of
// its own.
func startFloodGate(t *testing.T, policy string) *floodGate {
	t.Helper()
	return startFloodGateTo(t, startBenchUpstream(t), policy)
}

// The users of startBenchUpstream: user1 .. user100, one password.
const (
	benchUser     = "user1"
	benchPassword = "pass1-Secret!"
)

// startBenchUpstream runs the in-memory upstream in a process of its own
// (imapbench upstream), so that the test's own goroutines, an attacker's
// under the race detector, do not slow the real user's logins.
func startBenchUpstream(t *testing.T) string {
	t.Helper()
	addr := proxytest.FreePort(t)
	up := startChildProc(t, imapbenchBinary(t), "upstream", "--addr", addr, "--users", "100", "--messages", "1")
	up.waitListening(t, addr, 10*time.Second)
	return addr
}

// startFloodGateTo is startFloodGate in front of the upstream at upstream.
func startFloodGateTo(t *testing.T, upstream, policy string) *floodGate {
	t.Helper()
	bin := imapgateBinary(t)
	dir := t.TempDir()
	certFile, keyFile, certPEM := writeCertFiles(t, dir)
	ports := proxytest.FreePorts(t, 2)
	g := &floodGate{implicit: ports[0], starttls: ports[1], roots: x509.NewCertPool(),
		auditFile: filepath.Join(dir, "audit.log"), config: filepath.Join(dir, "imapgate.toml")}
	g.roots.AppendCertsFromPEM(certPEM)
	g.caFile = filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(g.caFile, certPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	cfg := fmt.Sprintf(`shutdown_timeout = "30s"

[[listen]]
address = %q
tls = "implicit"

[[listen]]
address = %q
tls = "starttls"

[tls]
cert_file = %q
key_file = %q

[upstream]
address = %q
tls = "none"

[policy]
%s

[audit]
output = %q
`, g.implicit, g.starttls, certFile, keyFile, upstream, policy, g.auditFile)
	if err := os.WriteFile(g.config, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	g.proc = startChildProc(t, bin, "serve", "--config", g.config)
	g.proc.waitListening(t, g.implicit, 10*time.Second)
	g.proc.waitListening(t, g.starttls, 10*time.Second)
	return g
}

func (g *floodGate) pid() int { return g.proc.cmd.Process.Pid }

// rssKiB returns the proxy's resident memory (VmRSS).
func rssKiB(t *testing.T, pid int) int {
	t.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.Lines(string(data)) {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			n, _ := strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(v), " kB"))
			return n
		}
	}
	t.Fatal("no VmRSS")
	return 0
}

// auditReasons counts the audit events of one kind by reason.
func auditReasons(t *testing.T, file, event string) map[string]int {
	t.Helper()
	data, _ := os.ReadFile(file)
	out := map[string]int{}
	for line := range strings.Lines(string(data)) {
		if strings.Contains(line, `"event":"`+event+`"`) {
			_, after, _ := strings.Cut(line, `"reason":"`)
			reason, _, _ := strings.Cut(after, `"`)
			out[reason]++
		}
	}
	return out
}

// hostileSource returns the i-th hostile source address: 20 per address,
// 25 addresses per /24 (500 connections, under max_connections_per_network),
// networks 127.10.0.0/24 onwards. 10,000 connections use 20 networks.
func hostileSource(i int) net.IP {
	addr := i / 20
	return net.IPv4(127, 10+byte(addr/25/250), byte(addr/25%250), byte(1+addr%25))
}

// dialSource connects to addr from the loopback address src.
func dialSource(ctx context.Context, src net.IP, addr string) (net.Conn, error) {
	d := &net.Dialer{Timeout: 10 * time.Second, LocalAddr: &net.TCPAddr{IP: src}}
	return d.DialContext(ctx, "tcp", addr)
}

// openMany opens n connections with open (which returns the connection
// once it is in the state the attack wants) from 32 workers.
func openMany(t *testing.T, n int, open func(i int) (net.Conn, error)) []net.Conn {
	t.Helper()
	conns := make([]net.Conn, n)
	var next atomic.Int64
	var failed atomic.Int64
	var firstErr atomic.Value
	var wg sync.WaitGroup
	for range 32 {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				c, err := open(i)
				if err != nil {
					failed.Add(1)
					firstErr.CompareAndSwap(nil, err)
					continue
				}
				conns[i] = c
			}
		})
	}
	wg.Wait()
	if f := failed.Load(); f > 0 {
		closeAll(conns)
		t.Fatalf("%d of %d hostile connections failed to open: %v", f, n, firstErr.Load())
	}
	return conns
}

func closeAll(conns []net.Conn) {
	for _, c := range conns {
		if c != nil {
			c.Close()
		}
	}
}

// realUserResult is what imapbench logins reports (its --json).
type realUserResult struct {
	Logins  int `json:"logins"`
	Errors  int `json:"errors"`
	Latency struct {
		P99Micros float64 `json:"p99_us"`
	} `json:"latency"`
	ErrorKinds []struct {
		Error string `json:"error"`
		Count int    `json:"count"`
	} `json:"error_kinds"`
}

func (r realUserResult) p99() time.Duration {
	return time.Duration(r.Latency.P99Micros * float64(time.Microsecond))
}

// realUser logs in again and again for d from 127.200.0.1, another
// network than any attacker's, each time with a new connection and a full
// TLS handshake, AUTHENTICATE PLAIN and LOGOUT: imapbench logins in a
// process of its own, so the test's race detector does not slow the user.
func realUser(t *testing.T, g *floodGate, d time.Duration) (realUserResult, error) {
	out, err := exec.Command(imapbenchBinary(t), "logins", "--addr", g.implicit, "--cafile", g.caFile,
		"--server-name", "localhost", "--user", benchUser, "--password", benchPassword,
		"--sources", "127.200.0.1", "--workers", "1", "--duration", d.String(), "--json", "--quiet").Output()
	var r realUserResult
	if err == nil {
		err = json.Unmarshal(out, &r)
	}
	if err != nil {
		return r, fmt.Errorf("imapbench logins: %w\n%s", err, out)
	}
	return r, nil
}

// listenDrops returns the kernel's count of connections dropped because
// a listen queue was full (TcpExt ListenDrops in /proc/net/netstat), or -1.
func listenDrops() int {
	data, err := os.ReadFile("/proc/net/netstat")
	if err != nil {
		return -1
	}
	var names []string
	for line := range strings.Lines(string(data)) {
		f := strings.Fields(line)
		if len(f) == 0 || f[0] != "TcpExt:" {
			continue
		}
		if names == nil {
			names = f
			continue
		}
		for i, name := range names {
			if name == "ListenDrops" && i < len(f) {
				n, _ := strconv.Atoi(f[i])
				return n
			}
		}
	}
	return -1
}

// floodPhase is one attack held while the real user logs in.
type floodPhase struct {
	name string
	// open opens the i-th hostile connection and brings it to the state
	// the attack holds; nil for an attack that only churns.
	open func(i int) (net.Conn, error)
	// tick runs every 2 s on the held connections (a byte, more of the
	// endless line); nil for none.
	tick func(c net.Conn)
	// churn runs until stop closes, for the floods of opens and closes.
	churn func(stop <-chan struct{}) int
}

// TestPreauthFloodsLeaveTheRealUserUnder1s: 10,000 connections that send
// a byte every 2 s, 10,000 that complete TLS and say nothing, 10,000 that
// send a line without end, then connections opened and closed at full
// speed from one /24 and from many: the real user, from another network,
// logs in throughout with a p99 under a second, the proxy's memory per
// held connection is measured, and the per-address, per-network and global
// limits refuse the excess with their audit reasons.
func TestPreauthFloodsLeaveTheRealUserUnder1s(t *testing.T) {
	if testing.Short() {
		t.Skip("10,000 connections per attack: about a minute")
	}
	const n = 10_000
	var g *floodGate // a fresh proxy per attack, so that its memory is the attack's
	ctx := t.Context()

	plain := func(i int) (net.Conn, error) {
		c, err := dialSource(ctx, hostileSource(i), g.starttls)
		if err != nil {
			return nil, err
		}
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		if line, err := bufio.NewReaderSize(c, 512).ReadString('\n'); err != nil || !strings.HasPrefix(line, "* OK") {
			c.Close()
			return nil, fmt.Errorf("greeting %q: %v", line, err)
		}
		return c, nil
	}
	var round atomic.Int64
	phases := []floodPhase{
		{
			name: "a byte every 2 s (plaintext, STARTTLS listener)",
			open: plain,
			tick: func(c net.Conn) { c.Write([]byte{"a NOOP"[round.Load()%6]}) },
		},
		{
			name: "TLS completed, then silence (implicit listener)",
			open: func(i int) (net.Conn, error) {
				raw, err := dialSource(ctx, hostileSource(i), g.implicit)
				if err != nil {
					return nil, err
				}
				raw.SetDeadline(time.Now().Add(20 * time.Second))
				c := tls.Client(raw, &tls.Config{RootCAs: g.roots, ServerName: "localhost"})
				if line, err := bufio.NewReaderSize(c, 512).ReadString('\n'); err != nil || !strings.HasPrefix(line, "* OK") {
					raw.Close()
					return nil, fmt.Errorf("greeting %q: %v", line, err)
				}
				return c, nil
			},
		},
		{
			name: "a line without end, 1 KiB every 2 s (STARTTLS listener)",
			open: func(i int) (net.Conn, error) {
				c, err := plain(i)
				if err == nil {
					_, err = c.Write([]byte("a LOGIN " + strings.Repeat("x", 1024)))
				}
				return c, err
			},
			tick: func(c net.Conn) { c.Write([]byte(strings.Repeat("y", 1024))) },
		},
		{
			name: "open and close at full speed from one /24",
			churn: func(stop <-chan struct{}) int {
				return churn(ctx, g.implicit, stop, func(i int) net.IP { return net.IPv4(127, 30, 0, byte(1+i%250)) })
			},
		},
		{
			name: "open and close at full speed from 250 /24s",
			churn: func(stop <-chan struct{}) int {
				return churn(ctx, g.implicit, stop, func(i int) net.IP { return net.IPv4(127, 31+byte(i%250/50), byte(i%50), byte(1+i/250%250)) })
			},
		},
	}
	for _, ph := range phases {
		g = startFloodGate(t, `failure_delay = "0s"`)
		baseline := rssKiB(t, g.pid())
		drops := listenDrops()
		start := time.Now()
		var held []net.Conn
		if ph.open != nil {
			held = openMany(t, n, ph.open)
		}
		opened := time.Since(start)

		ticks := cpuTicks(t, g.pid())
		attackStart := time.Now()
		stop := make(chan struct{})
		var wg sync.WaitGroup
		var user realUserResult
		var userErr error
		wg.Go(func() { user, userErr = realUser(t, g, 6*time.Second) })
		churned := 0
		if ph.churn != nil {
			wg.Go(func() { churned = ph.churn(stop) })
		}
		rss := 0
		for r := range 3 { // 6 s under attack
			round.Store(int64(r))
			if ph.tick != nil {
				for _, c := range held {
					c.SetWriteDeadline(time.Now().Add(time.Second))
					ph.tick(c)
				}
			}
			time.Sleep(2 * time.Second)
			rss = max(rss, rssKiB(t, g.pid()))
		}
		close(stop)
		wg.Wait()
		cpu := float64(cpuTicks(t, g.pid())-ticks) / 100 / time.Since(attackStart).Seconds()
		closeAll(held)

		if userErr != nil {
			t.Fatal(userErr)
		}
		line := fmt.Sprintf("%s: real user %d logins, p99 %v, %d failed; proxy CPU %.2f cores; %d connections dropped by full listen queues",
			ph.name, user.Logins, user.p99().Round(time.Millisecond), user.Errors, cpu, listenDrops()-drops)
		if held != nil {
			line += fmt.Sprintf("; %d held (opened in %v), proxy RSS %d -> %d KiB, %.1f KiB per connection",
				len(held), opened.Round(time.Millisecond), baseline, rss, float64(rss-baseline)/float64(len(held)))
		} else {
			line += fmt.Sprintf("; %d connections opened and closed", churned)
		}
		t.Log(line)
		if user.Errors > 0 {
			t.Errorf("%s: the real user's logins failed %d times: %+v", ph.name, user.Errors, user.ErrorKinds)
		}
		if user.Logins < 5 || user.p99() >= time.Second {
			t.Errorf("%s: the real user logged in %d times with p99 %v, want p99 under 1s", ph.name, user.Logins, user.p99())
		}
		if held != nil {
			waitSessions(t, g, 0, 20*time.Second)
		}
		g.proc.stop()
	}

	// The limits decide who is refused: 1,100 connections from one /24
	// (44 addresses, 25 each) meet max_connections_per_network (1000), 60
	// from one address meet max_connections_per_ip (50), and max_connections
	// the rest.
	g = startFloodGate(t, "failure_delay = \"0s\"\nmax_connections = 1500")
	before := auditReasons(t, g.auditFile, "connect")
	var refusedNet, refusedIP, refusedAll atomic.Int64
	refusedBy := func(counter *atomic.Int64) func(c net.Conn) net.Conn {
		return func(c net.Conn) net.Conn {
			c.SetReadDeadline(time.Now().Add(10 * time.Second))
			line, _ := bufio.NewReader(c).ReadString('\n')
			if strings.HasPrefix(line, "* BYE") {
				counter.Add(1)
				c.Close()
				return nil
			}
			return c
		}
	}
	var held []net.Conn
	for _, batch := range []struct {
		count   int
		src     func(i int) net.IP
		refused *atomic.Int64
	}{
		{1100, func(i int) net.IP { return net.IPv4(127, 40, 0, byte(1+i/25)) }, &refusedNet},
		{60, func(int) net.IP { return net.IPv4(127, 41, 0, 1) }, &refusedIP},
		// 1,050 are held: 500 more from another /24 fill max_connections
		// (1500 in this config) with 450, and then nobody gets in, the
		// real user's network included.
		{500, func(i int) net.IP { return net.IPv4(127, 42, 0, byte(1+i/20)) }, &refusedAll},
		{1, func(int) net.IP { return net.IPv4(127, 200, 0, 1) }, &refusedAll},
	} {
		check := refusedBy(batch.refused)
		for i := range batch.count {
			c, err := dialSource(ctx, batch.src(i), g.starttls)
			if err != nil {
				closeAll(held)
				t.Fatal(err)
			}
			if c = check(c); c != nil {
				held = append(held, c)
			}
		}
	}
	closeAll(held)
	after := auditReasons(t, g.auditFile, "connect")
	t.Logf("limits: %d refused per network, %d per address, %d in total; audit connect reasons %v", refusedNet.Load(), refusedIP.Load(), refusedAll.Load(), after)
	if got := refusedNet.Load(); got != 100 {
		t.Errorf("%d of 1,100 connections from one /24 refused, want 100 (max_connections_per_network 1000)", got)
	}
	if got := refusedIP.Load(); got != 10 {
		t.Errorf("%d of 60 connections from one address refused, want 10 (max_connections_per_ip 50)", got)
	}
	if d := after["too_many_connections_per_network"] - before["too_many_connections_per_network"]; d != 100 {
		t.Errorf("%d connect events with reason too_many_connections_per_network, want 100", d)
	}
	if d := after["too_many_connections_per_ip"] - before["too_many_connections_per_ip"]; d != 10 {
		t.Errorf("%d connect events with reason too_many_connections_per_ip, want 10", d)
	}
	if got := refusedAll.Load(); got != 51 {
		t.Errorf("%d of 501 connections refused once 1,050 were held, want 51 (max_connections 1500)", got)
	}
	if d := after["too_many_connections"] - before["too_many_connections"]; d != 51 {
		t.Errorf("%d connect events with reason too_many_connections, want 51", d)
	}
}

// churn opens and closes connections to addr as fast as 4 workers can,
// from the sources src gives, until stop closes; it returns how many.
func churn(ctx context.Context, addr string, stop <-chan struct{}, src func(i int) net.IP) int {
	var count atomic.Int64
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Go(func() {
			for i := w; ; i += 4 {
				select {
				case <-stop:
					return
				default:
				}
				c, err := dialSource(ctx, src(i), addr)
				if err != nil {
					continue
				}
				// SO_LINGER 0: a reset, not a TIME_WAIT per connection.
				if tc, ok := c.(*net.TCPConn); ok {
					tc.SetLinger(0)
				}
				c.Close()
				count.Add(1)
			}
		})
	}
	wg.Wait()
	return int(count.Load())
}

// waitSessions waits until the proxy's audit log shows as many
// session_end events as accepted connects, less want still open.
func waitSessions(t *testing.T, g *floodGate, want int, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		open := openSessions(g.auditFile)
		if open <= want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d sessions still open %v after the attack ended, want %d", open, within, want)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// openSessions counts accepted connects less ended sessions in an audit
// file.
func openSessions(file string) int {
	data, _ := os.ReadFile(file)
	open := 0
	for line := range strings.Lines(string(data)) {
		switch {
		case strings.Contains(line, `"event":"connect"`) && strings.Contains(line, `"result":"accepted"`):
			open++
		case strings.Contains(line, `"event":"session_end"`):
			open--
		}
	}
	return open
}
