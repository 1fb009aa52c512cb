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

// Courier IMAP 5 from Debian, the real server (README "Per-server
// notes"). Courier offers AUTH=PLAIN only after TLS, has neither
// LITERAL+ nor SASL-IR nor ID, and answers LOGIN with a bare "OK LOGIN
// Ok." that carries no capabilities.

func courierUpstream(t *testing.T, c *proxytest.Courier, mode UpstreamTLS, method LoginMethod) *Upstream {
	t.Helper()
	u := &Upstream{Address: c.Addr, TLS: mode, Method: method, ConnectTimeout: 5 * time.Second, LoginTimeout: 10 * time.Second}
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

// TestCourierPassThroughInEveryTLSMode: the user's own password logs in
// in every TLS mode, lands in the user's INBOX, and the relay gets the
// post-login capabilities even though Courier's OK carries none. A
// password that needs a literal (not ASCII) goes as a synchronizing
// literal, the only kind Courier takes, and still logs in. ID, which
// Courier does not offer, is not sent: forward_client_ip = "id" does not
// break the login.
func TestCourierPassThroughInEveryTLSMode(t *testing.T) {
	c := proxytest.StartCourier(t, proxytest.CourierOptions{
		Users:    map[string]string{"user1": "pass1-Secret!", "umlaut": "pässwörd-Ünïcode-1"},
		Messages: 3,
	})
	for _, mode := range []UpstreamTLS{UpstreamPlaintext, UpstreamSTARTTLS, UpstreamImplicit} {
		for _, method := range []LoginMethod{LoginAuto, LoginPlain, LoginLogin} {
			for _, user := range []string{"user1", "umlaut"} {
				t.Run(string(mode)+"/"+string(method)+"/"+user, func(t *testing.T) {
					u := courierUpstream(t, c, mode, method)
					u.Forward = ForwardID
					uc, err := u.Login(context.Background(), user, c.Users[user], ClientInfo{Session: "s"})
					if mode == UpstreamPlaintext && method == LoginPlain {
						// No AUTH=PLAIN before TLS: nothing is sent.
						if !errors.Is(err, ErrUpstreamProtocol) {
							t.Fatalf("plain without AUTH=PLAIN: %v, want ErrUpstreamProtocol", err)
						}
						return
					}
					if err != nil {
						t.Fatal(err)
					}
					if caps := clientCapabilities(uc.Capabilities); !slices.Contains(caps, "IDLE") || slices.ContainsFunc(caps, hiddenCapability) {
						t.Errorf("client capabilities %q", caps)
					}
					if exists, _ := inbox(t, uc, "x"); exists != 3 {
						t.Errorf("INBOX holds %d messages, want 3", exists)
					}
				})
			}
		}
	}
	_, err := courierUpstream(t, c, UpstreamSTARTTLS, LoginAuto).Login(context.Background(), "user1", "Wrong-Pass-1", ClientInfo{})
	if !errors.Is(err, ErrBadCredentials) {
		t.Errorf("wrong password: %v, want ErrBadCredentials", err)
	}
}
