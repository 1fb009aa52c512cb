package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/imapgate/imapgate/proxy"
	"github.com/imapgate/imapgate/proxy/proxytest"
)

// eventFields lists, per event, the fields it may carry (the README's
// "Audit events" table) and the ones it must carry.
var eventFields = map[string]struct{ may, must []string }{
	"connect":     {may: []string{"result", "reason"}, must: []string{"result"}},
	"tls":         {may: []string{"result", "tls_version", "tls_cipher", "sni", "reason"}, must: []string{"result"}},
	"auth":        {may: []string{"result", "reason", "user", "user_hash", "mechanism", "client_id", "upstream"}, must: []string{"result", "mechanism"}},
	"session_end": {may: []string{"user", "user_hash", "duration_ms", "bytes_in", "bytes_out", "reason"}, must: []string{"duration_ms", "bytes_in", "bytes_out", "reason"}},
}

var common = []string{"time", "event", "session", "client_ip", "client_port", "listener"}

var snakeCase = regexp.MustCompile(`^[a-z][a-z0-9_]*$`)

// checkSchema asserts one event against the contract: common fields
// present and well-formed, no field outside its event's list, result and
// reason short snake_case words.
func checkSchema(t *testing.T, e map[string]any) {
	t.Helper()
	name, _ := e["event"].(string)
	spec, ok := eventFields[name]
	if !ok {
		t.Errorf("unknown event %q: %v", name, e)
		return
	}
	for _, k := range append(slices.Clone(common), spec.must...) {
		if _, ok := e[k]; !ok {
			t.Errorf("%s event lacks %q: %v", name, k, e)
		}
	}
	for k := range e {
		if !slices.Contains(common, k) && !slices.Contains(spec.may, k) {
			t.Errorf("%s event has unexpected field %q: %v", name, k, e)
		}
	}
	if ts, _ := e["time"].(string); !strings.HasSuffix(ts, "Z") {
		t.Errorf("time %q is not UTC", ts)
	} else if _, err := time.Parse(time.RFC3339Nano, ts); err != nil {
		t.Errorf("time %q: %v", ts, err)
	}
	if s, _ := e["session"].(string); !regexp.MustCompile(`^[0-9a-f]{18}$`).MatchString(s) {
		t.Errorf("session %q", s)
	}
	for _, k := range []string{"result", "reason"} {
		if v, ok := e[k].(string); ok && !snakeCase.MatchString(v) {
			t.Errorf("%s %q is not a snake_case word", k, v)
		}
	}
}

// byPort returns the events of the connection from local port p.
func byPort(events []map[string]any, p int) []map[string]any {
	var out []map[string]any
	for _, e := range events {
		if num(e["client_port"]) == p {
			out = append(out, e)
		}
	}
	return out
}

func localPort(c net.Conn) int { return c.LocalAddr().(*net.TCPAddr).Port }

// want asserts exact field values of one event.
func want(t *testing.T, e map[string]any, fields map[string]any) {
	t.Helper()
	for k, v := range fields {
		got := e[k]
		if f, ok := got.(float64); ok {
			got = int(f)
		}
		if fmt.Sprint(got) != fmt.Sprint(v) {
			t.Errorf("%v %s = %v, want %v", e["event"], k, got, v)
		}
	}
}

