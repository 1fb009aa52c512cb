package proxy

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/imapgate/imapgate/policy"
	"github.com/imapgate/imapgate/proxy/proxytest"
)

// These tests are about what an attempt costs once its credential is on
// the wire: an answer that never comes is a failure, never a free guess,
// and the time to NO does not tell a refused guess from a tried one.

// defaultBudgets are the README's [policy] defaults.
var defaultBudgets = policy.Budgets{PerIP: 10, PerNetwork: 50, PerUser: 20, PerDevice: 10, Window: 15 * time.Minute, Delay: 2 * time.Second}

// guesser is one client connection that sends AUTHENTICATE PLAIN commands
// one at a time and times each answer, from the command to its tagged
// answer.
type guesser struct {
	conn *tls.Conn
	r    *bufio.Reader
	n    int
}

func (tp *testProxy) guesserFrom(t testing.TB, source string) *guesser {
	t.Helper()
	conn, err := tp.dialFrom(t, source)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	g := &guesser{conn: conn, r: bufio.NewReader(conn)}
	conn.SetDeadline(time.Now().Add(2 * time.Minute))
	if _, err := g.r.ReadString('\n'); err != nil {
		t.Fatal(err)
	}
	return g
}

// try sends one attempt and returns the tagged answer (without the tag)
// and how long it took.
func (g *guesser) try(user, pass string) (string, time.Duration, error) {
	g.n++
	tag := fmt.Sprintf("g%d", g.n)
	start := time.Now()
	if _, err := fmt.Fprintf(g.conn, "%s AUTHENTICATE PLAIN %s\r\n", tag, saslPlain(user, pass)); err != nil {
		return "", 0, err
	}
	for {
		line, err := g.r.ReadString('\n')
		if err != nil {
			return "", time.Since(start), err
		}
		if answer, ok := strings.CutPrefix(strings.TrimSpace(line), tag+" "); ok {
			return answer, time.Since(start), nil
		}
	}
}

// TestTarpittingUpstreamGetsOnlyTheBudget: an upstream that answers
// failures slower than the login timeout (a tarpitting server) must not
// make every guess free. 10 guesses for one user with a per-user budget
// of 2: the first 2 reach the upstream, time out after the credential
// went out, count as failures and are answered NO [UNAVAILABLE]; the
// other 8 are refused by the policy and never reach it.
func TestTarpittingUpstreamGetsOnlyTheBudget(t *testing.T) {
	const loginTimeout = 200 * time.Millisecond
	su := startScripted(t, "* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN SASL-IR] tarpit", func(c *scriptedConn, line string) bool {
		time.Sleep(10 * loginTimeout) // the tarpit, then the failure
		c.write(tagOf(line) + " NO [AUTHENTICATIONFAILED] Authentication failed.")
		return true
	})
	tp := startProxyTo(t, su.addr, UpstreamPlaintext, nil, func(c *Config) {
		c.Upstream.ConnectTimeout, c.Upstream.LoginTimeout = 500*time.Millisecond, loginTimeout
		c.Policy = policy.NewGuard(nil, policy.Budgets{PerUser: 2, Delay: time.Millisecond}, nil)
		c.MaxAuthFailures = 100
	}, nil)
	g := tp.guesserFrom(t, "127.0.0.1")
	var answers []string
	for i := range 10 {
		answer, _, err := g.try(testUser, fmt.Sprintf("Guess-%d", i))
		if err != nil {
			t.Fatalf("guess %d: %v", i, err)
		}
		answers = append(answers, answer)
	}
	reached := 0
	for _, l := range su.lines() {
		if strings.Contains(l, " AUTHENTICATE ") {
			reached++
		}
	}
	t.Logf("10 guesses, per-user budget 2, upstream slower than login_timeout: %d reached it; answers %q", reached, answers)
	if reached != 2 {
		t.Errorf("%d guesses reached the upstream, want the budget, 2", reached)
	}
	for i, a := range answers {
		want := "NO [AUTHENTICATIONFAILED]"
		if i < 2 {
			want = "NO [UNAVAILABLE]"
		}
		if !strings.HasPrefix(a, want) {
			t.Errorf("guess %d answered %q, want %s", i, a, want)
		}
	}
	counts := map[string]int{}
	for _, e := range tp.audit.events(t) {
		if e.Event == EventAuth {
			counts[e.Result+"/"+e.Reason]++
		}
	}
	if counts["failure/upstream_no_answer"] != 2 || counts["locked/user_locked"] != 8 {
		t.Errorf("auth events %v, want 2 failure/upstream_no_answer and 8 locked/user_locked", counts)
	}
}

