package main

import (
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/imapgate/imapgate/proxy"
	"github.com/imapgate/imapgate/proxy/proxytest"
)

// devFull is a file every write to which fails with ENOSPC: a full disk
// under the audit log without mounting anything (README "When the audit
// disk is full").
const devFull = "/dev/full"

func requireDevFull(t *testing.T) {
	t.Helper()
	f, err := os.OpenFile(devFull, os.O_WRONLY, 0)
	if err != nil {
		t.Skipf("no %s: %v", devFull, err)
	}
	f.Close()
}

// TestAuditDiskFullCountsEveryLostEvent: with the audit output on a full
// disk, every event is lost, and every one is counted: the writer batches
// lines in its buffer, and a failed flush loses the whole batch, not one
// line. Logging never waits, and the operational log says so once per
// report interval, not once per event.
func TestAuditDiskFullCountsEveryLostEvent(t *testing.T) {
	requireDevFull(t)
	var opLog lockedBuffer
	q, err := newAuditQueue(devFull, slog.New(slog.NewJSONHandler(&opLog, nil)))
	if err != nil {
		t.Fatal(err)
	}
	a := proxy.NewAuditor(q, nil)
	const n = 3000
	start := time.Now()
	for i := range n {
		a.Log(&proxy.Event{Event: "auth", Session: "s", ClientIP: "192.0.2.1", Result: "failure", User: strings.Repeat("u", 100+i%7)})
		if i%100 == 0 {
			time.Sleep(time.Millisecond) // let the writer flush batches of all sizes
		}
	}
	if took := time.Since(start); took > 2*time.Second {
		t.Errorf("%d events took %v on a full disk", n, took)
	}
	q.Close(5 * time.Second)
	if got := q.Dropped(); got != n {
		t.Errorf("dropped %d events, want all %d counted", got, n)
	}
	if reports := strings.Count(opLog.String(), "events dropped"); reports != 1 {
		t.Errorf("%d drop reports in %v, want 1 (rate limited to one per %v):\n%s", reports, time.Since(start), q.reportEvery, opLog.String())
	}
	if !strings.Contains(opLog.String(), "no space left on device") {
		t.Errorf("the report does not say why: %s", opLog.String())
	}
}

// TestServeWithTheAuditDiskFull runs the built binary with its audit
// output on a full disk (/dev/full) in front of a real Dovecot: sessions
// log in, relay and end as usual and no faster or slower than the disk
// allows them (it does not hold them at all), the lost events are
// counted in imapgate_audit_dropped_total, and the operational log
// reports them once per 10 s, not once per event. A SIGHUP (logrotate)
// reopens the output without a hitch, and SIGTERM ends the process in
// time although the last events cannot be written.
func TestServeWithTheAuditDiskFull(t *testing.T) {
	requireDevFull(t)
	d := proxytest.StartDovecot(t, proxytest.DovecotOptions{ReuseProcesses: true})
	dir := t.TempDir()
	certFile, keyFile, certPEM := writeCertFiles(t, dir)
	ports := proxytest.FreePorts(t, 2)
	addr, metricsAddr := ports[0], ports[1]
	path := filepath.Join(dir, "imapgate.toml")
	cfg := fmt.Sprintf("shutdown_timeout = \"3s\"\n\n[[listen]]\naddress = %q\n\n[tls]\ncert_file = %q\nkey_file = %q\n\n[upstream]\n%s\n\n[policy]\nfailure_delay = \"0s\"\n\n[audit]\noutput = %q\n\n[metrics]\nlisten = %q\n",
		addr, certFile, keyFile, dovecotUpstream(d, "none"), devFull, metricsAddr)
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	stderr := &lockedBuffer{}
	cmd := exec.Command(imapgateBinary(t), "serve", "--config", path)
	cmd.Stderr = stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() { cmd.Process.Kill() })
	waitListening(t, addr, exited, stderr)
	g := &gate{implicit: addr, roots: poolOf(certPEM)}

	const sessions = 200
	start := time.Now()
	var slowest time.Duration
	for i := range sessions {
		begin := time.Now()
		c := g.dialTLS(t)
		c.send("a AUTHENTICATE PLAIN " + plainIR("user1", d.Users["user1"]))
		c.expect("a OK")
		c.send("b LOGOUT")
		c.expect("b OK")
		c.conn.Close()
		slowest = max(slowest, time.Since(begin))
		if i == sessions/2 {
			cmd.Process.Signal(syscall.SIGHUP) // logrotate's postrotate
		}
	}
	took := time.Since(start)
	// Each session writes at least connect, tls, auth and session_end.
	var dropped float64
	waitFor(t, func() bool {
		dropped = scrapeCounter(t, metricsAddr, "imapgate_audit_dropped_total")
		return dropped >= 4*sessions
	})
	reports := strings.Count(stderr.String(), "events dropped")
	if limit := int(took/(10*time.Second)) + 2; reports < 1 || reports > limit {
		t.Errorf("%d drop reports in %v, want 1 to %d (one per 10s)", reports, took.Round(time.Millisecond), limit)
	}
	if !strings.Contains(stderr.String(), "no space left on device") {
		t.Errorf("the operational log does not say why events are lost:\n%s", tail(stderr.String(), 2000))
	}
	t.Logf("audit output on a full disk: %d sessions in %v (slowest %v), %.0f events dropped and counted, %d reports on the operational log",
		sessions, took.Round(time.Millisecond), slowest.Round(time.Millisecond), dropped, reports)

	stopped := time.Now()
	cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-exited:
		if err != nil {
			t.Fatalf("serve exited with %v after SIGTERM: %s", err, tail(stderr.String(), 4000))
		}
	case <-time.After(10 * time.Second):
		t.Fatal("serve did not exit within 10s of SIGTERM with the audit disk full")
	}
	t.Logf("SIGTERM to exit: %v", time.Since(stopped).Round(time.Millisecond))
}

// scrapeCounter reads one unlabelled counter from a metrics listener.
func scrapeCounter(t *testing.T, addr, name string) float64 {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	for _, line := range strings.Split(string(body), "\n") {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			if err != nil {
				t.Fatalf("%s: %v", line, err)
			}
			return f
		}
	}
	t.Fatalf("no %s in the metrics:\n%s", name, body)
	return 0
}
