package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/imapgate/imapgate/proxy/proxytest"
	"github.com/imapgate/imapgate/tlsconf"
)

// The real ACME parts the certificate tests run against: Pebble (the
// ACME server Let's Encrypt tests with) and, as its DNS, either
// pebble-challtestsrv (every name is 127.0.0.1) or a real BIND 9 with a
// zone the test writes and a TSIG key for dynamic updates.

// goTool finds a program installed with `go install` (.ci/run puts Pebble
// there): on PATH, in $GOBIN, or in $GOPATH/bin (default ~/go/bin). It
// skips the test if the program is missing, and fails it when CI=true.
func goTool(t *testing.T, name string) string {
	t.Helper()
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	var dirs []string
	if d := os.Getenv("GOBIN"); d != "" {
		dirs = append(dirs, d)
	}
	if out, err := exec.Command("go", "env", "GOBIN", "GOPATH").Output(); err == nil {
		lines := strings.Split(strings.TrimSpace(string(out)), "\n")
		if len(lines) == 2 {
			if lines[0] != "" {
				dirs = append(dirs, lines[0])
			}
			for _, p := range filepath.SplitList(lines[1]) {
				dirs = append(dirs, filepath.Join(p, "bin"))
			}
		}
	}
	if home, err := os.UserHomeDir(); err == nil {
		dirs = append(dirs, filepath.Join(home, "go", "bin"))
	}
	for _, d := range dirs {
		p := filepath.Join(d, name)
		if fi, err := os.Stat(p); err == nil && fi.Mode()&0o111 != 0 {
			return p
		}
	}
	msg := fmt.Sprintf("%s not installed: run .ci/run (go install github.com/letsencrypt/pebble/v2/cmd/%s@v2.10.1)", name, name)
	if onCI() {
		t.Fatal(msg)
	}
	t.Skip(msg)
	return ""
}

func onCI() bool {
	switch strings.ToLower(os.Getenv("CI")) {
	case "true", "1", "yes":
		return true
	}
	return false
}

// startProcess runs a daemon until the test ends; its output goes to a
// file in dir, which the test log shows if the test fails.
func startProcess(t *testing.T, dir, name string, env []string, args ...string) *exec.Cmd {
	t.Helper()
	logFile := filepath.Join(dir, filepath.Base(name)+".log")
	out, err := os.Create(logFile)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(name, args...)
	cmd.Stdout, cmd.Stderr = out, out
	cmd.Env = append(os.Environ(), env...)
	if err := cmd.Start(); err != nil {
		out.Close()
		t.Fatalf("start %s: %v", name, err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); out.Close(); close(exited) }()
	t.Cleanup(func() {
		cmd.Process.Kill() // this process only, by its own handle
		<-exited
		if t.Failed() {
			data, _ := os.ReadFile(logFile)
			t.Logf("%s output:\n%s", filepath.Base(name), tail(string(data), 4000))
		}
	})
	return cmd
}

func tail(s string, n int) string {
	if len(s) > n {
		return "..." + s[len(s)-n:]
	}
	return s
}

// freePorts returns n distinct free loopback addresses: every port is held
// until all are found, so the kernel cannot hand out one of them twice.
func portOf(addr string) int {
	_, p, _ := net.SplitHostPort(addr)
	n, _ := strconv.Atoi(p)
	return n
}

// startChallSrv runs pebble-challtestsrv as a DNS server that answers
// every A query with 127.0.0.1 and no AAAA (else Pebble dials [::1] and
// misses responders on 127.0.0.1). It returns the DNS address.
func startChallSrv(t *testing.T) string {
	t.Helper()
	bin := goTool(t, "pebble-challtestsrv")
	ports := proxytest.FreePorts(t, 2)
	dns := ports[0]
	startProcess(t, t.TempDir(), bin, nil,
		"-defaultIPv4", "127.0.0.1", "-defaultIPv6", "",
		"-dnsserver", dns, "-http01", "", "-https01", "", "-tlsalpn01", "", "-doh", "",
		"-management", ports[1])
	waitTCP(t, dns, "pebble-challtestsrv")
	return dns
}

