package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/imapgate/imapgate/policy"
	"github.com/imapgate/imapgate/proxy"
)

var (
	buildOnce sync.Once
	builtBin  string
	buildErr  error
)

// imapgateBinary builds the command once per test run.
func imapgateBinary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "imapgate-bin-")
		if err != nil {
			buildErr = err
			return
		}
		builtBin = filepath.Join(dir, "imapgate")
		if out, err := exec.Command("go", "build", "-o", builtBin, ".").CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return builtBin
}

// truth is what the generator knows about the log it wrote, counted with
// plain unbounded maps: the review must agree with it.
type truth struct {
	events       int
	byEvent      map[string]int
	authResults  map[string]int
	failures     int
	byAddr       map[string]int
	byNet        map[string]int
	byUser       map[string]int
	userNets     map[string]map[string]bool
	history      map[string][]string // user -> networks of successful logins
	newNets      []newNetwork
	newNetsTotal int
}

// genLog writes n audit events as imapgate writes them (proxy.Auditor), a
// mix of background traffic and planted attacks:
//   - 198.51.100.7 fails against many users all through the log;
//   - a botnet in 203.0.113.0/24 fails against "admin";
//   - "ceo" and "cfo" see failures from 30 and 12 networks in a burst;
//   - 20,000 users log in from two home networks each, and "victim" from a
//     network it never used.
func genLog(t testing.TB, path string, n int) *truth {
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	bw := bufio.NewWriterSize(f, 1<<20)
	// Lines are written by appendEvent, fast enough under -race; every
	// 1000th is compared with what the proxy's own Auditor writes.
	var check bytes.Buffer
	a := proxy.NewAuditor(&check, nil)
	var line []byte
	tr := &truth{byEvent: map[string]int{}, authResults: map[string]int{}, byAddr: map[string]int{},
		byNet: map[string]int{}, byUser: map[string]int{}, userNets: map[string]map[string]bool{}, history: map[string][]string{}}
	rng := rand.New(rand.NewPCG(1, 2))
	start := time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)
	burst := n / 2
	sprayPlan := []struct {
		user string
		nets int
	}{{"ceo@example.com", 30}, {"cfo@example.com", 12}}
	var sprayQueue []string // user|ip
	for _, s := range sprayPlan {
		for i := range s.nets * 10 {
			sprayQueue = append(sprayQueue, fmt.Sprintf("%s|100.%d.0.%d", s.user, 64+i%s.nets, 1+i%200))
		}
	}
	victimAt := n * 9 / 10
	for i := range n {
		ts := start.Add(time.Duration(i) * 2500 * time.Millisecond)
		ev := &proxy.Event{Time: ts, Session: fmt.Sprintf("%018x", i), Listener: "0.0.0.0:993", ClientPort: 40000 + i%20000}
		user, result, reason := "", "", ""
		switch r := rng.IntN(100); {
		case i >= burst && len(sprayQueue) > 0 && i%2 == 0:
			u, ip, _ := strings.Cut(sprayQueue[0], "|")
			sprayQueue = sprayQueue[1:]
			ev.Event, ev.ClientIP, user, result, reason = "auth", ip, u, "failure", "bad_credentials"
		case i == victimAt:
			ev.Event, ev.ClientIP, user, result = "auth", "192.0.2.99", "victim@example.com", "success"
		case i%25 == 0:
			ev.Event, ev.ClientIP, user, result, reason = "auth", "198.51.100.7", fmt.Sprintf("user-%d", rng.IntN(100000)), "failure", "bad_credentials"
		case i%61 == 0:
			ev.Event, ev.ClientIP, user, result, reason = "auth", fmt.Sprintf("203.0.113.%d", 1+rng.IntN(254)), "admin", "ratelimited", "ip_rate_limited"
		case r < 15:
			u := rng.IntN(100000)
			ev.Event, ev.ClientIP, user = "auth", fmt.Sprintf("10.%d.%d.%d", (u>>8)&255, u&255, 1+rng.IntN(250)), fmt.Sprintf("user-%d", u)
			result, reason = "failure", "bad_credentials"
			if r < 2 {
				result, reason = "refused", "plaintext_login_refused"
			}
		case r < 30:
			u := rng.IntN(20000)
			home := rng.IntN(2)
			if i < 20000*3 && i%3 == 0 {
				home = 0 // most users show up from their first home first
			}
			ev.Event, ev.ClientIP, user, result = "auth", fmt.Sprintf("172.%d.%d.%d", 16+home, u>>8, u&255), fmt.Sprintf("user-%d", u), "success"
			if u == 7 && i < victimAt {
				user = "victim@example.com"
				ev.ClientIP = "172.16.0.7"
			}
		case r < 55:
			ev.Event, ev.ClientIP, ev.Result = "connect", fmt.Sprintf("10.9.%d.%d", rng.IntN(256), 1+rng.IntN(250)), "accepted"
		case r < 58:
			ev.Event, ev.ClientIP, ev.Result, ev.Reason = "connect", "192.0.2.66", "refused", "denied"
		case r < 80:
			ev.Event, ev.ClientIP, ev.Result, ev.TLSVersion = "tls", "10.9.0.1", "ok", "TLS 1.3"
		case r < 82:
			ev.Event, ev.ClientIP, ev.Result, ev.Reason = "tls", "10.9.0.2", "failed", "not_tls"
		default:
			d, b := int64(rng.IntN(100000)), int64(rng.IntN(1<<20))
			ev.Event, ev.ClientIP, ev.Reason, ev.DurationMS, ev.BytesIn, ev.BytesOut = "session_end", "10.9.0.3", "client_logout", &d, &b, &b
		}
		if ev.Event == "auth" {
			ev.Result, ev.Reason, ev.User, ev.Mechanism = result, reason, user, "PLAIN"
			tr.authResults[result+"/"+reason]++
			ip := netip.MustParseAddr(ev.ClientIP)
			nw := policy.DeviceNet(ip).String()
			if isFailure(result) {
				tr.failures++
				tr.byAddr[ev.ClientIP]++
				tr.byNet[nw]++
				tr.byUser[user]++
				if tr.userNets[user] == nil {
					tr.userNets[user] = map[string]bool{}
				}
				tr.userNets[user][nw] = true
			} else if known, ok := tr.history[user]; ok && !slices.Contains(known, nw) {
				tr.newNetsTotal++
				if len(tr.newNets) < reviewListMax {
					tr.newNets = append(tr.newNets, newNetwork{Time: ts, User: user, Network: nw, Address: ev.ClientIP, Known: slices.Clone(known)})
				}
				tr.history[user] = append(known, nw)
			} else if !ok {
				tr.history[user] = []string{nw}
			}
		}
		tr.events++
		tr.byEvent[ev.Event]++
		line = appendEvent(line[:0], ev)
		bw.Write(line)
		if i%1000 == 0 {
			check.Reset()
			a.Log(ev)
			if !bytes.Equal(check.Bytes(), line) {
				t.Fatalf("the generator writes\n%s\nwhere the Auditor writes\n%s", line, check.Bytes())
			}
		}
	}
	if err := bw.Flush(); err != nil {
		t.Fatal(err)
	}
	f.Close()
	return tr
}

