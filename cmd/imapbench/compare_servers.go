package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"time"
)

// The servers of a comparison run, each started from a configuration
// generated in the run's temporary directory and stopped by PID: nginx's
// mail proxy with its auth_http responder, and imapgate. Dovecot comes
// from proxytest.

const (
	// nginxMailModule is where Debian's libnginx-mod-mail puts the module.
	nginxMailModule = "/usr/lib/nginx/modules/ngx_mail_module.so"
	// nginxWorkers matches the 2-core machines the figures were first
	// taken on; imapgate uses every core (GOMAXPROCS).
	nginxWorkers = 2
	readyTimeout = 10 * time.Second
	stopGrace    = 10 * time.Second
	startTries   = 3 // a port chosen free may be taken before it is bound
)

// child is a server process compare started and must stop.
type child struct {
	name   string
	cmd    *exec.Cmd
	output string        // file with its stdout and stderr
	exited chan struct{} // closed once it has exited and been reaped
}

// startChild starts argv with its output appended to output. It runs in
// its own process group and gets SIGTERM if imapbench dies (Linux).
func startChild(name, dir, output string, argv ...string) (*child, error) {
	f, err := os.OpenFile(output, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	defer f.Close() // the child has its own copy
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Dir, cmd.Stdout, cmd.Stderr = dir, f, f
	cmd.SysProcAttr = childProcAttr()
	c := &child{name: name, cmd: cmd, output: output, exited: make(chan struct{})}
	started := make(chan error)
	go c.wait(started)
	if err := <-started; err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return c, nil
}

// wait starts the process and reaps it. The kernel sends Pdeathsig when
// the thread that started the child ends, so that thread stays locked
// here until the child has exited.
func (c *child) wait(started chan<- error) {
	defer close(c.exited)
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	if err := c.cmd.Start(); err != nil {
		started <- err
		return
	}
	started <- nil
	c.cmd.Wait()
}

func (c *child) pid() int { return c.cmd.Process.Pid }

// stop sends SIGTERM and waits; after stopGrace it kills the process.
func (c *child) stop() error {
	select {
	case <-c.exited:
		return nil
	default:
	}
	c.cmd.Process.Signal(syscall.SIGTERM)
	t := time.NewTimer(stopGrace)
	defer t.Stop()
	select {
	case <-c.exited:
		return nil
	case <-t.C:
		c.cmd.Process.Kill()
		<-c.exited
		return fmt.Errorf("%s (pid %d) did not stop within %v of SIGTERM and was killed", c.name, c.pid(), stopGrace)
	}
}

// tail is the end of the child's output, for error messages.
func (c *child) tail() string { return fileTail(c.output, 20) }

func fileTail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Sprintf("(%v)", err)
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// waitGreeting waits until addr greets an IMAP client (over TLS if
// tlsConf is set), or exited is closed, or within has passed.
func waitGreeting(ctx context.Context, addr string, tlsConf *tls.Config, exited <-chan struct{}, within time.Duration) error {
	t := target{Addr: addr, TLS: tlsNone, Timeout: 2 * time.Second}
	if tlsConf != nil {
		t.TLS, t.TLSConfig = tlsImplicit, tlsConf
	}
	deadline := time.Now().Add(within)
	for {
		c, err := dial(ctx, t, netip.Addr{}, 4<<10)
		if err == nil {
			c.Close()
			return nil
		}
		select {
		case <-exited:
			return errors.New("it exited")
		case <-ctx.Done():
			return context.Cause(ctx)
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("no greeting on %s within %v: %v", addr, within, err)
		}
	}
}

// freeLoopbackPort returns "127.0.0.1:N" for a port that was free a
// moment ago.
func freeLoopbackPort() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

// nginxServer is nginx with the mail module, proxying implicit-TLS IMAP
// on addr to Dovecot by way of the auth_http responder.
type nginxServer struct {
	bin, dir, addr string
	master         *child
	workers        []procID
	// auth is its auth_http responder, whose CPU counts with nginx's.
	auth *authResponder
}

// nginxTuning is what a run changes in nginx's event and listen
// settings. The zero value is the configuration every scenario but the
// storm uses.
type nginxTuning struct {
	// Backlog is the listen socket's backlog (listen ... backlog=N). If
	// zero, nginx's own default is used: 511 on Linux, where Go (so
	// imapgate) listens with net.core.somaxconn.
	Backlog int
	// WorkerConnections is each worker's worker_connections. If zero,
	// 10000 is used: 5,000 proxied sessions per worker (each holds two).
	WorkerConnections int
}

// nginxConfig renders nginx.conf: nginx's defaults but for what the run
// needs (loopback addresses, files in dir, enough connections, and tune).
// The mail proxy's buffer (proxy_buffer, one page) and timeouts stay as a
// user would find them. Every worker may open 20,000 files
// (worker_rlimit_nofile), as imapgate's one process may.
func nginxConfig(dir, listen, authAddr, certFile, keyFile string, tune nginxTuning) string {
	conns := tune.WorkerConnections
	if conns == 0 {
		conns = 10000
	}
	if tune.Backlog > 0 {
		listen += fmt.Sprintf(" backlog=%d", tune.Backlog)
	}
	return fmt.Sprintf(`# Written by imapbench compare.
load_module %s;
daemon off;
master_process on;
worker_processes %d;
worker_rlimit_nofile 20000;
pid %s;
error_log %s warn;

events {
    worker_connections %d;
}

mail {
    server_name localhost;
    auth_http %s/auth;

    server {
        listen %s ssl;
        protocol imap;
        imap_auth plain;
        ssl_certificate %s;
        ssl_certificate_key %s;
        ssl_protocols TLSv1.2 TLSv1.3;
    }
}
`, nginxMailModule, nginxWorkers, filepath.Join(dir, "nginx.pid"), filepath.Join(dir, "error.log"),
		conns, authAddr, listen, certFile, keyFile)
}

// nginxBinary finds nginx and its mail module.
func nginxBinary() (string, error) {
	bin, err := lookSbin("nginx")
	if err != nil {
		return "", errors.New("nginx is not installed: apt-get install nginx libnginx-mod-mail (or run .ci/run)")
	}
	if _, err := os.Stat(nginxMailModule); err != nil {
		return "", fmt.Errorf("nginx's mail module is not installed (%v): apt-get install libnginx-mod-mail", err)
	}
	return bin, nil
}

// lookSbin finds a program on PATH or in /usr/sbin, which is not on
// every user's PATH.
func lookSbin(name string) (string, error) {
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	p := filepath.Join("/usr/sbin", name)
	if _, err := os.Stat(p); err != nil {
		return "", fmt.Errorf("%s not found", name)
	}
	return p, nil
}

// startNginx writes the configuration and starts nginx, on a fresh port.
func startNginx(ctx context.Context, bin, dir string, auth *authResponder, certFile, keyFile string, tune nginxTuning, tlsConf *tls.Config) (*nginxServer, error) {
	var err error
	for range startTries {
		n := &nginxServer{bin: bin, dir: dir, auth: auth}
		if n.addr, err = freeLoopbackPort(); err != nil {
			return nil, err
		}
		conf := nginxConfig(dir, n.addr, auth.addr, certFile, keyFile, tune)
		if err = os.WriteFile(filepath.Join(dir, "nginx.conf"), []byte(conf), 0o644); err != nil {
			return nil, err
		}
		if err = n.start(ctx, tlsConf); err == nil {
			return n, nil
		}
		if !strings.Contains(err.Error(), "Address already in use") {
			break
		}
	}
	return nil, err
}

// start runs nginx in the foreground and waits for its greeting and its
// workers.
func (n *nginxServer) start(ctx context.Context, tlsConf *tls.Config) error {
	logFile := filepath.Join(n.dir, "error.log")
	m, err := startChild("nginx", n.dir, filepath.Join(n.dir, "nginx.out"),
		n.bin, "-p", n.dir, "-c", filepath.Join(n.dir, "nginx.conf"), "-e", logFile)
	if err != nil {
		return err
	}
	n.master, n.workers = m, nil
	if err := waitGreeting(ctx, n.addr, tlsConf, m.exited, readyTimeout); err != nil {
		n.stop()
		return fmt.Errorf("nginx did not start: %v\n%s\n%s", err, m.tail(), fileTail(logFile, 20))
	}
	deadline := time.Now().Add(readyTimeout)
	for {
		n.workers, err = childProcs("/proc", m.pid())
		if err != nil || len(n.workers) >= nginxWorkers {
			break
		}
		if time.Now().After(deadline) {
			err = fmt.Errorf("nginx (pid %d) has %d workers after %v, want %d", m.pid(), len(n.workers), readyTimeout, nginxWorkers)
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err != nil {
		n.stop()
		return err
	}
	return nil
}

// pids are nginx's master and workers, whose memory adds up to nginx's.
func (n *nginxServer) pids() []int {
	pids := []int{n.master.pid()}
	for _, w := range n.workers {
		pids = append(pids, w.PID)
	}
	return pids
}

// cpuPIDs are the processes whose CPU a login through nginx costs: its
// master, its workers and its auth_http responder.
func (n *nginxServer) cpuPIDs() []int { return append(n.pids(), n.auth.pid()) }

// restart stops nginx and starts it again on the same address, for a
// measurement from a fresh process.
func (n *nginxServer) restart(ctx context.Context, tlsConf *tls.Config) error {
	if err := n.stop(); err != nil {
		return err
	}
	return n.start(ctx, tlsConf)
}

// stop stops the master (SIGTERM: nginx's fast shutdown, which stops the
// workers first) and kills any worker left behind.
func (n *nginxServer) stop() error {
	if n.master == nil {
		return nil
	}
	err := n.master.stop()
	for _, w := range n.workers {
		if kerr := w.kill("/proc"); kerr != nil {
			err = errors.Join(err, kerr)
		}
	}
	n.master, n.workers = nil, nil
	return err
}

// imapgateServer is imapgate built from this repository, serving
// implicit TLS on addr with upstream.tls = "none" to Dovecot, or the
// upstream TLS of its upstreamTLS.
type imapgateServer struct {
	bin, dir, addr, config string
	// metrics is metrics.listen, serving Go's profiles (metrics.pprof);
	// "" when the run does not profile.
	metrics string
	proc    *child
}

// upstreamTLS is how an imapgate of compare reaches its upstream. The
// zero value is plaintext (upstream.tls = "none").
type upstreamTLS struct {
	// Mode is upstream.tls: "starttls" or "implicit"; "" is "none".
	Mode string
	// CAFile is upstream.ca_file, the upstream's own certificate; it
	// must be set with Mode.
	CAFile string
}

// imapgateConfig renders imapgate.toml: defaults but for the addresses,
// the certificate, a plaintext upstream as nginx's (or up's TLS), no
// failure delay and connection limits above any run's sessions.
// With metrics set, it also serves /metrics and Go's profiles
// (metrics.pprof) there.
func imapgateConfig(dir, listen, upstream, certFile, keyFile string, up upstreamTLS, metrics string) string {
	upTLS := `tls = "none"`
	if up.Mode != "" {
		upTLS = fmt.Sprintf("tls = %q\nserver_name = \"localhost\"\nca_file = %q", up.Mode, up.CAFile)
	}
	metricsConf := ""
	if metrics != "" {
		metricsConf = fmt.Sprintf("\n[metrics]\nlisten = %q\npprof = true\n", metrics)
	}
	return fmt.Sprintf(`# Written by imapbench compare.
shutdown_timeout = "5s"

[[listen]]
address = %q
tls = "implicit"

[tls]
cert_file = %q
key_file = %q

[upstream]
address = %q
%s

[policy]
failure_delay = "0s"
max_connections = 20000
max_connections_per_ip = 20000
max_connections_per_network = 0

[audit]
output = %q
%s`, listen, certFile, keyFile, upstream, upTLS, filepath.Join(dir, "audit.log"), metricsConf)
}

// gateExtra is what an imapgate of compare has beyond the configuration
// every one has. The zero value adds nothing.
type gateExtra struct {
	// Profile serves Go's profiles on a fresh port (metrics.listen with
	// metrics.pprof).
	Profile bool
	// MaxUpstreamLogins, if not nil, sets policy.max_upstream_logins and
	// policy.upstream_login_queue (nil: imapgate's defaults: 64 in flight, the queue unbounded).
	MaxUpstreamLogins *int
}

// startImapgate writes the configuration and starts imapgate on a fresh
// port, with extra's additions.
func startImapgate(ctx context.Context, bin, dir, upstream, certFile, keyFile string, up upstreamTLS, extra gateExtra, tlsConf *tls.Config) (*imapgateServer, error) {
	var err error
	for range startTries {
		g := &imapgateServer{bin: bin, dir: dir, config: filepath.Join(dir, "imapgate.toml")}
		if g.addr, err = freeLoopbackPort(); err != nil {
			return nil, err
		}
		if extra.Profile {
			if g.metrics, err = freeLoopbackPort(); err != nil {
				return nil, err
			}
		}
		conf := imapgateConfig(dir, g.addr, upstream, certFile, keyFile, up, g.metrics)
		if n := extra.MaxUpstreamLogins; n != nil {
			conf = strings.Replace(conf, "max_connections_per_network = 0\n",
				fmt.Sprintf("max_connections_per_network = 0\nmax_upstream_logins = %d\nupstream_login_queue = %d\n", *n, *n), 1)
		}
		if err = os.WriteFile(g.config, []byte(conf), 0o600); err != nil {
			return nil, err
		}
		if err = g.start(ctx, tlsConf); err == nil {
			return g, nil
		}
		if !strings.Contains(err.Error(), "address already in use") {
			break
		}
	}
	return nil, err
}

func (g *imapgateServer) start(ctx context.Context, tlsConf *tls.Config) error {
	p, err := startChild("imapgate", g.dir, filepath.Join(g.dir, "imapgate.log"), g.bin, "serve", "--config", g.config)
	if err != nil {
		return err
	}
	g.proc = p
	if err := waitGreeting(ctx, g.addr, tlsConf, p.exited, readyTimeout); err != nil {
		g.stop()
		return fmt.Errorf("imapgate did not start: %v\n%s", err, p.tail())
	}
	return nil
}

func (g *imapgateServer) pids() []int { return []int{g.proc.pid()} }

// cpuPIDs is imapgate's one process: it does its own authentication.
func (g *imapgateServer) cpuPIDs() []int { return g.pids() }

func (g *imapgateServer) restart(ctx context.Context, tlsConf *tls.Config) error {
	if err := g.stop(); err != nil {
		return err
	}
	return g.start(ctx, tlsConf)
}

func (g *imapgateServer) stop() error {
	if g.proc == nil {
		return nil
	}
	err := g.proc.stop()
	g.proc = nil
	return err
}
