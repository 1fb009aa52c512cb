package scram

import "errors"

// Reason words for the audit log's auth event (see the README's audit
// section). Reason maps an error from this package to one of them.
const (
	// ReasonChannelBindingDowngrade: the client said it could bind ("y")
	// but saw no -PLUS offered, on a connection where it was offered
	// (RFC 5802 section 6): something between the two removed it.
	ReasonChannelBindingDowngrade = "channel_binding_downgrade"
	// ReasonChannelBindingMismatch: the client bound to a channel type this
	// connection does not offer, or its binding data is not this
	// connection's (a relay between two TLS sessions), or its final message
	// carries another GS2 header than its first.
	ReasonChannelBindingMismatch = "channel_binding_mismatch"
	// ReasonBadProof: the proof does not match the stored keys: a wrong
	// password.
	ReasonBadProof = "scram_bad_proof"
	// ReasonUnknownUser: no usable credential for the login name. On the
	// wire the exchange failed exactly like a wrong password.
	ReasonUnknownUser = "scram_unknown_user"
	// ReasonMalformedResponse: a message a conforming client never sends
	// (RFC 5802 section 7), over MaxMessageLength, or a channel-binding flag
	// that does not go with the mechanism (RFC 5802 section 6). The word
	// PLAIN uses too.
	ReasonMalformedResponse = "malformed_response"
	// ReasonAuthzidNotAllowed: an authorization identity other than the
	// login name. The word PLAIN uses too.
	ReasonAuthzidNotAllowed = "authzid_not_allowed"
	// ReasonMechanismNotAllowed: SCRAM-SHA-256-PLUS asked for on a
	// connection that offers no channel binding. The word the pre-auth
	// phase uses for mechanisms not offered.
	ReasonMechanismNotAllowed = "mechanism_not_allowed"
	// ReasonUnavailable: the credential lookup failed, or found keys this
	// package refuses. Not the client's failure.
	ReasonUnavailable = "scram_unavailable"
)

// failure is an error that carries its audit reason word. Every sentinel
// below is one; errors returned by this package wrap exactly one of them.
type failure struct {
	reason string
	text   string
}

func (f *failure) Error() string { return f.text }

// Sentinels. Check with errors.Is; Reason gives the audit word. No error
// from this package holds a proof, a key, a salt, binding data or any other
// part of a client message: only which rule was broken.
var (
	ErrDowngrade       error = &failure{ReasonChannelBindingDowngrade, "scram: client could bind but saw no SCRAM-SHA-256-PLUS, which this connection offers"}
	ErrBindingMismatch error = &failure{ReasonChannelBindingMismatch, "scram: channel binding does not match this connection"}
	ErrBadProof        error = &failure{ReasonBadProof, "scram: client proof does not match the stored keys"}
	// ErrUnknownUser is what a Lookup wraps to say that the login name has
	// no usable credential (unknown, revoked, expired, not valid on this
	// listener). The exchange then goes on with made-up keys and fails at
	// the proof, and the error Step returns wraps the Lookup's.
	ErrUnknownUser       error = &failure{ReasonUnknownUser, "scram: no credential for the login name"}
	ErrMalformed         error = &failure{ReasonMalformedResponse, "scram: malformed client message"}
	ErrAuthzidNotAllowed error = &failure{ReasonAuthzidNotAllowed, "scram: authorization identity differs from the login name"}
	ErrNotOffered        error = &failure{ReasonMechanismNotAllowed, "scram: SCRAM-SHA-256-PLUS is not offered on this connection"}
	// ErrUnavailable is an operational error: the Lookup failed with
	// something other than ErrUnknownUser, or returned keys outside this
	// package's limits (MinIterations, Options.MaxIterations). The client
	// did nothing wrong: answer NO [UNAVAILABLE] and do not count it
	// against the client's failure budgets.
	ErrUnavailable error = &failure{ReasonUnavailable, "scram: credentials unavailable"}
)

// Reason returns the audit reason word for err, or "" when err is nil or
// did not come from this package (an Admit function's own error).
func Reason(err error) string {
	var f *failure
	if errors.As(err, &f) {
		return f.reason
	}
	return ""
}
