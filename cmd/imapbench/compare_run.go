package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"runtime"
	"time"

	"github.com/imapgate/imapgate/proxy/proxytest"
	"github.com/imapgate/imapgate/tlsconf"
)

// One comparison run: the contenders (direct, nginx, imapgate), the
// servers runComparison starts for them, and the rounds in which
// runScenarios runs every scenario against each.

// contender is one of the three columns: Dovecot directly, nginx or
// imapgate.
type contender struct {
	name   string
	target target
	// server is the proxy, whose memory the idle scenario measures from
	// a fresh start; nil for direct.
	server proxyServer
}

// proxyServer is a proxy process compare started.
type proxyServer interface {
	pids() []int
	restart(ctx context.Context, tlsConf *tls.Config) error
	stop() error
}

// The contenders' names, which are also the table's columns.
const (
	nameDirect   = "direct"
	nameNginx    = "nginx"
	nameImapgate = "imapgate"
)

// comparison is the state of one runComparison.
type comparison struct {
	o          compareOptions
	log        *slog.Logger
	contenders []contender // direct, nginx, imapgate
	tlsConf    *tls.Config
	dovecot    *proxytest.Dovecot
	samples    samples
	res        *compareResult
	// memContenders are direct, nginx and imapgate with the memory
	// upstream in place of Dovecot; nil without --memory-logins.
	memContenders []contender
	mem           *memoryServers
	// resumeCounts are the resumed logins' counts: workers -> contender
	// -> logins and resumed handshakes over the rounds.
	resumeCounts map[int]map[string]*resumeCount
}

