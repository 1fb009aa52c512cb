package main

import (
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"
)

// compareResult is what imapbench compare prints: a header, one row per
// figure, notes on how it was measured and the problems seen.
type compareResult struct {
	Date    string  `json:"date"` // when the run started, RFC 3339 UTC
	Seconds float64 `json:"seconds"`
	// Interrupted says the run stopped early (Ctrl-C, --max-time): the
	// figures it had not reached are missing.
	Interrupted bool              `json:"interrupted,omitempty"`
	Machine     machineInfo       `json:"machine"`
	Versions    compareVersions   `json:"versions"`
	Settings    compareSettings   `json:"settings"`
	TLS         map[string]string `json:"tls"` // contender -> "TLS 1.3 X25519" as negotiated
	Rows        []compareRow      `json:"rows"`
	Notes       []string          `json:"notes"`
	// Resumption is how many of the resumed logins' TLS handshakes
	// resumed a session, by workers and contender; empty without them.
	Resumption []resumeCount `json:"resumption,omitempty"`
	// Floor is the CPU of a bare TLS handshake beside imapgate's CPU per
	// login, one entry per kind of handshake; empty without the memory
	// upstream's logins.
	Floor []floorFigure `json:"floor,omitempty"`
	// Problems are errors and failed sessions seen during the run; the
	// figures of a round with a problem may be off.
	Problems []string `json:"problems,omitempty"`
}

// floorFigure is the median CPU time of one bare server-side TLS
// handshake of a kind, and imapgate's CPU per login of the same kind
// (memory upstream, the first number of workers) divided by it.
type floorFigure struct {
	Handshake   string   `json:"handshake"`    // "full, client offers X25519"
	KeyExchange string   `json:"key_exchange"` // as negotiated: "X25519"
	CPUMicros   *float64 `json:"cpu_us"`
	// ImapgateKey is the row of imapgate's CPU per login it is compared
	// with, and ImapgateMicros its value.
	ImapgateKey    string   `json:"imapgate_key"`
	ImapgateMicros *float64 `json:"imapgate_cpu_us"`
	ImapgateFloor  *float64 `json:"imapgate_per_floor"`
}

// resumeCount is how many of one contender's successful logins at some
// number of workers, over all rounds, resumed a TLS session.
type resumeCount struct {
	Workers   int    `json:"workers"`
	Contender string `json:"contender"`
	Logins    int    `json:"logins"`
	Resumed   int    `json:"resumed"`
}

// fraction is Resumed / Logins, 0 for no logins.
func (rc resumeCount) fraction() float64 {
	if rc.Logins == 0 {
		return 0
	}
	return float64(rc.Resumed) / float64(rc.Logins)
}

type compareVersions struct {
	Nginx    string `json:"nginx"`
	Dovecot  string `json:"dovecot"`
	Go       string `json:"go"` // imapbench's
	Imapgate string `json:"imapgate"`
	// Source is the commit imapgate was built from, when it was built
	// from a git checkout ("abc1234", "+ uncommitted changes").
	Source string `json:"source,omitempty"`
}

type compareSettings struct {
	Rounds       int     `json:"rounds"`
	Sessions     int     `json:"idle_sessions"`
	SourceCount  int     `json:"source_addresses"`
	HoldSeconds  float64 `json:"idle_hold_seconds"`
	Users        int     `json:"users"`
	Messages     int     `json:"messages"`
	MessageSize  int     `json:"message_size"`
	LoginSeconds float64 `json:"login_seconds"`
	Workers      []int   `json:"login_workers"`
	NoopCount    int     `json:"noop_count"`
	NginxWorkers int     `json:"nginx_workers"`
	// MemoryLogins says logins ran a second time with the memory
	// upstream in place of Dovecot; MemoryUpstream says how it ran.
	MemoryLogins   bool   `json:"memory_logins"`
	MemoryUpstream string `json:"memory_upstream,omitempty"`
	// ResumedLogins says the memory upstream's logins ran once more
	// through nginx and imapgate with TLS session resumption.
	ResumedLogins bool `json:"resumed_logins"`
	// ReuseProcesses says Dovecot's imap processes served login after
	// login (service_count = 0) rather than one process per login.
	ReuseProcesses bool `json:"dovecot_reuse_processes"`
	Quick          bool `json:"quick"`
	// The storm's sessions and bound, the listen backlog of its nginx
	// (0: nginx's default, 511) and net.core.somaxconn, imapgate's; all
	// zero without the storm.
	StormSessions      int     `json:"storm_sessions,omitempty"`
	StormWithinSeconds float64 `json:"storm_within_seconds,omitempty"`
	NginxStormBacklog  int     `json:"nginx_storm_backlog,omitempty"`
	Somaxconn          int     `json:"somaxconn,omitempty"`
	// ImapgateUpstreamLogins is the storm's imapgate's
	// max_upstream_logins and upstream_login_queue when set
	// (--imapgate-upstream-logins); nil: imapgate's defaults.
	ImapgateUpstreamLogins *int `json:"imapgate_storm_max_upstream_logins,omitempty"`
	// Scenarios are those --scenarios selected; empty: all.
	Scenarios []string `json:"scenarios,omitempty"`
}

