package oauth

import (
	"encoding/json"
	"errors"
	"fmt"
)

// A failed OAUTHBEARER exchange does not end with NO at once: the server
// sends an error challenge, a JSON object (RFC 7628 section 3.2.2), the
// client answers with a dummy response, a lone %x01, and only then does the
// server fail the exchange. XOAUTH2 does the same with Google's JSON and an
// empty dummy response.

// Error challenge status values. OAUTHBEARER uses RFC 6750's error codes;
// XOAUTH2 uses HTTP status codes as strings, as Google's servers do.
const (
	StatusInvalidToken   = "invalid_token"   // OAUTHBEARER: the token was judged and refused
	StatusInvalidRequest = "invalid_request" // OAUTHBEARER: the message itself was malformed
	StatusXOAuth2Token   = "401"             // XOAUTH2: the token was refused
	StatusXOAuth2Request = "400"             // XOAUTH2: the message was malformed
)

type oauthBearerError struct {
	Status              string `json:"status"`
	Scope               string `json:"scope,omitempty"`
	OpenIDConfiguration string `json:"openid-configuration,omitempty"`
}

type xoauth2Error struct {
	Status  string `json:"status"`
	Schemes string `json:"schemes"`
	Scope   string `json:"scope,omitempty"`
}

// ErrorChallenge returns the error challenge mech's server sends after
// cause, a failure from ParseClientResponse or Validator.Validate:
//
//	OAUTHBEARER: {"status":"invalid_token","scope":S,"openid-configuration":U}
//	XOAUTH2:     {"status":"401","schemes":"Bearer","scope":S}
//
// scope and openidConfiguration (the discovery URL) are left out when empty.
// A malformed message gets invalid_request (400). For an error wrapping
// ErrUnavailable it returns nil: the token was never judged, so the server
// ends the exchange at once with NO [UNAVAILABLE] instead.
func ErrorChallenge(mech Mechanism, cause error, scope, openidConfiguration string) []byte {
	if errors.Is(cause, ErrUnavailable) {
		return nil
	}
	request := errors.Is(cause, ErrMalformedMessage)
	var v any
	switch mech {
	case XOAuth2:
		status := StatusXOAuth2Token
		if request {
			status = StatusXOAuth2Request
		}
		v = xoauth2Error{Status: status, Schemes: "Bearer", Scope: scope}
	default:
		status := StatusInvalidToken
		if request {
			status = StatusInvalidRequest
		}
		v = oauthBearerError{Status: status, Scope: scope, OpenIDConfiguration: openidConfiguration}
	}
	b, err := json.Marshal(v)
	if err != nil {
		panic("oauth: marshal of a struct of strings failed: " + err.Error())
	}
	return b
}

// IsDummyResponse reports whether reply is what mech's client sends after
// an error challenge: exactly %x01 for OAUTHBEARER (RFC 7628 section
// 3.2.2); for XOAUTH2 an empty reply, or %x01 from clients that share code
// with OAUTHBEARER.
func IsDummyResponse(mech Mechanism, reply []byte) bool {
	switch mech {
	case XOAuth2:
		return len(reply) == 0 || len(reply) == 1 && reply[0] == kvsep
	default:
		return len(reply) == 1 && reply[0] == kvsep
	}
}

// FinishFailed ends an exchange after the error challenge: given the
// client's reply and the failure that caused the challenge, it returns the
// error the server fails the exchange with. That is always an error: cause
// itself after a proper dummy response, and otherwise cause joined with an
// ErrMalformedMessage, so the audit reason (Reason) stays cause's.
func FinishFailed(mech Mechanism, reply []byte, cause error) error {
	if cause == nil {
		cause = ErrTokenMalformed
	}
	if IsDummyResponse(mech, reply) {
		return cause
	}
	return fmt.Errorf("%w (and the reply to the error challenge was not the dummy response: %w)",
		cause, malformed(mech, "reply to the error challenge is not the dummy response"))
}
