package proxy

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/base64"
	"fmt"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/imapgate/imapgate/policy"
	"github.com/imapgate/imapgate/proxy/proxytest"
)

// These tests put the proxy in front of a real Dovecot and count, from
// Dovecot's own log, how many guesses reach it.

// attackBudgets are the default budgets (README "[policy]") with a tiny
// tarpit, so thousands of guesses take seconds. (A refused guess still
// waits about as long as Dovecot takes to say NO, about 0.5s here, so that
// timing does not tell it from a tried one: see
// TestRefusedGuessesAnswerWhenRealFailuresDo.)
var attackBudgets = policy.Budgets{PerIP: 10, PerNetwork: 50, PerUser: 20, PerDevice: 10, Window: 15 * time.Minute, Delay: 500 * time.Microsecond}

// proxyAddress is where the proxy's upstream connections come from.
const proxyAddress = "127.0.0.1"

// startPenalisingDovecot starts a Dovecot that keeps its default per-IP
// auth penalty, set up as the README's Dovecot recipe says: imapgate's
// address in login_trusted_networks, so that with forward_client_ip =
// "id" (startGuardedProxy) Dovecot penalises each client's own address
// rather than the proxy's.
func startPenalisingDovecot(t testing.TB, o proxytest.DovecotOptions) *proxytest.Dovecot {
	t.Helper()
	o.AuthPenalty, o.TrustedNetworks = true, proxyAddress+"/32"
	return proxytest.StartDovecot(t, o)
}

func startGuardedProxy(t testing.TB, d *proxytest.Dovecot, mod func(*Config)) *testProxy {
	t.Helper()
	return startProxyTo(t, d.Addr, UpstreamPlaintext, nil, func(c *Config) {
		c.Upstream.Forward = ForwardID
		c.Policy = policy.NewGuard(nil, attackBudgets, nil)
		if mod != nil {
			mod(c)
		}
	}, nil)
}

// dialFrom opens an implicit TLS connection from a loopback source address.
func (tp *testProxy) dialFrom(t testing.TB, source string) (*tls.Conn, error) {
	d := &net.Dialer{Timeout: 10 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(source)}}
	return tls.DialWithDialer(d, "tcp", tp.implicit, &tls.Config{RootCAs: tp.roots, ServerName: "localhost"})
}

func saslPlain(user, pass string) string {
	return base64.StdEncoding.EncodeToString([]byte("\x00" + user + "\x00" + pass))
}

// guessAll pipelines n wrong guesses on one connection from source and
// returns the tagged answers it got.
func (tp *testProxy) guessAll(t testing.TB, source string, n int, user func(i int) string) (answers []string, err error) {
	p, err := tp.pipelineFrom(t, source)
	if err != nil {
		return nil, err
	}
	return p.guess(n, user)
}

// pipeline is an attacker's connection, greeted and ready to guess.
type pipeline struct {
	conn   *tls.Conn
	r      *bufio.Reader
	source string
}

func (tp *testProxy) pipelineFrom(t testing.TB, source string) (*pipeline, error) {
	conn, err := tp.dialFrom(t, source)
	if err != nil {
		return nil, err
	}
	conn.SetDeadline(time.Now().Add(3 * time.Minute))
	r := bufio.NewReader(conn)
	if _, err := r.ReadString('\n'); err != nil {
		conn.Close()
		return nil, err
	}
	return &pipeline{conn: conn, r: r, source: source}, nil
}

// guess pipelines n wrong guesses, returns the tagged answers it got and
// closes the connection.
func (p *pipeline) guess(n int, user func(i int) string) (answers []string, err error) {
	defer p.conn.Close()
	var buf bytes.Buffer
	for i := range n {
		fmt.Fprintf(&buf, "g%d AUTHENTICATE PLAIN %s\r\n", i, saslPlain(user(i), fmt.Sprintf("Guess-%d-%s", i, p.source)))
	}
	go p.conn.Write(buf.Bytes()) // answers are read meanwhile: no deadlock
	for len(answers) < n {
		line, err := p.r.ReadString('\n')
		if err != nil {
			return answers, err
		}
		if strings.HasPrefix(line, "g") {
			answers = append(answers, strings.TrimSpace(line))
		}
	}
	return answers, nil
}