// otherUsersLogIn logs user2 ... user5 in at once, each from its own
// address, and returns how long each took from connect to OK.
func otherUsersLogIn(t *testing.T, tp *testProxy, d *proxytest.Dovecot) []time.Duration {
	t.Helper()
	var mu sync.Mutex
	var took []time.Duration
	var wg sync.WaitGroup
	for i := 2; i <= 5; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			user := fmt.Sprintf("user%d", i)
			answer, dt, err := tp.loginOnce(t, fmt.Sprintf("127.0.9.%d", i), user, d.Users[user])
			if err != nil || !strings.HasPrefix(answer, "a OK") {
				t.Errorf("%s with the right password: %q %v", user, answer, err)
				return
			}
			mu.Lock()
			took = append(took, dt)
			mu.Unlock()
		}()
	}
	wg.Wait()
	slices.Sort(took)
	return took
}

// threeWrongGuesses has an attacker at 127.0.0.5 try three wrong
// passwords for user1 on one connection; each must be judged and answered
// NO [AUTHENTICATIONFAILED], however long the upstream makes it wait.
func threeWrongGuesses(t *testing.T, tp *testProxy) {
	t.Helper()
	g := tp.guesserFrom(t, "127.0.0.5")
	for i := range 3 {
		answer, took, err := g.try("user1", fmt.Sprintf("Wrong-Guess-%d", i))
		t.Logf("attacker's guess %d: %q after %v", i+1, answer, took.Round(time.Millisecond))
		if err != nil {
			t.Fatalf("attacker's guess %d: %v", i+1, err)
		}
		if !strings.HasPrefix(answer, "NO [AUTHENTICATIONFAILED]") {
			t.Errorf("attacker's guess %d answered %q, want it judged: NO [AUTHENTICATIONFAILED]", i+1, answer)
		}
	}
}

func dovecotTLS(d *proxytest.Dovecot) *tls.Config {
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(d.CertPEM)
	return &tls.Config{RootCAs: roots, ServerName: "localhost"}
}

// TestFewGuessesBehindDefaultsDoNotFailOtherUsers: imapgate's defaults
// (forward_client_ip none, connect_timeout 10s, login_timeout 30s, the
// default budgets) in front of a stock Dovecot 2.3 (per-IP auth penalty,
// auth_failure_delay 2s). Dovecot sees every login come from the proxy's
// address, so three wrong guesses by one attacker make it delay the next
// logins of everyone by its penalty (15s). They must be slowed, not
// failed: before login_timeout, they got NO [UNAVAILABLE] after 10s and
// the attacker's guess was refunded.
func TestFewGuessesBehindDefaultsDoNotFailOtherUsers(t *testing.T) {
	t.Parallel()
	d := proxytest.StartDovecot(t, proxytest.DovecotOptions{Users: proxytest.NumberedUsers(5, "Right-Pass-5!"),
		AuthPenalty: true, AuthFailureDelay: 2 * time.Second})
	tp := startProxyTo(t, d.Addr, UpstreamSTARTTLS, dovecotTLS(d), func(c *Config) {
		c.Upstream.ConnectTimeout = 0 // the defaults
		c.Policy = policy.NewGuard(nil, defaultBudgets, nil)
	}, nil)

	threeWrongGuesses(t, tp)
	first := otherUsersLogIn(t, tp, d)
	again := otherUsersLogIn(t, tp, d)
	t.Logf("after 3 wrong guesses from one address, 4 other users from 4 addresses: logins took %v; right after: %v",
		roundAll(first), roundAll(again))
	if len(first) != 4 || len(again) != 4 {
		t.Fatalf("%d and %d of 4 other users logged in", len(first), len(again))
	}
	got := d.WaitAuthAttempts(t, func(a proxytest.AuthCounts) bool { return a.Failure >= 3 })
	if got.Failure != 3 {
		t.Errorf("Dovecot judged %d wrong passwords, want the attacker's 3", got.Failure)
	}
}

// TestDovecotRecipeKeepsOtherUsersFast: the README's Dovecot recipe,
// login_trusted_networks = imapgate's address plus forward_client_ip =
// "id": Dovecot penalises the attacker's own address, and the other users
// are not even slowed.
func TestDovecotRecipeKeepsOtherUsersFast(t *testing.T) {
	t.Parallel()
	d := proxytest.StartDovecot(t, proxytest.DovecotOptions{Users: proxytest.NumberedUsers(5, "Right-Pass-5!"),
		AuthPenalty: true, AuthFailureDelay: 2 * time.Second, TrustedNetworks: "127.0.0.1/32"})
	tp := startProxyTo(t, d.Addr, UpstreamSTARTTLS, dovecotTLS(d), func(c *Config) {
		c.Upstream.ConnectTimeout = 0
		c.Upstream.Forward = ForwardID
		c.Policy = policy.NewGuard(nil, defaultBudgets, nil)
	}, nil)

	threeWrongGuesses(t, tp)
	took := otherUsersLogIn(t, tp, d)
	t.Logf("with the recipe, after 3 wrong guesses from one address, 4 other users' logins took %v", roundAll(took))
	if len(took) != 4 {
		t.Fatalf("%d of 4 other users logged in", len(took))
	}
	if slowest := took[len(took)-1]; slowest > time.Second {
		t.Errorf("the slowest other user took %v: Dovecot penalised more than the attacker", slowest)
	}
	if got := d.AuthAttempts(); got.ByIP["127.0.0.5"] != 3 {
		t.Errorf("Dovecot saw %d attempts from the attacker's address 127.0.0.5 (by IP: %v), want 3", got.ByIP["127.0.0.5"], got.ByIP)
	}
}