// compareRow is one figure: the median over the rounds of each
// contender, and imapgate's ratios. A nil value was not measured: "n/a"
// where it cannot be (NA), a failure otherwise.
type compareRow struct {
	Key    string   `json:"key"`
	Figure string   `json:"figure"`
	Unit   string   `json:"unit"`
	Direct *float64 `json:"direct"`
	Nginx  *float64 `json:"nginx"`
	// NginxNA says that nginx has no value by definition (and so no
	// imapgate/nginx ratio): it cannot do what the row measures.
	NginxNA        bool     `json:"nginx_na,omitempty"`
	Imapgate       *float64 `json:"imapgate"`
	ImapgateNginx  *float64 `json:"imapgate_per_nginx"`
	ImapgateDirect *float64 `json:"imapgate_per_direct"`
	// DirectNA says that direct has no value by definition (and so no
	// imapgate/direct ratio): there is no proxy to measure.
	DirectNA bool `json:"direct_na,omitempty"`
	// RatioNA says the row is a count, which may be 0: no ratios.
	RatioNA bool `json:"ratio_na,omitempty"`
	// Rounds holds each contender's value of each round, in round order.
	Rounds   map[string][]float64 `json:"rounds,omitempty"`
	decimals int
}

// The figures' keys. Logins have one set per number of workers, one more
// with the memory upstream and one more with it and resumed sessions.
const (
	figIdleRSS = "idle_rss_kib_per_session"
	// figIdleRSSSetup is the idle RSS per session 3 s after the last
	// session was opened; figIdleRSS is at the end of the hold.
	figIdleRSSSetup = "idle_rss_kib_per_session_3s"
	figIdlePSS      = "idle_pss_kib_per_session"
	figFetch        = "fetch_mb_per_s"
	figNoopP50      = "noop_p50_us"
	figNoopP99      = "noop_p99_us"
	figNoopAdded    = "noop_p50_added_us"
	// The fetch's CPU of the proxy's processes per MB, and the fetch
	// through imapgate with TLS to Dovecot too (nginx cannot).
	figFetchCPU            = "fetch_cpu_ms_per_mb"
	figFetchStartTLS       = "fetch_mb_per_s_upstream_starttls"
	figFetchStartTLSCPU    = "fetch_cpu_ms_per_mb_upstream_starttls"
	figFetchImplicitTLS    = "fetch_mb_per_s_upstream_implicit"
	figFetchImplicitTLSCPU = "fetch_cpu_ms_per_mb_upstream_implicit"
	floorContender         = "floor"
	figFloorX25519         = "floor_cpu_us_x25519"
	figFloorHybrid         = "floor_cpu_us_hybrid_offered"
	figFloorResumed        = "floor_cpu_us_resumed"
	// The storm's (compare_storm.go).
	figStormAllBack       = "storm_seconds_all_back"
	figStormP50           = "storm_reconnect_p50_ms"
	figStormP99           = "storm_reconnect_p99_ms"
	figStormNotOK         = "storm_attempts_not_ok"
	figStormSessionsNotOK = "storm_sessions_not_ok"
	figStormRefused       = "storm_logins_refused"
	figStormCPU           = "storm_cpu_us_per_session"
	figStormPeakRSS       = "storm_peak_rss_mib"
	figStormRSSSetup      = "storm_rss_kib_per_session_setup"
	figStormRSSHeld       = "storm_rss_kib_per_session_held"
	figStormRSSAfter      = "storm_rss_kib_per_session_after"
)

