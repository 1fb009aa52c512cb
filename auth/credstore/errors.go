package credstore

import (
	"errors"
	"fmt"
)

// Why a credential was not accepted. Verification errors are
// *CredentialError values that wrap one of these; check with errors.Is and
// turn into an audit reason with Reason.
var (
	// ErrUnknown: no such credential (for this user). Also what a revoked
	// credential gives once its tombstone is gone.
	ErrUnknown = errors.New("credstore: unknown credential")
	// ErrRevoked: the credential was revoked (within Options.TombstoneFor).
	ErrRevoked = errors.New("credstore: credential revoked")
	// ErrExpired: the credential's expiry has passed.
	ErrExpired = errors.New("credstore: credential expired")
	// ErrScope: the app password is not valid on this listener.
	ErrScope = errors.New("credstore: credential not valid on this listener")
)

// Errors of the store itself.
var (
	// ErrLocked: another process holds the database open. bbolt allows one
	// writer process; the CLI talks to the running server instead.
	ErrLocked = errors.New("credential store in use by another process (is imapgate serve running? use its admin socket)")
	// ErrInsecureFile: the database, key file or their directory may be
	// read or changed by others. The message names the path and the fix.
	ErrInsecureFile = errors.New("credstore: refusing insecure file")
	// ErrWrongKey: the key file does not belong to the database, or is
	// missing for one that has credentials.
	ErrWrongKey = errors.New("credstore: key file does not match the credential store")
	// ErrLabelTaken: the user already has a credential of that kind with
	// that label.
	ErrLabelTaken = errors.New("credstore: label already in use")
	// ErrCertExists: the certificate's key is already registered.
	ErrCertExists = errors.New("credstore: certificate key already registered")
	// ErrNotFound: no live or revoked credential with that ID or label.
	ErrNotFound = errors.New("credstore: no such credential")
	// ErrInvalid: a request the store refuses (empty user, bad label, past
	// expiry...). The message says which field.
	ErrInvalid = errors.New("credstore: invalid request")
	// ErrClosed: the store was closed.
	ErrClosed = errors.New("credstore: store closed")
)

// Audit reason words for credentials that were not accepted, as the README
// lists them.
const (
	ReasonAppPasswordUnknown = "app_password_unknown"
	ReasonAppPasswordRevoked = "app_password_revoked"
	ReasonAppPasswordExpired = "app_password_expired"
	ReasonAppPasswordScope   = "app_password_scope"
	ReasonCertUnknown        = "cert_unknown"
	ReasonCertRevoked        = "cert_revoked"
	ReasonCertExpired        = "cert_expired"
)

// CredentialError is why a credential was not accepted. It wraps ErrUnknown,
// ErrRevoked, ErrExpired or ErrScope. ID, User and Label name the
// credential for the audit when it was found and belongs to the user who
// tried (they are empty for ErrUnknown); they are never secret.
type CredentialError struct {
	Kind  Kind
	Err   error // ErrUnknown, ErrRevoked, ErrExpired or ErrScope
	ID    string
	User  string
	Label string
}

func (e *CredentialError) Error() string {
	if e.ID == "" {
		return fmt.Sprintf("%v (%v)", e.Err, e.Kind)
	}
	return fmt.Sprintf("%v (%v %s of %q, label %q)", e.Err, e.Kind, e.ID, e.User, e.Label)
}

func (e *CredentialError) Unwrap() error { return e.Err }

// Reason returns the audit reason word, such as "app_password_revoked".
func (e *CredentialError) Reason() string {
	cert := e.Kind == KindClientCert
	switch {
	case errors.Is(e.Err, ErrRevoked) && cert:
		return ReasonCertRevoked
	case errors.Is(e.Err, ErrRevoked):
		return ReasonAppPasswordRevoked
	case errors.Is(e.Err, ErrExpired) && cert:
		return ReasonCertExpired
	case errors.Is(e.Err, ErrExpired):
		return ReasonAppPasswordExpired
	case errors.Is(e.Err, ErrScope):
		return ReasonAppPasswordScope
	case cert:
		return ReasonCertUnknown
	}
	return ReasonAppPasswordUnknown
}

// Reason returns the audit reason word of a verification error (see the
// Reason constants), or "" when err is not a *CredentialError.
func Reason(err error) string {
	var ce *CredentialError
	if errors.As(err, &ce) {
		return ce.Reason()
	}
	return ""
}

func unknown(k Kind) error { return &CredentialError{Kind: k, Err: ErrUnknown} }

func refused(r *record, err error) error {
	return &CredentialError{Kind: r.Kind, Err: err, ID: r.ID, User: r.User, Label: r.Label}
}
