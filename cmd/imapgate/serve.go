package main

import (
	"context"
	"crypto/x509"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/imapgate/imapgate/policy"
	"github.com/imapgate/imapgate/proxy"
	"github.com/imapgate/imapgate/tlsconf"
)

// wiring is a config turned into the objects the proxy runs with. Nothing
// in it binds a port, so check-config can build one too.
type wiring struct {
	cfg       *Config
	certs     *tlsconf.CertStore
	acme      *tlsconf.ACME    // nil without [tls.acme]; started by serve
	listeners []proxy.Listener // parallel to cfg.Listen
	proxy     *proxy.Config
	userKey   []byte // audit.user_hash_key_file's key; nil = user names in clear
}

// newRuntime builds the proxy's objects from a validated config. audit may
// be nil (check-config).
func newRuntime(cfg *Config, audit *proxy.Auditor) (*wiring, error) {
	var pairs []tlsconf.CertFiles
	if cfg.TLS.CertFile != "" {
		pairs = append(pairs, tlsconf.CertFiles{CertFile: cfg.TLS.CertFile, KeyFile: cfg.TLS.KeyFile})
	}
	for _, p := range cfg.TLS.Certificates {
		pairs = append(pairs, tlsconf.CertFiles{CertFile: p.CertFile, KeyFile: p.KeyFile})
	}
	certs, err := tlsconf.LoadCertStore(pairs...)
	if err != nil {
		return nil, fmt.Errorf("tls: %w", err)
	}
	rt := &wiring{cfg: cfg, certs: certs}
	if cfg.TLS.ACME != nil {
		if rt.acme, err = newACME(cfg.TLS.ACME); err != nil {
			return nil, err
		}
	}
	for _, l := range cfg.Listen {
		rt.listeners = append(rt.listeners, proxy.Listener{
			Name: l.Address,
			Mode: proxy.TLSMode(l.TLS),
		})
	}
	if err := rt.setServerTLS(); err != nil {
		return nil, err
	}
	up, err := newUpstream(&cfg.Upstream)
	if err != nil {
		return nil, err
	}
	if rt.userKey, err = readUserHashKey(cfg.Audit.UserHashKeyFile); err != nil {
		return nil, err
	}
	access, err := policy.NewAccess(cfg.Policy.Allow, cfg.Policy.Deny)
	if err != nil {
		return nil, fmt.Errorf("policy: %w", err)
	}
	rt.proxy = &proxy.Config{
		Upstream:          up,
		Mechanisms:        cfg.Auth.Mechanisms,
		AllowLoginOverTLS: cfg.Auth.LoginCommand == loginCommandAllowOverTLS,
		PreauthTimeout:    cfg.Policy.PreauthTimeout.Duration,
		IdleTimeout:       cfg.Policy.IdleTimeout.Duration,
		FailureDelay:      cfg.Policy.FailureDelay.Duration,
		Access:            access,
		Conns:             policy.NewConnLimiter(cfg.Policy.MaxConnections, cfg.Policy.MaxConnectionsPerIP, cfg.Policy.MaxConnectionsPerNetwork),
		Audit:             audit,
	}
	rt.proxy.Policy, rt.proxy.UpstreamLogins = newAuthPolicy(&cfg.Policy)
	return rt, nil
}

// setServerTLS gives every listener its TLS config: the ACME manager's
// certificates when there is one, else the certificate files.
func (rt *wiring) setServerTLS() error {
	for i, l := range rt.cfg.Listen {
		v, err := tlsconf.ParseVersion(l.EffectiveMinVersion(rt.cfg))
		if err != nil {
			return fmt.Errorf("listen[%d].min_version: %w", i, err)
		}
		if rt.acme != nil {
			rt.listeners[i].TLSConfig = rt.acme.ServerConfig(v)
		} else {
			rt.listeners[i].TLSConfig = tlsconf.ServerConfig(rt.certs, v)
		}
	}
	return nil
}

// leaves returns the certificates the listeners serve, for the expiry
// metric and /readyz.
func (rt *wiring) leaves() []*x509.Certificate {
	if rt.acme != nil {
		return rt.acme.Leaves()
	}
	return rt.certs.Leaves()
}

