package auth

import (
	"bytes"
	"context"
	"crypto/x509"
	"errors"
	"fmt"
)

// External is the EXTERNAL mechanism (RFC 4422 appendix A): the client is
// who the TLS client certificate it presented says, as Verifiers.Certs
// maps it (README "Client certificates").
const External = "EXTERNAL"

var external = mechanism{name: External, offered: externalOffered, start: startExternal}

// CertCache keeps what a connection's client certificate maps to, so the
// CAPABILITY that offers EXTERNAL and the AUTHENTICATE that starts it ask
// Verifiers.Certs once. The exchange itself asks again: a registration
// revoked in between must not log in. The zero value is empty; one
// connection uses it, from one goroutine.
type CertCache struct {
	raw  []byte // the certificate mapped (DER); nil: nothing cached
	user string
	cred Credential
	err  error // a *Refusal, or nil
}

// clientCertificate returns the leaf certificate the client presented in
// env's connection, or nil when it presented none or nothing could map it.
func clientCertificate(env *Env) *x509.Certificate {
	if env.Verifiers == nil || env.Verifiers.Certs == nil || env.Conn.TLS == nil || len(env.Conn.TLS.PeerCertificates) == 0 {
		return nil
	}
	return env.Conn.TLS.PeerCertificates[0]
}

// mapCert returns what leaf maps to: from env's CertCache when it has
// leaf and cached is true, else from Verifiers.Certs, whose answer the
// cache then keeps (a store failure is not kept).
func mapCert(ctx context.Context, env *Env, leaf *x509.Certificate, cached bool) (string, Credential, error) {
	cache := env.Conn.CertCache
	if cached && cache != nil && cache.raw != nil && bytes.Equal(cache.raw, leaf.Raw) {
		return cache.user, cache.cred, cache.err
	}
	user, cred, err := env.Verifiers.Certs.MapCert(ctx, env.Conn)
	var refusal *Refusal
	switch {
	case cache == nil:
	case err == nil || errors.As(err, &refusal):
		*cache = CertCache{raw: leaf.Raw, user: user, cred: cred, err: err}
	default:
		*cache = CertCache{}
	}
	return user, cred, err
}

// externalOffered offers EXTERNAL when the client presented a certificate
// that maps to a user. When the store could not say, it is offered: the
// exchange then answers NO [UNAVAILABLE], which the operator sees, rather
// than a mechanism the client expected going missing.
func externalOffered(ctx context.Context, env *Env) bool {
	leaf := clientCertificate(env)
	if leaf == nil {
		return false
	}
	_, _, err := mapCert(ctx, env, leaf, true)
	var refusal *Refusal
	return !errors.As(err, &refusal)
}

func startExternal(env *Env) Exchange { return &externalExchange{env: env} }

// externalExchange reads the client's one message, an authorization
// identity (RFC 4422 appendix A).
type externalExchange struct {
	env    *Env
	asked  bool // the empty challenge was sent
	over   bool
	result Result
}

// Next asks for the message with an empty challenge when the client sent
// no initial response. The message is empty (log in as the user the
// certificate maps to; IMAP's "AUTHENTICATE EXTERNAL =", RFC 4959) or that
// user's name, in any ASCII case (mail clients send the account's user
// name as it was typed); any other name is ErrAuthzidNotAllowed: a
// certificate opens its own mailbox only. The policy is asked (Env.Admit)
// for the user the certificate mapped to when EXTERNAL was offered; then
// the certificate is mapped again, so that a registration revoked since
// is refused (a *Refusal with its reason, e.g. cert_revoked).
func (x *externalExchange) Next(ctx context.Context, response []byte) ([]byte, bool, error) {
	switch {
	case x.over:
		return nil, false, errAfterEnd
	case response == nil && !x.asked:
		x.asked = true
		return []byte{}, false, nil
	}
	x.over = true
	authzid := string(response)
	if authzid != "" {
		if err := CheckUsername(authzid); err != nil {
			return nil, false, err
		}
	}
	leaf := clientCertificate(x.env)
	if leaf == nil {
		return nil, false, fmt.Errorf("%w: EXTERNAL without a client certificate", ErrMalformed)
	}
	claimed, _, _ := mapCert(ctx, x.env, leaf, true)
	if claimed == "" {
		claimed = authzid // the store failed when EXTERNAL was offered
	}
	if err := x.env.admit(ctx, claimed); err != nil {
		return nil, false, err
	}
	if authzid != "" && !equalFoldASCII(authzid, claimed) {
		return nil, false, ErrAuthzidNotAllowed
	}
	user, cred, err := mapCert(ctx, x.env, leaf, false)
	var refusal *Refusal
	switch {
	case errors.As(err, &refusal):
		r := *refusal
		if r.User == "" {
			r.User = claimed
		}
		return nil, false, &r
	case err != nil:
		return nil, false, fmt.Errorf("%w: mapping the client certificate: %w", ErrUnavailable, err)
	case user != claimed:
		// Registered to another user between CAPABILITY and now, or the
		// store came back: the policy was asked for someone else. The
		// next attempt asks for the user mapped now.
		return nil, false, fmt.Errorf("%w: the client certificate's user changed during the login", ErrUnavailable)
	}
	x.env.Verifiers.Certs.RecordUse(cred.ID, x.env.Conn.ClientAddr)
	x.result = Result{Mechanism: External, User: user, Verified: true, Credential: cred}
	return nil, true, nil
}

func (x *externalExchange) Result() Result { return x.result }

// equalFoldASCII reports whether a and b are equal ignoring the case of
// ASCII letters only (not Unicode's folding, under which distinct names
// such as "K" and the Kelvin sign would match).
func equalFoldASCII(a, b string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range len(a) {
		ca, cb := a[i], b[i]
		if 'A' <= ca && ca <= 'Z' {
			ca += 'a' - 'A'
		}
		if 'A' <= cb && cb <= 'Z' {
			cb += 'a' - 'A'
		}
		if ca != cb {
			return false
		}
	}
	return true
}