// appendEvent writes ev as the Auditor does, for the fields the generator
// uses (plain ASCII values that need no escaping).
func appendEvent(b []byte, ev *proxy.Event) []byte {
	str := func(name, v string, omit bool) {
		if omit && v == "" {
			return
		}
		b = append(b, `,"`...)
		b = append(b, name...)
		b = append(b, `":"`...)
		b = append(b, v...)
		b = append(b, '"')
	}
	num := func(name string, v int64) {
		b = append(b, `,"`...)
		b = append(b, name...)
		b = append(b, `":`...)
		b = strconv.AppendInt(b, v, 10)
	}
	b = append(b, `{"time":"`...)
	b = ev.Time.UTC().AppendFormat(b, time.RFC3339Nano)
	b = append(b, '"')
	str("event", ev.Event, false)
	str("session", ev.Session, false)
	str("client_ip", ev.ClientIP, false)
	num("client_port", int64(ev.ClientPort))
	str("listener", ev.Listener, false)
	str("result", ev.Result, true)
	str("reason", ev.Reason, true)
	str("user", ev.User, true)
	str("mechanism", ev.Mechanism, true)
	str("tls_version", ev.TLSVersion, true)
	if ev.DurationMS != nil {
		num("duration_ms", *ev.DurationMS)
		num("bytes_in", *ev.BytesIn)
		num("bytes_out", *ev.BytesOut)
	}
	return append(b, "}\n"...)
}

