package auth

import (
	"errors"
	"fmt"
)

// Result is who logged in and how: what a finished exchange, or the IMAP
// LOGIN command, which passes the same checks, established.
type Result struct {
	// Mechanism is the SASL mechanism, or "LOGIN" for the IMAP command.
	Mechanism string
	// User is the mailbox to log in to; CheckUsername accepts it.
	User string
	// Password is what a pass-through mechanism took from the client for
	// the upstream login to present (or for the proxy to recognise as an
	// app password). It is the zero Secret when Verified.
	Password Secret
	// Verified says the mechanism judged the client itself (a token, a
	// SCRAM proof, a certificate): the upstream login goes through the
	// master user (README "Upstream login without the user's password").
	Verified bool
	// Credential names what the client proved itself with when Verified;
	// the zero Credential for a password.
	Credential Credential
}

// The kinds of credential imapgate judges itself: the audit's credential
// field (README "Audit log").
const (
	// CredentialAppPassword is a per-device app password (PLAIN, LOGIN,
	// or its SCRAM keys).
	CredentialAppPassword = "app_password"
	// CredentialToken is an OAuth 2.0 bearer token (OAUTHBEARER, XOAUTH2).
	CredentialToken = "oauth_token"
	// CredentialClientCert is a client certificate (EXTERNAL).
	CredentialClientCert = "client_cert"
)

// Credential names a credential for the audit log and the session list.
// It never holds secret material.
type Credential struct {
	// Kind is one of the Credential* words.
	Kind string
	// ID identifies the credential: an app password's or certificate's
	// ID in the store, a token's jti. Empty when it has none.
	ID string
	// Label is what people call it: the device label of an app password
	// or certificate, a token's client (the application it was issued
	// to). Empty when it has none.
	Label string
}

// ErrUnavailable is what an error wraps when a mechanism could not judge
// the client because something of the server's failed (the identity
// provider, the credential store): not the client's failure.
var ErrUnavailable = errors.New("auth: credential check unavailable")

// Unavailable is an ErrUnavailable with the audit reason that names what
// failed.
type Unavailable struct {
	// Reason is the audit reason word, e.g. oauth_unavailable.
	Reason string
	// Err is the cause; it never holds secret material.
	Err error
}

func (u *Unavailable) Error() string {
	return fmt.Sprintf("auth: credential check unavailable (%s): %v", u.Reason, u.Err)
}

// Is makes errors.Is(u, ErrUnavailable) true.
func (u *Unavailable) Is(target error) bool { return target == ErrUnavailable }

func (u *Unavailable) Unwrap() error { return u.Err }

// Refusal is a credential a mechanism judged and refused: an invalid,
// expired or revoked token, a wrong SCRAM proof, an unknown certificate.
// It counts in the policy's budgets like a wrong password.
type Refusal struct {
	// Reason is the audit reason word, e.g. token_expired.
	Reason string
	// User is the mailbox the client named; "" when it named none.
	User string
	// Credential names the credential refused, when it is known (a
	// revoked app password, a certificate's registration).
	Credential Credential
	// Err is the cause; it never holds secret material.
	Err error
}

func (r *Refusal) Error() string {
	return fmt.Sprintf("auth: credential refused (%s): %v", r.Reason, r.Err)
}

func (r *Refusal) Unwrap() error { return r.Err }
