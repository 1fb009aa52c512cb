// Command imapbench runs IMAP load against an address, imapgate's or an
// IMAP server's, and prints what it measured as a table or as JSON.
//
//	imapbench idle --addr 127.0.0.1:993 --cafile ca.pem --sessions 10000 --source-count 16 --pid 1234
//	imapbench fetch --addr 127.0.0.1:993 --cafile ca.pem --rounds 3
//	imapbench logins --addr 127.0.0.1:993 --cafile ca.pem --workers 16 --duration 5s
//	imapbench latency --addr 127.0.0.1:143 --tls none --login --count 2000 --json
//	imapbench compare --rounds 3 --sessions 2000
//
// Every scenario is bounded in count and in time (--max-time) and stops
// by itself. The measurements are functions of this package (runIdle,
// runFetch, runLogins, runLatency) returning result structs, so that
// other subcommands can combine them.
package main

import (
	"cmp"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

const usage = `imapbench: IMAP load and measurement for imapgate (or any IMAP server)

Usage:
  imapbench idle    --addr HOST:PORT [--sessions 1000] [--hold 10s] [--concurrency 64] [--pid PID[,PID...]]
  imapbench storm   --addr HOST:PORT [--sessions 1000] [--hold 30s] [--within 120s] [--retry-delay 1s] [--pid PID[,PID...]]
  imapbench fetch   --addr HOST:PORT [--rounds 3]
  imapbench logins  --addr HOST:PORT [--workers 16] [--duration 5s] [--resume] [--max-logins 1000000]
  imapbench latency --addr HOST:PORT [--count 2000]
  imapbench compare [--rounds 3] [--sessions 2000] [--quick] [--json]   (see imapbench compare --help)

  idle     open N sessions (TLS, AUTHENTICATE PLAIN, SELECT INBOX, FETCH 1, IDLE), hold them,
           and report the memory per session of --pid (VmRSS and Pss, summed over the pids)
  storm    set up N sessions (TLS, AUTHENTICATE PLAIN, SELECT INBOX, IDLE), hold them, drop them
           all at once (RST: SO_LINGER 0) and reconnect them all at once, each retrying a failed
           attempt after --retry-delay, within --within: seconds until all are back, p50/p99 of one
           reconnect, attempts not OK by kind, right passwords refused, and the memory of --pid
           (per session 3 s after the setup, at the end of the hold, 3 s after the storm; peak RSS)
           and its CPU time during the storm
  fetch    UID FETCH 1:* BODY.PEEK[] of INBOX, --rounds times: MB/s (1 MB = 1e6 bytes), median
  logins   connect + TLS + AUTHENTICATE PLAIN + LOGOUT in a loop: logins/s, p50, p99, errors
  latency  one session, --count sequential NOOPs: p50, p99, mean in microseconds
  compare  start Dovecot, nginx's mail proxy and imapgate on loopback, run every scenario against
           each in alternating rounds, print one table of medians and imapgate's ratios

Flags of every scenario:
  --addr HOST:PORT               the proxy or server (required)
  --tls implicit|starttls|none   how to reach IMAP (default implicit)
  --cafile PATH                  PEM CA certificates to verify the server with (default: the system's)
  --insecure                     do not verify the server's certificate
  --server-name NAME             name to verify and send as SNI (default: the host of --addr)
  --user NAME --password PASS    (default user1 / pass1-Secret!)
  --users-pattern user%d --users-count N
                                 spread sessions over N users (user1..userN), all with --password
  --login                        LOGIN instead of AUTHENTICATE PLAIN (plaintext baselines)
  --sources LIST                 source addresses in 127.0.0.0/8 or ::1, round-robin: addresses
                                 and CIDRs, comma-separated (127.1.0.0/24) (default: the kernel's)
  --source-count N               the sources 127.1.0.1 .. 127.1.0.N
  --timeout 10s                  how long each step may wait for the server
  --max-time 10m                 the whole run, after which it stops and reports what it has
  --json                         print the result as JSON instead of a table
  --quiet                        no progress on stderr

Exit status: 0 when the run completed (failures are in the result), 1 on an error or when no
session or login succeeded, 2 on a bad command line.
`

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// run runs a command line and returns the exit code.
func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		io.WriteString(stderr, usage)
		return 2
	}
	cmd, args := args[0], args[1:]
	switch cmd {
	case "help", "-h", "-help", "--help":
		io.WriteString(stdout, usage)
		return 0
	case "compare":
		return runCompare(args, stdout, stderr)
	case "upstream":
		o, err := upstreamFlags(args, stderr)
		if err != nil {
			fmt.Fprintln(stderr, err)
			return 2
		}
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		defer stop()
		if err := runUpstream(ctx, o, stdout); err != nil {
			fmt.Fprintln(stderr, "imapbench upstream:", err)
			return 1
		}
		return 0
	case "auth-http", "handshake-server":
		// compare's helper processes (compare_helpers.go), not for people.
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		defer stop()
		serve := runAuthHTTP
		if cmd == "handshake-server" {
			serve = runHandshakeServer
		}
		if err := serve(ctx, args, stderr); err != nil {
			fmt.Fprintf(stderr, "imapbench %s: %v\n", cmd, err)
			return 1
		}
		return 0
	case "idle", "storm", "fetch", "logins", "latency":
	default:
		fmt.Fprintf(stderr, "imapbench: unknown scenario %q\n\n", cmd)
		io.WriteString(stderr, usage)
		return 2
	}

	fs := flag.NewFlagSet("imapbench "+cmd, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { io.WriteString(stderr, usage) }
	var cf commonFlags
	cf.register(fs)
	var (
		sessions    = fs.Int("sessions", 1000, "idle: sessions to open")
		concurrency = fs.Int("concurrency", defaultConcurrency, "idle: sessions opened at once")
		hold        = fs.Duration("hold", defaultHold, "idle: how long all sessions are held in IDLE")
		pids        = fs.String("pid", "", "idle: `PID[,PID...]` whose memory is measured")
		rounds      = fs.Int("rounds", defaultRounds, "fetch: rounds")
		workers     = fs.Int("workers", defaultWorkers, "logins: concurrent login loops")
		duration    = fs.Duration("duration", defaultDuration, "logins: how long to log in")
		maxLogins   = fs.Int("max-logins", defaultMaxLogins, "logins: at most this many login cycles")
		resume      = fs.Bool("resume", false, "logins: resume TLS sessions (a session cache shared by the workers)")
		count       = fs.Int("count", defaultCount, "latency: NOOP round trips")
		within      = fs.Duration("within", defaultStormWithin, "storm: bound on the reconnect storm")
		retryDelay  = fs.Duration("retry-delay", defaultRetryDelay, "storm: wait after a failed reconnect attempt")
	)
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "imapbench %s: unexpected argument %q\n", cmd, fs.Arg(0))
		return 2
	}
	only := map[string]string{
		"sessions": "idle storm", "concurrency": "idle storm", "hold": "idle storm", "pid": "idle storm", "rounds": "fetch",
		"workers": "logins", "duration": "logins", "max-logins": "logins", "resume": "logins", "count": "latency",
		"within": "storm", "retry-delay": "storm",
	}
	var misplaced error
	setFlags := map[string]bool{}
	fs.Visit(func(f *flag.Flag) {
		setFlags[f.Name] = true
		if s, ok := only[f.Name]; ok && !slices.Contains(strings.Fields(s), cmd) && misplaced == nil {
			misplaced = fmt.Errorf("imapbench %s: --%s is a flag of %s", cmd, f.Name, strings.ReplaceAll(s, " ", " and "))
		}
	})
	if misplaced != nil {
		fmt.Fprintln(stderr, misplaced)
		return 2
	}
	t, err := cf.target()
	if err != nil {
		fmt.Fprintf(stderr, "imapbench %s: %v\n", cmd, err)
		return 2
	}
	pidList, err := parsePIDs(*pids)
	if err != nil {
		fmt.Fprintf(stderr, "imapbench %s: %v\n", cmd, err)
		return 2
	}
	if cmd == "storm" && !setFlags["hold"] {
		*hold = defaultStormHold
	}
	if cmd == "storm" && (*within <= 0 || *retryDelay <= 0) {
		fmt.Fprintln(stderr, "imapbench storm: --within and --retry-delay must be positive")
		return 2
	}
	if (cmd == "idle" || cmd == "storm") && *hold >= cf.maxTime {
		fmt.Fprintf(stderr, "imapbench %s: --hold %v does not fit in --max-time %v\n", cmd, *hold, cf.maxTime)
		return 2
	}

	level := slog.LevelInfo
	if cf.quiet {
		level = slog.LevelWarn
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
	if n, err := raiseOpenFileLimit(); err != nil {
		log.Warn("cannot raise the open file limit", "err", err)
	} else {
		log.Debug("open file limit", "nofile", n)
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	context.AfterFunc(ctx, stop) // a second Ctrl-C kills
	ctx, cancel := context.WithTimeout(ctx, cf.maxTime)
	defer cancel()

	var (
		res    interface{ writeTable(io.Writer) error }
		failed bool
	)
	switch cmd {
	case "idle":
		var r idleResult
		r, err = runIdle(ctx, idleOptions{Target: t, Sessions: *sessions, Concurrency: *concurrency, Hold: *hold, PIDs: pidList, Log: log})
		res, failed = r, r.Opened == 0
		if r.Requested == 0 {
			res = nil
		}
	case "storm":
		var r stormResult
		r, err = runStorm(ctx, stormOptions{Target: t, Sessions: *sessions, Concurrency: *concurrency, Hold: *hold,
			Within: *within, RetryDelay: *retryDelay, PIDs: pidList, CPUPIDs: pidList, Log: log})
		res, failed = r, r.SetUp == 0 || r.Back == 0
		if r.Requested == 0 {
			res = nil
		}
	case "fetch":
		var r fetchResult
		r, err = runFetch(ctx, fetchOptions{Target: t, Rounds: *rounds, Log: log})
		res, failed = r, len(r.Rounds) == 0
		if len(r.Rounds) == 0 {
			res = nil
		}
	case "logins":
		var r loginsResult
		r, err = runLogins(ctx, loginsOptions{Target: t, Workers: *workers, Duration: *duration, MaxLogins: *maxLogins, Resume: *resume, Log: log})
		res, failed = r, r.Logins == 0
	case "latency":
		var r latencyResult
		r, err = runLatency(ctx, latencyOptions{Target: t, Count: *count, Log: log})
		res, failed = r, r.Count == 0
		if r.Count == 0 {
			res = nil
		}
	}
	if res != nil {
		if perr := printResult(stdout, res, cf.json); perr != nil {
			fmt.Fprintf(stderr, "imapbench %s: %v\n", cmd, perr)
			return 1
		}
	}
	if err != nil {
		fmt.Fprintf(stderr, "imapbench %s: %v\n", cmd, err)
		return 1
	}
	if failed {
		fmt.Fprintf(stderr, "imapbench %s: nothing succeeded\n", cmd)
		return 1
	}
	return 0
}

func printResult(w io.Writer, res interface{ writeTable(io.Writer) error }, asJSON bool) error {
	if !asJSON {
		return res.writeTable(w)
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(res)
}

// commonFlags are the flags of every scenario.
type commonFlags struct {
	addr, tls, cafile, serverName string
	insecure, login, json, quiet  bool
	user, password, usersPattern  string
	usersCount                    int
	sources                       string
	sourceCount                   int
	timeout, maxTime              time.Duration
}

func (c *commonFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&c.addr, "addr", "", "`HOST:PORT` of the proxy or server (required)")
	fs.StringVar(&c.tls, "tls", string(tlsImplicit), "implicit, starttls or none")
	fs.StringVar(&c.cafile, "cafile", "", "PEM `PATH` of the CA certificates that verify the server")
	fs.BoolVar(&c.insecure, "insecure", false, "do not verify the server's certificate")
	fs.StringVar(&c.serverName, "server-name", "", "`NAME` to verify and send as SNI (default: the host of --addr)")
	fs.StringVar(&c.user, "user", "user1", "user `NAME`")
	fs.StringVar(&c.password, "password", "pass1-Secret!", "password")
	fs.StringVar(&c.usersPattern, "users-pattern", "user%d", "user names when --users-count is set; %d is 1..N")
	fs.IntVar(&c.usersCount, "users-count", 0, "spread sessions over `N` users")
	fs.BoolVar(&c.login, "login", false, "log in with LOGIN instead of AUTHENTICATE PLAIN")
	fs.StringVar(&c.sources, "sources", "", "source addresses and CIDRs in 127.0.0.0/8, comma-separated")
	fs.IntVar(&c.sourceCount, "source-count", 0, "use the sources 127.1.0.1 .. 127.1.0.`N`")
	fs.DurationVar(&c.timeout, "timeout", 10*time.Second, "how long each step may wait for the server")
	fs.DurationVar(&c.maxTime, "max-time", 10*time.Minute, "bound on the whole run")
	fs.BoolVar(&c.json, "json", false, "print the result as JSON")
	fs.BoolVar(&c.quiet, "quiet", false, "no progress on stderr")
}

// target checks the flags and makes the target they describe.
func (c *commonFlags) target() (target, error) {
	if c.addr == "" {
		return target{}, errors.New("--addr HOST:PORT is required")
	}
	host, _, err := net.SplitHostPort(c.addr)
	if err != nil {
		return target{}, fmt.Errorf("--addr: %v", err)
	}
	mode, err := parseTLSMode(c.tls)
	if err != nil {
		return target{}, err
	}
	if c.timeout <= 0 || c.maxTime <= 0 {
		return target{}, errors.New("--timeout and --max-time must be positive")
	}
	t := target{Addr: c.addr, TLS: mode, Login: c.login, User: c.user, Password: c.password, Timeout: c.timeout}
	if c.usersCount < 0 {
		return target{}, errors.New("--users-count must not be negative")
	}
	if c.usersCount > 0 {
		if strings.Count(c.usersPattern, "%d") != 1 || strings.Count(c.usersPattern, "%") != 1 {
			return target{}, fmt.Errorf("--users-pattern %q must contain %%d once and no other %%", c.usersPattern)
		}
		t.UsersPattern, t.UsersCount = c.usersPattern, c.usersCount
	}
	if t.Sources, err = parseSources(c.sources, c.sourceCount); err != nil {
		return target{}, err
	}
	if mode != tlsNone {
		if t.TLSConfig, err = clientTLSConfig(c.cafile, c.insecure, cmp.Or(c.serverName, host)); err != nil {
			return target{}, err
		}
	}
	return t, nil
}

// clientTLSConfig verifies the server with the CA certificates of cafile,
// or the system's, unless insecure.
func clientTLSConfig(cafile string, insecure bool, serverName string) (*tls.Config, error) {
	cfg := &tls.Config{ServerName: serverName, MinVersion: tls.VersionTLS12}
	switch {
	case cafile != "" && insecure:
		return nil, errors.New("--cafile and --insecure: choose one")
	case insecure:
		cfg.InsecureSkipVerify = true
	case cafile != "":
		pem, err := os.ReadFile(cafile)
		if err != nil {
			return nil, fmt.Errorf("--cafile: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("--cafile %s: no PEM certificate in it", cafile)
		}
		cfg.RootCAs = pool
	}
	return cfg, nil
}

// maxSources bounds the source addresses (a /16 of loopback).
const maxSources = 1 << 16

// parseSources parses --sources (addresses and CIDRs, comma-separated) or
// --source-count N (127.1.0.1 .. 127.1.0.N, counting on into 127.1.1.0
// and beyond past 255). Sources must be loopback: they exist to spread
// many sessions over the ephemeral ports of 127.0.0.0/8. The network and
// broadcast addresses of a CIDR are left out.
func parseSources(list string, count int) ([]netip.Addr, error) {
	switch {
	case list != "" && count != 0:
		return nil, errors.New("--sources and --source-count: choose one")
	case count < 0 || count > maxSources:
		return nil, fmt.Errorf("--source-count %d: want 1 to %d", count, maxSources)
	case count > 0:
		srcs := make([]netip.Addr, 0, count)
		a := netip.AddrFrom4([4]byte{127, 1, 0, 1})
		for range count {
			srcs = append(srcs, a)
			a = a.Next()
		}
		return srcs, nil
	case list == "":
		return nil, nil
	}
	var srcs []netip.Addr
	for _, f := range strings.Split(list, ",") {
		f = strings.TrimSpace(f)
		var first, last netip.Addr
		if strings.Contains(f, "/") {
			p, err := netip.ParsePrefix(f)
			if err != nil {
				return nil, fmt.Errorf("--sources: %v", err)
			}
			p = p.Masked()
			first, last = p.Addr(), lastAddr(p)
			if p.Addr().Is4() && p.Bits() <= 30 {
				first, last = first.Next(), last.Prev()
			}
		} else {
			a, err := netip.ParseAddr(f)
			if err != nil {
				return nil, fmt.Errorf("--sources: %v", err)
			}
			first, last = a, a
		}
		if !first.IsLoopback() || !last.IsLoopback() {
			return nil, fmt.Errorf("--sources: %s is not in 127.0.0.0/8 or ::1; source addresses spread sessions over loopback (leave --sources out for other targets)", f)
		}
		for a := first; a.IsValid() && a.Compare(last) <= 0; a = a.Next() {
			if len(srcs) == maxSources {
				return nil, fmt.Errorf("--sources: more than %d addresses", maxSources)
			}
			srcs = append(srcs, a)
		}
	}
	return srcs, nil
}

// lastAddr is the highest address of p.
func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Addr().AsSlice()
	for i := p.Bits(); i < len(b)*8; i++ {
		b[i/8] |= 0x80 >> (i % 8)
	}
	a, _ := netip.AddrFromSlice(b)
	return a
}

// fmtBytes writes a byte count for people: B, KiB or MiB.
func fmtBytes(n int64) string {
	abs := max(n, -n)
	switch {
	case abs < 10<<10:
		return strconv.FormatInt(n, 10) + " B"
	case abs < 10<<20:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
}

// fmtMicros writes a duration given in microseconds for people.
func fmtMicros(us float64) string {
	switch {
	case us < 1000:
		return fmt.Sprintf("%.0fµs", us)
	case us < 1e6:
		return fmt.Sprintf("%.1fms", us/1e3)
	}
	return fmt.Sprintf("%.2fs", us/1e6)
}

func joinInts(ns []int) string {
	s := make([]string, len(ns))
	for i, n := range ns {
		s[i] = strconv.Itoa(n)
	}
	return strings.Join(s, ",")
}