// runAuditBinary runs `imapgate audit --json FILE` and returns the report,
// the wall time and the peak RSS in KiB.
func runAuditBinary(t *testing.T, bin string, args ...string) (map[string]any, time.Duration, int64) {
	t.Helper()
	cmd := exec.Command(bin, append([]string{"audit", "--json"}, args...)...)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	begin := time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// The child's own peak: ru_maxrss would include the test process,
	// whose memory the child shares until exec (vfork).
	status := fmt.Sprintf("/proc/%d/status", cmd.Process.Pid)
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	var hwm int64
	var err error
	for waiting := true; waiting; {
		select {
		case err = <-done:
			waiting = false
		case <-time.After(5 * time.Millisecond):
			hwm = max(hwm, vmHWM(status))
		}
	}
	took := time.Since(begin)
	if err != nil {
		t.Fatalf("imapgate audit: %v: %s", err, errOut.String())
	}
	var rep map[string]any
	if err := json.Unmarshal(out.Bytes(), &rep); err != nil {
		t.Fatalf("audit --json output: %v", err)
	}
	return rep, took, hwm
}

// vmHWM reads a process's peak resident set in KiB (0 once it is gone).
func vmHWM(status string) int64 {
	data, err := os.ReadFile(status)
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			var kb int64
			fmt.Sscan(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), &kb)
			return kb
		}
	}
	return 0
}

func num(v any) int { f, _ := v.(float64); return int(f) }

