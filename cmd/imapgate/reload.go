package main

import (
	"context"
	"log/slog"
	"strings"

	"github.com/imapgate/imapgate/proxy"
)

// gateway is a running proxy and what a SIGHUP may change in it.
type gateway struct {
	path    string
	log     *slog.Logger
	srv     *proxy.Server
	audit   *proxy.Auditor
	queue   *auditQueue
	metrics *gateMetrics
	lns     *listenerSet

	rt        *wiring            // the config in force
	stopWatch context.CancelFunc // ends rt's certificate file watcher
}

// install puts rt's settings in force for new sessions: metrics hooks,
// user_hash key, certificates for the expiry series, the certificate file
// watcher, and the proxy config.
func (g *gateway) install(ctx context.Context, rt *wiring) {
	rt.proxy.Log = g.log
	rt.proxy.Upstream.ObserveLogin = g.metrics.observeLogin
	g.audit.SetUserKey(rt.userKey)
	g.metrics.certs.Store(rt)
	if g.stopWatch != nil {
		g.stopWatch()
	}
	var wctx context.Context
	wctx, g.stopWatch = context.WithCancel(ctx)
	go rt.certs.Watch(wctx, 0, func(err error) {
		g.log.Error("certificate reload failed; keeping the old certificates", "err", err)
	})
	if g.srv != nil {
		g.srv.SetConfig(rt.proxy)
	}
	g.rt = rt
}

// reload re-reads the whole config on SIGHUP and applies it: listeners
// added and removed, upstream, auth and policy settings, certificates, the
// audit output (reopened even when unchanged, for logrotate) and the
// user_hash key. Sessions already running keep the settings they started
// with, and keep running when their listener is removed. A config that
// fails to load, to build, or to bind a new listener is rejected and
// logged, and the running one stays in force untouched.
func (g *gateway) reload(ctx context.Context) {
	reject := func(err error) {
		g.metrics.reloads.WithLabelValues("rejected").Inc()
		g.log.Error("reload: config rejected; keeping the running one", "err", strings.ReplaceAll(err.Error(), "\n", "; "))
	}
	cfg, err := LoadConfig(g.path)
	if err != nil {
		reject(err)
		return
	}
	for _, w := range cfg.Warnings() {
		g.log.Warn("config", "warning", w)
	}
	nrt, err := newRuntime(cfg, g.audit)
	if err != nil {
		reject(err)
		return
	}
	if err := checkAuditOutput(cfg.Audit.Output); err != nil {
		reject(err)
		return
	}
	if g.rt.acme != nil && nrt.acme != nil {
		// The running manager keeps its certificates, renewals and
		// challenge listener; a changed [tls.acme] waits for a restart.
		warnACMEReload(g.rt, cfg, g.log)
		nrt.acme = g.rt.acme
		if err := nrt.setServerTLS(); err != nil {
			reject(err)
			return
		}
	}
	if cfg.Metrics.Listen != g.rt.cfg.Metrics.Listen {
		g.log.Warn("reload: metrics.listen changed; it takes effect at the next restart", "running", g.rt.cfg.Metrics.Listen)
	}
	// Open connections stay counted: keep the limiter, change its limits.
	nrt.proxy.Conns = g.rt.proxy.Conns
	fresh := nrt.acme != nil && nrt.acme != g.rt.acme
	if fresh {
		// Certificate files replaced by [tls.acme]: start it now (stored
		// certificates serve at once, new ones come in the background).
		if err := startACME(ctx, nrt.acme, g.log); err != nil {
			reject(err)
			return
		}
	}
	if err := g.lns.apply(nrt, cfg); err != nil {
		if fresh {
			nrt.acme.Close()
		}
		reject(err)
		return
	}
	// Only now that nothing can reject the config: the running limiter,
	// failure counters and login slots take the new limits.
	nrt.proxy.Conns.SetLimits(cfg.Policy.MaxConnections, cfg.Policy.MaxConnectionsPerIP, cfg.Policy.MaxConnectionsPerNetwork)
	reloadPolicy(g.rt.proxy, nrt.proxy, &cfg.Policy)
	nrt.proxy.Upstream.KeepAnswerTimes(g.rt.proxy.Upstream)
	if err := g.queue.Reopen(cfg.Audit.Output); err != nil {
		g.log.Error("reload: audit output not reopened", "err", err)
	}
	old := g.rt
	g.install(ctx, nrt)
	if old.acme != nil && old.acme != nrt.acme {
		old.acme.Close() // [tls.acme] replaced by certificate files
	}
	warnOldTLS(nrt, cfg, g.log)
	g.metrics.reloads.WithLabelValues("ok").Inc()
	g.log.Info("reloaded", "config", g.path, "listeners", len(cfg.Listen), "upstream", cfg.Upstream.Address)
}

// closeACME stops the ACME manager in force, if any (serve's exit).
func (g *gateway) closeACME() {
	if g.rt != nil && g.rt.acme != nil {
		g.rt.acme.Close()
	}
}
