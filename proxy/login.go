package proxy

// handleLogin handles the LOGIN command. Before TLS it is always refused
// (RFC 3501 LOGINDISABLED, RFC 5530 PRIVACYREQUIRED); after TLS it is refused
// unless the config allows it, with text that tells the user what to change.
// A refused LOGIN never reaches the upstream.
func (s *session) handleLogin(cmd *command) (done, keep bool) {
	if len(cmd.args) != 2 || !cmd.args[0].isString() || !cmd.args[1].isString() {
		return false, s.bad(cmd.tag, "LOGIN expects a user name and a password")
	}
	user := cmd.args[0].value
	if !s.isTLS || !s.cfg.AllowLoginOverTLS {
		return false, s.refuseLogin(cmd.tag, user)
	}
	return s.login(cmd.tag, "LOGIN", user, cmd.args[1].value)
}

// refuseLogin answers a LOGIN that policy forbids and logs it.
func (s *session) refuseLogin(tag, user string) bool {
	ev := s.event(EventAuth)
	ev.Result, ev.Mechanism, ev.User, ev.ClientID = ResultRefused, "LOGIN", safeUser(user), s.clientID
	if !s.isTLS {
		ev.Reason = "plaintext_login_refused"
		s.reply(tag + " NO [PRIVACYREQUIRED] Plaintext login is not allowed: use STARTTLS or port 993, then AUTHENTICATE PLAIN.")
	} else {
		ev.Reason = "login_command_disabled"
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
		if !s.isTLS || !s.cfg.AllowLoginOverTLS {
			return &syntaxError{tag: cmd.tag, msg: "LOGIN refused", err: errLiteralRefused}
		}
		if len(cmd.args) < 2 {
			return nil
		}
	case "ID":
		if len(cmd.args) > 0 && cmd.args[0].kind == tokLParen {
			return nil
		}
	}
	return &syntaxError{tag: cmd.tag, msg: "Error in IMAP command " + truncate(cmd.name, 20) + ": no literal allowed here", err: errLiteralNotAllowed}
}

// safeUser bounds and cleans a client-supplied user name for the audit log.
func safeUser(u string) string {
	return sanitize(truncate(u, 256))
}
