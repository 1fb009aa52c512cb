package main

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"

	"github.com/imapgate/imapgate/auth"
	"github.com/imapgate/imapgate/auth/credstore"
	"github.com/imapgate/imapgate/auth/oauth"
	"github.com/imapgate/imapgate/proxy"
)

// gateway is the running proxy, for as long as serve runs: the server,
// its listeners, audit and metrics, and the runConfig in force, which a
// reload replaces (reload, install).
type gateway struct {
	path    string
	log     *slog.Logger
	srv     *proxy.Server
	audit   *proxy.Auditor
	queue   *auditQueue
	metrics *gateMetrics
	lns     *listenerSet

	// store is the app password store serve opened at start (nil: none),
	// from storePath; it stays open, and in force, across reloads.
	store     *credstore.Bolt
	storePath string
	// scram checks SCRAM proofs against store's keys (nil without a
	// store); it lives as long as the store.
	scram *auth.SCRAMVerifier

	rc        *runConfig         // the config in force
	stopWatch context.CancelFunc // ends rc's certificate file watcher and its probes
	watchCtx  context.Context    // what stopWatch ends

	// tokens validates OAuth tokens for rc.tokens (nil: none); a reload
	// keeps it while [auth.oauth] is unchanged (useTokens).
	tokens *oauth.Validator

	// probing is set once serve has started the upstream probes
	// (startProbes); install then starts the new config's. probes
	// counts the probe goroutines, for serve's exit.
	probing bool
	probes  sync.WaitGroup
}

// startProbes starts probing every upstream address of the config in
// force, and of each config a reload installs from now on.
func (g *gateway) startProbes() {
	g.probing = true
	g.metrics.watchUpstreams(g.watchCtx, &g.probes, g.rc.proxy.Router.Upstreams, g.log)
}

// install puts rc's settings in force for new sessions: metrics hooks,
// user_hash key, certificates for the expiry series, the certificate file
// watcher, and the proxy config.
func (g *gateway) install(ctx context.Context, rc *runConfig) {
	rc.proxy.Log = g.log
	if g.store != nil {
		rc.proxy.AppPasswords = g.store
		if rc.certMapper != nil {
			rc.certMapper.store = g.store // registered client certificates
		}
	}
	// SCRAM-SHA-256(-PLUS), where [auth] mechanisms name them (README
	// "SCRAM").
	if g.scram != nil {
		if rc.proxy.Verifiers == nil {
			rc.proxy.Verifiers = &auth.Verifiers{}
		}
		rc.proxy.Verifiers.SCRAM = g.scram
	}
	for _, ug := range rc.proxy.Router.Upstreams {
		for _, m := range ug.Members {
			m.ObserveLogin = g.metrics.observeLogin
		}
	}
	if g.tokens != nil {
		if rc.proxy.Verifiers == nil {
			rc.proxy.Verifiers = &auth.Verifiers{}
		}
		rc.proxy.Verifiers.Tokens = g.tokens
	}
	g.audit.SetUserKey(rc.userKey)
	g.metrics.rc.Store(rc)
	if g.stopWatch != nil {
		g.stopWatch()
	}
	var wctx context.Context
	wctx, g.stopWatch = context.WithCancel(ctx)
	go rc.certs.Watch(wctx, 0, func(err error) {
		g.log.Error("certificate reload failed; keeping the old certificates", "err", err)
	})
	if g.srv != nil {
		g.srv.SetConfig(rc.proxy)
	}
	g.rc, g.watchCtx = rc, wctx
	if g.probing {
		g.startProbes()
	}
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
	if err == nil {
		err = keepsMaster(cfg, g.store != nil)
	}
	if err != nil {
		reject(err)
		return
	}
	for _, w := range cfg.Warnings() {
		g.log.Warn("config", "warning", w)
	}
	next, err := newRunConfig(cfg, g.audit)
	if err != nil {
		reject(err)
		return
	}
	if err := checkAuditOutput(cfg.Audit.Output); err != nil {
		reject(err)
		return
	}
	if g.rc.acme != nil && next.acme != nil {
		// The running manager keeps its certificates, renewals and
		// challenge listener; a changed [tls.acme] waits for a restart.
		warnACMEReload(g.rc, cfg, g.log)
		next.acme = g.rc.acme
		if err := next.setServerTLS(); err != nil {
			reject(err)
			return
		}
	}
	if cfg.Auth.AppPasswords != g.storePath {
		// The store is opened once: its lock is held for the life of
		// serve, and sessions in flight use it.
		g.log.Warn("reload: auth.app_passwords changed; it takes effect at the next restart, the running store stays in force", "running", g.storePath)
	}
	if cfg.Admin.Socket != g.rc.cfg.Admin.Socket {
		g.log.Warn("reload: admin.socket changed; it takes effect at the next restart", "running", g.rc.cfg.Admin.Socket)
	}
	if cfg.Metrics.Listen != g.rc.cfg.Metrics.Listen {
		g.log.Warn("reload: metrics.listen changed; it takes effect at the next restart", "running", g.rc.cfg.Metrics.Listen)
	}
	// Open connections stay counted: keep the limiter, change its limits.
	next.proxy.Conns = g.rc.proxy.Conns
	fresh := next.acme != nil && next.acme != g.rc.acme
	if fresh {
		// Certificate files replaced by [tls.acme]: start it now (stored
		// certificates serve at once, new ones come in the background).
		if err := startACME(ctx, next.acme, g.log); err != nil {
			reject(err)
			return
		}
	}
	if err := g.lns.apply(next, cfg); err != nil {
		if fresh {
			next.acme.Close()
		}
		reject(err)
		return
	}
	// Only now that nothing can reject the config: the running limiter,
	// failure counters and login slots take the new limits.
	next.proxy.Conns.SetLimits(cfg.Policy.MaxConnections, cfg.Policy.MaxConnectionsPerIP, cfg.Policy.MaxConnectionsPerNetwork)
	reloadPolicy(g.rc.proxy, next.proxy, &cfg.Policy)
	keepAnswerTimes(next.proxy.Router, g.rc.proxy.Router)
	if err := g.queue.Reopen(cfg.Audit.Output); err != nil {
		g.log.Error("reload: audit output not reopened", "err", err)
	}
	old := g.rc
	closeTokens := g.useTokens(next)
	g.install(ctx, next)
	closeTokens()
	if old.acme != nil && old.acme != next.acme {
		old.acme.Close() // [tls.acme] replaced by certificate files
	}
	warnOldTLS(next, cfg, g.log)
	g.metrics.reloads.WithLabelValues("ok").Inc()
	g.log.Info("reloaded", "config", g.path, "listeners", len(cfg.Listen), "upstream", cfg.Upstream.Address)
}

