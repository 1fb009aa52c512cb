package main

import (
	"bytes"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/imapgate/imapgate/proxy/proxytest"
)

// tokenGateOptions start serve in front of d with [auth.oauth] for o:
// OAUTHBEARER and XOAUTH2 offered beside PLAIN, the mailbox in the
// "mailbox" claim, and [upstream.master] to log token holders in.
func startTokenGate(t *testing.T, d *proxytest.Dovecot, o *testOP, policy string) *gate {
	t.Helper()
	return startTokenGateWith(t, d, o, policy, `"PLAIN", "OAUTHBEARER", "XOAUTH2"`)
}

// startTokenGateWith is startTokenGate offering mechanisms (a TOML list's
// elements).
func startTokenGateWith(t *testing.T, d *proxytest.Dovecot, o *testOP, policy, mechanisms string) *gate {
	t.Helper()
	dir := t.TempDir()
	secretFile := filepath.Join(dir, "master.secret")
	if err := os.WriteFile(secretFile, []byte(e2eMasterSecret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return startGate(t, gateOptions{
		upstream: dovecotUpstream(d, "starttls") + "\n\n" + masterTable(secretFile),
		auth: fmt.Sprintf("mechanisms = [%s]\n\n[auth.oauth]\nissuer = %q\naudience = [%q]\nmailbox_claim = \"mailbox\"\nscope = \"openid email\"\n",
			mechanisms, o.issuer, opMailApp),
		policy:  policy,
		secrets: append(secretsOf(d), e2eMasterSecret),
	})
}

// keepSecret adds token, and the SASL messages that carry it, to what the
// gate's cleanup looks for in every log it wrote.
func (g *gate) keepSecret(token string) {
	parts := strings.Split(token, ".")
	g.secrets = append(g.secrets, token, parts[len(parts)-1],
		base64.StdEncoding.EncodeToString(oauthBearerMsg("user1", token)),
		base64.StdEncoding.EncodeToString(xoauth2Msg("user1", token)))
}

func oauthBearerMsg(user, token string) []byte {
	a := ""
	if user != "" {
		a = "a=" + user
	}
	return []byte("n," + a + ",\x01auth=Bearer " + token + "\x01\x01")
}

func xoauth2Msg(user, token string) []byte {
	return []byte("user=" + user + "\x01auth=Bearer " + token + "\x01\x01")
}

// waitAuthEvents waits until g's audit log holds n auth events (the
// audit writer is asynchronous).
func (g *gate) waitAuthEvents(t *testing.T, n int) {
	t.Helper()
	waitFor(t, func() bool { return len(g.authEvents(t)) >= n })
}

// curlWithToken runs curl against g with a bearer token for login, the
// URL's user part: "user1" (curl picks OAUTHBEARER when offered) or
// "user1;AUTH=XOAUTH2" (RFC 5092's login options).
func curlWithToken(g *gate, login, token, url string, extra ...string) ([]byte, error) {
	args := append([]string{"-sS", "--max-time", "20", "--cacert", g.caFile, "--oauth2-bearer", token}, extra...)
	return exec.Command("curl", append(args, "imaps://"+login+"@"+g.implicit+url)...).CombinedOutput()
}

// imaplibWithToken runs the imaplib token client; its exit code is 0 for a
// login, 2 for a refusal.
func imaplibWithToken(t *testing.T, g *gate, mech, user, token string) (string, int) {
	t.Helper()
	host, port, _ := strings.Cut(g.implicit, ":")
	var stderr bytes.Buffer
	cmd := exec.Command("python3", "testdata/clients/imaplib_oauth.py", mech, host, port, g.caFile, user, token)
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	var exit *exec.ExitError
	switch {
	case err == nil:
		return string(out), 0
	case errors.As(err, &exit) && exit.ExitCode() == 2:
		return string(out), 2
	}
	t.Fatalf("imaplib %s: %v\nstdout: %s\nstderr: %s", mech, err, out, stderr.String())
	return "", 1
}

// TestTokenLoginsThroughServeAgainstDovecot: a mail app logs in at the
// identity provider (zitadel's example OP, the authorization code flow)
// and sends its access token to imapgate: curl with --oauth2-bearer
// (OAUTHBEARER, which curl picks when offered, and XOAUTH2 with
// --login-options) and Python's imaplib (XOAUTH2 and OAUTHBEARER, the
// message from a callable) all land in user1's own INBOX on the real
// Dovecot, through its master passdb. The audit names the token (jti) and
// the application it was issued to; neither Dovecot's log nor imapgate's
// hold the token.
func TestTokenLoginsThroughServeAgainstDovecot(t *testing.T) {
	proxytest.RequireTool(t, "curl")
	proxytest.RequireTool(t, "python3")
	d := proxytest.StartDovecot(t, proxytest.DovecotOptions{Messages: 3, MasterUsers: map[string]string{e2eMaster: e2eMasterSecret}})
	o := startOP(t, nil)
	g := startTokenGate(t, d, o, "")
	token := o.login(t, opMailApp, opUser1Login)
	g.keepSecret(token)

	c := g.dialTLS(t)
	c.send("c CAPABILITY")
	if caps := c.expect("* CAPABILITY"); !strings.Contains(caps, "AUTH=OAUTHBEARER") || !strings.Contains(caps, "AUTH=XOAUTH2") {
		t.Fatalf("capabilities %q", caps)
	}
	out, err := curlWithToken(g, "user1", token, "/INBOX?ALL")
	if err != nil || !strings.Contains(string(out), "SEARCH 1 2 3") {
		t.Fatalf("curl OAUTHBEARER: %v: %q", err, out)
	}
	// curl 7.88 keeps to OAUTHBEARER while it is offered, whatever
	// AUTH=XOAUTH2 says (--login-options or the URL's ;AUTH=): a listener
	// offering XOAUTH2 alone makes it speak XOAUTH2.
	x := startTokenGateWith(t, d, o, "", `"PLAIN", "XOAUTH2"`)
	x.keepSecret(token)
	out, err = curlWithToken(x, "user1", token, "/INBOX?ALL", "--login-options", "AUTH=XOAUTH2")
	if err != nil || !strings.Contains(string(out), "SEARCH 1 2 3") {
		t.Fatalf("curl XOAUTH2: %v: %q", err, out)
	}
	for _, mech := range []string{"xoauth2", "oauthbearer"} {
		if out, code := imaplibWithToken(t, g, mech, "user1", token); code != 0 || !strings.Contains(out, "SELECT OK 3") {
			t.Fatalf("imaplib %s: exit %d: %s", mech, code, out)
		}
	}

	got := d.WaitAuthAttempts(t, func(c proxytest.AuthCounts) bool {
		return c.MasterLogins[proxytest.MasterUse{Master: e2eMaster, User: "user1"}] >= 4
	})
	if got.Failure != 0 {
		t.Errorf("Dovecot saw %d failed logins", got.Failure)
	}
	if d.LogContains(token) || d.LogContains(strings.Split(token, ".")[2]) {
		t.Error("Dovecot's log holds the token")
	}
	g.waitAuthEvents(t, 3)
	x.waitAuthEvents(t, 1)
	byMech := map[string]int{}
	for _, e := range append(g.events(t), x.events(t)...) {
		if e["event"] == "auth" && e["result"] == "success" && e["user"] == "user1" &&
			e["credential"] == "oauth_token" && e["credential_label"] == opMailApp && e["credential_id"] != "" && e["credential_id"] != nil {
			byMech[e["mechanism"].(string)]++
		}
	}
	if byMech["OAUTHBEARER"] != 2 || byMech["XOAUTH2"] != 2 {
		t.Errorf("audit: token successes by mechanism %v, want 2 OAUTHBEARER and 2 XOAUTH2", byMech)
	}
}

// TestBadTokensAreRefusedWithTheirReasons: expired, another application's,
// another issuer's (a tenant sharing the signing key), forged and another
// user's tokens are answered with the RFC 7628 error challenge (naming the
// provider's discovery document and the scope), then NO after the
// client's dummy response, each audited with its reason, and nothing
// reaches Dovecot. Python's imaplib sees the same over XOAUTH2, and curl
// fails.
func TestBadTokensAreRefusedWithTheirReasons(t *testing.T) {
	proxytest.RequireTool(t, "curl")
	proxytest.RequireTool(t, "python3")
	d := proxytest.StartDovecot(t, proxytest.DovecotOptions{MasterUsers: map[string]string{e2eMaster: e2eMasterSecret}})
	o := startOP(t, nil)
	tenant := startOP(t, o.key)
	g := startTokenGate(t, d, o, "auth_failures_per_ip = 100\nauth_failures_per_user = 100")
	good := o.login(t, opMailApp, opUser1Login)
	forger, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name, user, token, reason string
	}{
		{"expired", "user1", resign(t, good, o.key.priv, o.key.id, func(c map[string]any) {
			c["iat"], c["exp"] = time.Now().Add(-2*time.Hour).Unix(), time.Now().Add(-time.Hour).Unix()
		}), "token_expired"},
		{"another application", "user1", o.login(t, opOtherApp, opUser1Login), "token_audience"},
		{"another issuer", "user1", tenant.login(t, opMailApp, opUser1Login), "token_issuer"},
		{"forged signature", "user1", resign(t, good, forger, o.key.id, nil), "token_signature"},
		{"another user's", "user1", o.login(t, opMailApp, opUser2Login), "token_mailbox_mismatch"},
	}
	for _, c := range cases {
		g.keepSecret(c.token)
	}
	g.keepSecret(good)
	discovery := `"openid-configuration":"` + o.issuer + `/.well-known/openid-configuration"`
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := g.dialTLS(t)
			c.send("a AUTHENTICATE OAUTHBEARER " + base64.StdEncoding.EncodeToString(oauthBearerMsg(tc.user, tc.token)))
			challenge, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(c.expect("+ "), "+ "))
			var status struct{ Status, Scope string }
			if err != nil || json.Unmarshal(challenge, &status) != nil || status.Status != "invalid_token" || status.Scope != "openid email" ||
				!strings.Contains(string(challenge), discovery) {
				t.Fatalf("error challenge %q (%v)", challenge, err)
			}
			c.send("AQ==") // %x01, the dummy response
			c.expect("a NO [AUTHENTICATIONFAILED]")
		})
	}
	out, code := imaplibWithToken(t, g, "xoauth2", "user1", cases[0].token)
	if code != 2 || !strings.Contains(out, `CHALLENGE {"status":"401","schemes":"Bearer","scope":"openid email"}`) {
		t.Errorf("imaplib XOAUTH2 with an expired token: exit %d: %s", code, out)
	}
	if out, err := curlWithToken(g, "user1", cases[3].token, "/INBOX?ALL"); err == nil {
		t.Errorf("curl with a forged token logged in: %q", out)
	}

	g.waitAuthEvents(t, 7)
	var reasons []string
	for _, e := range g.events(t) {
		if e["event"] == "auth" && e["result"] == "failure" && e["credential"] == "oauth_token" {
			reasons = append(reasons, e["mechanism"].(string)+"/"+e["reason"].(string))
		}
	}
	want := []string{"OAUTHBEARER/token_expired", "OAUTHBEARER/token_audience", "OAUTHBEARER/token_issuer",
		"OAUTHBEARER/token_signature", "OAUTHBEARER/token_mailbox_mismatch", "XOAUTH2/token_expired", "OAUTHBEARER/token_signature"}
	if strings.Join(reasons, " ") != strings.Join(want, " ") {
		t.Errorf("audit failures\n got %q\nwant %q", reasons, want)
	}
	if n := d.AuthAttempts(); n.Success+n.Failure != 0 {
		t.Errorf("Dovecot saw %d logins and %d failures: a refused token reached it", n.Success, n.Failure)
	}
}

