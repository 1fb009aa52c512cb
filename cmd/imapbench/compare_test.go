package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"strings"
	"testing"
	"time"
)

// The comparison starts the memory upstream as `imapbench upstream` (and
// its auth_http responder and handshake server likewise), a
// subprocess of its own executable: in the tests, this test binary, which
// then serves as imapbench. go test never passes it a first argument
// that is not a flag.
func init() {
	if len(os.Args) > 1 && (os.Args[1] == "upstream" || os.Args[1] == "auth-http" || os.Args[1] == "handshake-server") {
		os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
	}
}

// The whole comparison, small: Dovecot, nginx and imapgate start, every
// scenario runs against each (CPU per login and per MB, the fetch with
// TLS on both legs, the hybrid key exchange and the bare-handshake floor
// among them), every cell of the table has a figure, and nothing is left
// running.
func TestCompareQuick(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: starts Dovecot, nginx and imapgate")
	}
	requireCompareTools(t)
	before, err := childProcs("/proc", os.Getpid())
	if err != nil {
		t.Fatal(err)
	}

	start := time.Now()
	var out, errOut bytes.Buffer
	code := run([]string{"compare", "--quick", "--json", "--quiet", "--max-time", "100s"}, &out, &errOut)
	elapsed := time.Since(start)
	if code != 0 {
		t.Fatalf("exit %d after %v\nstdout:\n%s\nstderr:\n%s", code, elapsed, out.String(), errOut.String())
	}
	if elapsed > 110*time.Second {
		t.Errorf("the quick comparison took %v, want under 110s", elapsed)
	}
	var res compareResult
	if err := json.Unmarshal(out.Bytes(), &res); err != nil {
		t.Fatalf("stdout is not a JSON result: %v\n%s", err, out.String())
	}
	for _, p := range res.Problems {
		t.Logf("problem: %s", p) // the load of a shared machine may cause some; cells are what count
	}

	want := compareFigures([]int{16, 64}, true, true, quickCompareOptions().StormSessions)
	if len(res.Rows) != len(want) {
		t.Fatalf("%d rows, want %d: %+v", len(res.Rows), len(want), res.Rows)
	}
	for i, r := range res.Rows {
		if r.Key != want[i].key {
			t.Errorf("row %d is %q, want %q", i, r.Key, want[i].key)
		}
		if r.RatioNA {
			// A count (the storm's attempts not OK): 0 is a figure, and
			// there are no ratios.
			for col, v := range map[string]*float64{"imapgate": r.Imapgate, "nginx": r.Nginx} {
				if v == nil || *v < 0 {
					t.Errorf("%s, %s: %v, want a count", r.Figure, col, fmtCell(v))
				}
			}
			if r.ImapgateNginx != nil || r.ImapgateDirect != nil || r.Direct != nil {
				t.Errorf("%s: a count, yet has ratios or a direct cell: %+v", r.Figure, r)
			}
			continue
		}
		cells := map[string]*float64{"imapgate": r.Imapgate}
		if r.NginxNA {
			if r.Nginx != nil || r.ImapgateNginx != nil {
				t.Errorf("%s: nginx is n/a, yet has %v and %v", r.Figure, r.Nginx, r.ImapgateNginx)
			}
		} else {
			cells["nginx"], cells["imapgate/nginx"] = r.Nginx, r.ImapgateNginx
		}
		if r.DirectNA {
			if r.Direct != nil || r.ImapgateDirect != nil {
				t.Errorf("%s: direct is n/a, yet has %v and %v", r.Figure, r.Direct, r.ImapgateDirect)
			}
		} else {
			cells["direct"], cells["imapgate/direct"] = r.Direct, r.ImapgateDirect
		}
		for col, v := range cells {
			if v == nil || !(*v > 0) || math.IsInf(*v, 0) {
				t.Errorf("%s, %s: %v, want a figure above 0", r.Figure, col, fmtCell(v))
			}
		}
	}
	// The storm: with the default brute-force budgets on, every one of
	// the quick storm's sessions came back and no right password was
	// refused, through either proxy; one reconnect took no longer than
	// the storm.
	rows := map[string]compareRow{}
	for _, r := range res.Rows {
		rows[r.Key] = r
	}
	for _, name := range []string{nameNginx, nameImapgate} {
		cell := func(key string) float64 {
			r := rows[key]
			v := map[string]*float64{nameNginx: r.Nginx, nameImapgate: r.Imapgate}[name]
			if v == nil {
				return math.NaN()
			}
			return *v
		}
		back, p50, p99 := cell(figStormAllBack), cell(figStormP50), cell(figStormP99)
		if !(p50 > 0 && p50 <= p99 && p99 <= back*1000+1) {
			t.Errorf("storm through %s: all back after %vs, reconnect p50 %v ms, p99 %v ms: want 0 < p50 <= p99 <= all back", name, back, p50, p99)
		}
		if refused := cell(figStormRefused); refused != 0 {
			t.Errorf("storm through %s: %v right passwords refused, want none (problems: %q)", name, refused, res.Problems)
		}
		if peak, setup := cell(figStormPeakRSS), cell(figStormRSSSetup); !(peak > 1 && setup > 0 && setup*float64(res.Settings.StormSessions)/1024 < peak) {
			t.Errorf("storm through %s: peak RSS %v MiB, %v KiB per session after setup: want the sessions' memory within the peak", name, peak, setup)
		}
	}
	if res.Settings.StormSessions != quickCompareOptions().StormSessions || res.Settings.NginxStormBacklog != somaxconn() {
		t.Errorf("settings %+v: want the quick storm's sessions and nginx's backlog at somaxconn", res.Settings)
	}
	for _, s := range []string{res.Versions.Nginx, res.Versions.Dovecot, res.Versions.Imapgate} {
		if s == "" || strings.HasPrefix(s, "?") {
			t.Errorf("versions = %+v", res.Versions)
		}
	}
	if !res.Settings.MemoryLogins || res.Settings.MemoryUpstream != memoryUpstreamMode {
		t.Errorf("settings %+v: want the memory logins, in a subprocess", res.Settings)
	}
	// Both proxies resumed TLS sessions in the resumed runs.
	if !res.Settings.ResumedLogins {
		t.Errorf("settings %+v: want the resumed logins", res.Settings)
	}
	resumed := map[string]resumeCount{}
	for _, rc := range res.Resumption {
		resumed[fmt.Sprintf("%s@%d", rc.Contender, rc.Workers)] = rc
	}
	for _, name := range []string{nameNginx, nameImapgate} {
		for _, w := range []int{16, 64} {
			rc, ok := resumed[fmt.Sprintf("%s@%d", name, w)]
			if !ok || rc.Resumed == 0 || rc.Resumed > rc.Logins {
				t.Errorf("%s @%d: resumed %+v, want some of its logins resumed (all counts: %+v)", name, w, rc, res.Resumption)
			}
		}
	}
	if res.Machine.CPUs < 1 || res.Machine.Kernel == "" || !res.Settings.Quick || res.TLS[nameNginx] == "" || res.TLS[nameImapgate] == "" {
		t.Errorf("header: machine %+v, settings %+v, TLS %v", res.Machine, res.Settings, res.TLS)
	}
	// The key exchanges: X25519 when the client offers only it; with Go's
	// default offer imapgate takes the hybrid, and nginx's OpenSSL 3.0,
	// which has no ML-KEM, X25519.
	for name, want := range map[string]string{
		nameNginx: "X25519", nameImapgate: "X25519", nameNginx + hybridOffered: "X25519", nameImapgate + hybridOffered: "X25519MLKEM768",
	} {
		if got := res.TLS[name]; !strings.HasSuffix(got, " "+want) {
			t.Errorf("TLS of %q = %q, want the key exchange %s (all: %v)", name, got, want, res.TLS)
		}
	}
	if len(res.Floor) != len(floorKinds) {
		t.Errorf("floor = %+v, want one figure per kind of handshake", res.Floor)
	}
	for _, f := range res.Floor {
		if f.CPUMicros == nil || !(*f.CPUMicros > 0) || f.ImapgateFloor == nil || !(*f.ImapgateFloor > 0) {
			t.Errorf("floor %s: %s µs, imapgate/floor %s: want figures above 0", f.Handshake, fmtCell(f.CPUMicros), fmtCell(f.ImapgateFloor))
		}
	}

	// Dovecot, both nginx, both imapgate and the memory upstream were
	// this process's children.
	after, err := childProcs("/proc", os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range after {
		if !containsProc(before, p) && p.alive("/proc") {
			comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", p.PID))
			t.Errorf("process %d (%s) still runs after compare", p.PID, strings.TrimSpace(string(comm)))
		}
	}
}

