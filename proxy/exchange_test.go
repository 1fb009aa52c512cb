package proxy

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/imapgate/imapgate/proxy/proxytest"
	"github.com/imapgate/imapgate/tlsconf"
)

// Exchange's habits, each proved against the Exchange-like server of
// proxytest (README "Per-server notes").

// exchangeUpstream is an Upstream for x over STARTTLS with its
// self-signed certificate pinned, the way an Exchange site configures it.
func exchangeUpstream(t *testing.T, x *proxytest.ExchangeLike, mod func(*Upstream)) *Upstream {
	t.Helper()
	tc, err := tlsconf.UpstreamConfig(tlsconf.UpstreamOptions{ServerName: "localhost", PinSHA256: x.Pin})
	if err != nil {
		t.Fatal(err)
	}
	u := &Upstream{Address: x.Addr, TLS: UpstreamSTARTTLS, TLSConfig: tc, UserTemplate: `CORP\{local}`,
		ConnectTimeout: 5 * time.Second, LoginTimeout: 5 * time.Second}
	if mod != nil {
		mod(u)
	}
	return u
}

func exchangeLogin(t *testing.T, u *Upstream, user, pass string) (*UpstreamConn, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	uc, err := u.Login(ctx, user, pass, ClientInfo{Session: "s1"})
	if uc != nil {
		t.Cleanup(func() { uc.Conn.Close() })
	}
	return uc, err
}

// TestExchangeCapabilitiesOnlyComeFromAnExplicitCapability: Exchange's
// greeting and its tagged OK carry no capabilities, and before STARTTLS
// it lists LOGINDISABLED, not AUTH=PLAIN. The login method "auto" still
// finds AUTH=PLAIN (it asks CAPABILITY after TLS), and the connection
// handed to the relay knows the post-login capabilities (asked again
// after the OK).
func TestExchangeCapabilitiesOnlyComeFromAnExplicitCapability(t *testing.T) {
	x := proxytest.StartExchangeLike(t, proxytest.ExchangeLikeOptions{})
	uc, err := exchangeLogin(t, exchangeUpstream(t, x, nil), "user1@corp.example", x.Users["user1"])
	if err != nil {
		t.Fatal(err)
	}
	if got := x.Logins(); len(got) != 1 || got[0] != (proxytest.ExchangeLogin{Command: "AUTHENTICATE PLAIN", User: `CORP\user1`, OK: true}) {
		t.Fatalf("Exchange saw %+v; want one AUTHENTICATE PLAIN as CORP\\user1", got)
	}
	if !slices.Contains(uc.Capabilities, "IDLE") {
		t.Fatalf("post-login capabilities %q lack IDLE: not asked after an OK without them", uc.Capabilities)
	}
}

// TestExchangeAdvertisedButRefusedPlain: some Exchange builds advertise
// AUTH=PLAIN and answer every AUTHENTICATE PLAIN "NO AUTHENTICATE
// failed.", the right password included. That answer cannot be told from
// a wrong password, so "auto" does not retry with LOGIN (a second try
// would count twice against the account's lockout in Active Directory):
// it is the user's failure, once; login = "login" is the setting for
// such a server, and then the same password logs in.
func TestExchangeAdvertisedButRefusedPlain(t *testing.T) {
	x := proxytest.StartExchangeLike(t, proxytest.ExchangeLikeOptions{RefusePlain: true})
	pass := x.Users["user1"]

	_, err := exchangeLogin(t, exchangeUpstream(t, x, nil), "user1", pass)
	if !errors.Is(err, ErrBadCredentials) {
		t.Fatalf("auto against a refused PLAIN: %v, want ErrBadCredentials", err)
	}
	forced := exchangeUpstream(t, x, func(u *Upstream) { u.Method = LoginLogin })
	if _, err := exchangeLogin(t, forced, "user1", pass); err != nil {
		t.Fatalf("login = \"login\": %v", err)
	}
	want := []proxytest.ExchangeLogin{
		{Command: "AUTHENTICATE PLAIN", User: `CORP\user1`, OK: false},
		{Command: "LOGIN", User: `CORP\user1`, OK: true},
	}
	if got := x.Logins(); !slices.Equal(got, want) {
		t.Fatalf("Exchange saw %+v, want %+v", got, want)
	}
}

// TestUserTemplateGivesExchangeTheNameItWants: the client types what it
// knows (a bare name, an e-mail address, or DOMAIN\user itself), and the
// upstream gets the DOMAIN\user or UPN form. Exchange's own record of
// the names it received is the witness.
func TestUserTemplateGivesExchangeTheNameItWants(t *testing.T) {
	x := proxytest.StartExchangeLike(t, proxytest.ExchangeLikeOptions{})
	pass := x.Users["user1"]
	tests := []struct {
		name, template, typed, sent string
		ok                          bool
	}{
		{"no template, bare name", "", "user1", "user1", false},
		{"no template, the client types DOMAIN\\user", "", `CORP\user1`, `CORP\user1`, true},
		{"domain-backslash from an address", `CORP\{local}`, "user1@corp.example", `CORP\user1`, true},
		{"domain-backslash from a bare name", `CORP\{local}`, "user1", `CORP\user1`, true},
		{"UPN from a bare name", "{local}@corp.example", "user1", "user1@corp.example", true},
		{"UPN kept as typed", "{user}", "user1@corp.example", "user1@corp.example", true},
	}
	for _, method := range []LoginMethod{LoginLogin, LoginPlain} {
		for _, tt := range tests {
			t.Run(string(method)+"/"+tt.name, func(t *testing.T) {
				before := len(x.Logins())
				u := exchangeUpstream(t, x, func(u *Upstream) { u.UserTemplate, u.Method = tt.template, method })
				_, err := exchangeLogin(t, u, tt.typed, pass)
				if tt.ok != (err == nil) || (!tt.ok && !errors.Is(err, ErrBadCredentials)) {
					t.Fatalf("login as %q: %v, want ok=%v", tt.typed, err, tt.ok)
				}
				got := x.Logins()[before:]
				if len(got) != 1 || got[0].User != tt.sent {
					t.Fatalf("Exchange saw %+v, want one login as %q", got, tt.sent)
				}
			})
		}
	}
}