// runComparison starts the servers, runs the scenarios and returns the
// result, which holds what was measured even when the error says the run
// stopped early. Every process it started is stopped, and its directory
// removed, before it returns.
func runComparison(ctx context.Context, o compareOptions) (res *compareResult, err error) {
	start := time.Now()
	if err := o.check(); err != nil {
		return nil, err
	}
	if runtime.GOOS != "linux" {
		return nil, errors.New("compare needs Linux: it reads memory and nginx's workers from /proc")
	}
	log := o.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if o.RunnerLog == nil {
		o.RunnerLog = slog.New(slog.DiscardHandler)
	}
	if limit, err := openFileLimit(); err == nil && uint64(o.Sessions)+fdReserve > limit {
		return nil, fmt.Errorf("--sessions %d needs about %d open files, and RLIMIT_NOFILE is %d", o.Sessions, o.Sessions+fdReserve, limit)
	}
	nginxBin, err := nginxBinary()
	if err != nil {
		return nil, err
	}

	dir, err := os.MkdirTemp("", "imapbench-compare-")
	if err != nil {
		return nil, err
	}
	// Deferred calls run on every return, also after Ctrl-C (ctx done);
	// they stop the servers first and remove dir last.
	defer func() {
		if rerr := os.RemoveAll(dir); rerr != nil {
			err = errors.Join(err, rerr)
		}
	}()
	cmp := &comparison{o: o, log: log, samples: samples{}, resumeCounts: map[int]map[string]*resumeCount{}}
	cmp.res = &compareResult{
		Date:    start.UTC().Format(time.RFC3339),
		Machine: readMachineInfo(),
		TLS:     map[string]string{},
	}
	res = cmp.res

	res.Versions = compareVersions{Nginx: nginxVersion(nginxBin), Dovecot: dovecotVersion(), Go: runtime.Version()}
	gateBin := o.Imapgate
	if gateBin == "" {
		log.Info("building imapgate")
		var root string
		if gateBin, root, err = buildImapgate(ctx, dir); err != nil {
			return res, err
		}
		res.Versions.Source = gitDescribe(root)
	}
	res.Versions.Imapgate = commandOutput(gateBin, "version")

	// One certificate for both proxies, and the client trusts only it.
	cert, certPEM, err := tlsconf.SelfSigned(24*time.Hour, "localhost", "127.0.0.1")
	if err != nil {
		return res, err
	}
	certFile, keyFile, err := tlsconf.WritePEMFiles(dir, cert)
	if err != nil {
		return res, err
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(certPEM)
	// nginx's OpenSSL 3.0 has no ML-KEM, and Go prefers X25519MLKEM768
	// when the client offers it: offering X25519 alone makes both
	// proxies do the same key exchange.
	cmp.tlsConf = &tls.Config{RootCAs: roots, ServerName: "localhost", MinVersion: tls.VersionTLS12,
		CurvePreferences: []tls.CurveID{tls.X25519}}

	log.Info("starting Dovecot", "users", o.Users, "messages", o.Messages, "message_size", o.MessageSize)
	dstart := time.Now()
	d, err := proxytest.NewDovecot(proxytest.DovecotOptions{
		Users:              proxytest.NumberedUsers(o.Users, comparePassword),
		Messages:           o.Messages,
		MessageSize:        o.MessageSize,
		OtherUsersMessages: 1,
		MaxSessions:        max(5000, o.Sessions+1000),
		ReuseProcesses:     o.ReuseProcesses,
	})
	if err != nil {
		return res, err
	}
	defer func() {
		if cerr := d.Close(); cerr != nil {
			err = errors.Join(err, cerr)
		}
	}()
	cmp.dovecot = d
	log.Info("Dovecot is up", "addr", d.Addr, "pid", d.PID, "took", time.Since(dstart).Round(time.Millisecond))

	auth, err := startAuthResponder(d.Addr)
	if err != nil {
		return res, err
	}
	defer auth.close()
	ndir := dir + "/nginx"
	gdir := dir + "/imapgate"
	for _, sub := range []string{ndir, gdir} {
		if err := os.Mkdir(sub, 0o755); err != nil {
			return res, err
		}
	}
	ngx, err := startNginx(ctx, nginxBin, ndir, auth.addr, certFile, keyFile, cmp.tlsConf)
	if err != nil {
		return res, err
	}
	defer func() {
		if serr := ngx.stop(); serr != nil {
			err = errors.Join(err, serr)
		}
	}()
	log.Info("nginx is up", "addr", ngx.addr, "pids", joinInts(ngx.pids()))
	gate, err := startImapgate(ctx, gateBin, gdir, d.Addr, certFile, keyFile, cmp.tlsConf)
	if err != nil {
		return res, err
	}
	defer func() {
		if serr := gate.stop(); serr != nil {
			err = errors.Join(err, serr)
		}
	}()
	log.Info("imapgate is up", "addr", gate.addr, "pid", gate.pids()[0])
	if o.MemoryLogins {
		log.Info("starting the memory upstream (imapbench upstream), a second nginx and a second imapgate in front of it")
		if cmp.mem, err = startMemoryServers(ctx, dir, o.Users, nginxBin, gateBin, certFile, keyFile, cmp.tlsConf); err != nil {
			return res, err
		}
		defer func() {
			if serr := cmp.mem.stop(); serr != nil {
				err = errors.Join(err, serr)
			}
		}()
		log.Info("memory upstream is up", "addr", cmp.mem.up.addr, "pid", cmp.mem.up.pid(),
			"nginx", cmp.mem.ngx.addr, "nginx_pids", joinInts(cmp.mem.ngx.pids()), "imapgate", cmp.mem.gate.addr, "imapgate_pid", cmp.mem.gate.pids()[0])
	}

	sources, err := parseSources("", o.SourceCount)
	if err != nil {
		return res, err
	}
	base := target{User: "user1", UsersPattern: "user%d", UsersCount: o.Users, Password: comparePassword,
		Timeout: o.Timeout, Sources: sources}
	direct, viaNginx, viaGate := base, base, base
	direct.Addr, direct.TLS = d.Addr, tlsNone
	viaNginx.Addr, viaNginx.TLS, viaNginx.TLSConfig = ngx.addr, tlsImplicit, cmp.tlsConf
	viaGate.Addr, viaGate.TLS, viaGate.TLSConfig = gate.addr, tlsImplicit, cmp.tlsConf
	cmp.contenders = []contender{
		{name: nameDirect, target: direct},
		{name: nameNginx, target: viaNginx, server: ngx},
		{name: nameImapgate, target: viaGate, server: gate},
	}
	if m := cmp.mem; m != nil {
		memDirect, memNginx, memGate := direct, viaNginx, viaGate
		memDirect.Addr, memNginx.Addr, memGate.Addr = m.up.addr, m.ngx.addr, m.gate.addr
		cmp.memContenders = []contender{
			{name: nameDirect, target: memDirect},
			{name: nameNginx, target: memNginx, server: m.ngx},
			{name: nameImapgate, target: memGate, server: m.gate},
		}
	}
	res.Settings = cmp.settings()

	if err := cmp.checkContenders(ctx, cmp.contenders, "", true); err != nil {
		return res, err
	}
	if err := cmp.checkContenders(ctx, cmp.memContenders, ", memory upstream", false); err != nil {
		return res, err
	}
	err = cmp.runScenarios(ctx)
	cmp.finish(auth.requests.Load(), cmp.mem.authRequests())
	res.Seconds = time.Since(start).Seconds()
	if ctx.Err() != nil {
		res.Interrupted = true
		err = errors.Join(err, fmt.Errorf("interrupted: %w", context.Cause(ctx)))
	}
	return res, err
}

// checkContenders logs in once through each contender, so that a broken
// setup fails at once with its reason, and records the TLS each
// negotiated if record is set. An error names the contender followed by
// what.
func (c *comparison) checkContenders(ctx context.Context, cts []contender, what string, record bool) error {
	for _, ct := range cts {
		t := ct.target
		cl, err := dial(ctx, t, t.source(0), 4<<10)
		if err == nil {
			err = cl.authenticate(ctx, t, t.user(0))
			if err == nil {
				err = cl.logout(ctx)
			}
			if st, ok := cl.TLSState(); ok && record {
				c.res.TLS[ct.name] = fmt.Sprintf("%s %s", tls.VersionName(st.Version), st.CurveID)
			}
			cl.Close()
		}
		if err != nil {
			return fmt.Errorf("a first login through %s%s (%s) failed: %w", ct.name, what, t.Addr, err)
		}
	}
	return nil
}

// runScenarios runs each scenario in rounds. A round runs it once
// against each contender, in an order that rotates from round to round
// so that no contender always goes first (after a pause, on a cold
// cache) or last.
func (c *comparison) runScenarios(ctx context.Context) error {
	o := c.o
	// Dovecot indexes user1's INBOX at its first SELECT and the page
	// cache fills at the first FETCH: neither belongs to a contender.
	c.log.Info("warming up: one fetch of the whole INBOX, direct")
	if _, err := runFetch(ctx, fetchOptions{Target: c.contenders[0].target, Rounds: 1, Log: c.o.RunnerLog}); err != nil {
		return fmt.Errorf("warm-up fetch: %w", err)
	}
	type scenario struct {
		name       string
		contenders []contender
		run        func(ctx context.Context, ct contender, round int) error
	}
	scenarios := []scenario{{"idle", c.contenders, c.idle}, {"fetch", c.contenders, c.fetch}}
	for _, w := range o.Workers {
		scenarios = append(scenarios, scenario{fmt.Sprintf("logins@%d", w), c.contenders, func(ctx context.Context, ct contender, round int) error {
			return c.logins(ctx, ct, round, w, loginsDovecot)
		}})
	}
	if c.memContenders != nil {
		for _, w := range o.Workers {
			scenarios = append(scenarios, scenario{fmt.Sprintf("memory logins@%d", w), c.memContenders, func(ctx context.Context, ct contender, round int) error {
				return c.logins(ctx, ct, round, w, loginsMemory)
			}})
		}
		if o.ResumedLogins {
			// nginx and imapgate: direct has no TLS to resume.
			for _, w := range o.Workers {
				scenarios = append(scenarios, scenario{fmt.Sprintf("memory logins@%d resumed", w), c.memContenders[1:], func(ctx context.Context, ct contender, round int) error {
					return c.logins(ctx, ct, round, w, loginsMemoryResumed)
				}})
			}
		}
	}
	scenarios = append(scenarios, scenario{"latency", c.contenders, c.latency})
	for _, s := range scenarios {
		for round := range o.Rounds {
			for i := range s.contenders {
				ct := s.contenders[(i+round)%len(s.contenders)]
				if ctx.Err() != nil {
					return nil // runComparison reports it
				}
				if err := s.run(ctx, ct, round); err != nil {
					if ctx.Err() != nil {
						return nil
					}
					c.problem("%s %s round %d: %v", ct.name, s.name, round+1, err)
				}
			}
		}
	}
	return nil
}