func roundAll(ds []time.Duration) []time.Duration {
	out := make([]time.Duration, len(ds))
	for i, d := range ds {
		out[i] = d.Round(time.Millisecond)
	}
	return out
}

// quantile returns the q-quantile (0..1) of sorted durations, nearest rank.
func quantile(sorted []time.Duration, q float64) time.Duration {
	i := int(q*float64(len(sorted))+0.5) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}

// TestRefusedGuessesAnswerWhenRealFailuresDo: a stock Dovecot takes
// about 2s (auth_failure_delay) to say NO. A refused guess never reaches
// it, yet must not be answered sooner, or the time to NO tells a guesser
// which guesses were never tried. With a tiny tarpit (so only the
// upstream's time shows), 12 addresses each spend a budget of one real
// failure, then get two refusals; the median and 90th percentile of the
// two kinds must agree within 25% (runs give 0.94 to 1.11). Before, a
// refusal came after the tarpit alone: 9ms against 2s, a ratio of 0.005.
func TestRefusedGuessesAnswerWhenRealFailuresDo(t *testing.T) {
	const addresses = 12
	d := proxytest.StartDovecot(t, proxytest.DovecotOptions{AuthPenalty: true, AuthFailureDelay: 2 * time.Second, TrustedNetworks: "127.0.0.1/32"})
	tp := startProxyTo(t, d.Addr, UpstreamPlaintext, nil, func(c *Config) {
		c.Upstream.Forward = ForwardID
		c.Policy = policy.NewGuard(nil, policy.Budgets{PerIP: 1, Window: 15 * time.Minute, Delay: time.Millisecond}, nil)
	}, nil)
	guessers := make([]*guesser, addresses)
	for i := range guessers {
		guessers[i] = tp.guesserFrom(t, fmt.Sprintf("127.10.%d.1", i))
	}
	// round runs one guess per address, started 150ms apart (so they meet
	// Dovecot's 500ms flush timer at every phase), and collects the times
	// of the answers that start with want.
	round := func(want string) []time.Duration {
		var mu sync.Mutex
		var times []time.Duration
		var wg sync.WaitGroup
		for i, g := range guessers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				answer, took, err := g.try("user1", fmt.Sprintf("Wrong-%d-%d", i, g.n))
				if err != nil || !strings.HasPrefix(answer, want) {
					t.Errorf("address %d: %q %v, want %s", i, answer, err, want)
					return
				}
				mu.Lock()
				times = append(times, took)
				mu.Unlock()
			}()
			time.Sleep(150 * time.Millisecond)
		}
		wg.Wait()
		return times
	}
	tried := round("NO [AUTHENTICATIONFAILED]")
	refused := append(round("NO [AUTHENTICATIONFAILED]"), round("NO [AUTHENTICATIONFAILED]")...)
	if got := d.AuthAttempts().Failure; got != addresses {
		t.Fatalf("Dovecot judged %d guesses, want one per address, %d", got, addresses)
	}
	slices.Sort(tried)
	slices.Sort(refused)
	realMed, realP90 := quantile(tried, 0.5), quantile(tried, 0.9)
	refMed, refP90 := quantile(refused, 0.5), quantile(refused, 0.9)
	medRatio, p90Ratio := float64(refMed)/float64(realMed), float64(refP90)/float64(realP90)
	t.Logf("time to NO against Dovecot (auth_failure_delay 2s): %d real failures median %v p90 %v; %d refused median %v p90 %v; ratio refused/real median %.2f p90 %.2f",
		len(tried), realMed.Round(time.Millisecond), realP90.Round(time.Millisecond),
		len(refused), refMed.Round(time.Millisecond), refP90.Round(time.Millisecond), medRatio, p90Ratio)
	for _, r := range []float64{medRatio, p90Ratio} {
		if r < 0.75 || r > 1.25 {
			t.Errorf("refused/real time to NO ratio %.2f, want within 25%% of 1", r)
		}
	}
	for _, e := range tp.audit.events(t) {
		if e.Event == EventAuth && e.Result != ResultFailure && e.Result != policy.ResultRateLimited {
			t.Errorf("auth event %s/%s", e.Result, e.Reason)
		}
	}
}
