package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/imapgate/imapgate/auth"
	"github.com/imapgate/imapgate/auth/credstore"
	"github.com/imapgate/imapgate/proxy"
)

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
	rc, err := newRunConfig(cfg, audit)
	if err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", path, err)
		return 1
	}
	// Revoking ends the credential's open sessions, once there is a
	// server to end them in.
	var running atomic.Pointer[proxy.Server]
	onRevoke := func(r credstore.Revoked) {
		if srv := running.Load(); srv != nil {
			n := srv.EndCredential(r.ID)
			log.Info("credential revoked", "kind", r.Kind.String(), "id", r.ID, "user", r.User, "label", r.Label, "sessions_ended", n)
		}
	}
	store, err := openAppPasswords(cfg.Auth.AppPasswords, onRevoke, log)
	if err != nil {
		fmt.Fprintf(stderr, "%s: auth.app_passwords: %v\n", path, err)
		return 1
	}
	if store != nil {
		defer store.Close() // writes the last uses
	}
	// SCRAM (README "SCRAM"): one verifier for the life of serve, like
	// the store whose keys it checks; gateway.install offers it.
	var scramVerifier *auth.SCRAMVerifier
	if store != nil {
		if scramVerifier, err = auth.NewSCRAMVerifier(credstore.SCRAMKeys(store), store.SCRAMOptions()); err != nil {
			fmt.Fprintf(stderr, "%s: auth.app_passwords: %v\n", path, err)
			return 1
		}
	}
	watchCtx, stopWatch := context.WithCancel(ctx)
	defer stopWatch()
	g := &gateway{path: path, log: log, audit: audit, queue: queue, metrics: m, store: store, storePath: cfg.Auth.AppPasswords, scram: scramVerifier}
	g.useTokens(rc)
	defer g.closeTokens()
	g.install(watchCtx, rc)
	srv := proxy.NewServer(rc.proxy)
	g.srv = srv
	running.Store(srv)
	m.srv.Store(srv)
	g.lns = newListenerSet(srv, log)
	if err := g.lns.apply(rc, cfg); err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	defer g.closeACME()
	if rc.acme != nil {
		// After the client listeners, so a port in use is reported first;
		// certificates are obtained in the background (stored ones serve
		// at once).
		if err := startACME(watchCtx, rc.acme, log); err != nil {
			srv.Shutdown(context.Background())
			g.lns.wg.Wait()
			fmt.Fprintf(stderr, "%s: %v\n", path, err)
			return 1
		}
	}
	warnOldTLS(rc, cfg, log)
	if cfg.Metrics.Listen != "" {
		mln, err := net.Listen("tcp", cfg.Metrics.Listen)
		if err != nil {
			srv.Shutdown(context.Background())
			g.lns.wg.Wait()
			fmt.Fprintf(stderr, "metrics.listen: cannot bind %s: %v\n", cfg.Metrics.Listen, err)
			return 1
		}
		h := &health{certs: m.leaves, groups: func() []*proxy.UpstreamGroup { return srv.Config().Router.Upstreams }}
		h.bound.Store(true)
		go serveMetrics(watchCtx, mln, metricsHandler(m, h, cfg.Metrics.Pprof), log)
		log.Info("serving metrics", "address", mln.Addr().String())
	}
	go trimMemory(watchCtx, trimEvery, trimFloor, log)
	if cfg.Admin.Socket != "" {
		aln, err := listenAdmin(cfg.Admin.Socket)
		if err != nil {
			srv.Shutdown(context.Background())
			g.lns.wg.Wait()
			fmt.Fprintln(stderr, err)
			return 1
		}
		defer aln.Close()
		var admin appPasswords = noStore{}
		if store != nil {
			admin = storeAppPasswords{store}
		}
		adminCtx, stopAdmin := context.WithCancel(watchCtx)
		adminDone := make(chan struct{})
		go func() { serveAdmin(adminCtx, aln, admin, srv, log); close(adminDone) }()
		// Before the deferred store.Close: requests in flight finish
		// with the store still open.
		defer func() { stopAdmin(); <-adminDone }()
		log.Info("admin socket", "path", cfg.Admin.Socket)
	}

	// Only now that nothing can fail the start: probes log and outlive
	// nothing but serve itself.
	g.startProbes()
	defer g.probes.Wait()
	defer stopWatch()

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

// openAppPasswords opens the app password store at path, once for the
// life of serve; "" means none (nil, nil). The store's lock keeps every
// other process (the app-password commands) out while serve runs.
func openAppPasswords(path string, onRevoke func(credstore.Revoked), log *slog.Logger) (*credstore.Bolt, error) {
	if path == "" {
		return nil, nil
	}
	store, err := credstore.OpenBolt(path, credstore.Options{Logger: log, OnRevoke: onRevoke})
	if err != nil {
		return nil, err
	}
	log.Info("app passwords", "store", path)
	return store, nil
}