// figLoginCPU is the CPU time of the proxy's processes per login.
func figLoginCPU(w int) string { return fmt.Sprintf("login_cpu_us_%d_workers", w) }

func figLogins(w int) string   { return fmt.Sprintf("logins_per_s_%d_workers", w) }
func figLoginP50(w int) string { return fmt.Sprintf("login_p50_ms_%d_workers", w) }
func figLoginP99(w int) string { return fmt.Sprintf("login_p99_ms_%d_workers", w) }

// loginsKind is which logins a figure measures.
type loginsKind int

const (
	// loginsDovecot: a full TLS handshake each login, Dovecot upstream.
	loginsDovecot loginsKind = iota
	// loginsMemory: a full TLS handshake each login, memory upstream.
	loginsMemory
	// loginsMemoryResumed: the memory upstream, with the client's TLS
	// session cache shared by the workers, so that handshakes resume.
	loginsMemoryResumed
	// loginsMemoryHybrid: the memory upstream, a full handshake each
	// login, the client offering Go's default key exchanges
	// (X25519MLKEM768 first) instead of X25519 only.
	loginsMemoryHybrid
)

// suffix ends the keys of the kind's figures, and label their labels.
func (k loginsKind) suffix() string {
	switch k {
	case loginsMemory:
		return "_memory_upstream"
	case loginsMemoryResumed:
		return "_memory_upstream_resumed"
	case loginsMemoryHybrid:
		return "_memory_upstream_hybrid_offered"
	}
	return ""
}

func (k loginsKind) label() string {
	switch k {
	case loginsMemory:
		return ", memory upstream"
	case loginsMemoryResumed:
		return ", memory upstream, resumed"
	case loginsMemoryHybrid:
		return ", memory upstream, X25519MLKEM768 offered"
	}
	return ""
}

// loginFigures are the keys of the logins figures of kind at w workers.
func loginFigures(w int, kind loginsKind) (rate, p50, p99, cpu string) {
	sfx := kind.suffix()
	return figLogins(w) + sfx, figLoginP50(w) + sfx, figLoginP99(w) + sfx, figLoginCPU(w) + sfx
}

// figure is a row of the table.
type figure struct {
	key, label, unit string
	decimals         int
	directNA         bool
	nginxNA          bool
	// ratioNA marks a count, which may be 0: no ratios.
	ratioNA bool
	// minusDirect makes the row the figure of that key minus direct's.
	minusDirect string
	// scenario is the --scenarios name that measures it.
	scenario string
}

