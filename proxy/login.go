package proxy

import (
	"slices"
	"strings"
	"unicode/utf8"

	"github.com/imapgate/imapgate/auth"
)

// handleLogin handles the LOGIN command. Before TLS it is always refused
// (RFC 3501 LOGINDISABLED, RFC 5530 PRIVACYREQUIRED); after TLS it is refused
// unless the config allows it, with text that tells the user what to change.
// A refused LOGIN never reaches the upstream.
//
// An allowed LOGIN passes exactly the checks AUTHENTICATE PLAIN does
// (auth.CheckCredentials) before the policy check, so a user name with a
// NUL or another control character spends no budget, makes no rate-limit
// key of its own, and never reaches the upstream.
func (s *session) handleLogin(cmd *command) next {
	if len(cmd.args) != 2 || !cmd.args[0].isString() || !cmd.args[1].isString() {
		return s.bad(cmd.tag, "LOGIN expects a user name and a password")
	}
	user := cmd.args[0].value
	if !s.isTLS || !s.cfg.loginOverTLS() {
		return s.refuseLogin(cmd.tag, user)
	}
	creds, err := auth.CheckCredentials(mechanismLogin, "", user, cmd.args[1].value)
	if err != nil {
		ev := s.authEvent(mechanismLogin)
		ev.User = safeUser(user)
		return s.claimRefused(cmd.tag, ev, err)
	}
	return s.attempt(cmd.tag, creds.PassThrough())
}

// mechanismLogin is the auth event's mechanism for the LOGIN command.
const mechanismLogin = "LOGIN"

// refuseLogin answers a LOGIN that policy forbids and logs it.
func (s *session) refuseLogin(tag, user string) next {
	ev := s.authEvent(mechanismLogin)
	ev.Result, ev.User = ResultRefused, safeUser(user)
	if !s.isTLS {
		ev.Reason = ReasonPlaintextLoginRefused
		s.reply(tag + " NO [PRIVACYREQUIRED] Plaintext login is not allowed: use STARTTLS or port 993, then AUTHENTICATE PLAIN.")
	} else {
		ev.Reason = ReasonLoginCommandDisabled
		s.reply(tag + " NO [CANNOT] The LOGIN command is disabled: set your mail client to use a normal password with SSL/TLS (AUTHENTICATE PLAIN).")
	}
	s.cfg.Audit.Log(ev)
	return s.countAuthFailure()
}

// onLiteral is asked before the parser requests a synchronizing literal.
// Before login only LOGIN's user name and password (RFC 3501 6.2.3) and
// the values in ID's list (RFC 2971) may be literals: AUTHENTICATE takes an
// atom mechanism and an atom initial response (RFC 3501 6.2.2, RFC 4959),
// and the other commands take no arguments. Any other literal is answered
// BAD before the client sends it, so no credential announced in one is ever
// requested. A LOGIN that will be refused gets its NO the same way, so a
// password in a literal is never even transmitted.
//
// A LITERAL+ / LITERAL- literal (sync false; the proxy advertises neither)
// is already on its way: it is read within the parser's limits and the
// command's handler answers it.
func (s *session) onLiteral(cmd *command, size int64, sync bool) error {
	if !sync {
		return nil
	}
	switch cmd.name {
	case "LOGIN":
		if !s.isTLS || !s.cfg.loginOverTLS() {
			return &syntaxError{tag: cmd.tag, msg: "LOGIN refused", err: errLiteralRefused}
		}
		if len(cmd.args) == 0 || len(cmd.args) == 1 && cmd.args[0].isString() {
			return nil // the user name or the password
		}
	case "ID":
		if len(cmd.args) > 0 && cmd.args[0].kind == tokLParen &&
			!slices.ContainsFunc(cmd.args, func(t token) bool { return t.kind == tokRParen }) {
			return nil // a field or value inside the list
		}
	}
	return &syntaxError{tag: cmd.tag, msg: "Error in IMAP command " + truncate(cmd.name, 20) + ": no literal allowed here", err: errLiteralNotAllowed}
}

// safeUser bounds and cleans a client-supplied user name for the audit
// log: at most auth.MaxUsernameLength bytes, cut between characters, with
// every character auth.AllowedInUsername refuses (and every byte that is
// not UTF-8) shown as U+FFFD, so a refused name neither garbles the log nor
// reads as another user's ("user1\x00x" is not "user1x"). A name
// auth.CheckUsername accepts comes back unchanged.
func safeUser(u string) string {
	if auth.CheckUsername(u) == nil {
		return u
	}
	var b strings.Builder
	for _, r := range u {
		if !auth.AllowedInUsername(r) {
			r = utf8.RuneError
		}
		if b.Len()+utf8.RuneLen(r) > auth.MaxUsernameLength {
			break
		}
		b.WriteRune(r)
	}
	return b.String()
}
