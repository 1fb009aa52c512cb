package proxy

// handleStartTLS upgrades a STARTTLS listener's connection. A client that
// pipelined bytes after the STARTTLS line is refused and disconnected:
// those bytes were sent in plaintext and must never be read as if they came
// over TLS (the CVE-2011-0411 class of injection).
func (s *session) handleStartTLS(cmd *command) next {
	switch {
	case len(cmd.args) != 0:
		return s.bad(cmd.tag, "STARTTLS takes no arguments")
	case s.l.Mode != TLSStartTLS:
		return s.bad(cmd.tag, "STARTTLS is not available on this port (TLS is already on)")
	case s.isTLS:
		return s.bad(cmd.tag, "TLS is already active")
	case s.r.Buffered() > 0:
		s.reply(cmd.tag + " BAD STARTTLS must be the last command before the TLS handshake")
		return s.endWith(endStartTLSPipelined, "Plaintext command injection refused.")
	}
	s.reply(cmd.tag + " OK Begin TLS negotiation now")
	if !s.flush() || !s.handshake() {
		return end
	}
	// RFC 3501 6.2.1: forget everything learned before TLS.
	s.clientID = nil
	return stay
}