// compareFigures are the table's rows: with the memory upstream's logins
// after Dovecot's if memory is set, and the resumed ones after those if
// resumed is set too. Direct has no TLS and so nothing to resume: its
// cells of the resumed rows are n/a. The storm's rows, for stormSessions
// sessions (none if 0), come before the latency's; direct's cells are
// n/a (no proxy).
func compareFigures(workers []int, memory, resumed bool, stormSessions int) []figure {
	figs := []figure{
		{key: figIdleRSSSetup, label: "idle RSS per session 3 s after setup", unit: "KiB", decimals: 1, directNA: true, scenario: "idle"},
		{key: figIdleRSS, label: "idle RSS per session", unit: "KiB", decimals: 1, directNA: true, scenario: "idle"},
		{key: figIdlePSS, label: "idle PSS per session", unit: "KiB", decimals: 1, directNA: true, scenario: "idle"},
		{key: figFetch, label: "fetch", unit: "MB/s", decimals: 0, scenario: "fetch"},
		{key: figFetchCPU, label: "fetch CPU per MB", unit: "ms", decimals: 2, directNA: true, scenario: "fetch"},
		{key: figFetchStartTLS, label: "fetch, upstream STARTTLS", unit: "MB/s", decimals: 0, nginxNA: true, scenario: "fetch"},
		{key: figFetchStartTLSCPU, label: "fetch CPU per MB, upstream STARTTLS", unit: "ms", decimals: 2, nginxNA: true, directNA: true, scenario: "fetch"},
		{key: figFetchImplicitTLS, label: "fetch, upstream implicit TLS", unit: "MB/s", decimals: 0, nginxNA: true, scenario: "fetch"},
		{key: figFetchImplicitTLSCPU, label: "fetch CPU per MB, upstream implicit TLS", unit: "ms", decimals: 2, nginxNA: true, directNA: true, scenario: "fetch"},
	}
	kinds := []loginsKind{loginsDovecot}
	if memory {
		kinds = append(kinds, loginsMemory, loginsMemoryHybrid)
		if resumed {
			kinds = append(kinds, loginsMemoryResumed)
		}
	}
	for _, kind := range kinds {
		suffix, na := kind.label(), kind == loginsMemoryResumed || kind == loginsMemoryHybrid
		scenario := "memory-logins"
		if kind == loginsDovecot {
			scenario = "logins"
		}
		for _, w := range workers {
			rate, p50, p99, cpu := loginFigures(w, kind)
			figs = append(figs,
				figure{key: rate, label: fmt.Sprintf("logins @%d workers%s", w, suffix), unit: "/s", decimals: 0, directNA: na, scenario: scenario},
				figure{key: p50, label: fmt.Sprintf("login p50 @%d%s", w, suffix), unit: "ms", decimals: 2, directNA: na, scenario: scenario},
				figure{key: p99, label: fmt.Sprintf("login p99 @%d%s", w, suffix), unit: "ms", decimals: 2, directNA: na, scenario: scenario},
				figure{key: cpu, label: fmt.Sprintf("CPU per login @%d%s", w, suffix), unit: "µs", decimals: 0, directNA: true, scenario: scenario},
			)
		}
	}
	n := fmtCount(stormSessions)
	storm := []figure{
		{key: figStormAllBack, label: "storm: seconds until all " + n + " back", unit: "s", decimals: 2},
		{key: figStormP50, label: "storm: reconnect p50", unit: "ms", decimals: 0},
		{key: figStormP99, label: "storm: reconnect p99", unit: "ms", decimals: 0},
		{key: figStormNotOK, label: "storm: attempts not OK", unit: "count", ratioNA: true},
		{key: figStormSessionsNotOK, label: "storm: sessions with an attempt not OK", unit: "count", ratioNA: true},
		{key: figStormRefused, label: "storm: right passwords refused", unit: "count", ratioNA: true},
		{key: figStormCPU, label: "storm: proxy CPU per session back", unit: "µs", decimals: 0},
		{key: figStormPeakRSS, label: "storm: peak RSS", unit: "MiB", decimals: 1},
		{key: figStormRSSSetup, label: "storm: RSS per session 3 s after setup (" + n + " sessions)", unit: "KiB", decimals: 1},
		{key: figStormRSSHeld, label: "storm: RSS per session after the hold", unit: "KiB", decimals: 1},
		{key: figStormRSSAfter, label: "storm: RSS per session 3 s after the storm", unit: "KiB", decimals: 1},
	}
	for _, f := range storm {
		if stormSessions <= 0 {
			break
		}
		f.directNA, f.scenario = true, "storm"
		figs = append(figs, f)
	}
	return append(figs,
		figure{key: figNoopP50, label: "NOOP p50", unit: "µs", decimals: 0, scenario: "latency"},
		figure{key: figNoopP99, label: "NOOP p99", unit: "µs", decimals: 0, scenario: "latency"},
		figure{key: figNoopAdded, label: "NOOP p50 added over direct", unit: "µs", decimals: 0, directNA: true, minusDirect: figNoopP50, scenario: "latency"},
	)
}

// fmtCount writes n with a thousands comma: 9,500.
func fmtCount(n int) string {
	s := strconv.Itoa(n)
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return s
}

// samples are the measured values: figure key -> contender -> one value
// per round that measured it.
type samples map[string]map[string][]float64

func (s samples) add(key, contender string, v float64) {
	if s[key] == nil {
		s[key] = map[string][]float64{}
	}
	s[key][contender] = append(s[key][contender], v)
}

// median is the median of vs; false for none.
func median(vs []float64) (float64, bool) {
	if len(vs) == 0 {
		return 0, false
	}
	s := slices.Clone(vs)
	slices.Sort(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2], true
	}
	return (s[n/2-1] + s[n/2]) / 2, true
}

