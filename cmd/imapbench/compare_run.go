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
	"slices"
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
	// upstream is how the proxy reaches Dovecot; the zero value is
	// plaintext. The fetch of a TLS upstream has rows of its own.
	upstream upstreamTLS
}

// fetchKeys are the figures ct's fetch records: MB/s and CPU per MB.
func (ct contender) fetchKeys() (mbps, cpu string) {
	switch ct.upstream.Mode {
	case "starttls":
		return figFetchStartTLS, figFetchStartTLSCPU
	case "implicit":
		return figFetchImplicitTLS, figFetchImplicitTLSCPU
	}
	return figFetch, figFetchCPU
}

// upstreamMode names ct's upstream TLS for the log.
func (ct contender) upstreamMode() string {
	if ct.upstream.Mode == "" {
		return "none"
	}
	return ct.upstream.Mode
}

// proxyServer is a proxy process compare started.
type proxyServer interface {
	pids() []int
	// cpuPIDs are the processes whose CPU time a login through the
	// proxy costs.
	cpuPIDs() []int
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
	// tlsUpstream are imapgate with STARTTLS and with implicit TLS to
	// Dovecot, for the fetch.
	tlsUpstream []contender
	// floorServer is the bare TLS server of the floor; floorCurves the
	// key exchange each kind of its handshakes negotiated.
	floorServer *handshakeServer
	floorCurves map[string]string
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
	if limit, err := openFileLimit(); err == nil && o.runs("storm") && uint64(o.StormSessions)+fdReserve > limit {
		return nil, fmt.Errorf("--storm-sessions %d needs about %d open files, and RLIMIT_NOFILE is %d", o.StormSessions, o.StormSessions+fdReserve, limit)
	}
	if o.Profile != "" {
		if err := os.MkdirAll(o.Profile, 0o755); err != nil {
			return nil, fmt.Errorf("--profile: %w", err)
		}
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
	cmp := &comparison{o: o, log: log, samples: samples{}, resumeCounts: map[int]map[string]*resumeCount{}, floorCurves: map[string]string{}}
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

	ndir := dir + "/nginx"
	gdir := dir + "/imapgate"
	stdir, imdir, fdir := dir+"/imapgate-starttls", dir+"/imapgate-implicit", dir+"/floor"
	for _, sub := range []string{ndir, gdir, stdir, imdir, fdir} {
		if err := os.Mkdir(sub, 0o755); err != nil {
			return res, err
		}
	}
	auth, err := startAuthResponder(ctx, ndir, d.Addr)
	if err != nil {
		return res, err
	}
	defer func() {
		if cerr := auth.close(); cerr != nil {
			err = errors.Join(err, cerr)
		}
	}()
	ngx, err := startNginx(ctx, nginxBin, ndir, auth, certFile, keyFile, nginxTuning{}, cmp.tlsConf)
	if err != nil {
		return res, err
	}
	defer func() {
		if serr := ngx.stop(); serr != nil {
			err = errors.Join(err, serr)
		}
	}()
	log.Info("nginx is up", "addr", ngx.addr, "pids", joinInts(ngx.pids()))
	gate, err := startImapgate(ctx, gateBin, gdir, d.Addr, certFile, keyFile, upstreamTLS{}, gateExtra{}, cmp.tlsConf)
	if err != nil {
		return res, err
	}
	defer func() {
		if serr := gate.stop(); serr != nil {
			err = errors.Join(err, serr)
		}
	}()
	log.Info("imapgate is up", "addr", gate.addr, "pid", gate.pids()[0])
	// TLS on both legs: imapgate with STARTTLS to Dovecot's plaintext
	// port, and with implicit TLS to its imaps port, both verifying
	// Dovecot's own certificate.
	tlsGates := map[string]*imapgateServer{}
	for _, g := range []struct {
		dir, addr string
		up        upstreamTLS
	}{
		{stdir, d.Addr, upstreamTLS{Mode: "starttls", CAFile: d.CAFile}},
		{imdir, d.ImplicitAddr, upstreamTLS{Mode: "implicit", CAFile: d.CAFile}},
	} {
		tg, gerr := startImapgate(ctx, gateBin, g.dir, g.addr, certFile, keyFile, g.up, gateExtra{}, cmp.tlsConf)
		if gerr != nil {
			return res, fmt.Errorf("imapgate with upstream.tls = %q: %w", g.up.Mode, gerr)
		}
		defer func() {
			if serr := tg.stop(); serr != nil {
				err = errors.Join(err, serr)
			}
		}()
		tlsGates[g.up.Mode] = tg
		log.Info("imapgate is up", "upstream_tls", g.up.Mode, "addr", tg.addr, "pid", tg.pids()[0])
	}
	if cmp.floorServer, err = startHandshakeServer(ctx, fdir, certFile, keyFile, cmp.tlsConf); err != nil {
		return res, err
	}
	defer func() {
		if serr := cmp.floorServer.stop(); serr != nil {
			err = errors.Join(err, serr)
		}
	}()
	if o.MemoryLogins || o.runs("storm") {
		log.Info("starting the memory upstream (imapbench upstream), a second nginx and a second imapgate in front of it")
		// The storm's nginx: as many connections per worker as the
		// storm's sessions need should one worker take them all (nginx's
		// workers share a listen socket unevenly), and the backlog asked
		// for (by default the same as Go's, net.core.somaxconn).
		tune := nginxTuning{Backlog: o.NginxBacklog, WorkerConnections: 20000}
		if cmp.mem, err = startMemoryServers(ctx, dir, o.Users, nginxBin, gateBin, certFile, keyFile, tune, gateExtra{Profile: o.Profile != "", MaxUpstreamLogins: o.MaxUpstreamLogins}, cmp.tlsConf); err != nil {
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
	// Beside them, direct with the same TLS straight to Dovecot: the
	// ceiling of Dovecot's own TLS, which no proxy in front can pass.
	dovecotRoots := x509.NewCertPool()
	dovecotRoots.AppendCertsFromPEM(d.CertPEM)
	dovecotTLS := &tls.Config{RootCAs: dovecotRoots, ServerName: "localhost", MinVersion: tls.VersionTLS12}
	for _, m := range []struct {
		mode, addr string
		client     tlsMode
	}{{"starttls", d.Addr, tlsStartTLS}, {"implicit", d.ImplicitAddr, tlsImplicit}} {
		up := upstreamTLS{Mode: m.mode, CAFile: d.CAFile}
		directTLS := direct
		directTLS.Addr, directTLS.TLS, directTLS.TLSConfig = m.addr, m.client, dovecotTLS
		t := viaGate
		t.Addr = tlsGates[m.mode].addr
		cmp.tlsUpstream = append(cmp.tlsUpstream,
			contender{name: nameDirect, target: directTLS, upstream: up},
			contender{name: nameImapgate, target: t, server: tlsGates[m.mode], upstream: up})
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
	for _, ct := range cmp.tlsUpstream {
		if err := cmp.checkContenders(ctx, []contender{ct}, " with TLS to Dovecot ("+ct.upstream.Mode+")", false); err != nil {
			return res, err
		}
	}
	if err := cmp.checkContenders(ctx, cmp.memContenders, ", memory upstream", false); err != nil {
		return res, err
	}
	if cmp.memContenders != nil {
		// What each proxy negotiates with a client that offers the
		// hybrid, as Go's does by default.
		var hybrid []contender
		for _, ct := range cmp.memContenders[1:] {
			ct.target = hybridTarget(ct.target)
			hybrid = append(hybrid, ct)
		}
		if err := cmp.checkContenders(ctx, hybrid, hybridOffered, true); err != nil {
			return res, err
		}
	}
	err = cmp.runScenarios(ctx)
	cmp.finish(auth.requests(), cmp.mem.authRequests())
	res.Seconds = time.Since(start).Seconds()
	if ctx.Err() != nil {
		res.Interrupted = true
		err = errors.Join(err, fmt.Errorf("interrupted: %w", context.Cause(ctx)))
	}
	return res, err
}

// checkContenders logs in once through each contender, so that a broken
// setup fails at once with its reason, and records the TLS each
// negotiated if record is set, under its name followed by what. An error names the contender followed by
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
				c.res.TLS[ct.name+what] = fmt.Sprintf("%s %s", tls.VersionName(st.Version), st.CurveID)
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
	if o.runs("fetch") {
		c.log.Info("warming up: one fetch of the whole INBOX, direct")
		if _, err := runFetch(ctx, fetchOptions{Target: c.contenders[0].target, Rounds: 1, Log: c.o.RunnerLog}); err != nil {
			return fmt.Errorf("warm-up fetch: %w", err)
		}
	}
	type scenario struct {
		name       string
		contenders []contender
		run        func(ctx context.Context, ct contender, round int) error
	}
	var scenarios []scenario
	if o.runs("idle") {
		scenarios = append(scenarios, scenario{"idle", c.contenders, c.idle})
	}
	if o.runs("fetch") {
		scenarios = append(scenarios, scenario{"fetch", append(slices.Clone(c.contenders), c.tlsUpstream...), c.fetch})
	}
	for _, w := range o.Workers {
		if !o.runs("logins") {
			break
		}
		scenarios = append(scenarios, scenario{fmt.Sprintf("logins@%d", w), c.contenders, func(ctx context.Context, ct contender, round int) error {
			return c.logins(ctx, ct, round, w, loginsDovecot)
		}})
	}
	if c.memContenders != nil && o.MemoryLogins && o.runs("memory-logins") {
		for _, w := range o.Workers {
			scenarios = append(scenarios, scenario{fmt.Sprintf("memory logins@%d", w), c.memContenders, func(ctx context.Context, ct contender, round int) error {
				return c.logins(ctx, ct, round, w, loginsMemory)
			}})
		}
		for _, w := range o.Workers {
			scenarios = append(scenarios, scenario{fmt.Sprintf("memory logins@%d%s", w, hybridOffered), c.memContenders[1:], func(ctx context.Context, ct contender, round int) error {
				return c.logins(ctx, ct, round, w, loginsMemoryHybrid)
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
	if o.runs("floor") {
		scenarios = append(scenarios, scenario{"floor", []contender{{name: floorContender}}, c.floor})
	}
	if o.runs("storm") {
		// nginx and imapgate in front of the memory upstream: Dovecot's
		// process per session cannot hold the storm's sessions here, and
		// direct has no proxy to measure.
		scenarios = append(scenarios, scenario{"storm", c.memContenders[1:], c.storm})
	}
	if o.runs("latency") {
		scenarios = append(scenarios, scenario{"latency", c.contenders, c.latency})
	}
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

// hybridOffered ends the names of what a client offering X25519MLKEM768
// measured.
const hybridOffered = ", X25519MLKEM768 offered"

// floorKinds are the bare handshakes of the floor: each figure key, its
// description, whether the client offers the hybrid, whether it resumes,
// and the logins kind imapgate's CPU per login is compared with.
var floorKinds = []struct {
	key, handshake string
	hybrid, resume bool
	logins         loginsKind
}{
	{figFloorX25519, "full, client offers X25519 only", false, false, loginsMemory},
	{figFloorHybrid, "full, client offers X25519MLKEM768 (Go's default)", true, false, loginsMemoryHybrid},
	{figFloorResumed, "resumed, client offers X25519 only", false, true, loginsMemoryResumed},
}

// floor measures the CPU of the bare handshake server per handshake, of
// each kind, with the first number of workers for the logins' duration.
func (c *comparison) floor(ctx context.Context, _ contender, round int) error {
	w := c.o.Workers[0]
	for _, k := range floorKinds {
		conf := c.tlsConf
		if k.hybrid {
			conf = hybridTarget(target{TLSConfig: conf}).TLSConfig
		}
		r, err := c.floorServer.measureFloor(ctx, conf, k.resume, w, c.o.Duration)
		if err != nil {
			return fmt.Errorf("%s: %w", k.handshake, err)
		}
		if r.Handshakes == 0 {
			return fmt.Errorf("%s: no handshake", k.handshake)
		}
		us := float64(r.CPU.Microseconds()) / float64(r.Handshakes)
		c.samples.add(k.key, floorContender, us)
		c.floorCurves[k.key] = r.Curve.String()
		if k.resume && r.Resumed == 0 {
			c.problem("floor round %d: %s: none of %d handshakes resumed", round+1, k.handshake, r.Handshakes)
		}
		c.log.Info("floor", "round", round+1, "handshake", k.handshake, "key_exchange", r.Curve.String(), "handshakes", r.Handshakes,
			"resumed", r.Resumed, "cpu_us_per_handshake", fmt.Sprintf("%.0f", us))
	}
	return nil
}

// floorFigures are the floor's medians beside imapgate's CPU per login
// of the same kind at the first number of workers.
func (c *comparison) floorFigures() []floorFigure {
	var ffs []floorFigure
	med := func(key, name string) *float64 {
		if v, ok := median(c.samples[key][name]); ok {
			return &v
		}
		return nil
	}
	for _, k := range floorKinds {
		_, _, _, key := loginFigures(c.o.Workers[0], k.logins)
		f := floorFigure{Handshake: k.handshake, KeyExchange: c.floorCurves[k.key], CPUMicros: med(k.key, floorContender),
			ImapgateKey: key, ImapgateMicros: med(key, nameImapgate)}
		if f.KeyExchange == "" {
			f.KeyExchange = "?"
		}
		f.ImapgateFloor = ratio(f.ImapgateMicros, f.CPUMicros)
		if f.CPUMicros != nil {
			ffs = append(ffs, f)
		}
	}
	return ffs
}
