package auth

import (
	"context"
	"net/netip"

	"github.com/imapgate/imapgate/auth/oauth"
	"github.com/imapgate/imapgate/auth/scram"
)

// Verifiers are what the mechanisms that judge the client themselves check
// it against. A nil field leaves its mechanisms unoffered, whatever the
// listener's mechanisms say. The zero value offers none of them.
type Verifiers struct {
	// Tokens validates OAuth 2.0 bearer tokens for OAUTHBEARER (RFC 7628)
	// and XOAUTH2. Nil: neither is offered.
	Tokens *oauth.Validator
	// SCRAM checks SCRAM-SHA-256 and SCRAM-SHA-256-PLUS proofs (RFC 7677)
	// against the keys of per-device login names. Nil: neither is
	// offered.
	SCRAM *SCRAMVerifier
	// Certs maps a client certificate to a user for EXTERNAL (RFC 4422
	// appendix A). Nil: EXTERNAL is not offered.
	Certs CertMapper
}

// SCRAMKeys holds the SCRAM-SHA-256 keys of per-device login names,
// "user#id" (README "SCRAM"; see SCRAMLoginSeparator).
type SCRAMKeys interface {
	// LookupSCRAM returns the keys of login on listener, the credential
	// they belong to and its user. An error wrapping a *Refusal means the
	// name has no usable credential (unknown, revoked, expired, not valid
	// on listener): the exchange goes on and fails at the proof like a
	// wrong password, audited with the Refusal's reason and credential
	// (an empty Reason: scram_unknown_user). Any other error is the
	// store's failure.
	LookupSCRAM(ctx context.Context, login, listener string) (keys scram.StoredCredentials, user string, c Credential, err error)
	// RecordUse notes a successful use of credential id from addr.
	RecordUse(id string, addr netip.Addr)
}

// CertMapper maps client certificates to users (README "Client
// certificates").
type CertMapper interface {
	// MapCert returns the user and credential that the client
	// certificate of connection cs maps to: cs.TLS.PeerCertificates[0],
	// whose key the TLS handshake proved the client holds, on listener
	// cs.Listener. It records nothing. An error wrapping a *Refusal means
	// the certificate maps to no user (unknown, revoked, expired, or not
	// of a CA that may name its user); any other error is the store's
	// failure.
	MapCert(ctx context.Context, cs ConnState) (user string, c Credential, err error)
	// RecordUse notes a successful login with credential id from addr.
	RecordUse(id string, addr netip.Addr)
}
