// Package scram is the server side of SCRAM-SHA-256 and
// SCRAM-SHA-256-PLUS (RFC 5802, RFC 7677), with channel binding to the
// client's TLS connection (tls-exporter, RFC 9266; tls-server-end-point,
// RFC 5929; tls-unique on TLS 1.2), built on github.com/xdg-go/scram.
//
//	srv, err := scram.NewServer(func(ctx context.Context, login string) (scram.StoredCredentials, error) {
//		c, err := store.LookupSCRAM(ctx, login, listener) // auth/credstore: login is "user#id"
//		if errors.As(err, new(*credstore.CredentialError)) {
//			return c.Keys, fmt.Errorf("%w: %w", scram.ErrUnknownUser, err) // fails like a wrong password
//		}
//		return c.Keys, err
//	}, scram.Options{UnknownIterations: credstore.DefaultSCRAMIterations})
//
//	conn := scram.ConnState{TLS: &state, Certificate: servedLeaf}
//	// CAPABILITY: AUTH=SCRAM-SHA-256, and AUTH=SCRAM-SHA-256-PLUS if conn.OffersPlus().
//	x, err := srv.NewExchange(scram.SHA256Plus, conn, scram.ExchangeOptions{
//		Admit: func(ctx context.Context, id scram.Identity) error { return budget.Spend(ctx, id.Login) },
//	})
//	out, done, err := x.Step(ctx, clientMessage) // until done; out goes to the client as "+ " base64
//	if err != nil {
//		audit.Fail(scram.Reason(err)) // "scram_bad_proof", "channel_binding_mismatch", ...
//	}
//
// # What xdg-go/scram does, and what is done here
//
// xdg-go/scram v1.4.0 writes the server-first message (its nonce: 24
// random bytes), parses the client-final message, checks the nonce, the
// GS2 header and binding data, the proof, and writes the server signature.
// Its server takes one channel binding per conversation and knows the
// "n", "y" and "p" flags, with the downgrade check. This package adds what
// it lacks:
//   - a two-phase first step: the client-first message is parsed here, and
//     the caller (Admit) sees the login name before the lookup, to charge
//     the user's policy budget; xdg-go parses and looks up in one call,
//     with no context;
//   - the GS2 header against the mechanism (RFC 5802 section 6): "p=" only
//     with SCRAM-SHA-256-PLUS, which requires it; "y" refused as a
//     downgrade where -PLUS was advertised. xdg-go does not know which
//     mechanism the client named;
//   - several binding types per connection: the type is picked from the
//     client's "p=" among those this connection offers, then handed to
//     xdg-go as its one binding;
//   - tls-server-end-point from the server's own certificate: xdg-go's
//     constructor hashes ConnectionState.PeerCertificates[0], which on a
//     server is the client's certificate (or nothing);
//   - SASLprep of the login name (xdg-go's server passes it on as sent),
//     as a query string (RFC 5802 section 5.1; xdg-go/stringprep's profile
//     is the stored-string one, which refuses unassigned code points);
//   - RFC 5802 section 7's grammar, which xdg-go's parser does not check
//     (printable nonces, NUL-free UTF-8 names, base64 that decodes, a proof
//     of 32 bytes), and size limits;
//   - made-up keys for unknown login names instead of xdg-go's
//     e=unknown-user in place of the server-first message;
//   - errors without secret material: xdg-go's binding mismatch error
//     holds the expected and received binding data in hex.
//
// # Channel binding
//
// Which types a connection offers is ConnState.Bindings: tls-exporter on
// TLS 1.3; tls-unique on TLS 1.2 with the extended master secret, which is
// what clients that bind on TLS 1.2 send (GNU SASL does; without the
// extended master secret it is open to the triple handshake, RFC 7627, so
// it is not offered then); tls-server-end-point wherever the served
// certificate is known. A client binding to a type not offered, or with
// another connection's data (a relay between two TLS sessions), fails with
// ErrBindingMismatch; "y" where -PLUS was advertised with ErrDowngrade.
//
// # Unknown login names
//
// RFC 5802 lets the server answer e=unknown-user, which tells a guesser
// which login names exist. Instead the exchange goes on with a salt derived
// from the name under a per-process key (Options.Key), the store's
// iteration count and keys no proof matches, and fails at the proof: on
// the wire an unknown name and a wrong password look the same (the same
// shape of server-first message, a salt that does not change between
// tries, the same failure at the same step, the same cost); only the audit
// reason differs (ErrUnknownUser, which wraps the Lookup's own error).
//
// # Limits
//
// A client message is at most MaxMessageLength (4 KiB) and a login name
// MaxLoginLength (265 bytes: a 256-byte user name and "#id"). Stored
// iteration counts are accepted from MinIterations (4096, RFC 7677) to
// Options.MaxIterations (a million by default); the client runs the
// PBKDF2, the server only HMACs and hashes (BenchmarkServerExchange).
package scram