func containsProc(ps []procID, p procID) bool {
	for _, q := range ps {
		if q == p {
			return true
		}
	}
	return false
}

func fmtCell(v *float64) string {
	if v == nil {
		return "missing"
	}
	return fmt.Sprint(*v)
}

// requireCompareTools skips the test without nginx's mail module or
// Dovecot, or fails it when CI=true (.ci/run installs them).
func requireCompareTools(t *testing.T) {
	t.Helper()
	var missing []string
	if _, err := nginxBinary(); err != nil {
		missing = append(missing, err.Error())
	}
	if _, err := lookSbin("dovecot"); err != nil {
		missing = append(missing, "dovecot is not installed: apt-get install dovecot-imapd")
	}
	if len(missing) == 0 {
		return
	}
	msg := strings.Join(missing, "; ")
	switch strings.ToLower(os.Getenv("CI")) {
	case "true", "1", "yes":
		t.Fatal(msg)
	}
	t.Skip(msg)
}

func TestCompareRowsTakeMediansAndRatios(t *testing.T) {
	s := samples{}
	for _, v := range []float64{30, 10, 20} {
		s.add(figNoopP50, nameDirect, v)
	}
	for _, v := range []float64{90, 80, 100} {
		s.add(figNoopP50, nameNginx, v)
	}
	for _, v := range []float64{60, 70} { // a round failed
		s.add(figNoopP50, nameImapgate, v)
	}
	s.add(figIdleRSS, nameNginx, 24)
	s.add(figIdleRSS, nameImapgate, 12)
	rows := buildRows(s, compareFigures([]int{16}, false, false, 0))
	byKey := map[string]compareRow{}
	for _, r := range rows {
		byKey[r.Key] = r
	}
	check := func(key, col string, got *float64, want float64) {
		t.Helper()
		if got == nil || math.Abs(*got-want) > 1e-9 {
			t.Errorf("%s %s = %s, want %v", key, col, fmtCell(got), want)
		}
	}
	noop := byKey[figNoopP50]
	check(figNoopP50, "direct", noop.Direct, 20)
	check(figNoopP50, "nginx", noop.Nginx, 90)
	check(figNoopP50, "imapgate", noop.Imapgate, 65)
	check(figNoopP50, "imapgate/nginx", noop.ImapgateNginx, 65.0/90)
	check(figNoopP50, "imapgate/direct", noop.ImapgateDirect, 65.0/20)
	added := byKey[figNoopAdded]
	check(figNoopAdded, "nginx", added.Nginx, 70)
	check(figNoopAdded, "imapgate", added.Imapgate, 45)
	check(figNoopAdded, "imapgate/nginx", added.ImapgateNginx, 45.0/70)
	if added.Direct != nil || added.ImapgateDirect != nil || !added.DirectNA {
		t.Errorf("added over direct has a direct column: %+v", added)
	}
	idle := byKey[figIdleRSS]
	check(figIdleRSS, "imapgate/nginx", idle.ImapgateNginx, 0.5)
	if idle.Direct != nil || !idle.DirectNA {
		t.Errorf("idle has a direct figure: %+v", idle)
	}

	res := &compareResult{Rows: rows}
	// Missing: fetch (5 cells), logins and their latencies (3 rows of 5),
	// NOOP p99 (5), idle PSS (3); fetch CPU (3: direct is n/a); fetch
	// with a TLS upstream (2 rows of 3: nginx is n/a) and its CPU (2
	// rows of 1: imapgate's only); CPU per login (3).
	// And idle RSS 3 s after setup (3).
	if got, want := res.missing(), 5+15+5+3+3+2*3+2*1+3+3; got != want {
		t.Errorf("missing() = %d, want %d", got, want)
	}
	var out bytes.Buffer
	if err := res.writeTable(&out); err != nil {
		t.Fatal(err)
	}
	// Compared with runs of spaces as one: the columns' widths vary.
	table := strings.Join(strings.Fields(out.String()), " ")
	for _, want := range []string{
		"direct nginx imapgate imapgate/nginx imapgate/direct",
		"idle RSS per session, KiB n/a 24.0 12.0 0.50 n/a",
		"NOOP p50, µs 20 90 65 0.72 3.25",
		"NOOP p50 added over direct, µs n/a 70 45 0.64 n/a",
		"fetch, MB/s failed failed failed failed failed",
	} {
		if !strings.Contains(table, want) {
			t.Errorf("table lacks %q:\n%s", want, out.String())
		}
	}
}

