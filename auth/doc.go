// Package auth provides the SASL mechanisms imapgate offers to clients.
//
// A mechanism turns the client's SASL exchange into Credentials and hands them
// to a Verifier; for a proxy the verifier is usually the upstream login.
//
//	srv, err := auth.NewServer("PLAIN", func(c auth.Credentials) error {
//		return upstream.Login(ctx, c.Username, c.Password)
//	})
//	challenge, done, err := srv.Next(clientResponse)
//
// Mechanism names are upper case, as on the wire (AUTH=PLAIN).
package auth