// TestForgedTokensAreHeldToTheBudgets: guessing with forged tokens spends
// the same budgets as guessing passwords. Naming user1, the third forgery
// locks the user (auth_failures_per_user = 3), and then even user1's real
// token is refused from that network; naming no mailbox (OAUTHBEARER
// without a=), the address budget (auth_failures_per_ip = 4) stops them.
// None of it reaches Dovecot.
func TestForgedTokensAreHeldToTheBudgets(t *testing.T) {
	d := proxytest.StartDovecot(t, proxytest.DovecotOptions{MasterUsers: map[string]string{e2eMaster: e2eMasterSecret}})
	o := startOP(t, nil)
	g := startTokenGate(t, d, o, "auth_failures_per_ip = 4\nauth_failures_per_user = 3")
	good := o.login(t, opMailApp, opUser1Login)
	forger, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	g.keepSecret(good)
	try := func(source, user, token string) string {
		t.Helper()
		c := g.dialTLSFrom(t, source)
		c.send("a AUTHENTICATE OAUTHBEARER " + base64.StdEncoding.EncodeToString(oauthBearerMsg(user, token)))
		line := c.expect("")
		if strings.HasPrefix(line, "+ ") {
			c.send("AQ==")
			line = c.expect("a ")
		}
		return line
	}
	forge := func() string {
		f := resign(t, good, forger, o.key.id, func(c map[string]any) { c["jti"] = rand.Text() })
		g.keepSecret(f)
		return f
	}
	for i := range 3 {
		if line := try("127.0.0.2", "user1", forge()); !strings.HasPrefix(line, "a NO [AUTHENTICATIONFAILED]") {
			t.Fatalf("forgery %d: %q", i+1, line)
		}
	}
	for _, token := range []string{forge(), good} {
		if line := try("127.0.0.2", "user1", token); !strings.HasPrefix(line, "a NO") {
			t.Fatalf("after the user budget: %q", line)
		}
	}
	for i := range 5 {
		line := try("127.0.0.3", "", forge())
		if !strings.HasPrefix(line, "a NO") {
			t.Fatalf("forgery %d without a mailbox: %q", i+1, line)
		}
	}
	g.waitAuthEvents(t, 10)
	var got []string
	for _, e := range g.events(t) {
		if e["event"] == "auth" {
			r, _ := e["reason"].(string)
			got = append(got, fmt.Sprintf("%s %v/%s", e["client_ip"], e["result"], r))
		}
	}
	want := []string{
		"127.0.0.2 failure/token_signature", "127.0.0.2 failure/token_signature", "127.0.0.2 failure/token_signature",
		"127.0.0.2 locked/user_locked", "127.0.0.2 locked/user_locked",
		"127.0.0.3 failure/token_signature", "127.0.0.3 failure/token_signature", "127.0.0.3 failure/token_signature",
		"127.0.0.3 failure/token_signature", "127.0.0.3 ratelimited/ip_rate_limited",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("audit\n got %q\nwant %q", got, want)
	}
	if n := d.AuthAttempts(); n.Success+n.Failure != 0 {
		t.Errorf("Dovecot saw %d logins and %d failures", n.Success, n.Failure)
	}
}