func TestMemoryLoginsHaveTheirOwnRowsAfterDovecots(t *testing.T) {
	if got, want := len(compareFigures([]int{16, 64}, true, false, 0)), len(compareFigures([]int{16, 64}, false, false, 0))+16; got != want {
		t.Errorf("%d rows with the memory logins, want %d", got, want)
	}
	s := samples{}
	rate, p50, _, _ := loginFigures(16, loginsMemory)
	s.add(figLogins(16), nameNginx, 250)
	s.add(figLogins(16), nameImapgate, 200)
	s.add(rate, nameDirect, 4000)
	s.add(rate, nameNginx, 1000)
	s.add(rate, nameImapgate, 2500)
	s.add(p50, nameImapgate, 6)
	res := &compareResult{Rows: buildRows(s, compareFigures([]int{16}, true, false, 0))}
	keys := map[string]bool{}
	for _, r := range res.Rows {
		if keys[r.Key] {
			t.Errorf("key %q twice", r.Key)
		}
		keys[r.Key] = true
	}
	var out bytes.Buffer
	if err := res.writeTable(&out); err != nil {
		t.Fatal(err)
	}
	table := out.String()
	flat := strings.Join(strings.Fields(table), " ")
	for _, want := range []string{
		"logins @16 workers, /s failed 250 200 0.80 failed",
		"logins @16 workers, memory upstream, /s 4000 1000 2500 2.50 0.62",
		"login p50 @16, memory upstream, ms failed failed 6.00 failed failed",
		"login p99 @16, memory upstream, ms failed",
	} {
		if !strings.Contains(flat, want) {
			t.Errorf("table lacks %q:\n%s", want, table)
		}
	}
	if strings.Index(table, "login p99 @16, ms") > strings.Index(table, "logins @16 workers, memory upstream") {
		t.Errorf("the memory upstream's rows come before Dovecot's:\n%s", table)
	}
	args := memoryUpstreamArgs("/bin/imapbench", "127.0.0.1:1143", 2000)
	if got := strings.Join(args, " "); !strings.HasPrefix(got, "/bin/imapbench upstream --addr 127.0.0.1:1143 --users 2000 --users-pattern user%d --password "+comparePassword) {
		t.Errorf("upstream command line %q", got)
	}
	if _, err := upstreamFlags(args[2:], io.Discard); err != nil {
		t.Errorf("upstream refuses its command line: %v", err)
	}
}

