package oauth

import "errors"

// Reason words for the audit log's auth event (see the README's audit
// section). Reason maps an error from this package to one of them.
const (
	ReasonTokenExpired         = "token_expired"          // exp passed, or nbf/iat still ahead (beyond the clock skew)
	ReasonTokenAudience        = "token_audience"         // aud names none of the configured audiences
	ReasonTokenIssuer          = "token_issuer"           // iss is not the configured issuer
	ReasonTokenSignature       = "token_signature"        // no key the issuer publishes verifies the signature
	ReasonTokenMalformed       = "token_malformed"        // not a JWS the validator can read, or a required claim missing
	ReasonTokenNotActive       = "token_not_active"       // introspection (RFC 7662) answered active=false: revoked or unknown
	ReasonTokenMailboxMismatch = "token_mailbox_mismatch" // the SASL message names another mailbox than the token
	ReasonTokenEmailUnverified = "token_email_unverified" // the mailbox claim is email and the token says email_verified false
	ReasonTokenAlgorithm       = "token_algorithm"        // alg is none, HMAC, or not among the accepted algorithms
	ReasonUnavailable          = "oauth_unavailable"      // discovery, keys or introspection unreachable: not the client's failure
	ReasonMalformedResponse    = "malformed_response"     // the SASL message breaks RFC 7628 or XOAUTH2's format (the word PLAIN uses too)
	ReasonMalformedUser        = "malformed_user"         // the user name in the SASL message has a control character, invalid UTF-8 or is too long
)

// failure is an error that carries its audit reason word. Every sentinel
// below is one; errors returned by this package wrap exactly one of them.
type failure struct {
	reason string
	text   string
	parent error
}

func (f *failure) Error() string { return f.text }
func (f *failure) Unwrap() error { return f.parent }

// Sentinels. Check with errors.Is; Reason gives the audit word. No error
// text from this package ever contains a token or a secret.
var (
	ErrTokenExpired         error = &failure{reason: ReasonTokenExpired, text: "oauth: token expired or not yet valid"}
	ErrTokenAudience        error = &failure{reason: ReasonTokenAudience, text: "oauth: token issued for another audience"}
	ErrTokenIssuer          error = &failure{reason: ReasonTokenIssuer, text: "oauth: token from another issuer"}
	ErrTokenSignature       error = &failure{reason: ReasonTokenSignature, text: "oauth: token signature not verified by the issuer's keys"}
	ErrTokenMalformed       error = &failure{reason: ReasonTokenMalformed, text: "oauth: malformed token"}
	ErrTokenNotActive       error = &failure{reason: ReasonTokenNotActive, text: "oauth: token not active at the issuer"}
	ErrTokenMailboxMismatch error = &failure{reason: ReasonTokenMailboxMismatch, text: "oauth: token is not for the mailbox named"}
	ErrTokenAlgorithm       error = &failure{reason: ReasonTokenAlgorithm, text: "oauth: token signing algorithm not accepted"}
	// ErrTokenEmailUnverified is a token whose mailbox claim is email
	// while its email_verified is false: the provider does not vouch that
	// the user owns that address, so it names no mailbox.
	ErrTokenEmailUnverified error = &failure{reason: ReasonTokenEmailUnverified, text: "oauth: token's email is not verified"}
	// ErrUnavailable is an operational error: the issuer's discovery
	// document, keys or introspection endpoint could not be had. The
	// client did nothing wrong; answer NO [UNAVAILABLE] and do not count
	// it against the client's failure budgets.
	ErrUnavailable error = &failure{reason: ReasonUnavailable, text: "oauth: identity provider unavailable"}
	// ErrMalformedMessage is a SASL message a conforming client never
	// sends (RFC 7628 section 3.1, or XOAUTH2's format).
	ErrMalformedMessage error = &failure{reason: ReasonMalformedResponse, text: "oauth: malformed SASL message"}
	// ErrMalformedUser is a user name (a= or user=) that no mailbox has:
	// over MaxUserLength bytes, invalid UTF-8 or with a control character.
	// It wraps ErrMalformedMessage.
	ErrMalformedUser error = &failure{reason: ReasonMalformedUser, text: "oauth: malformed user name", parent: ErrMalformedMessage}
)

// Reason returns the audit reason word for err, or "" when err is nil or
// did not come from this package.
func Reason(err error) string {
	var f *failure
	if errors.As(err, &f) {
		return f.reason
	}
	return ""
}
