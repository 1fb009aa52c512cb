package proxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"time"

	"github.com/imapgate/imapgate/auth"
)

// The master-user login: how imapgate logs in to the upstream for a
// client that proved who it is without the mailbox's password (README
// "App passwords").

// LoginAs connects to the upstream and logs in to mailbox as the Master
// user, for a client that proved who it is to imapgate without the
// mailbox's password. Connecting, ID, the timeouts, ErrUnavailable and
// ErrNoAnswer are those of Login: the master's secret is the credential
// whose first byte starts LoginTimeout. The answer is judged otherwise:
//   - a NO with the code AUTHORIZATIONFAILED is ErrMailboxRefused;
//   - any other NO (but NO [UNAVAILABLE]) is ErrMasterRejected;
//   - a mailbox the form cannot carry is ErrMailboxName, and a missing or
//     broken Master ErrNoMaster, before anything is dialled.
//
// None of these is the client's failure, and a master login's answer time
// never feeds the estimate that refusals of client guesses wait for.
// ErrNoAnswer here is no client guess either: the caller must not count
// it against the client.
func (u *Upstream) LoginAs(ctx context.Context, mailbox string, client ClientInfo) (*UpstreamConn, error) {
	if err := u.CheckMaster(); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrNoMaster, err)
	}
	cred, err := u.Master.credential(mailbox)
	if err != nil {
		return nil, err
	}
	return u.login(ctx, time.Now(), client, cred, masterAnswer)
}

// masterAnswer judges the upstream's answer to a master login: a NO is
// about the master or about the mailbox, never about the client.
func masterAnswer(status, code string) error {
	switch {
	case status == "NO" && codeIs(code, "AUTHORIZATIONFAILED"):
		return fmt.Errorf("%w (code %q)", ErrMailboxRefused, code)
	case status == "NO" && !codeIs(code, "UNAVAILABLE"):
		return fmt.Errorf("%w (code %q)", ErrMasterRejected, code)
	default:
		return clientAnswer(status, code)
	}
}

// MasterForm says how a master login names the mailbox it acts for.
type MasterForm string

// Master login forms. For master user "svc", mailbox "alice" and the
// default separators, the upstream receives:
//
//	sasl-authzid       AUTHENTICATE PLAIN, authzid "alice", authcid "svc", the master's secret
//	dovecot-login      user "alice*svc" with the master's secret (AUTHENTICATE PLAIN or LOGIN)
//	exchange-delegate  user `CORP\svc\alice` with the master's password (LOGIN or AUTHENTICATE PLAIN)
const (
	// MasterSASLAuthzid is AUTHENTICATE PLAIN with the mailbox as the
	// authorization identity and the master as the authentication
	// identity (RFC 4616 section 2): Dovecot's master passdb takes it
	// (tested against Dovecot 2.3), and so does Cyrus for a user listed
	// in its proxyservers (tested against Cyrus 3.6). It needs AUTH=PLAIN: LOGIN
	// cannot carry an authorization identity. The names are fields of
	// their own, so no separator needs refusing; NUL, which separates
	// PLAIN's fields, is refused in a mailbox like every control
	// character.
	MasterSASLAuthzid MasterForm = "sasl-authzid"
	// MasterDovecotLogin is the single user name mailbox + Separator +
	// master (Dovecot's auth_master_user_separator, "*" by default; the
	// UW-IMAP convention). Dovecot 2.3 splits the name at the first
	// separator, so a mailbox holding one would change which master is
	// asked: such a mailbox is refused.
	MasterDovecotLogin MasterForm = "dovecot-login"
	// MasterExchangeDelegate is Exchange's access to another mailbox:
	// the user name [Domain + Separator +] master + Separator + mailbox,
	// with the master account's own password, the mailbox last. Field
	// reports differ on the separator and on the domain part, hence
	// Separator and Domain. Like dovecot-login it goes through LOGIN or
	// AUTHENTICATE PLAIN as Upstream.Method says (auto: PLAIN when
	// offered); LoginLogin forces LOGIN, the command field reports use.
	// Unverified against a real Exchange here: only the bytes on the
	// wire are tested.
	MasterExchangeDelegate MasterForm = "exchange-delegate"
)

