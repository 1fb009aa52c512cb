package main

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"testing"

	"github.com/imapgate/imapgate/auth"
	"github.com/imapgate/imapgate/auth/credstore"
	"github.com/imapgate/imapgate/auth/oauth"
	"github.com/imapgate/imapgate/auth/scram"
	"github.com/imapgate/imapgate/proxy"
	"github.com/imapgate/imapgate/proxy/proxytest"
)

// TestFail2banBansCredentialFailuresNeverServerErrors: the shipped filter,
// run by Debian's fail2ban-regex, matches every refused token, SCRAM
// proof, certificate, app password and real password where pass-through
// is off (result failure, as the proxy writes them), each from its own
// address, and none of the server's errors (identity provider or
// credential store down, master login refused: result error), whose
// addresses did nothing wrong.
func TestFail2banBansCredentialFailuresNeverServerErrors(t *testing.T) {
	proxytest.RequireTool(t, "fail2ban-regex")
	ban := []struct{ reason, kind string }{
		{oauth.ReasonTokenExpired, auth.CredentialToken},
		{oauth.ReasonTokenAudience, auth.CredentialToken},
		{oauth.ReasonTokenIssuer, auth.CredentialToken},
		{oauth.ReasonTokenSignature, auth.CredentialToken},
		{oauth.ReasonTokenMalformed, auth.CredentialToken},
		{oauth.ReasonTokenNotActive, auth.CredentialToken},
		{oauth.ReasonTokenMailboxMismatch, auth.CredentialToken},
		{oauth.ReasonTokenAlgorithm, auth.CredentialToken},
		{scram.ReasonBadProof, auth.CredentialAppPassword},
		{scram.ReasonUnknownUser, ""},
		{scram.ReasonChannelBindingMismatch, auth.CredentialAppPassword},
		{scram.ReasonChannelBindingDowngrade, ""},
		{credstore.ReasonCertUnknown, auth.CredentialClientCert},
		{credstore.ReasonCertRevoked, auth.CredentialClientCert},
		{credstore.ReasonCertExpired, auth.CredentialClientCert},
		{credstore.ReasonAppPasswordRevoked, auth.CredentialAppPassword},
		{credstore.ReasonAppPasswordExpired, auth.CredentialAppPassword},
		{credstore.ReasonAppPasswordScope, auth.CredentialAppPassword},
		{proxy.ReasonPassthroughDisabled, ""},
	}
	spare := []string{
		oauth.ReasonUnavailable, scram.ReasonUnavailable, proxy.ReasonCredentialStoreError,
		proxy.ReasonMasterLoginFailed, proxy.ReasonMasterMailboxRefused,
	}
	var b bytes.Buffer
	a := proxy.NewAuditor(&b, nil)
	event := func(ip, result, reason, kind string) *proxy.Event {
		ev := &proxy.Event{Event: "auth", Session: "0123456789abcdef01", ClientIP: ip, ClientPort: 1234, Listener: "[::]:993",
			Result: result, Reason: reason, User: "alice", Mechanism: "OAUTHBEARER", Upstream: "mail.internal:143"}
		if kind != "" {
			ev.Credential, ev.CredentialID, ev.CredentialLabel = kind, "id1", `phone","result":"error`
		}
		return ev
	}
	var wantBanned []string
	for i, r := range ban {
		ip := fmt.Sprintf("192.0.2.%d", 10+i)
		a.Log(event(ip, proxy.ResultFailure, r.reason, r.kind))
		wantBanned = append(wantBanned, ip)
	}
	for i, reason := range spare {
		a.Log(event(fmt.Sprintf("198.51.100.%d", 10+i), proxy.ResultError, reason, auth.CredentialToken))
	}
	log := filepath.Join(t.TempDir(), "audit.log")
	os.WriteFile(log, b.Bytes(), 0o644)

	filter, _ := filepath.Abs("deploy/fail2ban/filter.d/imapgate.conf")
	out, err := exec.Command("fail2ban-regex", "--print-all-matched", "--print-no-missed", log, filter).CombinedOutput()
	if err != nil {
		t.Fatalf("fail2ban-regex: %v\n%s", err, out)
	}
	var banned []string
	for _, m := range regexp.MustCompile(`"client_ip":"([0-9.]+)"`).FindAllSubmatch(out, -1) {
		if ip := string(m[1]); !slices.Contains(banned, ip) {
			banned = append(banned, ip)
		}
	}
	slices.Sort(banned)
	slices.Sort(wantBanned)
	if !slices.Equal(banned, wantBanned) {
		t.Errorf("fail2ban-regex matched the addresses %q, want exactly those of the failures %q:\n%s", banned, wantBanned, out)
	}
}