// TestProviderDownAtStartDoesNotStopServe: with the identity provider down
// when serve starts, serve runs, passwords work, and token logins get
// NO [UNAVAILABLE] (oauth_unavailable, not counted, no error challenge)
// until the background discovery reaches the provider; then the same token
// logs in.
func TestProviderDownAtStartDoesNotStopServe(t *testing.T) {
	d := proxytest.StartDovecot(t, proxytest.DovecotOptions{MasterUsers: map[string]string{e2eMaster: e2eMasterSecret}})
	o := startOP(t, nil)
	token := o.login(t, opMailApp, opUser1Login)
	o.down.Store(true)
	g := startTokenGate(t, d, o, "")
	g.keepSecret(token)

	c := g.dialTLS(t)
	c.send("p AUTHENTICATE PLAIN " + plainIR("user2", d.Users["user2"]))
	c.expect("p OK")
	c = g.dialTLS(t)
	c.send("a AUTHENTICATE OAUTHBEARER " + base64.StdEncoding.EncodeToString(oauthBearerMsg("user1", token)))
	c.expect("a NO [UNAVAILABLE]")

	o.down.Store(false)
	deadline := time.Now().Add(20 * time.Second)
	for !strings.Contains(g.stderr.String(), "oauth: discovery succeeded") {
		if time.Now().After(deadline) {
			t.Fatalf("discovery did not succeed after the provider came back: %s", tail(g.stderr.String(), 2000))
		}
		time.Sleep(50 * time.Millisecond)
	}
	c = g.dialTLS(t)
	c.send("b AUTHENTICATE OAUTHBEARER " + base64.StdEncoding.EncodeToString(oauthBearerMsg("user1", token)))
	c.expect("b OK")
	g.waitAuthEvents(t, 3)
	if got := g.authEvents(t); strings.Join(got, " ") != "success/ error/oauth_unavailable success/" {
		t.Errorf("audit %q", got)
	}
}