// TestLongExchangeCapabilityLines: a CAPABILITY line of tens of
// kilobytes (Exchange with many extensions, or a padded one) is read
// whole; one over the 64 KiB line limit ends the login as unavailable
// before any credential is sent, not with a hang or a partial list.
func TestLongExchangeCapabilityLines(t *testing.T) {
	long := proxytest.StartExchangeLike(t, proxytest.ExchangeLikeOptions{CapabilityPadding: 30_000})
	uc, err := exchangeLogin(t, exchangeUpstream(t, long, nil), "user1", long.Users["user1"])
	if err != nil {
		t.Fatalf("30 KB CAPABILITY line: %v", err)
	}
	if len(uc.Capabilities) == 0 {
		t.Fatal("no post-login capabilities")
	}
	if got := long.Logins(); len(got) != 1 || got[0].Command != "AUTHENTICATE PLAIN" {
		t.Fatalf("Exchange saw %+v: AUTH=PLAIN, early in the long line, was not seen", got)
	}

	tooLong := proxytest.StartExchangeLike(t, proxytest.ExchangeLikeOptions{CapabilityPadding: 70_000})
	_, err = exchangeLogin(t, exchangeUpstream(t, tooLong, nil), "user1", tooLong.Users["user1"])
	if !errors.Is(err, ErrUnavailable) || errors.Is(err, ErrNoAnswer) {
		t.Fatalf("70 KB CAPABILITY line: %v, want ErrUnavailable before the credential", err)
	}
	if got := tooLong.Logins(); len(got) != 0 {
		t.Fatalf("a credential reached the server: %+v", got)
	}
}

// TestPinnedSelfSignedExchangeCertificate: Exchange's self-signed
// certificate is trusted by its pin alone, over STARTTLS and implicit
// TLS; without the pin (system roots) or with another pin, nothing is
// sent.
func TestPinnedSelfSignedExchangeCertificate(t *testing.T) {
	x := proxytest.StartExchangeLike(t, proxytest.ExchangeLikeOptions{})
	other, _, _ := tlsconf.SelfSigned(time.Hour, "localhost")
	otherLeaf, _ := x509.ParseCertificate(other.Certificate[0])
	pinned := func(pin string) *tls.Config {
		tc, err := tlsconf.UpstreamConfig(tlsconf.UpstreamOptions{ServerName: "localhost", PinSHA256: pin})
		if err != nil {
			t.Fatal(err)
		}
		return tc
	}
	tests := []struct {
		name string
		mod  func(*Upstream)
		ok   bool
	}{
		{"starttls, pinned", nil, true},
		{"implicit, pinned", func(u *Upstream) { u.Address, u.TLS = x.ImplicitAddr, UpstreamImplicit }, true},
		{"system roots", func(u *Upstream) { u.TLSConfig = &tls.Config{ServerName: "localhost"} }, false},
		{"another pin", func(u *Upstream) { u.TLSConfig = pinned(tlsconf.SPKIPin(otherLeaf)) }, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := len(x.Logins())
			_, err := exchangeLogin(t, exchangeUpstream(t, x, tt.mod), "user1", x.Users["user1"])
			if tt.ok && err != nil {
				t.Fatal(err)
			}
			if !tt.ok && (!errors.Is(err, ErrUnavailable) || len(x.Logins()) != before) {
				t.Fatalf("%v, and Exchange saw %d logins; want ErrUnavailable and none", err, len(x.Logins())-before)
			}
		})
	}
}

func TestUpstreamUserTemplate(t *testing.T) {
	tests := []struct{ template, typed, want string }{
		{"", "alice@corp.example", "alice@corp.example"},
		{`CORP\{local}`, "alice@corp.example", `CORP\alice`},
		{`CORP\{local}`, "alice", `CORP\alice`},
		{"{local}@corp.example", "alice", "alice@corp.example"},
		{"{local}@corp.example", "alice@old.example", "alice@corp.example"},
		{`{domain}\{local}`, "alice@CORP", `CORP\alice`},
		{"{local}", "a@b@c.example", "a@b"},
		{"{user}", "alice@corp.example", "alice@corp.example"},
		// What the client types is never read as a template.
		{`CORP\{local}`, "{domain}{user}", `CORP\{domain}{user}`},
	}
	for _, tt := range tests {
		u := &Upstream{UserTemplate: tt.template}
		if got := u.UpstreamUser(tt.typed); got != tt.want {
			t.Errorf("template %q, typed %q: %q, want %q", tt.template, tt.typed, got, tt.want)
		}
	}
}

func TestCheckUserTemplate(t *testing.T) {
	for tmpl, ok := range map[string]bool{
		"": true, "{user}": true, `CORP\{local}`: true, "{local}@corp.example": true, `{domain}\{local}`: true,
		"CORP": false, "{domain}": false, "{local}{": false, "{name}": false, "{Local}": false,
		"{local} x": false, `"{local}"`: false, "{local}\x00": false,
	} {
		if err := CheckUserTemplate(tmpl); (err == nil) != ok {
			t.Errorf("CheckUserTemplate(%q) = %v, want ok=%v", tmpl, err, ok)
		}
	}
}
