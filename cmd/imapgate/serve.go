package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/pires/go-proxyproto"

	"github.com/imapgate/imapgate/policy"
	"github.com/imapgate/imapgate/proxy"
	"github.com/imapgate/imapgate/tlsconf"
)

// wiring is a config turned into the objects the proxy runs with. Nothing
// in it binds a port, so check-config can build one too.
type wiring struct {
	cfg       *Config
	certs     *tlsconf.CertStore
	acme      *tlsconf.ACME    // nil without [tls.acme]; Start it in serve
	listeners []proxy.Listener // parallel to cfg.Listen
	proxy     *proxy.Config
}

// newRuntime builds the proxy's objects from a validated config. audit may
// be nil (check-config).
func newRuntime(cfg *Config, audit *proxy.Auditor) (*wiring, error) {
	if cfg.Metrics.Listen != "" {
		// Accepted so configs written for later versions load; not served yet.
		slog.Warn("metrics.listen is set but metrics are not served by this version", "listen", cfg.Metrics.Listen)
	}
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
	for i, l := range cfg.Listen {
		v, err := tlsconf.ParseVersion(l.EffectiveMinVersion(cfg))
		if err != nil {
			return nil, fmt.Errorf("listen[%d].min_version: %w", i, err)
		}
		tc := tlsconf.ServerConfig(certs, v)
		if rt.acme != nil {
			tc = rt.acme.ServerConfig(v)
		}
		rt.listeners = append(rt.listeners, proxy.Listener{
			Name:      l.Address,
			Mode:      proxy.TLSMode(l.TLS),
			TLSConfig: tc,
		})
	}
	up, err := newUpstream(&cfg.Upstream)
	if err != nil {
		return nil, err
	}
	access, err := policy.NewAccess(cfg.Policy.Allow, cfg.Policy.Deny)
	if err != nil {
		return nil, fmt.Errorf("policy: %w", err)
	}
	rt.proxy = &proxy.Config{
		Upstream:          up,
		Mechanisms:        cfg.Auth.Mechanisms,
		AllowLoginOverTLS: cfg.Auth.LoginCommand == "allow-over-tls",
		PreauthTimeout:    cfg.Policy.PreauthTimeout.Duration,
		IdleTimeout:       cfg.Policy.IdleTimeout.Duration,
		FailureDelay:      cfg.Policy.FailureDelay.Duration,
		Access:            access,
		Conns:             policy.NewConnLimiter(cfg.Policy.MaxConnections, cfg.Policy.MaxConnectionsPerIP),
		Audit:             audit,
	}
	return rt, nil
}