// The resumed logins have their own rows after the memory upstream's,
// with direct n/a, and the notes give each proxy's resumed handshakes
// and name one that resumed none.
func TestResumedLoginsHaveTheirOwnRowsWithoutDirect(t *testing.T) {
	if got, want := len(compareFigures([]int{16, 64}, true, true, 0)), len(compareFigures([]int{16, 64}, true, false, 0))+8; got != want {
		t.Errorf("%d rows with the resumed logins, want %d", got, want)
	}
	if got, want := len(compareFigures([]int{16}, false, true, 0)), len(compareFigures([]int{16}, false, false, 0)); got != want {
		t.Errorf("%d rows with resumed but no memory logins, want %d", got, want)
	}
	s := samples{}
	memRate, _, _, _ := loginFigures(16, loginsMemory)
	rate, p50, p99, _ := loginFigures(16, loginsMemoryResumed)
	if rate == memRate || !strings.HasSuffix(rate, "_resumed") {
		t.Errorf("resumed key %q, memory key %q", rate, memRate)
	}
	s.add(memRate, nameDirect, 4000)
	s.add(rate, nameDirect, 4000) // not measured; ignored if it were
	s.add(rate, nameNginx, 1000)
	s.add(rate, nameImapgate, 2500)
	for _, k := range []string{p50, p99} {
		s.add(k, nameNginx, 8)
		s.add(k, nameImapgate, 4)
	}
	res := &compareResult{
		Rows:     buildRows(s, compareFigures([]int{16}, true, true, 0)),
		Settings: compareSettings{MemoryLogins: true, ResumedLogins: true, Workers: []int{16, 64}},
		Resumption: []resumeCount{
			{Workers: 16, Contender: nameNginx, Logins: 1000, Resumed: 0},
			{Workers: 16, Contender: nameImapgate, Logins: 2000, Resumed: 1984},
		},
	}
	for _, r := range res.Rows {
		if strings.HasSuffix(r.Key, "_resumed") && (!r.DirectNA || r.Direct != nil || r.ImapgateDirect != nil) {
			t.Errorf("%s: want direct n/a, have %+v", r.Key, r)
		}
	}
	res.Notes = compareNotes(res, 0, 0)
	var out bytes.Buffer
	if err := res.writeTable(&out); err != nil {
		t.Fatal(err)
	}
	table := out.String()
	flat := strings.Join(strings.Fields(table), " ")
	for _, want := range []string{
		"logins @16 workers, memory upstream, resumed, /s n/a 1000 2500 2.50 n/a",
		"login p50 @16, memory upstream, resumed, ms n/a 8.00 4.00 0.50 n/a",
		"login p99 @16, memory upstream, resumed, ms n/a 8.00 4.00 0.50 n/a",
		"nginx @16 0.0% (0 of 1000), imapgate @16 99.2% (1984 of 2000)",
		"WARNING: nginx @16 resumed no session at all",
		"ssl_session_tickets on",
	} {
		if !strings.Contains(flat, want) {
			t.Errorf("table lacks %q:\n%s", want, table)
		}
	}
	if strings.Index(table, "login p99 @16, memory upstream, ms") > strings.Index(table, "logins @16 workers, memory upstream, resumed") {
		t.Errorf("the resumed rows come before the memory upstream's:\n%s", table)
	}
	// Direct's n/a cells of the resumed rows are not missing.
	var resumedRows []compareRow
	for _, r := range res.Rows {
		if strings.HasSuffix(r.Key, "_resumed") {
			resumedRows = append(resumedRows, r)
		}
	}
	if n := len(resumedRows); n != 4 {
		t.Errorf("%d resumed rows at 16 workers, want 4", n)
	}
	if got := (&compareResult{Rows: resumedRows[:3]}).missing(); got != 0 {
		t.Errorf("the resumed rows miss %d cells, want 0", got)
	}
}