// loginOnce logs in as user from source and reports the answer and its latency.
func (tp *testProxy) loginOnce(t testing.TB, source, user, pass string) (string, time.Duration, error) {
	start := time.Now()
	conn, err := tp.dialFrom(t, source)
	if err != nil {
		return "", 0, err
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(30 * time.Second))
	r := bufio.NewReader(conn)
	if _, err := r.ReadString('\n'); err != nil {
		return "", 0, err
	}
	fmt.Fprintf(conn, "a AUTHENTICATE PLAIN %s\r\n", saslPlain(user, pass))
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return "", 0, err
		}
		if strings.HasPrefix(line, "a ") {
			fmt.Fprintf(conn, "z LOGOUT\r\n")
			return strings.TrimSpace(line), time.Since(start), nil
		}
	}
}

// attackFigures are what one attack left behind.
type attackFigures struct {
	guesses, reached  int // guesses sent, and failures Dovecot logged
	answeredNO        int
	elapsed           time.Duration
	otherOK, otherTry int           // the bystander's (or the real user's) logins
	slowestOther      time.Duration // its slowest login
}

// singleAddressAttack sends 200 × perConn wrong guesses from 127.0.0.5
// over 200 pipelining connections, all set up first and then fired at
// once, while another client, in another /24, logs in every 100ms. (A
// refused guess is answered when a real failure would be, here after
// about 0.5s, so the attack needs many connections.)
func singleAddressAttack(tb testing.TB, d *proxytest.Dovecot, tp *testProxy, perConn int) attackFigures {
	const conns = 200
	pipes := make([]*pipeline, conns)
	var dials sync.WaitGroup
	for c := range pipes {
		dials.Add(1)
		go func() {
			defer dials.Done()
			var err error
			if pipes[c], err = tp.pipelineFrom(tb, "127.0.0.5"); err != nil {
				tb.Errorf("attacker connection %d: %v", c, err)
			}
		}()
	}
	dials.Wait()
	if tb.Failed() {
		tb.FailNow()
	}
	before := d.AuthAttempts().Failure
	attackDone := make(chan struct{})
	otherDone := make(chan struct{})
	var f attackFigures
	go func() {
		defer close(otherDone)
		for {
			select {
			case <-attackDone:
				return
			case <-time.After(100 * time.Millisecond):
			}
			line, took, err := tp.loginOnce(tb, "127.0.9.1", "user2", d.Users["user2"])
			f.otherTry++
			if err != nil || !strings.HasPrefix(line, "a OK") {
				tb.Errorf("other client: %q %v", line, err)
				continue
			}
			f.otherOK++
			f.slowestOther = max(f.slowestOther, took)
		}
	}()
	var wg sync.WaitGroup
	var refused atomic.Int32
	start := time.Now()
	for c := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			answers, err := pipes[c].guess(perConn, func(i int) string {
				return []string{"user1", "user2", fmt.Sprintf("admin%d", c)}[i%3]
			})
			if err != nil {
				tb.Errorf("attacker connection %d: %v after %d answers", c, err, len(answers))
			}
			for _, a := range answers {
				if !strings.Contains(a, " NO [AUTHENTICATIONFAILED] ") {
					tb.Errorf("answer %q", a)
					return
				}
				refused.Add(1)
			}
		}()
	}
	wg.Wait()
	f.elapsed = time.Since(start)
	close(attackDone)
	<-otherDone
	time.Sleep(300 * time.Millisecond) // Dovecot logs a little after answering
	f.guesses, f.answeredNO = conns*perConn, int(refused.Load())
	f.reached = d.AuthAttempts().Failure - before
	return f
}

func TestBruteForceFromOneAddressNeverReachesDovecot(t *testing.T) {
	d := startPenalisingDovecot(t, proxytest.DovecotOptions{})
	tp := startGuardedProxy(t, d, func(c *Config) { c.MaxAuthFailures, c.PreauthTimeout = 1000, 3*time.Minute })
	f := singleAddressAttack(t, d, tp, 10)
	t.Logf("single address: %d of %d guesses reached Dovecot (%d answered NO) in %v; other client: %d of %d logins, slowest %v",
		f.reached, f.guesses, f.answeredNO, f.elapsed.Round(time.Millisecond), f.otherOK, f.otherTry, f.slowestOther.Round(time.Millisecond))
	if f.reached != attackBudgets.PerIP {
		t.Errorf("%d guesses reached Dovecot, want exactly auth_failures_per_ip = %d", f.reached, attackBudgets.PerIP)
	}
	if f.otherOK == 0 || f.otherOK != f.otherTry || f.slowestOther > 2*time.Second {
		t.Errorf("other client: %d of %d logins, slowest %v", f.otherOK, f.otherTry, f.slowestOther)
	}
	limited := 0
	for _, e := range tp.audit.events(t) {
		if e.Event == EventAuth && e.Result == policy.ResultRateLimited {
			if e.Reason != policy.ReasonIPRateLimited || e.ClientIP != "127.0.0.5" || e.Upstream != "" {
				t.Fatalf("rate-limit event %+v", e)
			}
			limited++
		}
	}
	if limited != f.guesses-attackBudgets.PerIP {
		t.Errorf("%d ratelimited events, want %d", limited, f.guesses-attackBudgets.PerIP)
	}
}

