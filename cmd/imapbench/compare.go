package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/imapgate/imapgate/proxy/proxytest"
	"github.com/imapgate/imapgate/tlsconf"
)

// The comparison run: imapbench compare starts Dovecot with a generated
// mailbox, nginx's mail proxy and imapgate in front of it, runs every
// scenario against Dovecot directly, nginx and imapgate in alternating
// rounds, and prints one table of medians with imapgate's ratios. Logins
// run a second time with an in-memory upstream (imapbench upstream, in
// its own process) in place of Dovecot, through a second nginx and a
// second imapgate: compare_memory.go. And once more through those two
// with TLS session resumption, the client's session cache shared by the
// workers: the "resumed" rows (direct, without TLS, has none).

const compareUsage = `Usage:
  imapbench compare [--rounds 3] [--sessions 2000] [--memory-logins=true] [--resumed-logins=true] [--quick] [--json]

Starts, on loopback and in a temporary directory, Dovecot with a generated mailbox, nginx's
mail proxy (Debian's nginx and libnginx-mod-mail, with an auth_http responder in imapbench) and
imapgate (built from this repository: run from it), both with implicit TLS and the same ECDSA
P-256 certificate and both logging in to Dovecot in plaintext. Then runs idle, fetch, logins
and latency against direct (plaintext to Dovecot), nginx and imapgate in alternating rounds and
prints the medians and the ratios imapgate/nginx and imapgate/direct.

Dovecot's login work (its auth and imap processes; by default a fork and exec per login, with
--reuse-processes, the default, a pool of reused imap processes) bounds the logins of all
three. So logins runs a second
time against "imapbench upstream" (an in-memory IMAP server, started as a subprocess of this
imapbench) in place of Dovecot: direct (plaintext to it), a second nginx and a second imapgate
in front of it. Those are the rows "..., memory upstream". Then, unless --resumed-logins=false,
once more through that nginx and imapgate with TLS session resumption (a client session cache
shared by the workers): the rows "..., memory upstream, resumed", whose direct cells are n/a
(direct has no TLS), and the notes say how many handshakes resumed.

Everything it started is stopped, by PID, on exit and on Ctrl-C. Needs root or the owner of the
processes to read their memory.

Flags:
  --rounds N           rounds of every scenario (default 3)
  --sessions N         idle: sessions held at once (default 2000)
  --source-count N     source addresses 127.1.0.1 .. 127.1.0.N for every connection (default 16)
  --hold D             idle: how long the sessions are held (default 3s)
  --users N            users user1..userN in Dovecot; sessions and logins spread over them (default 2000)
  --messages N         messages in user1's INBOX, fetched whole (default 2000)
  --message-size B     size of each of them (default 50000: 100 MB in all)
  --duration D         logins: how long each run logs in (default 5s)
  --workers LIST       logins: concurrent login loops, one row each (default 16,64)
  --memory-logins=BOOL logins again against an in-memory upstream in place of Dovecot (default true)
  --resumed-logins=BOOL
                       the memory upstream's logins once more through nginx and imapgate, resuming
                       TLS sessions (default true; none with --memory-logins=false)
  --reuse-processes=BOOL
                       Dovecot's imap processes serve login after login (service_count = 0) instead
                       of one fork and exec per login (default true)
  --count N            latency: NOOP round trips per round (default 2000)
  --imapgate PATH      a built imapgate to use instead of building ./cmd/imapgate
  --quick              tiny sizes and durations, one round (a smoke test; about 25s)
  --max-time D         bound on the whole run (default 20m)
  --timeout D          how long each step may wait for a server (default 10s)
  --json               print the result as JSON
  --quiet              no progress on stderr
  --verbose            the scenarios' own progress on stderr too
`

// compareOptions configures runComparison. Zero values are not defaults:
// defaultCompareOptions and quickCompareOptions fill every field.
type compareOptions struct {
	Rounds      int
	Sessions    int // idle
	SourceCount int
	Hold        time.Duration // idle
	Users       int
	Messages    int
	MessageSize int
	Duration    time.Duration // logins, per run
	Workers     []int         // logins, one run each
	Count       int           // latency, per round
	Concurrency int           // idle: sessions opened at once
	Timeout     time.Duration
	// MemoryLogins runs logins a second time, with an in-memory
	// upstream (imapbench upstream) in place of Dovecot.
	MemoryLogins bool
	// ResumedLogins runs the memory upstream's logins once more through
	// nginx and imapgate, with a TLS session cache shared by the
	// workers. It needs MemoryLogins.
	ResumedLogins bool
	// ReuseProcesses lets Dovecot's imap processes serve login after
	// login instead of forking one per login (see
	// proxytest.DovecotOptions.ReuseProcesses).
	ReuseProcesses bool
	// Imapgate is a built imapgate. If empty, ./cmd/imapgate of the
	// repository is built into the run's directory.
	Imapgate string
	Quick    bool
	// Log receives the run's progress; RunnerLog the scenarios' own. If
	// nil, nothing is logged.
	Log, RunnerLog *slog.Logger
}