// buildRows takes the medians and the ratios.
func buildRows(s samples, figs []figure) []compareRow {
	rows := make([]compareRow, 0, len(figs))
	med := func(key, name string) *float64 {
		if v, ok := median(s[key][name]); ok {
			return &v
		}
		return nil
	}
	for _, f := range figs {
		r := compareRow{Key: f.key, Figure: f.label, Unit: f.unit, DirectNA: f.directNA, NginxNA: f.nginxNA, RatioNA: f.ratioNA, decimals: f.decimals}
		if f.minusDirect != "" {
			d := med(f.minusDirect, nameDirect)
			diff := func(name string) *float64 {
				v := med(f.minusDirect, name)
				if v == nil || d == nil {
					return nil
				}
				x := *v - *d
				return &x
			}
			r.Nginx, r.Imapgate = diff(nameNginx), diff(nameImapgate)
		} else {
			r.Direct, r.Nginx, r.Imapgate = med(f.key, nameDirect), med(f.key, nameNginx), med(f.key, nameImapgate)
			if f.directNA {
				r.Direct = nil
			}
			if f.nginxNA {
				r.Nginx = nil
			}
			r.Rounds = s[f.key]
		}
		if !f.nginxNA && !f.ratioNA {
			r.ImapgateNginx = ratio(r.Imapgate, r.Nginx)
		}
		if !f.directNA && !f.ratioNA {
			r.ImapgateDirect = ratio(r.Imapgate, r.Direct)
		}
		rows = append(rows, r)
	}
	return rows
}

func ratio(a, b *float64) *float64 {
	if a == nil || b == nil || *b == 0 {
		return nil
	}
	x := *a / *b
	return &x
}

// missing counts the cells that should have a value and have none.
func (res *compareResult) missing() int {
	n := 0
	for _, r := range res.Rows {
		cells := []*float64{r.Imapgate}
		if !r.NginxNA {
			cells = append(cells, r.Nginx)
			if !r.RatioNA {
				cells = append(cells, r.ImapgateNginx)
			}
		}
		if !r.DirectNA {
			cells = append(cells, r.Direct)
			if !r.RatioNA {
				cells = append(cells, r.ImapgateDirect)
			}
		}
		for _, c := range cells {
			if c == nil {
				n++
			}
		}
	}
	return n
}