func TestNginxConfigLoadsTheMailModuleAndStaysInItsDirectory(t *testing.T) {
	conf := nginxConfig("/tmp/run", "127.0.0.1:9993", "127.0.0.1:8080", "/tmp/run/cert.pem", "/tmp/run/key.pem", nginxTuning{})
	for _, want := range []string{
		"load_module /usr/lib/nginx/modules/ngx_mail_module.so;",
		"daemon off;", "master_process on;", "worker_processes 2;", "worker_rlimit_nofile 20000;",
		"worker_connections 10000;", "pid /tmp/run/nginx.pid;", "error_log /tmp/run/error.log warn;",
		"auth_http 127.0.0.1:8080/auth;", "listen 127.0.0.1:9993 ssl;", "protocol imap;", "imap_auth plain;",
		"ssl_certificate /tmp/run/cert.pem;", "ssl_certificate_key /tmp/run/key.pem;", "ssl_protocols TLSv1.2 TLSv1.3;",
	} {
		if !strings.Contains(conf, want) {
			t.Errorf("nginx.conf lacks %q:\n%s", want, conf)
		}
	}
	if strings.Contains(conf, "proxy_buffer") || strings.Contains(conf, "/etc/") {
		t.Errorf("nginx.conf changes a default or reads /etc:\n%s", conf)
	}
}