// sprayAttack sends 10,000 wrong guesses for user1 from 256 addresses,
// each in its own /24 (127.1.0.1 ... 127.1.255.1), while the real user
// logs in from 127.0.0.1, where it logged in before, all through it.
func sprayAttack(tb testing.TB, d *proxytest.Dovecot, tp *testProxy) attackFigures {
	const sources, total = 256, 10_000
	pass := d.Users["user1"]
	if line, _, err := tp.loginOnce(tb, "127.0.0.1", "user1", pass); err != nil || !strings.HasPrefix(line, "a OK") {
		tb.Fatalf("first login: %q %v", line, err)
	}
	before := d.AuthAttempts().FailureByUser["user1"]
	attackDone := make(chan struct{})
	realDone := make(chan struct{})
	var f attackFigures
	go func() {
		defer close(realDone)
		for {
			line, took, err := tp.loginOnce(tb, "127.0.0.1", "user1", pass)
			f.otherTry++
			if err == nil && strings.HasPrefix(line, "a OK") {
				f.otherOK++
				f.slowestOther = max(f.slowestOther, took)
			} else {
				tb.Errorf("real user: %q %v", line, err)
			}
			select {
			case <-attackDone:
				return
			case <-time.After(20 * time.Millisecond):
			}
		}
	}()
	var wg sync.WaitGroup
	start := time.Now()
	for i := range sources {
		n := total / sources
		if i < total%sources {
			n++
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			source := fmt.Sprintf("127.1.%d.1", i)
			answers, err := tp.guessAll(tb, source, n, func(int) string { return "user1" })
			if err != nil {
				tb.Errorf("%s: %v after %d answers", source, err, len(answers))
			}
		}()
	}
	wg.Wait()
	f.elapsed = time.Since(start)
	close(attackDone)
	<-realDone
	time.Sleep(300 * time.Millisecond)
	f.guesses = total
	f.reached = d.AuthAttempts().FailureByUser["user1"] - before
	return f
}

func TestSprayFrom256AddressesCannotLockOutTheRealUser(t *testing.T) {
	d := startPenalisingDovecot(t, proxytest.DovecotOptions{})
	tp := startGuardedProxy(t, d, func(c *Config) { c.MaxAuthFailures, c.PreauthTimeout = 100, 3*time.Minute })
	f := sprayAttack(t, d, tp)
	t.Logf("spray from 256 addresses: %d of %d guesses reached Dovecot in %v; real user: %d of %d logins succeeded, slowest %v",
		f.reached, f.guesses, f.elapsed.Round(time.Millisecond), f.otherOK, f.otherTry, f.slowestOther.Round(time.Millisecond))
	if f.reached != attackBudgets.PerUser {
		t.Errorf("%d spray guesses reached Dovecot, want exactly auth_failures_per_user = %d", f.reached, attackBudgets.PerUser)
	}
	if f.otherOK != f.otherTry || f.otherTry < 3 {
		t.Errorf("real user: %d of %d logins succeeded", f.otherOK, f.otherTry)
	}
	locked := 0
	for _, e := range tp.audit.events(t) {
		if e.Event == EventAuth && e.Result == policy.ResultLocked && e.Reason == policy.ReasonUserLocked {
			locked++
		}
	}
	if locked != f.guesses-attackBudgets.PerUser {
		t.Errorf("%d user_locked events, want %d", locked, f.guesses-attackBudgets.PerUser)
	}
}