// TestAuditReviewOfAMillionEvents: `imapgate audit` on a generated
// 1,000,000-event log agrees with counts kept by the generator, finds the
// planted attacks, and its peak memory does not grow with the log.
func TestAuditReviewOfAMillionEvents(t *testing.T) {
	if testing.Short() {
		t.Skip("generates a 1,000,000-event log")
	}
	bin := imapgateBinary(t)
	dir := t.TempDir()
	big := filepath.Join(dir, "audit-1m.log")
	if keep := os.Getenv("IMAPGATE_KEEP_AUDIT_LOG"); keep != "" {
		big = keep // keep the log for measuring the command by hand
	}
	tr := genLog(t, big, 1_000_000)
	small := filepath.Join(dir, "audit-100k.log")
	genLog(t, small, 100_000)

	rep, took, rss := runAuditBinary(t, bin, big)
	_, _, rssSmall := runAuditBinary(t, bin, small)
	fi, _ := os.Stat(big)
	t.Logf("1,000,000 events (%d MB) in %v: %.0f events/s; peak RSS %d KiB (100,000 events: %d KiB)",
		fi.Size()>>20, took.Round(time.Millisecond), 1e6/took.Seconds(), rss, rssSmall)

	if got := num(rep["events"]); got != tr.events {
		t.Errorf("events = %d, want %d", got, tr.events)
	}
	if num(rep["bad_lines"]) != 0 {
		t.Errorf("bad_lines = %v", rep["bad_lines"])
	}
	for k, v := range tr.byEvent {
		if got := num(rep["by_event"].(map[string]any)[k]); got != v {
			t.Errorf("by_event[%s] = %d, want %d", k, got, v)
		}
	}
	for k, v := range tr.authResults {
		if got := num(rep["auth_results"].(map[string]any)[k]); got != v {
			t.Errorf("auth_results[%s] = %d, want %d", k, got, v)
		}
	}
	if got := num(rep["failures"]); got != tr.failures {
		t.Errorf("failures = %d, want %d", got, tr.failures)
	}
	// Every listed count brackets the true one, and the heaviest keys lead.
	checkTable := func(name string, want map[string]int, leaders ...string) {
		rows, _ := rep[name].([]any)
		if len(rows) != 10 {
			t.Fatalf("%s has %d rows, want 10", name, len(rows))
		}
		for i, r := range rows {
			row := r.(map[string]any)
			key, est, over := row["key"].(string), num(row["count"]), num(row["max_overcount"])
			if w := want[key]; w > est || w < est-over {
				t.Errorf("%s %s: count %d (overcount at most %d), true count %d", name, key, est, over, w)
			}
			if i < len(leaders) && key != leaders[i] {
				t.Errorf("%s row %d is %s, want %s", name, i, key, leaders[i])
			}
		}
	}
	checkTable("failures_by_address", tr.byAddr, "198.51.100.7")
	checkTable("failures_by_network", tr.byNet, "198.51.100.0/24", "203.0.113.0/24")
	checkTable("failures_by_user", tr.byUser, "admin", "ceo@example.com", "cfo@example.com")

	var gotSpray []string
	for _, s := range rep["spraying"].([]any) {
		m := s.(map[string]any)
		gotSpray = append(gotSpray, fmt.Sprintf("%s:%d", m["user"], num(m["networks"])))
		// Counted by the Space-Saving table: at least the true count.
		if u := m["user"].(string); num(m["failures"]) < tr.byUser[u] {
			t.Errorf("spraying %s: %d failures, fewer than the true %d", u, num(m["failures"]), tr.byUser[u])
		}
	}
	var wantSpray []string
	for u, nets := range tr.userNets {
		if len(nets) >= 5 {
			wantSpray = append(wantSpray, fmt.Sprintf("%s:%d", u, len(nets)))
		}
	}
	slices.Sort(gotSpray)
	slices.Sort(wantSpray)
	if !slices.Equal(gotSpray, wantSpray) || len(wantSpray) != 2 {
		t.Errorf("spraying = %v, want %v (ceo and cfo)", gotSpray, wantSpray)
	}

	if got := num(rep["new_networks_total"]); got != tr.newNetsTotal || got == 0 {
		t.Errorf("new_networks_total = %d, want %d", got, tr.newNetsTotal)
	}
	gotNew, _ := json.Marshal(rep["new_networks"])
	wantNew, _ := json.Marshal(tr.newNets)
	var a, b any
	json.Unmarshal(gotNew, &a)
	json.Unmarshal(wantNew, &b)
	if fmt.Sprint(a) != fmt.Sprint(b) {
		t.Errorf("new_networks listed differ from the generator's first %d", len(tr.newNets))
	}
	victimSeen := false
	for _, n := range tr.newNets {
		victimSeen = victimSeen || n.User == "victim@example.com"
	}
	if tr.newNetsTotal <= reviewListMax && !victimSeen {
		t.Error("the victim's login from a new network is not among the findings")
	}

	// Flat memory: ten times the events, about the same peak.
	if rss == 0 || rss > rssSmall*3/2+16<<10 || rss > 100<<10 {
		t.Errorf("peak RSS %d KiB for 1,000,000 events vs %d KiB for 100,000: memory grows with the log", rss, rssSmall)
	}
}