func TestImapgateConfigIsPlaintextUpstreamWithoutDelay(t *testing.T) {
	conf := imapgateConfig("/tmp/run", "127.0.0.1:9993", "127.0.0.1:143", "/tmp/run/cert.pem", "/tmp/run/key.pem", upstreamTLS{}, "")
	for _, want := range []string{
		`address = "127.0.0.1:9993"`, `tls = "implicit"`, `address = "127.0.0.1:143"`, `tls = "none"`,
		`failure_delay = "0s"`, "max_connections = 20000", "max_connections_per_ip = 20000",
		"max_connections_per_network = 0", `output = "/tmp/run/audit.log"`,
	} {
		if !strings.Contains(conf, want) {
			t.Errorf("imapgate.toml lacks %q:\n%s", want, conf)
		}
	}
}

func TestCompareRejectsBadCommandLines(t *testing.T) {
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"compare", "--rounds", "0"}, "--rounds 0"},
		{[]string{"compare", "--sessions", "20000"}, "at most 9000"},
		{[]string{"compare", "--workers", "16,x"}, `"x" is not a number of workers`},
		{[]string{"compare", "--workers", "16,16"}, "16 twice"},
		{[]string{"compare", "--message-size", "10"}, "--message-size 10"},
		{[]string{"compare", "--quick", "--duration", "0s"}, "must be positive"},
		{[]string{"compare", "extra"}, `unexpected argument "extra"`},
		{[]string{"compare", "--addr", "127.0.0.1:993"}, "flag provided but not defined: -addr"},
		{[]string{"compare", "--memory-logins=maybe"}, `invalid boolean value "maybe"`},
		{[]string{"compare", "--resumed-logins=maybe"}, `invalid boolean value "maybe"`},
		{[]string{"compare", "--memory-logins=false", "--resumed-logins=true"}, "--resumed-logins=true needs --memory-logins=true"},
	}
	for _, tt := range tests {
		var out, errOut bytes.Buffer
		if code := run(tt.args, &out, &errOut); code != 2 || !strings.Contains(errOut.String(), tt.want) {
			t.Errorf("run(%q) = %d, stderr %q; want 2 and %q", tt.args, code, errOut.String(), tt.want)
		}
	}
	var out, errOut bytes.Buffer
	if code := run([]string{"compare", "--help"}, &out, &errOut); code != 0 || !strings.Contains(errOut.String(), "--source-count N") {
		t.Errorf("compare --help: %d, %q", code, errOut.String())
	}
}