// comparePassword is every generated user's password.
const comparePassword = "compare-Secret!1"

func defaultCompareOptions() compareOptions {
	return compareOptions{
		Rounds: 3, Sessions: 2000, SourceCount: 16, Hold: 3 * time.Second,
		Users: 2000, Messages: 2000, MessageSize: 50_000,
		Duration: 5 * time.Second, Workers: []int{16, 64}, MemoryLogins: true, ResumedLogins: true, ReuseProcesses: true, Count: 2000,
		Concurrency: defaultConcurrency, Timeout: 10 * time.Second,
	}
}

// quickCompareOptions is --quick: every scenario runs, briefly.
func quickCompareOptions() compareOptions {
	o := defaultCompareOptions()
	o.Rounds, o.Sessions, o.SourceCount, o.Hold = 1, 100, 4, time.Second
	o.Users, o.Messages = 100, 50
	o.Duration, o.Count = time.Second, 200
	o.Quick = true
	return o
}

// runCompare is "imapbench compare ARGS": it returns the exit code.
func runCompare(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("imapbench compare", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { io.WriteString(stderr, compareUsage) }
	d := defaultCompareOptions()
	var (
		o        = d
		workers  = fs.String("workers", joinInts(d.Workers), "logins: concurrent login loops, comma-separated")
		quick    = fs.Bool("quick", false, "tiny sizes and durations, one round")
		asJSON   = fs.Bool("json", false, "print the result as JSON")
		quiet    = fs.Bool("quiet", false, "no progress on stderr")
		verbose  = fs.Bool("verbose", false, "the scenarios' own progress on stderr too")
		maxTime  = fs.Duration("max-time", 20*time.Minute, "bound on the whole run")
		imapgate = fs.String("imapgate", "", "a built imapgate `PATH` (default: build ./cmd/imapgate)")
	)
	fs.IntVar(&o.Rounds, "rounds", d.Rounds, "rounds of every scenario")
	fs.IntVar(&o.Sessions, "sessions", d.Sessions, "idle: sessions held at once")
	fs.IntVar(&o.SourceCount, "source-count", d.SourceCount, "source addresses 127.1.0.1 .. 127.1.0.`N`")
	fs.DurationVar(&o.Hold, "hold", d.Hold, "idle: how long the sessions are held")
	fs.IntVar(&o.Users, "users", d.Users, "users user1..userN")
	fs.IntVar(&o.Messages, "messages", d.Messages, "messages in user1's INBOX")
	fs.IntVar(&o.MessageSize, "message-size", d.MessageSize, "size of each message in bytes")
	fs.DurationVar(&o.Duration, "duration", d.Duration, "logins: how long each run logs in")
	fs.BoolVar(&o.MemoryLogins, "memory-logins", d.MemoryLogins, "logins again against an in-memory upstream in place of Dovecot")
	fs.BoolVar(&o.ResumedLogins, "resumed-logins", d.ResumedLogins, "the memory upstream's logins once more, resuming TLS sessions")
	fs.BoolVar(&o.ReuseProcesses, "reuse-processes", d.ReuseProcesses, "Dovecot's imap processes serve login after login instead of one fork per login")
	fs.IntVar(&o.Count, "count", d.Count, "latency: NOOP round trips per round")
	fs.DurationVar(&o.Timeout, "timeout", d.Timeout, "how long each step may wait for a server")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "imapbench compare: unexpected argument %q\n", fs.Arg(0))
		return 2
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if !o.MemoryLogins && o.ResumedLogins {
		// The resumed logins are the memory upstream's: without it, they
		// go too, unless asked for by name.
		if set["resumed-logins"] {
			fmt.Fprintln(stderr, "imapbench compare: --resumed-logins=true needs --memory-logins=true: the resumed logins run against the memory upstream")
			return 2
		}
		o.ResumedLogins = false
	}
	if *quick {
		q := quickCompareOptions()
		keep := func(name string, dst *int, v int) {
			if !set[name] {
				*dst = v
			}
		}
		keepD := func(name string, dst *time.Duration, v time.Duration) {
			if !set[name] {
				*dst = v
			}
		}
		keep("rounds", &o.Rounds, q.Rounds)
		keep("sessions", &o.Sessions, q.Sessions)
		keep("source-count", &o.SourceCount, q.SourceCount)
		keep("users", &o.Users, q.Users)
		keep("messages", &o.Messages, q.Messages)
		keep("message-size", &o.MessageSize, q.MessageSize)
		keep("count", &o.Count, q.Count)
		keepD("hold", &o.Hold, q.Hold)
		keepD("duration", &o.Duration, q.Duration)
		if !set["max-time"] {
			*maxTime = 2 * time.Minute
		}
		o.Quick = true
	}
	var err error
	if o.Workers, err = parseWorkers(*workers); err == nil {
		err = o.check()
	}
	if err == nil && *maxTime <= 0 {
		err = errors.New("--max-time must be positive")
	}
	if err != nil {
		fmt.Fprintf(stderr, "imapbench compare: %v\n", err)
		return 2
	}
	o.Imapgate = *imapgate

	level := slog.LevelInfo
	if *quiet {
		level = slog.LevelWarn
	}
	o.Log = slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
	o.RunnerLog = slog.New(slog.DiscardHandler)
	if *verbose && !*quiet {
		o.RunnerLog = o.Log
	}
	if _, err := raiseOpenFileLimit(); err != nil {
		o.Log.Warn("cannot raise the open file limit", "err", err)
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	context.AfterFunc(ctx, stop) // a second Ctrl-C kills
	ctx, cancel := context.WithTimeout(ctx, *maxTime)
	defer cancel()

	res, err := runComparison(ctx, o)
	if res != nil && len(res.Rows) > 0 {
		if perr := printResult(stdout, res, *asJSON); perr != nil {
			fmt.Fprintf(stderr, "imapbench compare: %v\n", perr)
			return 1
		}
	}
	if err != nil {
		fmt.Fprintf(stderr, "imapbench compare: %v\n", err)
		return 1
	}
	if res.missing() > 0 {
		fmt.Fprintf(stderr, "imapbench compare: %d cells have no measurement: see the problems\n", res.missing())
		return 1
	}
	return 0
}

// parseWorkers parses "16,64".
func parseWorkers(s string) ([]int, error) {
	var ws []int
	for _, f := range strings.Split(s, ",") {
		w, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || w <= 0 || w > 10_000 {
			return nil, fmt.Errorf("--workers: %q is not a number of workers (1 to 10000)", f)
		}
		for _, x := range ws {
			if x == w {
				return nil, fmt.Errorf("--workers: %d twice", w)
			}
		}
		ws = append(ws, w)
	}
	return ws, nil
}

// check says what is wrong with the options, in terms of the flags.
func (o compareOptions) check() error {
	switch {
	case o.Rounds < 1 || o.Rounds > 100:
		return fmt.Errorf("--rounds %d: want 1 to 100", o.Rounds)
	case o.Sessions < 1:
		return fmt.Errorf("--sessions %d: want at least 1", o.Sessions)
	case o.Sessions > 9000:
		// nginx and imapgate hold two sockets per session within
		// worker_rlimit_nofile (and the usual hard limit) of 20000.
		return fmt.Errorf("--sessions %d: at most 9000 (the proxies' file limits)", o.Sessions)
	case o.SourceCount < 1 || o.SourceCount > maxSources:
		return fmt.Errorf("--source-count %d: want 1 to %d", o.SourceCount, maxSources)
	case o.Users < 1 || o.Users > 100_000:
		return fmt.Errorf("--users %d: want 1 to 100000", o.Users)
	case o.Messages < 1 || o.Messages > 100_000:
		return fmt.Errorf("--messages %d: want 1 to 100000", o.Messages)
	case o.MessageSize < 1000 || o.MessageSize > 50_000_000:
		return fmt.Errorf("--message-size %d: want 1000 to 50000000 bytes", o.MessageSize)
	case int64(o.Messages)*int64(o.MessageSize) > 4<<30:
		return fmt.Errorf("--messages %d × --message-size %d is more than 4 GiB of mail", o.Messages, o.MessageSize)
	case o.Hold <= 0 || o.Duration <= 0 || o.Timeout <= 0:
		return errors.New("--hold, --duration and --timeout must be positive")
	case o.Count < 1 || o.Count > 1_000_000:
		return fmt.Errorf("--count %d: want 1 to 1000000", o.Count)
	case o.ResumedLogins && !o.MemoryLogins:
		return errors.New("--resumed-logins needs --memory-logins")
	}
	return nil
}

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

// problem records something that went wrong without ending the run.
func (c *comparison) problem(format string, a ...any) {
	p := fmt.Sprintf(format, a...)
	c.log.Warn(p)
	c.res.Problems = append(c.res.Problems, p)
}

// idle holds o.Sessions sessions in IDLE through a freshly started proxy
// and records its memory per session. Dovecot alone has no proxy to
// measure: direct is skipped.
func (c *comparison) idle(ctx context.Context, ct contender, round int) error {
	if ct.server == nil {
		return nil
	}
	if err := ct.server.restart(ctx, c.tlsConf); err != nil {
		return fmt.Errorf("restart: %w", err)
	}
	before := c.dovecotChildren()
	r, err := runIdle(ctx, idleOptions{Target: ct.target, Sessions: c.o.Sessions, Concurrency: c.o.Concurrency,
		Hold: c.o.Hold, PIDs: ct.server.pids(), Log: c.o.RunnerLog})
	c.settle(ctx, before)
	if err != nil {
		return err
	}
	if r.Failed > 0 {
		c.problem("%s idle round %d: %d of %d sessions failed to open: %s", ct.name, round+1, r.Failed, r.Requested, errorSummary(r.OpenErrors))
	}
	if r.Closed < r.Opened {
		c.problem("%s idle round %d: %d of %d sessions did not close cleanly: %s", ct.name, round+1, r.Opened-r.Closed, r.Opened, errorSummary(r.CloseErrors))
	}
	if r.Memory == nil || r.Opened == 0 {
		return errors.New("no memory measurement: no session opened")
	}
	rss, pss := float64(r.Memory.PerSessionRSSBytes)/1024, float64(r.Memory.PerSessionPSSBytes)/1024
	c.samples.add(figIdleRSS, ct.name, rss)
	c.samples.add(figIdlePSS, ct.name, pss)
	c.log.Info("idle", "round", round+1, "target", ct.name, "sessions", r.Opened, "rss_kib_per_session", fmt.Sprintf("%.1f", rss),
		"pss_kib_per_session", fmt.Sprintf("%.1f", pss), "pids", joinInts(ct.server.pids()))
	return nil
}

// dovecotChildren counts the processes of Dovecot's master: one per
// logged-in session and a handful of services.
func (c *comparison) dovecotChildren() int {
	kids, _ := childProcs("/proc", c.dovecot.PID)
	return len(kids)
}

// settle waits (at most 15s) until Dovecot has ended the sessions of an
// idle run, so that the next measurement does not share the CPU with
// thousands of exiting processes.
func (c *comparison) settle(ctx context.Context, before int) {
	deadline := time.Now().Add(15 * time.Second)
	for ctx.Err() == nil && time.Now().Before(deadline) && c.dovecotChildren() > before+2 {
		pause(ctx, 50*time.Millisecond)
	}
}

func (c *comparison) fetch(ctx context.Context, ct contender, round int) error {
	r, err := runFetch(ctx, fetchOptions{Target: ct.target, Rounds: 1, Log: c.o.RunnerLog})
	if err != nil {
		return err
	}
	if got := r.BodyBytes; got < int64(c.o.Messages)*int64(c.o.MessageSize)*9/10 {
		c.problem("%s fetch round %d: %d bytes in bodies, want about %d", ct.name, round+1, got, int64(c.o.Messages)*int64(c.o.MessageSize))
	}
	c.samples.add(figFetch, ct.name, r.MedianMBps)
	c.log.Info("fetch", "round", round+1, "target", ct.name, "mb_per_s", fmt.Sprintf("%.1f", r.MedianMBps), "bytes", r.WireBytes)
	return nil
}

// logins runs the login loop with workers workers through ct: with
// Dovecot or the memory upstream, a full handshake each login, or with
// the memory upstream and a TLS session cache shared by the workers
// (empty at the run's start), as kind says.
func (c *comparison) logins(ctx context.Context, ct contender, round, workers int, kind loginsKind) error {
	resume := kind == loginsMemoryResumed
	r, err := runLogins(ctx, loginsOptions{Target: ct.target, Workers: workers, Duration: c.o.Duration, Resume: resume, Log: c.o.RunnerLog})
	if err != nil {
		return err
	}
	name, upstream := "logins", "dovecot"
	switch kind {
	case loginsMemory:
		name, upstream = "memory logins", "memory"
	case loginsMemoryResumed:
		name, upstream = "resumed memory logins", "memory"
	}
	if r.Errors > 0 {
		c.problem("%s %s@%d round %d: %d errors: %s", ct.name, name, workers, round+1, r.Errors, errorSummary(r.ErrorKinds))
	}
	if r.Logins == 0 {
		return errors.New("no login succeeded")
	}
	rate, p50, p99 := loginFigures(workers, kind)
	c.samples.add(rate, ct.name, r.LoginsPerSecond)
	c.samples.add(p50, ct.name, r.Latency.P50Micros/1000)
	c.samples.add(p99, ct.name, r.Latency.P99Micros/1000)
	attrs := []any{"round", round + 1, "target", ct.name, "upstream", upstream, "resume", resume, "workers", workers, "per_s", fmt.Sprintf("%.0f", r.LoginsPerSecond),
		"p50", fmtMicros(r.Latency.P50Micros), "p99", fmtMicros(r.Latency.P99Micros)}
	if resume {
		c.countResumed(ct.name, workers, r.Logins, r.Resumed)
		attrs = append(attrs, "resumed", fmt.Sprintf("%d of %d", r.Resumed, r.Logins))
		if r.Resumed == 0 {
			c.log.Warn("no TLS handshake resumed a session", "target", ct.name, "workers", workers, "round", round+1, "logins", r.Logins)
		}
	}
	c.log.Info("logins", attrs...)
	return nil
}

// countResumed adds a resumed run's logins and resumed handshakes to the
// contender's counts at workers.
func (c *comparison) countResumed(contender string, workers, logins, resumed int) {
	byName := c.resumeCounts[workers]
	if byName == nil {
		byName = map[string]*resumeCount{}
		c.resumeCounts[workers] = byName
	}
	rc := byName[contender]
	if rc == nil {
		rc = &resumeCount{Workers: workers, Contender: contender}
		byName[contender] = rc
	}
	rc.Logins += logins
	rc.Resumed += resumed
}

// resumption lists the resumed logins' counts in the order of o.Workers,
// nginx before imapgate; a contender with no successful run has none.
func (c *comparison) resumption() []resumeCount {
	var rcs []resumeCount
	for _, w := range c.o.Workers {
		for _, name := range []string{nameNginx, nameImapgate} {
			if rc := c.resumeCounts[w][name]; rc != nil {
				rcs = append(rcs, *rc)
			}
		}
	}
	return rcs
}

func (c *comparison) latency(ctx context.Context, ct contender, round int) error {
	r, err := runLatency(ctx, latencyOptions{Target: ct.target, Count: c.o.Count, Log: c.o.RunnerLog})
	if err != nil {
		return err
	}
	c.samples.add(figNoopP50, ct.name, r.Latency.P50Micros)
	c.samples.add(figNoopP99, ct.name, r.Latency.P99Micros)
	c.log.Info("latency", "round", round+1, "target", ct.name, "p50", fmtMicros(r.Latency.P50Micros), "p99", fmtMicros(r.Latency.P99Micros))
	return nil
}

// errorSummary is the most frequent errors of a scenario, for problems.
func errorSummary(errs []errorCount) string {
	var parts []string
	for i, e := range errs {
		if i == 3 {
			parts = append(parts, "...")
			break
		}
		parts = append(parts, fmt.Sprintf("%d× %s", e.Count, e.Error))
	}
	return strings.Join(parts, "; ")
}

// settings is what the run did, for the result's header and notes.
func (c *comparison) settings() compareSettings {
	o := c.o
	st := compareSettings{
		Rounds: o.Rounds, Sessions: o.Sessions, SourceCount: o.SourceCount, HoldSeconds: o.Hold.Seconds(),
		Users: o.Users, Messages: o.Messages, MessageSize: o.MessageSize,
		LoginSeconds: o.Duration.Seconds(), Workers: o.Workers, NoopCount: o.Count,
		NginxWorkers: nginxWorkers, MemoryLogins: c.memContenders != nil, Quick: o.Quick,
	}
	st.ResumedLogins = st.MemoryLogins && o.ResumedLogins
	st.ReuseProcesses = o.ReuseProcesses
	if st.MemoryLogins {
		st.MemoryUpstream = memoryUpstreamMode
	}
	return st
}

// finish computes the table from the samples and writes the notes.
// authRequests and memAuthRequests are the logins the auth_http
// responders of the two nginx answered.
func (c *comparison) finish(authRequests, memAuthRequests int64) {
	c.res.Rows = buildRows(c.samples, compareFigures(c.o.Workers, c.memContenders != nil, c.res.Settings.ResumedLogins))
	c.res.Resumption = c.resumption()
	c.res.Notes = compareNotes(c.res, authRequests, memAuthRequests)
}