// TestAuditReviewTextAndFilters: the text report names the planted
// attacker, --since/--until cut the log, stdin works, and an unreadable
// file exits 1.
func TestAuditReviewTextAndFilters(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "audit.log")
	tr := genLog(t, path, 20_000)
	var out, errOut bytes.Buffer
	if code := auditCommand([]string{path}, nil, &out, &errOut); code != 0 {
		t.Fatalf("exit %d: %s", code, errOut.String())
	}
	text := out.String()
	for _, want := range []string{"imapgate audit: 20000 events", "Failures by address", "198.51.100.7", "Failures by network (/24, /64)", "203.0.113.0/24", "Spraying", "Logins from a new network"} {
		if !strings.Contains(text, want) {
			t.Errorf("text report lacks %q:\n%s", want, text)
		}
	}

	// The generator spaces events 2.5 s apart from 2026-11-01T00:00:00Z.
	data, _ := os.ReadFile(path)
	out.Reset()
	code := auditCommand([]string{"--json", "--since", "2026-11-01T01:00:00Z", "--until", "2026-11-01T02:00:00Z"}, bytes.NewReader(data), &out, &errOut)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut.String())
	}
	var rep map[string]any
	if err := json.Unmarshal(out.Bytes(), &rep); err != nil {
		t.Fatal(err)
	}
	if got := num(rep["events"]); got != 1440 {
		t.Errorf("one hour of events = %d, want 1440", got)
	}
	if got := num(rep["outside_time_range"]); got != tr.events-1440 {
		t.Errorf("outside_time_range = %d, want %d", got, tr.events-1440)
	}

	if code := auditCommand([]string{filepath.Join(dir, "missing.log")}, nil, &out, &errOut); code != 1 {
		t.Errorf("missing file: exit %d, want 1", code)
	}
	if code := auditCommand([]string{dir}, nil, &out, &errOut); code != 1 {
		t.Errorf("a directory: exit %d, want 1", code)
	}
	if code := auditCommand([]string{"--since", "yesterday", path}, nil, &out, &errOut); code != 2 {
		t.Errorf("bad --since: exit %d, want 2", code)
	}
}

// TestAuditReviewCountsBadLines: garbage and over-long lines are counted,
// not fatal.
func TestAuditReviewCountsBadLines(t *testing.T) {
	in := "not json\n" + strings.Repeat("x", 300<<10) + "\n" +
		`{"time":"2026-11-01T00:00:00Z","event":"auth","session":"s","client_ip":"192.0.2.1","client_port":1,"listener":"l","result":"failure","reason":"bad_credentials","user":"u"}` + "\n"
	var out, errOut bytes.Buffer
	if code := auditCommand([]string{"--json"}, strings.NewReader(in), &out, &errOut); code != 0 {
		t.Fatalf("exit %d: %s", code, errOut.String())
	}
	var rep map[string]any
	json.Unmarshal(out.Bytes(), &rep)
	if num(rep["bad_lines"]) != 2 || num(rep["events"]) != 1 || num(rep["failures"]) != 1 {
		t.Errorf("got lines %v bad %v events %v failures %v", rep["lines"], rep["bad_lines"], rep["events"], rep["failures"])
	}
}

// FuzzAuditReviewLine: no input line makes the review panic.
func FuzzAuditReviewLine(f *testing.F) {
	f.Add([]byte(`{"time":"2026-11-01T00:00:00Z","event":"auth","client_ip":"::1","result":"success","user":"u"}`))
	f.Add([]byte(`{"time":"2026-11-01T00:00:00Z","event":"auth","client_ip":"192.0.2.1","result":"failure","user_hash":"ab"}`))
	f.Fuzz(func(t *testing.T, line []byte) {
		rv := newReview(reviewOptions{top: 3, sprayNetworks: 2})
		rv.read(bytes.NewReader(line))
		rv.read(bytes.NewReader(line))
		var b bytes.Buffer
		rv.report().writeText(&b)
	})
}

// TestMain removes the binary imapgateBinary built.
func TestMain(m *testing.M) {
	code := m.Run()
	if builtBin != "" {
		os.RemoveAll(filepath.Dir(builtBin))
	}
	if code == 0 {
		code = findLeaks() // leak_test.go
	}
	os.Exit(code)
}

// BenchmarkAuditReview measures the review's reading speed on generated
// events; ns/op is per event.
func BenchmarkAuditReview(b *testing.B) {
	path := filepath.Join(b.TempDir(), "audit.log")
	genLog(b, path, 100_000)
	data, err := os.ReadFile(path)
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(data)) / 100_000)
	b.ResetTimer()
	for done := 0; done < b.N; done += 100_000 {
		rv := newReview(reviewOptions{top: 10, sprayNetworks: 5})
		if err := rv.read(bytes.NewReader(data)); err != nil {
			b.Fatal(err)
		}
	}
}