// The fetch with TLS to Dovecot too has rows of its own, in which nginx
// (which cannot) is n/a and direct is the client with the same TLS
// straight to Dovecot.
func TestTLSUpstreamFetchRowsHaveNginxNAAndDirectsFetch(t *testing.T) {
	conf := imapgateConfig("/tmp/run", "127.0.0.1:9993", "127.0.0.1:993", "/tmp/run/cert.pem", "/tmp/run/key.pem",
		upstreamTLS{Mode: "implicit", CAFile: "/tmp/dovecot/cert.pem"}, "")
	for _, want := range []string{`address = "127.0.0.1:993"`, `tls = "implicit"`, `server_name = "localhost"`, `ca_file = "/tmp/dovecot/cert.pem"`} {
		if !strings.Contains(conf, want) {
			t.Errorf("imapgate.toml lacks %q:\n%s", want, conf)
		}
	}
	if strings.Contains(conf, `tls = "none"`) {
		t.Errorf("imapgate.toml with a TLS upstream says tls = \"none\":\n%s", conf)
	}
	s := samples{}
	s.add(figFetch, nameDirect, 500)
	s.add(figFetch, nameNginx, 300)
	s.add(figFetch, nameImapgate, 450)
	s.add(figFetchCPU, nameNginx, 2)
	s.add(figFetchCPU, nameImapgate, 1.5)
	s.add(figFetchStartTLS, nameImapgate, 250)
	s.add(figFetchStartTLSCPU, nameImapgate, 6)
	s.add(figFetchStartTLS, nameDirect, 300)
	s.add(figFetchStartTLS, nameNginx, 1) // not measured; ignored if it were
	res := &compareResult{Rows: buildRows(s, compareFigures([]int{16}, false, false, 0))}
	var out bytes.Buffer
	if err := res.writeTable(&out); err != nil {
		t.Fatal(err)
	}
	flat := strings.Join(strings.Fields(out.String()), " ")
	for _, want := range []string{
		"fetch CPU per MB, ms n/a 2.00 1.50 0.75 n/a",
		"fetch, upstream STARTTLS, MB/s 300 n/a 250 n/a 0.83",
		"fetch CPU per MB, upstream STARTTLS, ms n/a n/a 6.00 n/a n/a",
		"fetch, upstream implicit TLS, MB/s failed n/a failed n/a failed",
	} {
		if !strings.Contains(flat, want) {
			t.Errorf("table lacks %q:\n%s", want, out.String())
		}
	}
	byKey := map[string]compareRow{}
	for _, r := range res.Rows {
		byKey[r.Key] = r
	}
	starttls := []compareRow{byKey[figFetchStartTLS], byKey[figFetchStartTLSCPU]}
	if got := (&compareResult{Rows: starttls}).missing(); got != 0 {
		t.Errorf("the STARTTLS rows miss %d cells, want 0 (nginx is n/a)", got)
	}
	if got := (&compareResult{Rows: []compareRow{byKey[figFetchImplicitTLS]}}).missing(); got != 3 {
		t.Errorf("the unmeasured implicit TLS row misses %d cells, want 3 (direct, imapgate and imapgate/direct)", got)
	}
}

// The floor is printed after the table: each kind of bare handshake, the
// key exchange it negotiated, and imapgate's CPU per login as a multiple
// of it.
func TestFloorIsPrintedBesideImapgatesCPUPerLogin(t *testing.T) {
	c := &comparison{o: compareOptions{Workers: []int{16, 64}}, samples: samples{}, floorCurves: map[string]string{}}
	_, _, _, full := loginFigures(16, loginsMemory)
	_, _, _, hybrid := loginFigures(16, loginsMemoryHybrid)
	c.samples.add(full, nameImapgate, 900)
	c.samples.add(full, nameNginx, 2000)
	c.samples.add(hybrid, nameImapgate, 1000)
	c.samples.add(figFloorX25519, floorContender, 600)
	c.samples.add(figFloorX25519, floorContender, 400)
	c.samples.add(figFloorHybrid, floorContender, 800)
	c.floorCurves[figFloorX25519] = "X25519"
	c.floorCurves[figFloorHybrid] = "X25519MLKEM768"
	res := &compareResult{Floor: c.floorFigures()}
	if len(res.Floor) != 2 {
		t.Fatalf("floor = %+v, want the two kinds measured", res.Floor)
	}
	var out bytes.Buffer
	if err := res.writeTable(&out); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"- full, client offers X25519 only (X25519): 500 µs; imapgate 900 µs (login_cpu_us_16_workers_memory_upstream): 1.80× the floor",
		"- full, client offers X25519MLKEM768 (Go's default) (X25519MLKEM768): 800 µs; imapgate 1000 µs (login_cpu_us_16_workers_memory_upstream_hybrid_offered): 1.25× the floor",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
}

