package proxytest

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// HAProxyOptions configures StartHAProxy: one TCP frontend on a free
// loopback port that forwards every connection to Backend.
type HAProxyOptions struct {
	// Backend is the "host:port" HAProxy forwards to. Required.
	Backend string
	// AcceptProxy makes the frontend take a PROXY header (v1 or v2)
	// from every client (bind ... accept-proxy) and use its source as
	// the client's address, as HAProxy does behind another proxy. If
	// false, the connection's own address is the client's.
	AcceptProxy bool
	// SendProxyV2 makes HAProxy open every connection to Backend with a
	// PROXY v2 header carrying the client's address (server ...
	// send-proxy-v2). If false, Backend sees HAProxy's own address.
	SendProxyV2 bool
}

// HAProxy is a running HAProxy started by StartHAProxy.
type HAProxy struct {
	// Addr is the frontend, "127.0.0.1:PORT".
	Addr string
	// PID is the process id of haproxy.
	PID int
	// Dir holds haproxy.cfg and haproxy.out, its output: with option
	// tcplog and option logasap, one line per connection once it reaches
	// the backend, starting with the client's address.
	Dir string

	d         *daemon
	closeOnce sync.Once
	closeErr  error
}

// ErrNoHAProxy is NewHAProxy's error when HAProxy 2.x is not installed.
var ErrNoHAProxy = errors.New("proxytest: HAProxy 2.x is not installed (run .ci/run or apt-get install haproxy)")

// StartHAProxy starts an HAProxy for the test and stops it in t.Cleanup.
//
// It runs as "haproxy -f DIR/haproxy.cfg -db" (foreground, no daemon)
// from a configuration generated in a temporary directory, in TCP mode,
// listening on loopback only; neither the system's HAProxy service nor
// /etc/haproxy is used. It returns once the frontend passes a greeting
// from Backend through. Without haproxy the test is skipped, or fails
// when CI=true.
func StartHAProxy(t testing.TB, o HAProxyOptions) *HAProxy {
	t.Helper()
	h, err := NewHAProxy(o)
	if errors.Is(err, ErrNoHAProxy) {
		missing(t, err.Error())
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("proxytest: HAProxy output:\n%s", tail(h.Log(), logTailOnFail))
		}
		if err := h.Close(); err != nil {
			t.Error(err)
		}
	})
	return h
}

func haproxyBinary() (string, error) {
	bin, err := exec.LookPath("haproxy")
	if err != nil {
		var ok bool
		if bin, ok = findBinary("/usr/sbin/haproxy"); !ok {
			return "", ErrNoHAProxy
		}
	}
	out, err := exec.Command(bin, "-v").Output()
	if err != nil {
		return "", fmt.Errorf("proxytest: %s -v: %v", bin, err)
	}
	if !bytes.HasPrefix(out, []byte("HAProxy version 2.")) {
		return "", fmt.Errorf("%w: %s is %.40q", ErrNoHAProxy, bin, out)
	}
	return bin, nil
}

// NewHAProxy is StartHAProxy for programs that are not tests; Close
// stops it.
func NewHAProxy(o HAProxyOptions) (*HAProxy, error) {
	if o.Backend == "" {
		return nil, errors.New("proxytest: HAProxyOptions.Backend is empty")
	}
	bin, err := haproxyBinary()
	if err != nil {
		return nil, err
	}
	dir, err := makeDir()
	if err != nil {
		return nil, err
	}
	h := &HAProxy{Dir: dir}
	if err := h.start(bin, o); err != nil {
		h.Close()
		return nil, err
	}
	return h, nil
}

