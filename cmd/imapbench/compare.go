package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// The comparison run: imapbench compare starts Dovecot with a generated
// mailbox, nginx's mail proxy and imapgate in front of it, runs every
// scenario against Dovecot directly, nginx and imapgate in alternating
// rounds, and prints one table of medians with imapgate's ratios. Logins
// run a second time with an in-memory upstream (imapbench upstream, in
// its own process) in place of Dovecot, through a second nginx and a
// second imapgate: compare_memory.go. And once more through those two
// with TLS session resumption, the client's session cache shared by the
// workers: the "resumed" rows (direct, without TLS, has none). And once
// more with the client offering the hybrid X25519MLKEM768, which
// imapgate negotiates and nginx cannot. Every logins and fetch run reads
// the CPU time of the proxy's processes (nginx's with its auth_http
// responder, a subprocess), and a bare TLS server in a subprocess gives
// the floor of a handshake's CPU. The fetch runs also through two more
// imapgate processes with TLS to Dovecot (STARTTLS, implicit TLS).

const compareUsage = `Usage:
  imapbench compare [--rounds 3] [--sessions 2000] [--storm-sessions 9500] [--scenarios LIST] [--quick] [--json]

Starts, on loopback and in a temporary directory, Dovecot with a generated mailbox, nginx's
mail proxy (Debian's nginx and libnginx-mod-mail, with an auth_http responder in imapbench) and
imapgate (built from this repository: run from it), both with implicit TLS and the same ECDSA
P-256 certificate and both logging in to Dovecot in plaintext. Then runs idle, fetch, logins,
the storm and latency against direct (plaintext to Dovecot), nginx and imapgate in alternating rounds and
prints the medians and the ratios imapgate/nginx and imapgate/direct.

Dovecot's login work (its auth and imap processes; by default a fork and exec per login, with
--reuse-processes, the default, a pool of reused imap processes) bounds the logins of all
three. So logins runs a second
time against "imapbench upstream" (an in-memory IMAP server, started as a subprocess of this
imapbench) in place of Dovecot: direct (plaintext to it), a second nginx and a second imapgate
in front of it. Those are the rows "..., memory upstream". Then, unless --resumed-logins=false,
once more through that nginx and imapgate with TLS session resumption (a client session cache
shared by the workers): the rows "..., memory upstream, resumed", whose direct cells are n/a
(direct has no TLS), and the notes say how many handshakes resumed. And once more with the
client offering Go's default key exchanges (X25519MLKEM768 first): the rows "..., X25519MLKEM768
offered", where imapgate negotiates the hybrid and nginx X25519.

CPU: every logins and fetch run reads the CPU time (utime + stime, /proc/PID/stat) of the proxy's
processes (nginx: master, workers and its auth_http responder, "imapbench auth-http" in its own
process; imapgate: its one process): the rows "CPU per login" (µs) and "fetch CPU per MB" (ms).
The floor, printed after the table: the CPU of one bare server-side TLS handshake in
"imapbench handshake-server" (imapgate's TLS configuration, the same certificate), full with
X25519, full with X25519MLKEM768 and resumed, beside imapgate's CPU per login of each kind.

TLS on both legs: fetch runs also through two more imapgate processes with upstream.tls =
"starttls" and "implicit" to Dovecot (its own certificate): the rows "fetch, upstream ...",
whose nginx cells are n/a (nginx's mail proxy speaks plaintext to its upstream) and whose direct
cells are the client with the same TLS straight to Dovecot: the ceiling of Dovecot's own TLS.

The storm (imapbench storm, through the memory upstream's nginx and imapgate, each restarted for
the round: Dovecot's process per session cannot hold that many here): --storm-sessions sessions set
up 64 at a time (connect, TLS, AUTHENTICATE PLAIN, SELECT INBOX, IDLE), held --hold, dropped at
once with RST (SO_LINGER 0) and reconnected at once, a failed attempt retried after 1 s, within
--storm-within: seconds until all are back, p50/p99 of one reconnect, attempts not OK, right
passwords refused, peak RSS, and RSS per session 3 s after the setup, after the hold and 3 s after
the storm. Both proxies may open 20,000 files per process (each nginx worker:
worker_rlimit_nofile and worker_connections 20000); nginx listens with backlog=net.core.somaxconn,
the backlog Go gives imapgate, unless --nginx-backlog says otherwise.

Everything it started is stopped, by PID, on exit and on Ctrl-C. Needs root or the owner of the
processes to read their memory.

Flags:
  --rounds N           rounds of every scenario (default 3)
  --sessions N         idle: sessions held at once (default 2000)
  --source-count N     source addresses 127.1.0.1 .. 127.1.0.N for every connection (default 16)
  --hold D             idle and storm: how long the sessions are held (default 30s)
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
  --storm-sessions N   storm: sessions dropped and reconnected at once (default 9500, at most 9500)
  --storm-within D     storm: bound on each storm's reconnect (default 2m)
  --nginx-backlog N    storm: listen backlog of the storm's nginx (default net.core.somaxconn, as
                       Go's; 0 is nginx's own default, 511)
  --imapgate-upstream-logins N
                       storm: max_upstream_logins and upstream_login_queue of the storm's imapgate
                       (0: no cap; default: imapgate's, 64 in flight, the queue unbounded)
  --profile DIR        storm: save a CPU profile of imapgate during each storm (30 s from the drop)
                       in DIR, from its /debug/pprof/ (metrics.pprof)
  --scenarios LIST     only these, comma-separated: idle, fetch, logins, memory-logins, floor,
                       storm, latency (default all)
  --imapgate PATH      a built imapgate to use instead of building ./cmd/imapgate
  --quick              tiny sizes and durations, one round (a smoke test; about 50s)
  --max-time D         bound on the whole run (default 30m)
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
	// StormSessions are the storm's sessions, set up, dropped and
	// reconnected through the memory upstream's nginx and imapgate.
	StormSessions int
	// StormWithin bounds each storm's reconnect; StormSettle is how long
	// after the setup and after the storm its memory is sampled.
	StormWithin, StormSettle time.Duration
	// NginxBacklog is the listen backlog of the storm's nginx (the
	// memory upstream's): 0 leaves nginx's default (511).
	NginxBacklog int
	// MaxUpstreamLogins, if not nil, is policy.max_upstream_logins (and
	// upstream_login_queue) of the memory upstream's imapgate, the
	// storm's; nil leaves imapgate's defaults.
	MaxUpstreamLogins *int
	// Profile is a directory for CPU profiles of imapgate during each
	// storm (metrics.pprof); if empty, none is taken.
	Profile string
	// Scenarios are the scenarios to run (compareScenarios); if nil,
	// all of them.
	Scenarios map[string]bool
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

// compareScenarios are the scenarios of a comparison, in the order they
// run, as --scenarios names them.
var compareScenarios = []string{"idle", "fetch", "logins", "memory-logins", "floor", "storm", "latency"}

// runs says whether the scenario is to run.
func (o compareOptions) runs(scenario string) bool {
	return o.Scenarios == nil || o.Scenarios[scenario]
}

// maxStormSessions is the storm's ceiling: a proxied session holds two
// descriptors, and the proxies here may open 20,000 each.
const maxStormSessions = 9500

func defaultCompareOptions() compareOptions {
	return compareOptions{
		Rounds: 3, Sessions: 2000, SourceCount: 16, Hold: 30 * time.Second,
		StormSessions: maxStormSessions, StormWithin: defaultStormWithin, StormSettle: defaultStormSettle, NginxBacklog: somaxconn(),
		Users: 2000, Messages: 2000, MessageSize: 50_000,
		Duration: 5 * time.Second, Workers: []int{16, 64}, MemoryLogins: true, ResumedLogins: true, ReuseProcesses: true, Count: 2000,
		Concurrency: defaultConcurrency, Timeout: 10 * time.Second,
	}
}

// quickCompareOptions is --quick: every scenario runs, briefly.
func quickCompareOptions() compareOptions {
	o := defaultCompareOptions()
	o.Rounds, o.Sessions, o.SourceCount, o.Hold = 1, 100, 4, time.Second
	// 800 messages of 50 KB: 40 MB, enough CPU clock ticks (10 ms each)
	// for the fetch's CPU per MB to be above zero: imapgate relays a
	// plaintext upstream at about 0.7 ms per MB, so 10 MB was often less
	// than one tick (TestCompareQuick failed about one run in three).
	o.Users, o.Messages = 100, 800
	o.Duration, o.Count = time.Second, 200
	o.StormSessions, o.StormSettle = 200, time.Second
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
		maxTime  = fs.Duration("max-time", 30*time.Minute, "bound on the whole run")
		scenList = fs.String("scenarios", "all", "scenarios to run, comma-separated")
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
	fs.IntVar(&o.StormSessions, "storm-sessions", d.StormSessions, "storm: sessions dropped and reconnected at once")
	fs.DurationVar(&o.StormWithin, "storm-within", d.StormWithin, "storm: bound on each reconnect storm")
	fs.IntVar(&o.NginxBacklog, "nginx-backlog", d.NginxBacklog, "storm: the listen backlog of the storm's nginx; 0 is nginx's default, 511")
	upstreamLogins := fs.Int("imapgate-upstream-logins", -1, "storm: max_upstream_logins and upstream_login_queue of the storm's imapgate (0: no cap); -1 leaves imapgate's defaults")
	fs.StringVar(&o.Profile, "profile", "", "storm: save a CPU profile of imapgate during each storm in `DIR`")
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
		keep("storm-sessions", &o.StormSessions, q.StormSessions)
		o.StormSettle = q.StormSettle
		keepD("hold", &o.Hold, q.Hold)
		keepD("duration", &o.Duration, q.Duration)
		if !set["max-time"] {
			*maxTime = 2 * time.Minute
		}
		o.Quick = true
	}
	var err error
	if o.Scenarios, err = parseScenarios(*scenList); err != nil {
		fmt.Fprintf(stderr, "imapbench compare: %v\n", err)
		return 2
	}
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
	if *upstreamLogins >= 0 {
		o.MaxUpstreamLogins = upstreamLogins
	}

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

// parseScenarios parses --scenarios: "all" (nil: every scenario) or
// names of compareScenarios, comma-separated.
func parseScenarios(s string) (map[string]bool, error) {
	if strings.TrimSpace(s) == "all" {
		return nil, nil
	}
	set := map[string]bool{}
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		if !slices.Contains(compareScenarios, f) {
			return nil, fmt.Errorf("--scenarios: %q is not one of all, %s", f, strings.Join(compareScenarios, ", "))
		}
		set[f] = true
	}
	return set, nil
}

// somaxconn is net.core.somaxconn, the backlog Go listens with (4096 on
// Linux 5.4 and later, when /proc cannot say).
func somaxconn() int {
	b, err := os.ReadFile("/proc/sys/net/core/somaxconn")
	if err == nil {
		if n, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && n > 0 {
			return n
		}
	}
	return 4096
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
	case o.StormSessions < 1 || o.StormSessions > maxStormSessions:
		return fmt.Errorf("--storm-sessions %d: want 1 to %d (the proxies' file limits: two descriptors per session)", o.StormSessions, maxStormSessions)
	case o.StormWithin <= 0:
		return errors.New("--storm-within must be positive")
	case o.NginxBacklog < 0 || o.NginxBacklog > 65535:
		return fmt.Errorf("--nginx-backlog %d: want 0 (nginx's default) to 65535", o.NginxBacklog)
	}
	return nil
}