// The storm's nginx gets the backlog asked for and room in each worker
// for every session; the storm's imapgate serves its profiles and, when
// asked, other upstream login caps.
func TestStormServersHaveTheSameLimitsAndTheirOptions(t *testing.T) {
	conf := nginxConfig("/tmp/run", "127.0.0.1:9993", "127.0.0.1:8080", "/tmp/run/cert.pem", "/tmp/run/key.pem",
		nginxTuning{Backlog: 4096, WorkerConnections: 20000})
	for _, want := range []string{"listen 127.0.0.1:9993 backlog=4096 ssl;", "worker_connections 20000;", "worker_rlimit_nofile 20000;"} {
		if !strings.Contains(conf, want) {
			t.Errorf("nginx.conf lacks %q:\n%s", want, conf)
		}
	}
	if conf := nginxConfig("/tmp/run", "127.0.0.1:9993", "127.0.0.1:8080", "/tmp/run/cert.pem", "/tmp/run/key.pem", nginxTuning{}); strings.Contains(conf, "backlog") {
		t.Errorf("nginx.conf without a backlog asked for sets one:\n%s", conf)
	}
	gate := imapgateConfig("/tmp/run", "127.0.0.1:9993", "127.0.0.1:143", "/tmp/run/cert.pem", "/tmp/run/key.pem", upstreamTLS{}, "127.0.0.1:9100")
	for _, want := range []string{"[metrics]\nlisten = \"127.0.0.1:9100\"\npprof = true\n"} {
		if !strings.Contains(gate, want) {
			t.Errorf("imapgate.toml lacks %q:\n%s", want, gate)
		}
	}
	if strings.Contains(gate, "max_upstream_logins") || strings.Contains(gate, "auth_failures") {
		t.Errorf("imapgate.toml changes a budget or the upstream login cap:\n%s", gate)
	}
}

// Counts (the storm's attempts not OK) may be 0 and have no ratios; a
// storm that did not bring every session back has no "all back" figure.
func TestStormRowsCountWithoutRatios(t *testing.T) {
	s := samples{}
	for _, name := range []string{nameNginx, nameImapgate} {
		for _, key := range []string{figStormP50, figStormP99, figStormCPU, figStormPeakRSS, figStormRSSSetup, figStormRSSHeld, figStormRSSAfter} {
			s.add(key, name, 10)
		}
		s.add(figStormNotOK, name, 0)
		s.add(figStormSessionsNotOK, name, 0)
		s.add(figStormRefused, name, 0)
	}
	s.add(figStormAllBack, nameNginx, 18)
	var figs []figure
	for _, f := range compareFigures([]int{16}, false, false, 9500) {
		if f.scenario == "storm" {
			figs = append(figs, f)
		}
	}
	res := &compareResult{Rows: buildRows(s, figs)}
	// imapgate's "all back" and its ratio: not all came back.
	if got := res.missing(); got != 2 {
		t.Errorf("missing() = %d, want 2", got)
	}
	var out bytes.Buffer
	if err := res.writeTable(&out); err != nil {
		t.Fatal(err)
	}
	flat := strings.Join(strings.Fields(out.String()), " ")
	for _, want := range []string{
		"storm: seconds until all 9,500 back, s n/a 18.00 failed failed n/a",
		"storm: right passwords refused, count n/a 0 0 n/a n/a",
		"storm: peak RSS, MiB n/a 10.0 10.0 1.00 n/a",
	} {
		if !strings.Contains(flat, want) {
			t.Errorf("table lacks %q:\n%s", want, out.String())
		}
	}
}

func TestCompareScenariosAreNamed(t *testing.T) {
	if got, err := parseScenarios("storm, idle"); err != nil || !got["storm"] || !got["idle"] || len(got) != 2 {
		t.Errorf("parseScenarios(storm, idle) = %v, %v", got, err)
	}
	if got, err := parseScenarios("all"); err != nil || got != nil {
		t.Errorf("parseScenarios(all) = %v, %v; want nil: every scenario", got, err)
	}
	var out, errOut bytes.Buffer
	if code := run([]string{"compare", "--scenarios", "storm,nap"}, &out, &errOut); code != 2 || !strings.Contains(errOut.String(), `"nap" is not one of all, idle, fetch`) {
		t.Errorf("compare --scenarios storm,nap: %d, %q", code, errOut.String())
	}
	if code := run([]string{"compare", "--storm-sessions", "9501"}, &out, &errOut); code != 2 || !strings.Contains(errOut.String(), "--storm-sessions 9501: want 1 to 9500") {
		t.Errorf("compare --storm-sessions 9501: %d, %q", code, errOut.String())
	}
}