// compareNotes says how the figures were measured.
// authRequests and memAuthRequests are the logins the auth_http
// responders of the two nginx answered.
func compareNotes(res *compareResult, authRequests, memAuthRequests int64) []string {
	s := res.Settings
	tlsOf := func(name string) string {
		if v := res.TLS[name]; v != "" {
			return v
		}
		return "?"
	}
	mb := float64(s.Messages) * float64(s.MessageSize) / 1e6
	notes := []string{
		fmt.Sprintf("direct: plaintext to Dovecot, AUTHENTICATE PLAIN. nginx and imapgate: implicit TLS with the same ECDSA P-256 certificate (nginx %s, imapgate %s; the client offers X25519 only, since nginx's OpenSSL has no ML-KEM), plaintext to Dovecot",
			tlsOf(nameNginx), tlsOf(nameImapgate)),
		fmt.Sprintf("nginx: %d workers, the mail module's defaults (proxy_buffer of one page, 4k/8k; the mail proxy never sets TCP_NODELAY); auth_http answered by imapbench auth-http, a subprocess of imapbench (%d requests), which sends every login to Dovecot",
			s.NginxWorkers, authRequests),
		`imapgate: upstream.tls = "none", policy.failure_delay = "0s", connection limits 20000 (also per IP), audit log to a file`,
		fmt.Sprintf("Dovecot: %d users (user%%d); user1's INBOX holds %d messages of %d bytes (%.1f MB), every other INBOX one message of 1 KB; %s", s.Users, s.Messages, s.MessageSize, mb, dovecotProcesses(s.ReuseProcesses)),
		fmt.Sprintf("idle: %d sessions (AUTHENTICATE PLAIN, SELECT INBOX, FETCH 1 header, IDLE) over the users, held %gs; memory of the proxy's processes only (nginx: master + workers), (held - before) / sessions, 3 s after the last session opened and at the end of the hold, RSS from /proc/PID/status, PSS from smaps_rollup; each round on a freshly started proxy; direct: nothing to measure",
			s.Sessions, s.HoldSeconds),
		"fetch: UID FETCH 1:* BODY.PEEK[] of user1's INBOX once per round (after one unmeasured warm-up fetch, direct); MB/s of IMAP bytes, 1 MB = 1e6 bytes",
		fmt.Sprintf("logins: connect + full TLS handshake (no resumption) + AUTHENTICATE PLAIN + LOGOUT in a loop for %gs per run; logins/s, latency of a whole cycle", s.LoginSeconds),
		"CPU: utime + stime of every thread of the proxy's processes from /proc/PID/stat (10 ms clock ticks), read before and after each run: nginx's master, workers and its auth_http responder; imapgate's one process. CPU per login divides by the login cycles run (failed ones too), CPU per MB by the fetch's IMAP bytes",
		`fetch, upstream STARTTLS and implicit TLS: two more imapgate processes configured as the first but with upstream.tls = "starttls" (to Dovecot's plaintext port) and "implicit" (its imaps port), each verifying Dovecot's own ECDSA P-256 certificate (upstream.ca_file, Go's default key exchanges toward Dovecot's OpenSSL): TLS on both legs, which nginx's mail proxy cannot do (n/a); their direct cell is the client with the same TLS straight to Dovecot (STARTTLS on its plaintext port, implicit TLS on its imaps port), the ceiling of Dovecot's own TLS`,
	}
	if s.MemoryLogins {
		notes = append(notes,
			fmt.Sprintf("logins, memory upstream: the same runs with `imapbench upstream` (go-imap's in-memory imapmemserver, the same %d users and password) in place of Dovecot, whose own login work bounds the Dovecot rows; the upstream runs as a %s of imapbench (this executable with the upstream subcommand), so its CPU is not imapbench's, though all share the machine's CPUs",
				s.Users, s.MemoryUpstream),
			fmt.Sprintf("logins, memory upstream: direct is plaintext straight to it (AUTHENTICATE PLAIN); nginx and imapgate are second instances configured as the first (the same certificate and TLS), nginx with its own auth_http responder (%d requests) sending every login to the memory upstream, imapgate with upstream.address the memory upstream (tls = \"none\"); direct, nginx, imapgate rotate each round as for Dovecot",
				memAuthRequests),
		)
		notes = append(notes,
			fmt.Sprintf("logins, memory upstream, X25519MLKEM768 offered: the same runs with the client offering Go's default key exchanges (X25519MLKEM768 first, then X25519) instead of X25519 only; nginx negotiates %s (its OpenSSL 3.0 has no ML-KEM), imapgate %s; direct has no TLS: n/a",
				tlsOf(nameNginx+hybridOffered), tlsOf(nameImapgate+hybridOffered)),
			"floor: `imapbench handshake-server`, a subprocess with imapgate's server TLS configuration (tlsconf.ServerConfig) and the same certificate, completes a handshake, writes one byte and closes; the clients, as many as the first workers of logins for as long, read that byte (and with it the session ticket); its CPU per handshake from /proc/PID/stat; imapgate × the floor compares with imapgate's CPU per login of the same kind at the first number of workers",
		)
		if s.ResumedLogins {
			notes = append(notes, resumedNotes(res)...)
		}
	}
	if s.StormSessions > 0 {
		backlog := fmt.Sprintf("backlog=%d, as Go's (net.core.somaxconn = %d)", s.NginxStormBacklog, s.Somaxconn)
		if s.NginxStormBacklog == 0 {
			backlog = fmt.Sprintf("nginx's default backlog (511; imapgate's, Go's, is net.core.somaxconn = %d)", s.Somaxconn)
		} else if s.NginxStormBacklog != s.Somaxconn {
			backlog = fmt.Sprintf("backlog=%d (imapgate's, Go's, is net.core.somaxconn = %d)", s.NginxStormBacklog, s.Somaxconn)
		}
		gateCaps := "imapgate keeps its default budgets (auth_failures_*, and max_upstream_logins 64, the others waiting their turn while logins keep finishing); only its connection caps are raised"
		if n := s.ImapgateUpstreamLogins; n != nil {
			gateCaps = fmt.Sprintf("imapgate keeps its default failure budgets (auth_failures_*) but has max_upstream_logins = %d and upstream_login_queue = %d (--imapgate-upstream-logins; its default is 64 and 64; 0 is no cap) and raised connection caps", *n, *n)
		}
		notes = append(notes,
			fmt.Sprintf("storm: through the memory upstream's nginx and imapgate (Dovecot's process per session cannot hold them here), each restarted for the round; %d sessions over the users and source addresses set up 64 at a time (connect, TLS, AUTHENTICATE PLAIN, SELECT INBOX, IDLE until + idling), held %gs, then every client socket closed at once with RST (SO_LINGER 0: a client gone behind a NAT or Wi-Fi loss, and no client TIME_WAIT), and every session reconnecting at once on its own goroutine; a failed attempt (connection error, timeout, NO, BAD, BYE) counts and is retried after 1 s, the storm given up after %gs",
				s.StormSessions, s.HoldSeconds, s.StormWithinSeconds),
			fmt.Sprintf("storm: seconds from the drop until the last session is back in IDLE (failed when not all came back); reconnect p50/p99 from the drop to one session's + idling, retries included; right passwords refused: attempts whose AUTHENTICATE got NO, BAD or BYE (every session has the right password); proxy CPU per session back: utime + stime of its processes (nginx's with its auth_http responder) from the drop until the last was back, divided by the sessions back, failed attempts' work included; peak RSS of the proxy's processes sampled every 100 ms during the storm (nginx: master + workers); RSS per session (sample - before setup) / sessions, 3 s after the last was set up, at the end of the hold and 3 s after the last came back; direct: nothing to measure"),
			fmt.Sprintf("storm: the same descriptor limit for both, 20,000 per process (imapgate inherits imapbench's RLIMIT_NOFILE; nginx: worker_rlimit_nofile 20000 and worker_connections 20000 in each of its %d workers, so one worker may take every session); nginx listens with %s; %s", s.NginxWorkers, backlog, gateCaps),
		)
	}
	if len(s.Scenarios) > 0 {
		notes = append(notes, "scenarios: only "+strings.Join(s.Scenarios, ", ")+" (--scenarios); the other rows are left out")
	}
	notes = append(notes,
		fmt.Sprintf("latency: one session, %d sequential NOOPs per round", s.NoopCount),
		fmt.Sprintf("every connection from one of %d source addresses (127.1.0.1 ..); %d round(s), the order of direct, nginx, imapgate rotating each round; each cell is the median of the rounds", s.SourceCount, s.Rounds),
		"imapgate/nginx and imapgate/direct: imapgate's figure divided by the other's; above 1 is better for MB/s and /s, worse for KiB, ms and µs",
	)
	if s.Quick {
		notes = append(notes, "--quick: tiny sizes and durations, for a smoke test; not a measurement")
	}
	return notes
}