// newUpstream builds the upstream login settings.
func newUpstream(c *UpstreamConfig) (*proxy.Upstream, error) {
	up := &proxy.Upstream{
		Address:        c.Address,
		TLS:            proxy.UpstreamTLS(c.TLS),
		Method:         proxy.LoginMethod(c.Login),
		Forward:        proxy.ForwardMode(c.ForwardClientIP),
		ConnectTimeout: c.ConnectTimeout.Duration,
		LoginTimeout:   c.LoginTimeout.Duration,
	}
	if up.TLS != proxy.UpstreamPlaintext {
		name := c.ServerName
		if name == "" {
			name, _, _ = net.SplitHostPort(c.Address)
		}
		tc, err := tlsconf.UpstreamConfig(tlsconf.UpstreamOptions{ServerName: name, CAFile: c.CAFile, PinSHA256: c.PinSHA256})
		if err != nil {
			return nil, fmt.Errorf("upstream: %w", err)
		}
		up.TLSConfig = tc
	}
	for _, a := range c.SourceAddresses {
		ip, err := netip.ParseAddr(a)
		if err != nil {
			return nil, fmt.Errorf("upstream.source_addresses: %q is not an IP address", a)
		}
		up.SourceAddrs = append(up.SourceAddrs, ip)
	}
	return up, nil
}

// auditSink opens the audit output: stdout, stderr or a file (append).
func auditSink(output string) (io.Writer, io.Closer, error) {
	switch output {
	case "", auditStdout:
		return os.Stdout, nil, nil
	case auditStderr:
		return os.Stderr, nil, nil
	}
	f, err := os.OpenFile(output, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o640)
	if err != nil {
		return nil, nil, fmt.Errorf("audit.output: %w", err)
	}
	return f, f, nil
}

// serve runs the proxy until ctx is done (SIGTERM/SIGINT).
func serve(ctx context.Context, path string, stderr io.Writer) int {
	return serveReloading(ctx, path, stderr, nil)
}

// serveReloading is serve that also reloads when reload receives (tests:
// a SIGHUP would reach every serve running in the test process).
func serveReloading(ctx context.Context, path string, stderr io.Writer, reload <-chan struct{}) int {
	log := slog.New(slog.NewJSONHandler(stderr, nil))
	cfg, err := LoadConfig(path)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	for _, w := range cfg.Warnings() {
		log.Warn("config", "warning", w)
	}
	queue, err := newAuditQueue(cfg.Audit.Output, log)
	if err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", path, err)
		return 1
	}
	defer queue.Close(5 * time.Second)
	audit := proxy.NewAuditor(queue, log)
	m := newMetrics(queue.Dropped)
	audit.SetObserver(m.observe)
	rt, err := newRuntime(cfg, audit)
	if err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", path, err)
		return 1
	}
	watchCtx, stopWatch := context.WithCancel(ctx)
	defer stopWatch()
	g := &gateway{path: path, log: log, audit: audit, queue: queue, metrics: m}
	g.install(watchCtx, rt)
	srv := proxy.NewServer(rt.proxy)
	g.srv = srv
	m.srv.Store(srv)
	g.lns = newListenerSet(srv, log)
	if err := g.lns.apply(rt, cfg); err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	defer g.closeACME()
	if rt.acme != nil {
		// After the client listeners, so a port in use is reported first;
		// certificates are obtained in the background (stored ones serve
		// at once).
		if err := startACME(watchCtx, rt.acme, log); err != nil {
			srv.Shutdown(context.Background())
			g.lns.wg.Wait()
			fmt.Fprintf(stderr, "%s: %v\n", path, err)
			return 1
		}
	}
	warnOldTLS(rt, cfg, log)
	if cfg.Metrics.Listen != "" {
		mln, err := net.Listen("tcp", cfg.Metrics.Listen)
		if err != nil {
			srv.Shutdown(context.Background())
			g.lns.wg.Wait()
			fmt.Fprintf(stderr, "metrics.listen: cannot bind %s: %v\n", cfg.Metrics.Listen, err)
			return 1
		}
		h := &health{probeEvery: upstreamProbeEvery, certs: m.leaves}
		h.bound.Store(true)
		go probeUpstream(watchCtx, h, func() *proxy.Upstream { return srv.Config().Upstream }, m, log)
		go serveMetrics(watchCtx, mln, metricsHandler(m, h), log)
		log.Info("serving metrics", "address", mln.Addr().String())
	}
	go trimMemory(watchCtx, 5*time.Second, 4<<20, log)

	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	for {
		select {
		case <-hup:
			g.reload(watchCtx)
			continue
		case <-reload:
			g.reload(watchCtx)
			continue
		case <-ctx.Done():
		}
		break
	}
	log.Info("shutting down", "sessions", srv.Sessions(), "timeout", cfg.ShutdownTimeout.Duration.String())
	sctx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownTimeout.Duration)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		log.Warn("shutdown timeout reached; closed the remaining sessions", "err", err)
	}
	g.lns.wg.Wait()
	return 0
}

// upstreamProbeEvery is how often /readyz's upstream probe runs.
const upstreamProbeEvery = 10 * time.Second