// useTokens makes g.tokens the Validator for rc's [auth.oauth]: the
// running one while the settings are unchanged (its keys and introspection
// answers stay cached), else a new one (nil without [auth.oauth]). A new
// one starts discovery in the background: a provider that is down is
// retried, and until it answers token logins get NO [UNAVAILABLE]
// (oauth_unavailable) while everything else works. It returns what closes
// the Validator replaced, to call once rc is in force (sessions still in an
// exchange with it finish on it: Close stops only its discovery).
func (g *gateway) useTokens(rc *runConfig) (closeOld func()) {
	running, old := g.rc, g.tokens
	if running != nil && rc.tokens.same(running.tokens) {
		return func() {}
	}
	g.tokens = nil
	if rc.tokens != nil {
		v, err := oauth.New(rc.tokens.config(g.log))
		if err != nil {
			// newTokenSettings ran oauth.CheckConfig: not reached.
			g.log.Error("auth.oauth: token validator not started; OAUTHBEARER and XOAUTH2 are not offered", "err", err)
		}
		g.tokens = v
	}
	return func() {
		if old != nil {
			old.Close()
		}
	}
}

// closeTokens stops the token Validator, if any (serve's exit).
func (g *gateway) closeTokens() {
	if g.tokens != nil {
		g.tokens.Close()
	}
}

// closeACME stops the ACME manager in force, if any (serve's exit).
func (g *gateway) closeACME() {
	if g.rc != nil && g.rc.acme != nil {
		g.rc.acme.Close()
	}
}

// keepsMaster refuses a reload that drops [upstream.master] while the app
// password store serve opened stays in force (it does until a restart):
// every app-password login would then fail for want of a master login.
func keepsMaster(cfg *Config, storeOpen bool) error {
	if storeOpen && cfg.Upstream.Master == nil {
		return fmt.Errorf("%s: [upstream.master] is gone, but the app password store stays open until a restart: keep [upstream.master], or restart without app_passwords", cfg.Path())
	}
	return nil
}
