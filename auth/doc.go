// Package auth holds the SASL mechanisms (RFC 4422) imapgate offers to
// clients, and the checks every claimed user name and password passes.
//
// A connection offers the mechanisms Offered returns (its AUTH=
// capabilities); AUTHENTICATE starts one with Start and carries the
// client's responses to it until it is done; the Result says who the client
// is and, for a mechanism that passes the credentials through, the password
// the upstream login presents:
//
//	cs := auth.ConnState{TLS: &tlsState, Listener: "[::]:993"}
//	x, err := auth.Start("PLAIN", configured, cs) // ErrUnsupportedMechanism if not offered
//	challenge, done, err := x.Next(response)     // until done, or an error
//	r := x.Result()                              // r.User, r.Password.Reveal()
//
// The IMAP LOGIN command passes the same checks (CheckCredentials), so a
// claim PLAIN refuses is refused in LOGIN's arguments too.
//
// Mechanism names are upper case, as on the wire (AUTH=PLAIN).
//
// # Adding a mechanism
//
// A mechanism is one file: a mechanism value (its name, when it can run on a
// connection, how an exchange starts) and its Exchange, listed in
// implemented. It reads the connection from ConnState: the TLS state for
// channel binding (SCRAM-SHA-256-PLUS) and for EXTERNAL's client
// certificate. One that passes a secret through (OAUTHBEARER, XOAUTH2)
// returns it in Result.Password for the upstream login; one that checks
// the client itself (SCRAM, app passwords) leaves Result.Password empty and
// gets what it checks against through a field added to ConnState.
package auth
