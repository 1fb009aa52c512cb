package proxy

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/imapgate/imapgate/proxy/proxytest"
	"github.com/imapgate/imapgate/tlsconf"
)

// Cyrus IMAP 3.6 from Debian, the real server, behind imapgate's
// upstream login (README "Per-server notes").

func cyrusUpstream(t *testing.T, c *proxytest.Cyrus, mode UpstreamTLS) *Upstream {
	t.Helper()
	u := &Upstream{Address: c.Addr, TLS: mode, ConnectTimeout: 5 * time.Second, LoginTimeout: 10 * time.Second}
	if mode == UpstreamImplicit {
		u.Address = c.ImplicitAddr
	}
	if mode != UpstreamPlaintext {
		tc, err := tlsconf.UpstreamConfig(tlsconf.UpstreamOptions{ServerName: "localhost", CAFile: c.CAFile})
		if err != nil {
			t.Fatal(err)
		}
		u.TLSConfig = tc
	}
	return u
}

// TestCyrusPassThroughInEveryTLSMode: the user's own password logs in
// over plaintext, STARTTLS and implicit TLS, with both login commands,
// and lands in the user's INBOX; a wrong password is the user's failure.
// Cyrus lists LOGINDISABLED among its post-login capabilities: the
// client never sees it.
func TestCyrusPassThroughInEveryTLSMode(t *testing.T) {
	c := proxytest.StartCyrus(t, proxytest.CyrusOptions{Messages: 3})
	for _, mode := range []UpstreamTLS{UpstreamPlaintext, UpstreamSTARTTLS, UpstreamImplicit} {
		for _, method := range []LoginMethod{LoginAuto, LoginPlain, LoginLogin} {
			t.Run(string(mode)+"/"+string(method), func(t *testing.T) {
				u := cyrusUpstream(t, c, mode)
				u.Method = method
				uc, err := u.Login(context.Background(), "user1", c.Users["user1"], ClientInfo{Session: "s"})
				if err != nil {
					t.Fatal(err)
				}
				caps := clientCapabilities(uc.Capabilities)
				if !slices.Contains(caps, "IDLE") || slices.ContainsFunc(caps, hiddenCapability) {
					t.Errorf("client capabilities %q", caps)
				}
				if exists, _ := inbox(t, uc, "x"); exists != 3 {
					t.Errorf("INBOX holds %d messages, want 3", exists)
				}
			})
		}
		// Cyrus waits a few seconds before each NO: once per mode.
		_, err := cyrusUpstream(t, c, mode).Login(context.Background(), "user1", "Wrong-Pass-1", ClientInfo{})
		if !errors.Is(err, ErrBadCredentials) {
			t.Errorf("%s: wrong password: %v, want ErrBadCredentials", mode, err)
		}
	}
}

// TestCyrusProxyServersMasterLogin: a user listed in Cyrus's
// proxyservers logs in as any mailbox with SASL PLAIN (authzid the
// mailbox, authcid itself): imapgate's sasl-authzid master form lands in
// that mailbox. The same master form from a user who is not a proxy
// server is refused, and it is ErrMasterRejected, never the client's
// bad password.
func TestCyrusProxyServersMasterLogin(t *testing.T) {
	c := proxytest.StartCyrus(t, proxytest.CyrusOptions{
		Users:        map[string]string{"user1": "pass1-Secret!", "user2": "pass2-Secret!", "bystander": "bystander-Secret1"},
		Messages:     2,
		ProxyServers: map[string]string{"imapgate": "master-Secret1"},
	})
	u := cyrusUpstream(t, c, UpstreamSTARTTLS)
	u.Master = &MasterLogin{User: "imapgate", Secret: NewSecret("master-Secret1")}
	for _, mailbox := range []string{"user1", "user2"} {
		uc, err := u.LoginAs(context.Background(), mailbox, ClientInfo{Session: "s"})
		if err != nil {
			t.Fatalf("LoginAs %s: %v", mailbox, err)
		}
		if exists, _ := inbox(t, uc, "x"); exists != 2 {
			t.Errorf("%s's INBOX holds %d messages, want 2", mailbox, exists)
		}
	}

	notProxy := cyrusUpstream(t, c, UpstreamSTARTTLS)
	notProxy.Master = &MasterLogin{User: "bystander", Secret: NewSecret("bystander-Secret1")}
	_, err := notProxy.LoginAs(context.Background(), "user1", ClientInfo{})
	if !errors.Is(err, ErrMasterRejected) && !errors.Is(err, ErrMailboxRefused) {
		t.Fatalf("a user outside proxyservers acting for user1: %v, want the master refused", err)
	}
	if errors.Is(err, ErrBadCredentials) {
		t.Fatal("a refused master login counted as the client's bad password")
	}
}
