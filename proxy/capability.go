package proxy

import (
	"strings"

	"github.com/imapgate/imapgate/auth"
)

// handleCapability answers CAPABILITY before login.
func (s *session) handleCapability(cmd *command) next {
	if len(cmd.args) != 0 {
		return s.bad(cmd.tag, "CAPABILITY takes no arguments")
	}
	s.reply("* CAPABILITY " + s.capabilities())
	s.reply(cmd.tag + " OK CAPABILITY completed")
	return stay
}

// capabilities lists what the proxy offers before login: before TLS, no
// way to send a credential (LOGINDISABLED, RFC 3501 6.2.3); after it, the
// SASL mechanisms auth offers on this connection, and LOGIN only if the
// config allows it.
func (s *session) capabilities() string {
	caps := []string{"IMAP4rev1", "ID"}
	if !s.isTLS {
		if s.l.Mode == TLSStartTLS {
			caps = append(caps, "STARTTLS")
		}
		caps = append(caps, "LOGINDISABLED")
		return strings.Join(caps, " ")
	}
	caps = append(caps, "SASL-IR")
	for _, m := range auth.Offered(s.ctx, s.mechanisms(), s.authEnv()) {
		caps = append(caps, "AUTH="+m)
	}
	if !s.cfg.loginOverTLS() {
		caps = append(caps, "LOGINDISABLED")
	}
	return strings.Join(caps, " ")
}

// hiddenCapability reports whether an upstream capability must not reach
// the client after login: it describes the upstream's pre-login state or
// would let the client bypass the proxy. UNAUTHENTICATE (RFC 8437), which
// Cyrus 3.6 offers its admins, would let a logged-in client authenticate
// again straight to the upstream, past imapgate's checks and budgets
// (README "Per-server notes"). The list is fixed; no config key changes it.
func hiddenCapability(c string) bool {
	u := strings.ToUpper(c)
	return u == "STARTTLS" || u == "SASL-IR" || u == "LOGINDISABLED" || u == "UNAUTHENTICATE" || strings.HasPrefix(u, "AUTH=")
}

// clientCapabilities filters the upstream's post-login capabilities for
// the client's tagged OK [CAPABILITY ...].
func clientCapabilities(upstream []string) []string {
	out := make([]string, 0, len(upstream))
	for _, c := range upstream {
		if !hiddenCapability(c) {
			out = append(out, c)
		}
	}
	return out
}