// BenchmarkAttacksAgainstDovecot runs both attacks against a real Dovecot
// behind the proxy with the default budgets (README "[policy]") and
// reports how many of 10,000 guesses reached it, and the real user's
// success rate during the spray:
//
//	go test -run XXX -bench AttacksAgainstDovecot -benchtime 1x ./proxy/
func BenchmarkAttacksAgainstDovecot(b *testing.B) {
	for range b.N {
		d := startPenalisingDovecot(b, proxytest.DovecotOptions{})
		guarded := func() *testProxy { // a fresh Guard for each attack
			return startGuardedProxy(b, d, func(c *Config) { c.MaxAuthFailures, c.PreauthTimeout = 1000, 3*time.Minute })
		}
		single := singleAddressAttack(b, d, guarded(), 50)
		spray := sprayAttack(b, d, guarded())
		b.ReportMetric(float64(single.reached)*10_000/float64(single.guesses), "reached/10k-single")
		b.ReportMetric(float64(spray.reached)*10_000/float64(spray.guesses), "reached/10k-spray")
		b.ReportMetric(100*float64(spray.otherOK)/float64(max(spray.otherTry, 1)), "real-user-%")
		b.ReportMetric(float64(spray.otherTry), "real-user-logins")
		b.ReportMetric(float64(single.slowestOther.Milliseconds()), "bystander-slowest-ms")
	}
}

// loginWatcher wraps upstream connections and counts those still in
// their login exchange: from dial until Dovecot's tagged answer to the
// login ("Logged in" or AUTHENTICATIONFAILED) or close.
type loginWatcher struct {
	cur, peak atomic.Int32
}

type watchedConn struct {
	net.Conn
	w    *loginWatcher
	once sync.Once
	tail []byte
}

func (w *loginWatcher) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	if n := w.cur.Add(1); n > w.peak.Load() {
		w.peak.Store(n) // racy max is fine: only the watcher's goroutines raise it
	}
	return &watchedConn{Conn: c, w: w}, nil
}

func (c *watchedConn) done() { c.once.Do(func() { c.w.cur.Add(-1) }) }

func (c *watchedConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.tail = append(c.tail, p[:n]...)
	if bytes.Contains(c.tail, []byte("Logged in")) || bytes.Contains(c.tail, []byte("AUTHENTICATIONFAILED")) {
		c.done()
	}
	if len(c.tail) > 64 {
		c.tail = c.tail[len(c.tail)-64:]
	}
	return n, err
}

func (c *watchedConn) Close() error { c.done(); return c.Conn.Close() }

func TestUpstreamLoginCapUnder500ConcurrentLogins(t *testing.T) {
	d := startPenalisingDovecot(t, proxytest.DovecotOptions{Users: proxytest.NumberedUsers(500, "Pass-500!")})
	const max, queue, clients = 8, 8, 500
	w := &loginWatcher{}
	tp := startProxyTo(t, d.Addr, UpstreamPlaintext, nil, func(c *Config) {
		c.Upstream.Dialer = w.dial
		c.UpstreamLogins = policy.NewSlots(max, queue, 500*time.Millisecond)
	}, nil)

	var ok, busy atomic.Int32
	var slowestBusy atomic.Int64
	var wg sync.WaitGroup
	startLine := make(chan struct{})
	for i := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			conn, err := tp.dialFrom(t, fmt.Sprintf("127.2.%d.%d", i/200, i%200+1))
			if err != nil {
				t.Errorf("dial: %v", err)
				return
			}
			defer conn.Close()
			conn.SetDeadline(time.Now().Add(60 * time.Second))
			r := bufio.NewReader(conn)
			r.ReadString('\n')
			user := fmt.Sprintf("user%d", i+1)
			cmd := "a AUTHENTICATE PLAIN " + saslPlain(user, "Pass-500!") + "\r\n"
			<-startLine // all 500 ask at once
			sent := time.Now()
			conn.Write([]byte(cmd))
			for {
				line, err := r.ReadString('\n')
				if err != nil {
					t.Errorf("client %d: %v", i, err)
					return
				}
				switch {
				case strings.HasPrefix(line, "a OK"):
					ok.Add(1)
					conn.Write([]byte("z LOGOUT\r\n"))
					return
				case strings.HasPrefix(line, "a NO [UNAVAILABLE]"):
					busy.Add(1)
					took := int64(time.Since(sent))
					for old := slowestBusy.Load(); took > old && !slowestBusy.CompareAndSwap(old, took); old = slowestBusy.Load() {
					}
					return
				case strings.HasPrefix(line, "a "):
					t.Errorf("client %d: %q", i, line)
					return
				}
			}
		}()
	}
	time.Sleep(2 * time.Second) // let the handshakes finish
	close(startLine)
	wg.Wait()
	t.Logf("%d concurrent logins, cap %d, queue %d: %d succeeded, %d got NO [UNAVAILABLE] (slowest after %v), peak logins in flight at Dovecot %d",
		clients, max, queue, ok.Load(), busy.Load(), time.Duration(slowestBusy.Load()).Round(time.Millisecond), w.peak.Load())
	if p := w.peak.Load(); p > max || p < 2 {
		t.Errorf("peak logins in flight at Dovecot %d, want 2..%d", p, max)
	}
	if ok.Load() < max || ok.Load()+busy.Load() != clients {
		t.Errorf("%d ok + %d busy, want %d answers and at least %d logins", ok.Load(), busy.Load(), clients, max)
	}
	if time.Duration(slowestBusy.Load()) > 3*time.Second {
		t.Errorf("NO [UNAVAILABLE] took %v, want quick", time.Duration(slowestBusy.Load()))
	}
	n := 0
	for _, e := range tp.audit.events(t) {
		if e.Event == EventAuth && e.Reason == ReasonUpstreamBusy {
			n++
		}
	}
	if n != int(busy.Load()) {
		t.Errorf("%d upstream_busy events for %d refusals", n, busy.Load())
	}
}