// resumedNotes say how the resumed logins ran and how many of their
// handshakes resumed, and name a contender that resumed none.
func resumedNotes(res *compareResult) []string {
	notes := []string{
		"logins, memory upstream, resumed: the memory upstream's runs through the same nginx and imapgate processes, but with one tls.ClientSessionCache shared by the workers of a run, so that a login resumes the session of an earlier one (TLS 1.3 session tickets; Go's client offers PSK with an X25519 key exchange only: no certificate and no signature); the cache starts each run empty, so about the first login of each worker is a full handshake; nginx and imapgate rotate each round",
		"logins, memory upstream, resumed: nginx's configuration is unchanged, its defaults: ssl_session_tickets on (the ticket key made at start, shared by its workers) and ssl_session_cache none, which suffice for ticket resumption; imapgate's is unchanged too (Go's session tickets, on by default)",
		"logins, memory upstream, resumed: direct has no TLS and nothing to resume, so its cells and imapgate/direct are n/a: direct's figure is the memory upstream's row without resumption",
	}
	var parts, none []string
	for _, rc := range res.Resumption {
		parts = append(parts, fmt.Sprintf("%s @%d %.1f%% (%d of %d)", rc.Contender, rc.Workers, 100*rc.fraction(), rc.Resumed, rc.Logins))
		if rc.Resumed == 0 && rc.Logins > 0 {
			none = append(none, fmt.Sprintf("%s @%d", rc.Contender, rc.Workers))
		}
	}
	if len(parts) == 0 {
		parts = append(parts, "none measured")
	}
	notes = append(notes, "logins, memory upstream, resumed: handshakes that resumed a session, over the rounds: "+strings.Join(parts, ", "))
	if len(none) > 0 {
		notes = append(notes, fmt.Sprintf("logins, memory upstream, resumed: WARNING: %s resumed no session at all: those rows are full handshakes, not resumed ones", strings.Join(none, ", ")))
	}
	return notes
}