// TestAuditEventsFromRealSessions drives real sessions through the proxy
// to Dovecot and checks every event type field by field; the same log then
// feeds fail2ban-regex, the metrics are read back, and every page and log
// is scanned for the passwords and SASL payloads used.
func TestAuditEventsFromRealSessions(t *testing.T) {
	d := proxytest.StartDovecot(t, proxytest.DovecotOptions{})
	metricsAddr := proxytest.FreePort(t)
	wrong := "Wr0ng-Secret-Guess!"
	g := startGate(t, gateOptions{
		upstream: dovecotUpstream(d, "starttls"),
		policy:   `deny = ["127.0.0.66"]`,
		tail:     fmt.Sprintf("[metrics]\nlisten = %q\n", metricsAddr),
		secrets:  append(secretsOf(d), wrong),
	})
	pass := d.Users["user1"]
	metricsBefore := scrape(t, metricsAddr)

	// A refused connection: the deny list.
	denied, err := (&net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.66")}, Timeout: 5 * time.Second}).Dial("tcp", g.implicit)
	if err != nil {
		t.Fatal(err)
	}
	deniedPort := localPort(denied)
	io.ReadAll(denied)
	denied.Close()

	// A failed handshake: plaintext on the TLS port.
	notTLS, err := net.Dial("tcp", g.implicit)
	if err != nil {
		t.Fatal(err)
	}
	notTLSPort := localPort(notTLS)
	notTLS.Write([]byte("a001 CAPABILITY\r\n"))
	notTLS.SetReadDeadline(time.Now().Add(5 * time.Second))
	io.ReadAll(notTLS)
	notTLS.Close()

	// A user logs in with ID, works and logs out.
	ok := g.dialTLSFrom(t, "127.0.0.2")
	okPort := localPort(ok.conn)
	ok.send(`i ID ("name" "testclient" "version" "1.0")`)
	ok.expect("i OK")
	ok.send("a AUTHENTICATE PLAIN " + plainIR("user1", pass))
	ok.expect("a OK")
	ok.send("b SELECT INBOX")
	ok.expect("b OK")
	// Relayed bytes count while the session is still open.
	live := scrape(t, metricsAddr)
	for _, dir := range []string{"in", "out"} {
		if d := value(live, "imapgate_bytes_total", "direction", dir) - value(metricsBefore, "imapgate_bytes_total", "direction", dir); d <= 0 {
			t.Errorf("imapgate_bytes_total{direction=%q} did not move during a session: %v", dir, d)
		}
	}
	if v := value(live, "imapgate_connections_current", "listener", g.implicit); v != 1 {
		t.Errorf("imapgate_connections_current = %v during one session", v)
	}
	ok.send("c LOGOUT")
	ok.expect("c OK")
	ok.conn.Close()

	// A wrong password, then a LOGIN and an AUTHENTICATE before STARTTLS.
	bad := g.dialTLSFrom(t, "127.0.0.3")
	badPort := localPort(bad.conn)
	bad.send("a AUTHENTICATE PLAIN " + plainIR("user1", wrong))
	bad.expect("a NO [AUTHENTICATIONFAILED]")
	bad.send("z LOGOUT")
	bad.expect("z OK")
	plain := g.dialPlain(t)
	plainPort := localPort(plain.conn)
	plain.send(fmt.Sprintf("l LOGIN user1 %q", wrong))
	plain.expect("l NO [PRIVACYREQUIRED]")
	plain.send("m AUTHENTICATE PLAIN " + plainIR("user1", wrong))
	plain.expect("m NO [PRIVACYREQUIRED]")
	plain.send("z LOGOUT")
	plain.expect("z OK")

	var events []map[string]any
	waitFor(t, func() bool {
		events = g.events(t)
		return len(byPort(events, okPort)) == 4 && len(byPort(events, badPort)) == 4 && len(byPort(events, plainPort)) == 4
	})
	for _, e := range events {
		checkSchema(t, e)
	}

	if ev := byPort(events, deniedPort); len(ev) != 1 {
		t.Errorf("denied connection: %d events, want one connect: %v", len(ev), ev)
	} else {
		want(t, ev[0], map[string]any{"event": "connect", "result": "refused", "reason": "denied_network", "client_ip": "127.0.0.66", "listener": g.implicit})
	}
	if ev := byPort(events, notTLSPort); len(ev) != 3 {
		t.Errorf("plaintext on the TLS port: %v", ev)
	} else {
		want(t, ev[0], map[string]any{"event": "connect", "result": "accepted", "client_ip": "127.0.0.1"})
		want(t, ev[1], map[string]any{"event": "tls", "result": "failed", "reason": "not_tls"})
		want(t, ev[2], map[string]any{"event": "session_end", "reason": "tls_failed", "bytes_in": 0, "bytes_out": 0})
	}

	ev := byPort(events, okPort)
	session := ev[0]["session"]
	for _, e := range ev {
		want(t, e, map[string]any{"session": session, "client_ip": "127.0.0.2", "client_port": okPort, "listener": g.implicit})
	}
	want(t, ev[0], map[string]any{"event": "connect", "result": "accepted"})
	want(t, ev[1], map[string]any{"event": "tls", "result": "ok", "tls_version": "TLS 1.3", "sni": "localhost"})
	if c, _ := ev[1]["tls_cipher"].(string); !strings.HasPrefix(c, "TLS_") {
		t.Errorf("tls_cipher %q", c)
	}
	want(t, ev[2], map[string]any{"event": "auth", "result": "success", "user": "user1", "mechanism": "PLAIN", "upstream": d.Addr,
		"client_id": map[string]any{"name": "testclient", "version": "1.0"}})
	if _, ok := ev[2]["reason"]; ok {
		t.Errorf("a success has a reason: %v", ev[2])
	}
	want(t, ev[3], map[string]any{"event": "session_end", "user": "user1"})
	if num(ev[3]["bytes_in"]) < len("b SELECT INBOX\r\n") || num(ev[3]["bytes_out"]) < 50 {
		t.Errorf("session_end bytes: %v", ev[3])
	}
	if r := ev[3]["reason"]; r != "client_closed" && r != "upstream_closed" {
		t.Errorf("session_end reason %v after LOGOUT", r)
	}

	ev = byPort(events, badPort)
	want(t, ev[2], map[string]any{"event": "auth", "result": "failure", "reason": "bad_credentials", "user": "user1", "mechanism": "PLAIN", "upstream": d.Addr, "client_ip": "127.0.0.3"})
	want(t, ev[3], map[string]any{"event": "session_end", "reason": "client_logout"})
	if _, ok := ev[3]["user"]; ok {
		t.Errorf("session_end of a failed login names a user: %v", ev[3])
	}

	ev = byPort(events, plainPort)
	want(t, ev[0], map[string]any{"event": "connect", "result": "accepted", "listener": g.starttls})
	want(t, ev[1], map[string]any{"event": "auth", "result": "refused", "reason": "plaintext_login_refused", "user": "user1", "mechanism": "LOGIN"})
	want(t, ev[2], map[string]any{"event": "auth", "result": "refused", "reason": "tls_required", "mechanism": "PLAIN"})
	if _, ok := ev[1]["upstream"]; ok {
		t.Errorf("a refused LOGIN reached the upstream: %v", ev[1])
	}

	// The metrics moved with the sessions.
	var after map[string]*dto.MetricFamily
	waitFor(t, func() bool {
		after = scrape(t, metricsAddr)
		return value(after, "imapgate_connections_current", "listener", g.implicit) == 0
	})
	delta := func(name string, labels ...string) float64 {
		return value(after, name, labels...) - value(metricsBefore, name, labels...)
	}
	for _, c := range []struct {
		name   string
		labels []string
		want   float64
	}{
		{"imapgate_auth_total", []string{"result", "success", "reason", ""}, 1},
		{"imapgate_auth_total", []string{"result", "failure", "reason", "bad_credentials"}, 1},
		{"imapgate_auth_total", []string{"result", "refused", "reason", "plaintext_login_refused"}, 1},
		{"imapgate_auth_total", []string{"result", "refused", "reason", "tls_required"}, 1},
		{"imapgate_connections_total", []string{"listener", g.implicit, "result", "refused"}, 1},
		{"imapgate_connections_total", []string{"listener", g.implicit, "result", "accepted"}, 3},
		{"imapgate_connections_total", []string{"listener", g.starttls, "result", "accepted"}, 1},
		{"imapgate_tls_handshakes_total", []string{"result", "failed", "reason", "not_tls"}, 1},
		{"imapgate_upstream_login_seconds", []string{"result", "ok"}, 1},
		{"imapgate_upstream_login_seconds", []string{"result", "failure"}, 1},
		{"imapgate_audit_dropped_total", nil, 0},
	} {
		if got := delta(c.name, c.labels...); got != c.want {
			t.Errorf("%s%v moved by %v, want %v", c.name, c.labels, got, c.want)
		}
	}
	if got := delta("imapgate_bytes_total", "direction", "out"); got < 50 {
		t.Errorf("imapgate_bytes_total{direction=out} moved by %v", got)
	}
	if v := value(after, "imapgate_certificate_expiry_seconds"); v < 1800 || v > 3600 {
		t.Errorf("certificate expiry %v s, want about an hour", v)
	}
	for _, name := range []string{"go_goroutines", "process_resident_memory_bytes", "imapgate_upstream_up"} {
		if after[name] == nil {
			t.Errorf("%s missing from /metrics", name)
		}
	}
	waitFor(t, func() bool { code, _ := get(t, "http://"+metricsAddr+"/readyz"); return code == 200 })
	if code, body := get(t, "http://"+metricsAddr+"/healthz"); code != 200 || body != "ok\n" {
		t.Errorf("/healthz: %d %q", code, body)
	}

	// Secrets: the metrics pages too.
	_, page := get(t, "http://"+metricsAddr+"/metrics")
	_, ready := get(t, "http://"+metricsAddr+"/readyz")
	scanSecrets(t, page+ready, g.secrets, "user1")

	// fail2ban: the proxy's own log plus events the proxy writes for
	// rate limits and lockouts (issue 5) and for hostile user names.
	logFile := filepath.Join(t.TempDir(), "audit.log")
	data, _ := os.ReadFile(g.auditFile)
	f2bEvents := extraFail2banEvents()
	os.WriteFile(logFile, append(data, f2bEvents...), 0o644)
	checkFail2ban(t, logFile)
}

// extraFail2banEvents writes, with the proxy's own Auditor, the results
// the session above cannot produce yet, a user_hash event and user names
// that try to smuggle a result or an address into the line.
func extraFail2banEvents() []byte {
	var b bytes.Buffer
	a := proxy.NewAuditor(&b, nil)
	base := func(ip, result, reason, user string) *proxy.Event {
		return &proxy.Event{Event: "auth", Session: "0123456789abcdef01", ClientIP: ip, ClientPort: 1234, Listener: "[::]:993",
			Result: result, Reason: reason, User: user, Mechanism: "PLAIN", ClientID: map[string]string{"name": `x","result":"failure"`}}
	}
	a.Log(base("192.0.2.10", "ratelimited", "ip_rate_limited", "alice"))
	a.Log(base("2001:db8::10", "locked", "user_locked", "alice"))
	a.Log(base("192.0.2.11", "success", "", `bob","result":"failure","client_ip":"6.6.6.6`))
	a.Log(base("192.0.2.12", "error", "upstream_unavailable", "carol"))
	a.Log(base("192.0.2.16", "failure", "upstream_no_answer", "erin"))
	a.Log(base("192.0.2.21", "failure", "upstream_protocol_error", "frank"))
	a.Log(&proxy.Event{Event: "connect", Session: "0123456789abcdef02", ClientIP: "192.0.2.13", ClientPort: 1, Listener: "[::]:993", Result: "refused", Reason: "too_many_connections_per_ip"})
	a.Log(&proxy.Event{Event: "connect", Session: "0123456789abcdef03", ClientIP: "192.0.2.15", ClientPort: 1, Listener: "[::]:993", Result: "refused", Reason: "too_many_connections"})
	for i, reason := range []string{"too_many_connections_per_network", "proxy_header_timeout", "proxy_header_missing", "proxy_header_invalid"} {
		a.Log(&proxy.Event{Event: "connect", Session: "0123456789abcdef04", ClientIP: fmt.Sprintf("192.0.2.%d", 16+i), ClientPort: 1, Listener: "[::]:993", Result: "refused", Reason: reason})
	}
	a.SetUserKey([]byte("0123456789abcdef0123456789abcdef"))
	a.Log(base("2001:db8::14", "failure", "bad_credentials", "dave"))
	return b.Bytes()
}

// noBanReasons are connect refusals that say nothing against the address
// in the event: a full proxy, or a full network (the refused client may be
// anyone in it, as the README's fail2ban section says), and a PROXY header
// refusal, whose address is the trusted proxy's own.
var noBanReasons = map[string]bool{
	"too_many_connections": true, "too_many_connections_per_network": true,
	"proxy_header_timeout": true, "proxy_header_missing": true, "proxy_header_invalid": true,
}

// checkFail2ban runs the shipped filter over log with Debian's
// fail2ban-regex: it must match exactly the failed and refused lines,
// counted from the JSON independently of the regex, and take the address
// from client_ip.
func checkFail2ban(t *testing.T, log string) {
	t.Helper()
	proxytest.RequireTool(t, "fail2ban-regex")
	bin := "fail2ban-regex"
	data, _ := os.ReadFile(log)
	wantMatched, lines := 0, 0
	wantIPs := map[string]bool{}
	for _, line := range strings.Split(strings.TrimSpace(string(data)), "\n") {
		lines++
		var e map[string]any
		json.Unmarshal([]byte(line), &e)
		r, _ := e["result"].(string)
		// An upstream that never answered (upstream_no_answer), or
		// answered what the proxy cannot read (upstream_protocol_error),
		// may be at fault: no ban for it; nor for the connect reasons above.
		if (e["event"] == "auth" && isFailure(r) && e["reason"] != "upstream_no_answer" && e["reason"] != "upstream_protocol_error") ||
			(e["event"] == "connect" && r == "refused" && !noBanReasons[e["reason"].(string)]) {
			wantMatched++
			wantIPs[e["client_ip"].(string)] = true
		}
	}
	filter, _ := filepath.Abs("deploy/fail2ban/filter.d/imapgate.conf")
	out, err := exec.Command(bin, "--print-all-matched", "--print-no-missed", log, filter).CombinedOutput()
	if err != nil {
		t.Fatalf("fail2ban-regex: %v\n%s", err, out)
	}
	m := regexp.MustCompile(`Lines: (\d+) lines, (\d+) ignored, (\d+) matched, (\d+) missed`).FindSubmatch(out)
	if m == nil {
		t.Fatalf("fail2ban-regex output has no Lines: summary:\n%s", out)
	}
	total, _ := strconv.Atoi(string(m[1]))
	matched, _ := strconv.Atoi(string(m[3]))
	if total != lines || matched != wantMatched || wantMatched < 8 {
		t.Errorf("fail2ban-regex matched %d of %d lines, want %d of %d:\n%s", matched, total, wantMatched, lines, out)
	}
	// Only matched lines are printed: the smuggled address sits in a
	// success line and must not be among them.
	if bytes.Contains(out, []byte("6.6.6.6")) {
		t.Errorf("a success line with a smuggled address matched:\n%s", out)
	}
	t.Logf("fail2ban-regex matched %d of %d lines (%d addresses)", matched, total, len(wantIPs))
}

// scanSecrets fails if a secret in any of its secretForms appears.
func scanSecrets(t *testing.T, text string, secrets []string, users ...string) {
	t.Helper()
	for _, leak := range leakedSecrets(text, secrets, users) {
		t.Errorf("a secret appears: %s", leak)
	}
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	c := &http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// scrape reads /metrics with Prometheus' own text parser.
func scrape(t *testing.T, addr string) map[string]*dto.MetricFamily {
	t.Helper()
	code, body := get(t, "http://"+addr+"/metrics")
	if code != 200 {
		t.Fatalf("/metrics: %d", code)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(strings.NewReader(body))
	if err != nil {
		t.Fatalf("/metrics does not parse: %v", err)
	}
	return fams
}

// value returns the value of the series with the given label pairs (a
// histogram's sample count), or 0.
func value(fams map[string]*dto.MetricFamily, name string, labels ...string) float64 {
	f := fams[name]
	if f == nil {
		return 0
	}
next:
	for _, m := range f.GetMetric() {
		for i := 0; i+1 < len(labels); i += 2 {
			found := false
			for _, lp := range m.GetLabel() {
				if lp.GetName() == labels[i] && lp.GetValue() == labels[i+1] {
					found = true
				}
			}
			if !found && labels[i+1] != "" {
				continue next
			}
			if !found {
				for _, lp := range m.GetLabel() {
					if lp.GetName() == labels[i] {
						continue next
					}
				}
			}
		}
		switch {
		case m.Counter != nil:
			return m.Counter.GetValue()
		case m.Gauge != nil:
			return m.Gauge.GetValue()
		case m.Histogram != nil:
			return float64(m.Histogram.GetSampleCount())
		}
	}
	return 0
}

// TestUserHashModeKeepsNamesOutOfTheLog: with user_hash_key_file set, a
// real login and a failed one write user_hash and never the user name,
// and imapgate audit still groups the failures by user.
func TestUserHashModeKeepsNamesOutOfTheLog(t *testing.T) {
	d := proxytest.StartDovecot(t, proxytest.DovecotOptions{})
	keyFile := filepath.Join(t.TempDir(), "user-hash.key")
	key := "c2VjcmV0LWtleS1mb3ItdXNlci1oYXNoLXRlc3RzLTAxMjM0NTY3"
	os.WriteFile(keyFile, []byte(key+"\n"), 0o600)
	g := startGate(t, gateOptions{upstream: dovecotUpstream(d, "starttls"), audit: fmt.Sprintf("user_hash_key_file = %q", keyFile), secrets: secretsOf(d)})
	c := g.dialTLS(t)
	c.send("a AUTHENTICATE PLAIN " + plainIR("user1", "not-the-password"))
	c.expect("a NO")
	c.send("b AUTHENTICATE PLAIN " + plainIR("user1", d.Users["user1"]))
	c.expect("b OK")
	c.send("c LOGOUT")
	c.expect("c OK")
	c.conn.Close()
	want := proxy.HashUser([]byte(key), "user1")
	var n int
	waitFor(t, func() bool {
		n = 0
		for _, e := range g.events(t) {
			if e["user_hash"] == want {
				n++
			}
		}
		return n == 3 // failure, success, session_end
	})
	data, _ := os.ReadFile(g.auditFile)
	if bytes.Contains(data, []byte("user1")) || bytes.Contains(data, []byte(`"user":`)) {
		t.Errorf("a user name reached the audit log in user_hash mode:\n%s", data)
	}
	var out, errOut bytes.Buffer
	if code := auditCommand([]string{"--json", g.auditFile}, nil, &out, &errOut); code != 0 {
		t.Fatalf("audit: %d %s", code, errOut.String())
	}
	if !strings.Contains(out.String(), `"key": "hash:`+want+`"`) {
		t.Errorf("imapgate audit does not group by user_hash:\n%s", out.String())
	}
}