// newUpstream builds the upstream login settings.
func newUpstream(c *UpstreamConfig) (*proxy.Upstream, error) {
	up := &proxy.Upstream{
		Address:        c.Address,
		TLS:            proxy.UpstreamTLS(c.TLS),
		Method:         proxy.LoginMethod(c.Login),
		Forward:        proxy.ForwardMode(c.ForwardClientIP),
		ConnectTimeout: c.ConnectTimeout.Duration,
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
	case "", "stdout":
		return os.Stdout, nil, nil
	case "stderr":
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
	log := slog.New(slog.NewJSONHandler(stderr, nil))
	cfg, err := LoadConfig(path)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	for _, w := range cfg.Warnings() {
		log.Warn("config", "warning", w)
	}
	sink, closer, err := auditSink(cfg.Audit.Output)
	if err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", path, err)
		return 1
	}
	audit := proxy.NewAuditor(sink, log)
	rt, err := newRuntime(cfg, audit)
	if err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", path, err)
		return 1
	}
	rt.proxy.Log = log
	lns, err := listen(rt, cfg)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	if rt.acme != nil {
		if err := startACME(ctx, rt.acme, log); err != nil {
			for _, ln := range lns {
				ln.Close()
			}
			fmt.Fprintf(stderr, "%s: %v\n", path, err)
			return 1
		}
		defer rt.acme.Close()
	}
	warnOldTLS(rt, cfg, log)
	srv := proxy.NewServer(rt.proxy)
	var wg sync.WaitGroup
	for i, ln := range lns {
		wg.Add(1)
		go func(ln net.Listener, l proxy.Listener) {
			defer wg.Done()
			if err := srv.Serve(ln, l); err != nil && !errors.Is(err, proxy.ErrServerClosed) {
				log.Error("listener stopped", "listener", l.Name, "err", err)
			}
		}(ln, rt.listeners[i])
		log.Info("listening", "address", ln.Addr().String(), "tls", cfg.Listen[i].TLS)
	}
	watchCtx, stopWatch := context.WithCancel(ctx)
	defer stopWatch()
	go trimMemory(watchCtx, 5*time.Second, 4<<20, log)
	go rt.certs.Watch(watchCtx, 0, func(err error) { log.Error("certificate reload failed; keeping the old certificates", "err", err) })

	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	for {
		select {
		case <-hup:
			closer = reload(path, rt, srv, audit, closer, log)
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
	wg.Wait()
	if closer != nil {
		closer.Close()
	}
	return 0
}

// listen binds every listener; on failure it closes those already bound.
func listen(rt *wiring, cfg *Config) ([]net.Listener, error) {
	var lns []net.Listener
	for i, l := range cfg.Listen {
		ln, err := net.Listen("tcp", l.Address)
		if err != nil {
			for _, o := range lns {
				o.Close()
			}
			return nil, fmt.Errorf("listen[%d]: cannot bind %s: %w", i, l.Address, err)
		}
		if l.ProxyProtocol {
			ln = proxyProtocolListener(ln, cfg.Policy.TrustedProxies, cfg.Policy.PreauthTimeout.Duration)
		}
		lns = append(lns, ln)
	}
	return lns, nil
}

// proxyProtocolListener accepts PROXY v1/v2 headers only from trusted
// proxies; anyone else is served as a direct client (its header, if any, is
// then a syntax error, never trusted).
func proxyProtocolListener(ln net.Listener, trusted []string, timeout time.Duration) net.Listener {
	prefixes, _ := policy.ParsePrefixes(trusted) // validated with the config
	return &proxyproto.Listener{
		Listener:          ln,
		ReadHeaderTimeout: timeout,
		ConnPolicy: func(o proxyproto.ConnPolicyOptions) (proxyproto.Policy, error) {
			if ta, ok := o.Upstream.(*net.TCPAddr); ok {
				if ip, ok := netipFromIP(ta.IP); ok {
					for _, p := range prefixes {
						if p.Contains(ip) {
							return proxyproto.USE, nil
						}
					}
				}
			}
			return proxyproto.IGNORE, nil
		},
	}
}

// reload re-reads the config on SIGHUP. New sessions get the new settings;
// sessions already running keep theirs. A bad config is logged and ignored.
// Listener changes need a restart in this version.
func reload(path string, rt *wiring, srv *proxy.Server, audit *proxy.Auditor, closer io.Closer, log *slog.Logger) io.Closer {
	cfg, err := LoadConfig(path)
	if err != nil {
		log.Error("reload: config rejected; keeping the running one", "err", strings.ReplaceAll(err.Error(), "\n", "; "))
		return closer
	}
	nrt, err := newRuntime(cfg, audit)
	if err != nil {
		log.Error("reload: config rejected; keeping the running one", "err", err)
		return closer
	}
	if err := rt.certs.Reload(); err != nil {
		log.Error("reload: certificates not reloaded", "err", err)
	}
	warnACMEReload(rt, cfg, log)
	sink, c, err := auditSink(cfg.Audit.Output)
	if err != nil {
		log.Error("reload: audit output not reopened", "err", err)
	} else {
		audit.SetOutput(sink)
		if closer != nil {
			closer.Close()
		}
		closer = c
	}
	nrt.proxy.Log = log
	// Open connections stay counted: keep the limiter, change its limits.
	nrt.proxy.Conns = rt.proxy.Conns
	nrt.proxy.Conns.SetLimits(cfg.Policy.MaxConnections, cfg.Policy.MaxConnectionsPerIP)
	srv.SetConfig(nrt.proxy)
	log.Info("reloaded", "config", path)
	return closer
}

func netipFromIP(ip net.IP) (netip.Addr, bool) {
	a, ok := netip.AddrFromSlice(ip)
	return a.Unmap(), ok
}