// writeTable writes the result for people.
func (res *compareResult) writeTable(w io.Writer) error {
	m, v := res.Machine, res.Versions
	var b strings.Builder
	fmt.Fprintf(&b, "imapbench compare  %s  (%.0fs)\n", res.Date, res.Seconds)
	fmt.Fprintf(&b, "machine   %d CPUs, %s, %.1f GiB, %s\n", m.CPUs, m.Model, float64(m.MemMiB)/1024, m.Kernel)
	fmt.Fprintf(&b, "versions  %s; %s; imapbench %s; %s", v.Nginx, v.Dovecot, v.Go, v.Imapgate)
	if v.Source != "" {
		fmt.Fprintf(&b, ", built from %s", v.Source)
	}
	b.WriteString("\n")
	missing := "failed"
	if res.Interrupted {
		missing = "-"
		b.WriteString("INTERRUPTED: cells with - were not measured\n")
	}
	b.WriteString("\n")

	header := []string{"", nameDirect, nameNginx, nameImapgate, "imapgate/nginx", "imapgate/direct"}
	table := [][]string{header}
	for _, r := range res.Rows {
		na := func(p *float64, isNA bool, decimals int) string {
			switch {
			case isNA:
				return "n/a"
			case p == nil:
				return missing
			}
			return fmt.Sprintf("%.*f", decimals, *p)
		}
		table = append(table, []string{
			r.Figure + ", " + r.Unit,
			na(r.Direct, r.DirectNA, r.decimals),
			na(r.Nginx, r.NginxNA, r.decimals),
			na(r.Imapgate, false, r.decimals),
			na(r.ImapgateNginx, r.NginxNA || r.RatioNA, 2),
			na(r.ImapgateDirect, r.DirectNA || r.RatioNA, 2),
		})
	}
	widths := make([]int, len(header))
	for _, row := range table {
		for i, cell := range row {
			widths[i] = max(widths[i], utf8.RuneCountInString(cell))
		}
	}
	for _, row := range table {
		for i, cell := range row {
			pad := strings.Repeat(" ", widths[i]-utf8.RuneCountInString(cell))
			if i == 0 {
				b.WriteString(cell + pad)
			} else {
				b.WriteString("  " + pad + cell)
			}
		}
		b.WriteString("\n")
	}
	if len(res.Floor) > 0 {
		b.WriteString("\nfloor: CPU of one bare server-side TLS handshake (imapbench handshake-server), beside imapgate's CPU per login\n")
		for _, f := range res.Floor {
			fmt.Fprintf(&b, "- %s (%s): %s µs; imapgate %s µs (%s): %s× the floor\n", f.Handshake, f.KeyExchange,
				fmtCellDecimals(f.CPUMicros, 0, missing), fmtCellDecimals(f.ImapgateMicros, 0, missing), f.ImapgateKey, fmtCellDecimals(f.ImapgateFloor, 2, missing))
		}
	}
	b.WriteString("\nnotes\n")
	for _, n := range res.Notes {
		b.WriteString("- " + n + "\n")
	}
	if len(res.Problems) > 0 {
		b.WriteString("\nproblems\n")
		for _, p := range res.Problems {
			b.WriteString("- " + p + "\n")
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// dovecotProcesses says how Dovecot ran its imap processes.
func dovecotProcesses(reuse bool) string {
	if reuse {
		return "imap processes reused from login to login (service_count = 0, 64 spares)"
	}
	return "a new imap process per login (Dovecot's default)"
}

// fmtCellDecimals formats a cell, or missing for none.
func fmtCellDecimals(p *float64, decimals int, missing string) string {
	if p == nil {
		return missing
	}
	return fmt.Sprintf("%.*f", decimals, *p)
}
