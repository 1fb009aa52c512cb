package main

import (
	"bufio"
	"crypto/tls"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/imapgate/imapgate/proxy/proxytest"
)

// TestSIGHUPStormKeepsSessionsAndAppliesWholeConfigs runs the built
// binary and sends it a SIGHUP every 100 ms for 10 s, while the config on
// disk alternates (written whole, by rename, as an admin's tooling does)
// between two valid versions that differ in what every login sees:
// login_command "refuse" (the greeting lists LOGINDISABLED and LOGIN is
// refused) and "allow-over-tls" (neither). Meanwhile clients log in
// without pause and 20 phones sit in IDLE (README "Reloading under
// load"). No login may see half of one config and half of the other: a
// greeting without LOGINDISABLED is followed by a LOGIN that succeeds,
// one with it by a LOGIN that is refused. No phone may lose its session:
// each gets the new mail of the end and leaves IDLE cleanly. No reload
// may be rejected.
func TestSIGHUPStormKeepsSessionsAndAppliesWholeConfigs(t *testing.T) {
	const (
		storm   = 10 * time.Second
		every   = 100 * time.Millisecond
		phones  = 20
		loggers = 4
	)
	d := proxytest.StartDovecot(t, proxytest.DovecotOptions{ReuseProcesses: true})
	dir := t.TempDir()
	bin := imapgateBinary(t)
	certFile, keyFile, certPEM := writeCertFiles(t, dir)
	addr := proxytest.FreePort(t)
	path := filepath.Join(dir, "imapgate.toml")
	auditFile := filepath.Join(dir, "audit.log")
	writeConfig := func(loginCommand string) {
		t.Helper()
		cfg := fmt.Sprintf("shutdown_timeout = \"3s\"\n\n[[listen]]\naddress = %q\n\n[tls]\ncert_file = %q\nkey_file = %q\n\n[upstream]\n%s\n\n[auth]\nlogin_command = %q\n\n[policy]\nfailure_delay = \"0s\"\n\n[audit]\noutput = %q\n",
			addr, certFile, keyFile, dovecotUpstream(d, "none"), loginCommand, auditFile)
		tmp := path + ".new"
		if err := os.WriteFile(tmp, []byte(cfg), 0o600); err != nil {
			t.Error(err)
			return
		}
		if err := os.Rename(tmp, path); err != nil {
			t.Error(err)
		}
	}
	writeConfig("refuse")
	stderr := &lockedBuffer{}
	cmd := exec.Command(bin, "serve", "--config", path)
	cmd.Stderr = stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() { cmd.Process.Kill() })
	waitListening(t, addr, exited, stderr)
	g := &gate{implicit: addr, roots: poolOf(certPEM)}
	user, pass := "user1", d.Users["user1"]

	idle := make([]*client, phones)
	for i := range idle {
		p := g.dialTLS(t)
		p.send("a AUTHENTICATE PLAIN " + plainIR(user, pass))
		p.expect("a OK")
		p.send("b SELECT INBOX")
		p.expect("b OK")
		p.send("i IDLE")
		p.expect("+")
		idle[i] = p
	}

	// The storm: a config change and a SIGHUP every 100 ms.
	stop := make(chan struct{})
	var storms sync.WaitGroup
	storms.Add(1)
	sent := 0
	go func() {
		defer storms.Done()
		tick := time.NewTicker(every)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			writeConfig([]string{"allow-over-tls", "refuse"}[sent%2])
			if err := cmd.Process.Signal(syscall.SIGHUP); err != nil {
				t.Errorf("SIGHUP: %v", err)
				return
			}
			sent++
		}
	}()

	// The logins: each reads the greeting, then tries LOGIN; a refused
	// one logs in with AUTHENTICATE, as a real client would.
	type tally struct {
		refused, allowed int
		slowest          time.Duration
		latencies        []time.Duration
	}
	tallies := make([]tally, loggers)
	var logins sync.WaitGroup
	deadline := time.Now().Add(storm)
	for w := range loggers {
		logins.Add(1)
		go func() {
			defer logins.Done()
			tl := &tallies[w]
			for n := 0; time.Now().Before(deadline) && !t.Failed(); n++ {
				start := time.Now()
				c, err := dialTLSGreeting(g, addr)
				if err != nil {
					t.Errorf("login %d/%d: %v", w, n, err)
					return
				}
				disabled := strings.Contains(c.greeting, "LOGINDISABLED")
				answer, err := c.command("l", fmt.Sprintf("LOGIN %s %q", user, pass))
				switch {
				case err != nil:
					t.Errorf("login %d/%d: LOGIN: %v", w, n, err)
				case disabled && strings.HasPrefix(answer, "l OK"):
					t.Errorf("login %d/%d: greeting %q said LOGINDISABLED, but LOGIN succeeded: a half-applied config", w, n, c.greeting)
				case !disabled && !strings.HasPrefix(answer, "l OK"):
					t.Errorf("login %d/%d: greeting %q allowed LOGIN, but it was answered %q: a half-applied config", w, n, c.greeting, answer)
				case disabled:
					tl.refused++
					if answer, err := c.command("a", "AUTHENTICATE PLAIN "+plainIR(user, pass)); err != nil || !strings.HasPrefix(answer, "a OK") {
						t.Errorf("login %d/%d: AUTHENTICATE after the refused LOGIN: %q %v", w, n, answer, err)
					}
				default:
					tl.allowed++
				}
				c.command("z", "LOGOUT")
				c.conn.Close()
				took := time.Since(start)
				tl.latencies = append(tl.latencies, took)
				tl.slowest = max(tl.slowest, took)
			}
		}()
	}
	logins.Wait()
	close(stop)
	storms.Wait()
	if t.Failed() {
		t.FailNow()
	}

	var all []time.Duration
	refused, allowed := 0, 0
	for _, tl := range tallies {
		refused += tl.refused
		allowed += tl.allowed
		all = append(all, tl.latencies...)
	}
	slices.Sort(all)
	if refused == 0 || allowed == 0 {
		t.Fatalf("logins saw only one config (%d refused, %d allowed): the storm changed nothing", refused, allowed)
	}
	// Signals that arrive while a reload runs coalesce into one, so not
	// every SIGHUP gives its own reload. What must hold is that the last
	// config written is the one in force: write the other one, signal,
	// and wait for a new connection to show it.
	final := []string{"allow-over-tls", "refuse"}[sent%2]
	writeConfig(final)
	if err := cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatalf("SIGHUP: %v", err)
	}
	waitFor(t, func() bool {
		c, err := dialTLSGreeting(g, addr)
		if err != nil {
			return false
		}
		defer c.conn.Close()
		return strings.Contains(c.greeting, "LOGINDISABLED") == (final == "refuse")
	})
	t.Logf("%d SIGHUPs, %d reloads (signals sent during a reload coalesce)", sent+1, strings.Count(stderr.String(), `"msg":"reloaded"`))
	if strings.Contains(stderr.String(), "config rejected") {
		t.Fatalf("a reload was rejected: %s", tail(stderr.String(), 4000))
	}

	// Every phone is still there: new mail reaches each, and each leaves
	// IDLE cleanly.
	d.Append(t, user, "INBOX", []byte("From: a@imapgate.test\r\nSubject: after the storm\r\n\r\nhi\r\n"))
	for _, p := range idle {
		p.expect("* 1 EXISTS")
		p.send("DONE")
		p.expect("i OK")
	}
	t.Logf("%d SIGHUPs in %v (one per %v): %d logins (%d saw LOGIN refused, %d allowed), none with a half-applied config; p50 %v, p99 %v, slowest %v; %d phones in IDLE kept their sessions",
		sent, storm, every, len(all), refused, allowed,
		all[len(all)/2].Round(time.Millisecond), all[len(all)*99/100].Round(time.Millisecond), all[len(all)-1].Round(time.Millisecond), phones)

	cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-exited:
		if err != nil {
			t.Fatalf("serve exited with %v after SIGTERM: %s", err, tail(stderr.String(), 4000))
		}
	case <-time.After(15 * time.Second):
		t.Fatalf("serve did not exit after SIGTERM")
	}
	g.secrets, g.auditFile, g.stderr = secretsOf(d), auditFile, stderr
	g.assertNoSecrets(t)
}

// greetedClient is a TLS client that has read the greeting, for use from
// goroutines other than the test's (it never calls t.Fatal).
type greetedClient struct {
	*client
	greeting string
}

func dialTLSGreeting(g *gate, addr string) (*greetedClient, error) {
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr, &tls.Config{RootCAs: g.roots, ServerName: "localhost"})
	if err != nil {
		return nil, err
	}
	c := &greetedClient{client: &client{conn: conn, r: bufio.NewReader(conn)}}
	conn.SetDeadline(time.Now().Add(20 * time.Second))
	line, err := c.r.ReadString('\n')
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("greeting: %w", err)
	}
	c.greeting = strings.TrimRight(line, "\r\n")
	return c, nil
}

// command sends "tag cmd" and returns the tagged answer.
func (c *greetedClient) command(tag, cmd string) (string, error) {
	if _, err := c.conn.Write([]byte(tag + " " + cmd + "\r\n")); err != nil {
		return "", err
	}
	for {
		line, err := c.r.ReadString('\n')
		if err != nil {
			return "", err
		}
		if strings.HasPrefix(line, tag+" ") {
			return strings.TrimRight(line, "\r\n"), nil
		}
	}
}
