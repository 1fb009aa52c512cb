package credstore

import (
	"crypto/subtle"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/imapgate/imapgate/auth"
	"github.com/imapgate/imapgate/auth/scram"
)

// record is one credential as a backend stores it: the metadata of
// AppPassword or ClientCert, the key it is found by, the sealed SCRAM keys
// of an app password, and, for a tombstone, when it was revoked. Backends
// keep it as JSON; field names are the on-disk format.
type record struct {
	Kind     Kind         `json:"kind"`
	ID       string       `json:"id"`
	User     string       `json:"user"`
	Label    string       `json:"label"`
	Created  time.Time    `json:"created"`
	Expires  time.Time    `json:"expires,omitzero"`
	Scope    []string     `json:"scope,omitempty"`
	LastUsed time.Time    `json:"last_used,omitzero"`
	LastAddr netip.Addr   `json:"last_addr,omitzero"`
	Key      []byte       `json:"key"`             // app password digest or SPKI fingerprint
	SCRAM    *sealedSCRAM `json:"scram,omitempty"` // app passwords; nil in a tombstone
	Subject  string       `json:"subject,omitempty"`
	NotAfter time.Time    `json:"not_after,omitzero"`
	Revoked  time.Time    `json:"revoked,omitzero"` // non-zero: a tombstone
}

func (r *record) appPassword() AppPassword {
	return AppPassword{
		ID: r.ID, User: r.User, Label: r.Label, Created: r.Created, Expires: r.Expires,
		Scope: slices.Clone(r.Scope), LastUsed: r.LastUsed, LastAddr: r.LastAddr,
	}
}

func (r *record) clientCert() ClientCert {
	c := ClientCert{
		ID: r.ID, User: r.User, Label: r.Label, Subject: r.Subject, NotAfter: r.NotAfter,
		Created: r.Created, Expires: r.Expires, LastUsed: r.LastUsed, LastAddr: r.LastAddr,
	}
	copy(c.Fingerprint[:], r.Key)
	return c
}

func (r *record) revoked() Revoked {
	return Revoked{Kind: r.Kind, ID: r.ID, User: r.User, Label: r.Label, At: r.Revoked}
}

// check decides whether a found record may be used now by user on
// listener: the same rules for every backend, in this order: a tombstone
// or another user's credential, expiry, scope.
func (r *record) check(user, listener string, now time.Time) error {
	if subtle.ConstantTimeCompare([]byte(r.User), []byte(user)) != 1 {
		return unknown(r.Kind)
	}
	if !r.Revoked.IsZero() {
		return refused(r, ErrRevoked)
	}
	if !r.Expires.IsZero() && !now.Before(r.Expires) {
		return refused(r, ErrExpired)
	}
	if len(r.Scope) > 0 && !slices.Contains(r.Scope, listener) {
		return refused(r, ErrScope)
	}
	return nil
}

// Limits on what a request may hold.
const (
	// MaxUserLength caps a user name, as the auth package caps the names
	// clients send.
	MaxUserLength = auth.MaxUsernameLength
	// MaxLabelLength caps a label.
	MaxLabelLength = 64
)

// checkName validates a user name, label or listener name: 1 to max bytes
// of UTF-8 without controls, format characters or line separators (what
// would change how an audit line reads), and no leading or trailing space.
func checkName(field, s string, max int) error {
	switch {
	case s == "":
		return fmt.Errorf("%w: %s is empty", ErrInvalid, field)
	case len(s) > max:
		return fmt.Errorf("%w: %s is longer than %d bytes", ErrInvalid, field, max)
	case !utf8.ValidString(s):
		return fmt.Errorf("%w: %s is not UTF-8", ErrInvalid, field)
	case strings.TrimSpace(s) != s:
		return fmt.Errorf("%w: %s %q starts or ends with a space", ErrInvalid, field, s)
	}
	if strings.ContainsFunc(s, func(r rune) bool { return !auth.AllowedInUsername(r) }) {
		return fmt.Errorf("%w: %s %q holds a control or format character", ErrInvalid, field, s)
	}
	return nil
}

// checkSCRAMUser refuses a user name whose SCRAM login names ("user#id")
// SASLprep changes or refuses: a SCRAM client sends the name prepared
// (RFC 5802 section 5.1), so it would never match the stored one. NFKC
// changes decomposed and compatibility characters ("mu\u0308ller" is
// sent as "müller"), and the bidi rule refuses right-to-left letters
// followed by "#id".
func checkSCRAMUser(user string) error {
	login := SCRAMLogin(user, strings.Repeat(Alphabet[len(Alphabet)-1:], IDSymbols))
	if prepared, err := scram.PrepareLogin(login); err != nil || prepared != login {
		return fmt.Errorf("%w: user %q: SASLprep (RFC 4013) changes or refuses its SCRAM login name, so no SCRAM client could log in as it (decomposed or compatibility characters: write it in NFKC form)", ErrInvalid, user)
	}
	return nil
}

// checkExpiry refuses an expiry that is not in the future.
func checkExpiry(expires, now time.Time) error {
	if !expires.IsZero() && !expires.After(now) {
		return fmt.Errorf("%w: expiry %s is not in the future", ErrInvalid, expires.Format(time.RFC3339))
	}
	return nil
}

// checkAppRequest validates req and returns its scope sorted and without
// duplicates.
func checkAppRequest(req NewAppPassword, now time.Time) ([]string, error) {
	if err := checkName("user", req.User, MaxUserLength); err != nil {
		return nil, err
	}
	if err := checkSCRAMUser(req.User); err != nil {
		return nil, err
	}
	if err := checkName("label", req.Label, MaxLabelLength); err != nil {
		return nil, err
	}
	if err := checkExpiry(req.Expires, now); err != nil {
		return nil, err
	}
	for _, l := range req.Scope {
		if err := checkName("listener", l, MaxLabelLength); err != nil {
			return nil, err
		}
	}
	scope := slices.Compact(slices.Sorted(slices.Values(req.Scope)))
	if len(scope) == 0 {
		scope = nil
	}
	return scope, nil
}

func checkCertRequest(req NewClientCert, now time.Time) error {
	if err := checkName("user", req.User, MaxUserLength); err != nil {
		return err
	}
	if err := checkName("label", req.Label, MaxLabelLength); err != nil {
		return err
	}
	if req.Certificate == nil {
		return fmt.Errorf("%w: no certificate", ErrInvalid)
	}
	return checkExpiry(req.Expires, now)
}