// TestUnavailableUpstreamSpendsNoBudget: attempts the upstream never
// judged are given back, so an outage does not lock anyone out; and a
// full login queue answers NO [UNAVAILABLE] without counting as a failure
// of the connection.
func TestUnavailableUpstreamSpendsNoBudget(t *testing.T) {
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	addr := ln.Addr().String()
	ln.Close()
	g := policy.NewGuard(nil, policy.Budgets{PerIP: 1, PerUser: 1, PerDevice: 1}, nil)
	tp := startProxyTo(t, addr, UpstreamPlaintext, nil, func(c *Config) { c.Policy = g }, nil)
	c := tp.dialImplicit(t)
	for i := range 5 {
		c.send(fmt.Sprintf("a%d AUTHENTICATE PLAIN %s", i, plainIR(testUser, testPass)))
		c.expect(fmt.Sprintf("a%d NO [UNAVAILABLE]", i))
	}

	up := startProxy(t, func(c *Config) {
		c.Policy = g
		c.UpstreamLogins = policy.NewSlots(1, 0, 50*time.Millisecond)
	})
	hold := up.srv.Config().UpstreamLogins.Acquire(context.Background()) // the one slot is busy
	c = up.dialImplicit(t)
	for i := range 5 { // more than MaxAuthFailures: busy answers do not end the connection
		c.send(fmt.Sprintf("b%d AUTHENTICATE PLAIN %s", i, plainIR(testUser, testPass)))
		c.expect(fmt.Sprintf("b%d NO [UNAVAILABLE]", i))
	}
	hold()
	c.send("c AUTHENTICATE PLAIN " + plainIR(testUser, testPass))
	c.expect("c OK")
	busy := 0
	for _, e := range up.audit.events(t) {
		if e.Event == EventAuth && e.Reason == ReasonUpstreamBusy && e.Result == ResultError {
			busy++
		}
	}
	if busy != 5 {
		t.Fatalf("%d upstream_busy events, want 5", busy)
	}
}

// TestLoginStormFromOneAddressIsNotRefused: after a network blip every
// phone behind one address (a carrier NAT, an office) logs in again at
// once, all with the right password. Attempts in flight are held against
// the budgets (so an attacker's parallel guesses cannot overshoot them),
// but they must only make the others wait, never refuse them: 100
// concurrent logins from one address with a budget of 10 per address, 50
// per network and 20 per user all succeed against a real Dovecot.
func TestLoginStormFromOneAddressIsNotRefused(t *testing.T) {
	const clients = 100
	d := startPenalisingDovecot(t, proxytest.DovecotOptions{Users: proxytest.NumberedUsers(10, "Storm-Pass1!")})
	tp := startGuardedProxy(t, d, nil)
	var ok atomic.Int32
	var wg sync.WaitGroup
	for i := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ans, _, err := tp.loginOnce(t, "127.0.0.9", fmt.Sprintf("user%d", i%10+1), "Storm-Pass1!")
			if err != nil || !strings.HasPrefix(ans, "a OK") {
				t.Errorf("login %d: %q %v", i, ans, err)
				return
			}
			ok.Add(1)
		}()
	}
	wg.Wait()
	if ok.Load() != clients {
		t.Fatalf("%d of %d logins succeeded", ok.Load(), clients)
	}
	for _, e := range tp.audit.events(t) {
		if e.Event == EventAuth && e.Result != ResultSuccess {
			t.Errorf("auth event %s/%s in a storm of right passwords", e.Result, e.Reason)
		}
	}
}