// MasterLogin is how imapgate logs in to the upstream as a master user on
// behalf of a mailbox (Upstream.LoginAs). A master user can open every
// mailbox the upstream lets it: its secret is worth every password of
// the server, and belongs in a file only imapgate reads.
//
// The form is a fixed order of named parts joined by one separator,
// rather than a free template: with the mailbox always a whole part and
// the separator refused inside it (and inside User and Domain), the name
// on the wire splits back into exactly the parts configured, whatever a
// client's mailbox name holds.
type MasterLogin struct {
	// User is the master user's name as the upstream knows it. Required.
	// For exchange-delegate without Domain it may be a UPN
	// ("svc@corp.example").
	User string
	// Secret is the master user's password. Required. It must not hold
	// NUL, CR or LF (PLAIN cannot carry a NUL; a secret file's final
	// newline is not part of the secret).
	Secret Secret
	// Form is how the mailbox is named. Empty means MasterSASLAuthzid.
	Form MasterForm
	// Separator joins the parts of the dovecot-login and exchange-delegate
	// forms; User, Domain and every mailbox must not contain it. Empty
	// means "*" for dovecot-login and `\` for exchange-delegate. It must
	// be empty for sasl-authzid, which has none.
	Separator string
	// Domain, for exchange-delegate only, is the first part: "CORP" gives
	// `CORP\svc\alice`. Empty means none: `svc\alice` (or
	// `svc@corp.example\alice`).
	Domain string
}

// form is Form with its default.
func (m *MasterLogin) form() MasterForm {
	if m.Form == "" {
		return MasterSASLAuthzid
	}
	return m.Form
}