func (h *HAProxy) start(bin string, o HAProxyOptions) error {
	cfg := filepath.Join(h.Dir, "haproxy.cfg")
	for attempt := 1; ; attempt++ {
		addr, err := freePort()
		if err != nil {
			return err
		}
		if err := os.WriteFile(cfg, []byte(haproxyConfig(addr, o)), 0o644); err != nil {
			return fmt.Errorf("proxytest: %w", err)
		}
		out := filepath.Join(h.Dir, "haproxy.out")
		os.Remove(out)
		h.d, err = startDaemon(h.Dir, out, nil, bin, "-f", cfg, "-db")
		if err != nil {
			return fmt.Errorf("proxytest: haproxy: %w", err)
		}
		h.PID = h.d.cmd.Process.Pid
		if err = h.waitReady(addr, o.AcceptProxy); err == nil {
			h.Addr = addr
			return nil
		}
		h.d.stop()
		log := h.Log()
		h.d = nil
		if attempt < bindAttempts && strings.Contains(log, "cannot bind socket") {
			continue // another process took the port after freePort
		}
		return fmt.Errorf("proxytest: haproxy did not start: %w\n%s", err, tail(log, logTailOnFail))
	}
}

// haproxyConfig renders haproxy.cfg: one TCP frontend on addr, one
// server, logs on stderr.
func haproxyConfig(addr string, o HAProxyOptions) string {
	accept, send := "", ""
	if o.AcceptProxy {
		accept = " accept-proxy"
	}
	if o.SendProxyV2 {
		send = " send-proxy-v2"
	}
	return fmt.Sprintf(`# Written by github.com/imapgate/imapgate/proxy/proxytest for one test.
global
  log stderr format raw local0 info
  maxconn 1000

defaults
  mode tcp
  log global
  option tcplog
  option logasap
  timeout connect 5s
  timeout client 10m
  timeout server 10m

frontend imap
  bind %s%s
  default_backend upstream

backend upstream
  server upstream %s%s
`, addr, accept, o.Backend, send)
}

// waitReady waits until addr passes a greeting through, after a PROXY v2
// LOCAL header when HAProxy expects one; it gives up when haproxy exits
// or after startTimeout.
func (h *HAProxy) waitReady(addr string, acceptProxy bool) error {
	deadline := time.Now().Add(startTimeout)
	var last error
	for time.Now().Before(deadline) {
		select {
		case <-h.d.exited:
			return fmt.Errorf("haproxy exited: %v", h.d.cmd.ProcessState)
		default:
		}
		if acceptProxy {
			last = greetsBehindProxy(addr)
		} else {
			last = greets(addr, nil)
		}
		if last == nil {
			return nil
		}
		time.Sleep(25 * time.Millisecond)
	}
	return fmt.Errorf("no greeting through %s within %v: %v", addr, startTimeout, last)
}

// Log is what HAProxy wrote so far: its warnings and one tcplog line per
// connection ("127.0.0.7:41234 [01/Dec/2026:10:00:00.000] imap
// upstream/upstream ...": the client's address as HAProxy took it).
func (h *HAProxy) Log() string {
	b, _ := os.ReadFile(filepath.Join(h.Dir, "haproxy.out"))
	return string(b)
}

// WaitLog waits until HAProxy's log contains s; after 5 seconds it
// fails the test.
func (h *HAProxy) WaitLog(t testing.TB, s string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(h.Log(), s) {
		if time.Now().After(deadline) {
			t.Fatalf("proxytest: HAProxy's log has no %q:\n%s", s, tail(h.Log(), logTailOnFail))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Close stops HAProxy (SIGTERM to PID; SIGKILL after 10 seconds) and
// removes Dir. Later calls return the first call's result.
func (h *HAProxy) Close() error {
	h.closeOnce.Do(func() {
		h.d.stop()
		h.closeErr = removeDir(h.Dir)
	})
	return h.closeErr
}

// proxyV2Local is a PROXY protocol v2 header with the LOCAL command and
// no addresses (the PROXY protocol specification, section 2.2): the
// receiver keeps the connection's own addresses. Health checks send it.
var proxyV2Local = []byte("\r\n\r\n\x00\r\nQUIT\n\x20\x00\x00\x00")

// greetsBehindProxy connects to addr, sends a PROXY v2 LOCAL header and
// reads "* OK".
func greetsBehindProxy(addr string) error {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := c.Write(proxyV2Local); err != nil {
		return err
	}
	buf := make([]byte, 512)
	n, err := c.Read(buf)
	if !bytes.HasPrefix(buf[:n], []byte("* OK")) {
		return fmt.Errorf("greeting from %s after a PROXY header: %q %v", addr, buf[:n], err)
	}
	return nil
}