func waitTCP(t *testing.T, addr, what string) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s did not listen on %s: %v", what, addr, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// pebble is a running Pebble ACME server.
type pebble struct {
	DirURL   string // the ACME directory
	CARoot   string // PEM file: Pebble's own HTTPS certificate (ca_root)
	RootFile string // PEM file: the root that signs issued certificates
	Roots    *x509.CertPool
	HTTPPort int // where Pebble validates http-01
	TLSPort  int // where Pebble validates tls-alpn-01
	cmd      *exec.Cmd
}

type pebbleOptions struct {
	DNS      string // -dnsserver
	Validity int    // seconds; 0 = 90 days
	EAB      map[string]string
}

// startPebble runs the Pebble binary with its own HTTPS certificate,
// validation without the random sleeps and without rejected nonces.
func startPebble(t *testing.T, o pebbleOptions) *pebble {
	t.Helper()
	bin := goTool(t, "pebble")
	dir := t.TempDir()
	cert, certPEM, err := tlsconf.SelfSigned(24*time.Hour, "localhost", "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile, err := tlsconf.WritePEMFiles(dir, cert)
	if err != nil {
		t.Fatal(err)
	}
	ports := proxytest.FreePorts(t, 4)
	p := &pebble{CARoot: filepath.Join(dir, "pebble-https.pem"), RootFile: filepath.Join(dir, "pebble-root.pem"),
		HTTPPort: portOf(ports[0]), TLSPort: portOf(ports[1])}
	os.WriteFile(p.CARoot, certPEM, 0o644)
	listen, mgmt := ports[2], ports[3]
	validity := o.Validity
	if validity == 0 {
		validity = 90 * 24 * 3600
	}
	cfg := map[string]any{"pebble": map[string]any{
		"listenAddress": listen, "managementListenAddress": mgmt,
		"certificate": certFile, "privateKey": keyFile,
		"httpPort": p.HTTPPort, "tlsPort": p.TLSPort,
		"ocspResponderURL": "", "externalAccountBindingRequired": len(o.EAB) > 0,
		"externalAccountMACKeys": o.EAB,
		"retryAfter":             map[string]int{"authz": 1, "order": 1},
		"keyAlgorithm":           "ecdsa",
		"profiles": map[string]any{"default": map[string]any{
			"description": "imapgate tests", "validityPeriod": validity}},
	}}
	data, _ := json.Marshal(cfg)
	cfgFile := filepath.Join(dir, "pebble.json")
	os.WriteFile(cfgFile, data, 0o644)
	p.cmd = startProcess(t, dir, bin, []string{"PEBBLE_VA_NOSLEEP=1", "PEBBLE_WFE_NONCEREJECT=0"},
		"-config", cfgFile, "-dnsserver", o.DNS)
	p.DirURL = "https://" + listen + "/dir"

	// Trust Pebble's issuing root, from its management endpoint.
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(certPEM)
	hc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	defer hc.CloseIdleConnections()
	deadline := time.Now().Add(20 * time.Second)
	for {
		resp, err := hc.Get("https://" + mgmt + "/roots/0")
		if err == nil {
			root, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == 200 {
				os.WriteFile(p.RootFile, root, 0o644)
				p.Roots = x509.NewCertPool()
				if !p.Roots.AppendCertsFromPEM(root) {
					t.Fatalf("pebble /roots/0 is not PEM: %q", root)
				}
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("pebble did not come up: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	waitTCP(t, listen, "pebble")
	return p
}

// bind9 is a running BIND 9 primary for one zone.
type bind9 struct {
	Addr    string // "127.0.0.1:PORT", UDP and TCP
	Zone    string
	KeyName string
	KeyFile string // as tsig-keygen wrote it
	Secret  string // base64
}

// startBIND runs `named -g` for zone with an A record 127.0.0.1 for each
// host and dynamic updates allowed with a fresh TSIG key.
func startBIND(t *testing.T, zone string, hosts ...string) *bind9 {
	t.Helper()
	proxytest.RequireTool(t, "named")
	proxytest.RequireTool(t, "tsig-keygen")
	dir := t.TempDir()
	os.Chmod(dir, 0o777) // named may drop to the bind user for its journal
	b := &bind9{Addr: proxytest.FreePort(t), Zone: zone, KeyName: "imapgate-acme", KeyFile: filepath.Join(dir, "tsig.key")}
	key, err := exec.Command("tsig-keygen", "-a", "hmac-sha256", b.KeyName).Output()
	if err != nil {
		t.Fatalf("tsig-keygen: %v", err)
	}
	os.WriteFile(b.KeyFile, key, 0o644)
	b.Secret = tsigSecret(string(key))
	_, port, _ := net.SplitHostPort(b.Addr)
	zoneFile := filepath.Join(dir, zone+".zone")
	var z strings.Builder
	fmt.Fprintf(&z, "$TTL 5\n@ IN SOA ns.%s. hostmaster.%s. 1 60 60 600 5\n@ IN NS ns.%s.\nns IN A 127.0.0.1\n", zone, zone, zone)
	for _, h := range hosts {
		fmt.Fprintf(&z, "%s IN A 127.0.0.1\n", h)
	}
	os.WriteFile(zoneFile, []byte(z.String()), 0o666)
	conf := fmt.Sprintf(`options {
	directory %q;
	pid-file none;
	listen-on port %s { 127.0.0.1; };
	listen-on-v6 { none; };
	recursion no;
	dnssec-validation no;
	allow-query { any; };
	notify no;
};
controls { };
include %q;
zone %q { type primary; file %q; allow-update { key %q; }; };
`, dir, port, b.KeyFile, zone, zoneFile, b.KeyName)
	confFile := filepath.Join(dir, "named.conf")
	os.WriteFile(confFile, []byte(conf), 0o644)
	startProcess(t, dir, "named", nil, "-g", "-c", confFile)
	waitTCP(t, b.Addr, "named")
	return b
}

// acmeGate is `imapgate serve` with [tls.acme], run in-process.
type acmeGate struct {
	implicit string
	stderr   *lockedBuffer
	dir      string
	started  time.Time
	exit     chan int
	cancel   context.CancelFunc
	reload   chan struct{} // a receive makes serve reload its config, as SIGHUP does
}

// startACMEGate writes a config whose [tls.acme] table is acme (the
// storage, ca and ca_root keys are added) and runs serve until the test
// ends. extra goes at the end of the file (more [[listen]] tables).
func startACMEGate(t *testing.T, p *pebble, acme, extra string) *acmeGate {
	t.Helper()
	return startACMEGateTo(t, p, acme, extra, fmt.Sprintf("address = %q\ntls = \"none\"", startMemUpstream(t)))
}

// startACMEGateTo is startACMEGate with upstream as the [upstream] body.
func startACMEGateTo(t *testing.T, p *pebble, acme, extra, upstream string) *acmeGate {
	t.Helper()
	dir := t.TempDir()
	g := &acmeGate{implicit: proxytest.FreePort(t), stderr: &lockedBuffer{}, dir: dir, exit: make(chan int, 1)}
	cfg := fmt.Sprintf(`shutdown_timeout = "2s"

[[listen]]
address = %q
tls = "implicit"

[tls.acme]
ca = %q
ca_root = %q
storage = %q
%s

[upstream]
%s

[policy]
failure_delay = "0s"

[audit]
output = %q
%s
`, g.implicit, p.DirURL, p.CARoot, filepath.Join(dir, "acme"), acme, upstream, filepath.Join(dir, "audit.log"), extra)
	path := filepath.Join(dir, "imapgate.toml")
	os.WriteFile(path, []byte(cfg), 0o600)
	g.started = time.Now()
	g.reload = make(chan struct{})
	g.cancel = runServe(t, path, g.implicit, g.stderr, g.reload, g.exit, 10*time.Second, func() {
		if t.Failed() {
			t.Logf("imapgate log:\n%s", tail(g.stderr.String(), 8000))
		}
	})
	return g
}

// waitVerified dials until a handshake for name verifies against roots,
// and returns the leaf and the time it took since serve started.
func (g *acmeGate) waitVerified(t *testing.T, addr, name string, roots *x509.CertPool, within time.Duration) (*x509.Certificate, time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	var lastErr error
	for time.Now().Before(deadline) {
		conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 2 * time.Second}, "tcp", addr,
			&tls.Config{RootCAs: roots, ServerName: name, NextProtos: []string{"imap"}})
		if err == nil {
			leaf := conn.ConnectionState().PeerCertificates[0]
			conn.Close()
			return leaf, time.Since(g.started)
		}
		lastErr = err
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("no verified handshake for %s within %v: %v", name, within, lastErr)
	return nil, 0
}