// separator is Separator with the form's default; "" for sasl-authzid.
func (m *MasterLogin) separator() string {
	switch {
	case m.Separator != "":
		return m.Separator
	case m.form() == MasterDovecotLogin:
		return "*"
	case m.form() == MasterExchangeDelegate:
		return `\`
	}
	return ""
}

// Check reports what makes m unusable, nil if nothing: a missing user or
// secret, an unknown form, a separator where the form has none, a
// control character, or the separator inside User or Domain.
func (m *MasterLogin) Check() error {
	form := m.form()
	switch form {
	case MasterSASLAuthzid, MasterDovecotLogin, MasterExchangeDelegate:
	default:
		return fmt.Errorf("master form %q is not one of %s, %s, %s", m.Form, MasterSASLAuthzid, MasterDovecotLogin, MasterExchangeDelegate)
	}
	if form == MasterSASLAuthzid && m.Separator != "" {
		return fmt.Errorf("master form %s has no separator: remove separator %q", form, m.Separator)
	}
	if form != MasterExchangeDelegate && m.Domain != "" {
		return fmt.Errorf("master domain %q is only used by the %s form", m.Domain, MasterExchangeDelegate)
	}
	if err := auth.CheckUsername(m.User); err != nil {
		return fmt.Errorf("master user %q: empty, too long or with a control character", m.User)
	}
	secret := m.Secret.Reveal()
	if secret == "" {
		return errors.New("master secret is empty")
	}
	if len(secret) > auth.MaxPasswordLength || strings.ContainsAny(secret, "\x00\r\n") {
		return fmt.Errorf("master secret is over %d bytes or holds NUL, CR or LF", auth.MaxPasswordLength)
	}
	sep := m.separator()
	if sep == "" {
		return nil
	}
	if strings.IndexFunc(sep, func(r rune) bool { return r == ' ' || !auth.AllowedInUsername(r) }) >= 0 {
		return fmt.Errorf("master separator %q holds a space or a control character", sep)
	}
	if strings.Contains(m.User, sep) {
		return fmt.Errorf("master user %q contains the separator %q", m.User, sep)
	}
	if m.Domain != "" {
		if err := auth.CheckUsername(m.Domain); err != nil || strings.Contains(m.Domain, sep) {
			return fmt.Errorf("master domain %q contains the separator %q or a control character", m.Domain, sep)
		}
	}
	return nil
}

// CheckMaster reports whether Master can be used with this upstream: nil
// for a nil Master or a good one. sasl-authzid needs AUTHENTICATE PLAIN,
// so Method LoginLogin cannot carry it. Config checks call it; LoginAs
// does too, before it dials.
func (u *Upstream) CheckMaster() error {
	if u.Master == nil {
		return errors.New("no master login configured")
	}
	if err := u.Master.Check(); err != nil {
		return err
	}
	if u.Master.form() == MasterSASLAuthzid && u.Method == LoginLogin {
		return fmt.Errorf("master form %s needs AUTHENTICATE PLAIN: the login method %q cannot carry an authorization identity", MasterSASLAuthzid, LoginLogin)
	}
	return nil
}

// credential is what LoginAs sends for mailbox, or ErrMailboxName for a
// name the form cannot carry: one auth.CheckUsername refuses (empty, a
// control character such as NUL, CR or LF, invalid UTF-8, too long) or
// one holding the separator.
func (m *MasterLogin) credential(mailbox string) (loginCredential, error) {
	if err := auth.CheckUsername(mailbox); err != nil {
		return loginCredential{}, fmt.Errorf("%w: %w", ErrMailboxName, err)
	}
	secret := m.Secret.Reveal()
	sep := m.separator()
	if sep != "" && strings.Contains(mailbox, sep) {
		return loginCredential{}, fmt.Errorf("%w: %q contains the %s separator %q", ErrMailboxName, mailbox, m.form(), sep)
	}
	switch m.form() {
	case MasterDovecotLogin:
		return loginCredential{authcid: mailbox + sep + m.User, password: secret}, nil
	case MasterExchangeDelegate:
		name := m.User + sep + mailbox
		if m.Domain != "" {
			name = m.Domain + sep + name
		}
		return loginCredential{authcid: name, password: secret}, nil
	default:
		return loginCredential{authzid: mailbox, authcid: m.User, password: secret}, nil
	}
}

// Secret is a password that never shows: every fmt verb (%v, %+v, %#v,
// %s, %q, %x ...), log/slog, encoding/json and encoding.TextMarshaler
// users render it as "[secret]", so a struct holding one can be printed
// or logged whole. Reveal gives the value, for the wire only. The zero
// value is the empty secret.
type Secret struct{ value string }

// NewSecret wraps s.
func NewSecret(s string) Secret { return Secret{value: s} }

// Reveal returns the secret itself: only to send it to the upstream.
func (s Secret) Reveal() string { return s.value }

// IsZero reports whether the secret is empty.
func (s Secret) IsZero() bool { return s.value == "" }

const redacted = "[secret]"

// String hides the secret.
func (Secret) String() string { return redacted }

// GoString hides the secret from %#v.
func (Secret) GoString() string { return "proxy.Secret(" + redacted + ")" }

// Format hides the secret from every fmt verb, %d and %x included.
func (s Secret) Format(f fmt.State, verb rune) {
	if verb == 'v' && f.Flag('#') {
		io.WriteString(f, s.GoString())
		return
	}
	io.WriteString(f, redacted)
}

// LogValue hides the secret from log/slog.
func (Secret) LogValue() slog.Value { return slog.StringValue(redacted) }

// MarshalJSON hides the secret from encoding/json.
func (Secret) MarshalJSON() ([]byte, error) { return []byte(`"` + redacted + `"`), nil }

// MarshalText hides the secret from text encoders (TOML, XML, slog's
// text handler on a struct).
func (Secret) MarshalText() ([]byte, error) { return []byte(redacted), nil }
