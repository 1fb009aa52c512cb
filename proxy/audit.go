package proxy

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"log/slog"
	"sync"
	"time"

	"github.com/imapgate/imapgate/auth"
	"github.com/imapgate/imapgate/policy"
)

// The audit vocabulary (README "Audit events"): every event, result and
// reason word a session writes. The words a policy decision produces are
// the policy package's, named here by reference, so each word is spelled
// once: Access.Allowed and ConnLimiter.Acquire refuse a connect with
// theirs, Guard.Check an auth attempt with its result and reason.

// Events.
const (
	EventConnect    = "connect"     // a connection was admitted or refused
	EventTLS        = "tls"         // a client TLS handshake ended
	EventAuth       = "auth"        // an authentication attempt was answered
	EventSessionEnd = "session_end" // an admitted connection closed
)

// Results of connect and tls events.
const (
	ResultAccepted = "accepted" // connect: admitted
	ResultOK       = "ok"       // tls: handshake done
	ResultFailed   = "failed"   // tls: handshake failed
)

// Results of auth events; ResultRefused is also a refused connect.
const (
	ResultSuccess     = "success"
	ResultFailure     = "failure"
	ResultRefused     = "refused"
	ResultRateLimited = policy.ResultRateLimited // an address or network spent its budget
	ResultLocked      = policy.ResultLocked      // a user, or a user's device, spent its budget
	ResultError       = "error"                  // the server's failure, not the client's: spends no budget
)

// Reasons of a refused connect: the access rules and connection limits
// (policy's), and a trusted proxy's PROXY header (proxyheader.go); a
// shutdown while waiting for the header is refused as endShutdown.
const (
	ReasonDenied            = policy.ReasonDenied            // in a deny prefix
	ReasonNotAllowed        = policy.ReasonNotAllowed        // in no allow prefix
	ReasonTooManyConns      = policy.ReasonTooManyConns      // max_connections reached
	ReasonTooManyPerIP      = policy.ReasonTooManyPerIP      // max_connections_per_ip reached
	ReasonTooManyPerNetwork = policy.ReasonTooManyPerNetwork // max_connections_per_network reached

	ReasonProxyHeaderTimeout = "proxy_header_timeout" // no header within ProxyHeaderTimeout
	ReasonProxyHeaderMissing = "proxy_header_missing" // closed, or sent something else first
	ReasonProxyHeaderInvalid = "proxy_header_invalid" // a malformed header, or one with no TCP address
)

// Reasons of a tls event: why a handshake failed, or, with ResultOK, that
// it was an ACME CA's TLS-ALPN-01 validation (RFC 8737).
const (
	ReasonTLSTimeout      = "timeout"
	ReasonTLSClientClosed = endClientClosed
	ReasonNotTLS          = "not_tls"
	ReasonClientAlert     = "client_alert"
	ReasonProtocolVersion = "protocol_version"
	ReasonNoSharedCipher  = "no_shared_cipher"
	ReasonHandshakeError  = "handshake_error"
	ReasonACMEChallenge   = "acme_challenge"

	// A client certificate the listener refused (client_certs =
	// "require"; README "Client certificates"): none sent, one its
	// client_ca_file did not issue for client authentication, or one out
	// of date.
	ReasonClientCertRequired  = "client_cert_required"
	ReasonClientCertUntrusted = "client_cert_untrusted"
	ReasonClientCertExpired   = "client_cert_expired"
)

// Reasons of an auth event.
const (
	// ResultRefused: the command or mechanism is not allowed here.
	ReasonTLSRequired           = "tls_required"
	ReasonMechanismNotAllowed   = "mechanism_not_allowed"
	ReasonPlaintextLoginRefused = "plaintext_login_refused"
	ReasonLoginCommandDisabled  = "login_command_disabled"

	// ResultFailure: a claim auth refuses (no budget is spent), a
	// cancelled exchange, or the upstream's verdict.
	ReasonMalformedResponse = "malformed_response"
	ReasonMalformedUser     = "malformed_user"
	ReasonEmptyCredentials  = "empty_credentials"
	ReasonAuthzidNotAllowed = "authzid_not_allowed"
	ReasonClientCancelled   = "client_cancelled"
	ReasonBadCredentials    = "bad_credentials"
	ReasonUpstreamNoAnswer  = "upstream_no_answer" // sent, but no answer within login_timeout
	// ReasonPassthroughDisabled: a password that is not an app password
	// where only app passwords are accepted (auth.passthrough = false, or
	// LOGIN with login_command = "app-passwords"). The app password
	// words (app_password_revoked, app_password_expired,
	// app_password_scope) are credstore's.
	ReasonPassthroughDisabled = "passthrough_disabled"

	// ResultRateLimited and ResultLocked: the budget Guard.Check found
	// spent.
	ReasonIPRateLimited  = policy.ReasonIPRateLimited
	ReasonNetRateLimited = policy.ReasonNetRateLimited
	ReasonUserLocked     = policy.ReasonUserLocked
	ReasonDeviceLocked   = policy.ReasonDeviceLocked

	// ResultError: the server's state; the attempt is given back.
	ReasonUpstreamUnavailable   = "upstream_unavailable"
	ReasonUpstreamProtocolError = "upstream_protocol_error"
	// ReasonUpstreamBusy: max_upstream_logins reached and the queue full
	// or too slow.
	ReasonUpstreamBusy = "upstream_busy"
	// ReasonAttemptsInFlight: attempts in flight filled a budget that
	// failures had not spent, and stayed so while the attempt waited
	// (policy.Decision.Busy).
	ReasonAttemptsInFlight = "attempts_in_flight"
	// ReasonMasterLoginFailed: the upstream rejected the master login
	// for a client that proved itself with an app password (a wrong
	// master secret, or a form the upstream does not take).
	ReasonMasterLoginFailed = "master_login_failed"
	// ReasonMasterMailboxRefused: the master login was accepted but the
	// upstream will not open that mailbox (it has no such user, or a
	// deny rule).
	ReasonMasterMailboxRefused = "master_mailbox_refused"
	// ReasonCredentialStoreError: the app password store failed.
	ReasonCredentialStoreError = "credential_store_error"
)

// CredentialAppPassword is the credential field of an auth event whose
// client gave an app password; auth names the other kinds.
const CredentialAppPassword = auth.CredentialAppPassword

// Reasons a session ends (session_end.reason). The first six end relayed
// sessions as well as pre-auth ones; the rest only come before the relay.
const (
	endClientClosed   = "client_closed"
	endUpstreamClosed = "upstream_closed"
	endIdleTimeout    = "idle_timeout"
	endShutdown       = "shutdown"
	endClientError    = "client_error"
	endUpstreamError  = "upstream_error"

	endClientLogout        = "client_logout"
	endPreauthTimeout      = "preauth_timeout"
	endLineTooLong         = "line_too_long"
	endLiteralTooLarge     = "literal_too_large"
	endPreauthTooLarge     = "preauth_too_large"
	endTooManyBadCommands  = "too_many_bad_commands"
	endTooManyAuthFailures = "too_many_auth_failures"
	endStartTLSPipelined   = "starttls_pipelined"
	endTLSFailed           = "tls_failed"
	endACMEChallenge       = ReasonACMEChallenge

	// endCredentialRevoked: the app password the session logged in with
	// was revoked (Server.EndCredential).
	endCredentialRevoked = "credential_revoked"
	// endKicked: an admin ended the session (imapgate kick; Server.Kick,
	// Server.KickCredential).
	endKicked = "kicked"
)

// Event is one audit record. Fields that do not apply to an event are left
// empty and omitted from the JSON. No field may ever hold a password, token or
// SASL payload.
type Event struct {
	Time       time.Time `json:"time"`
	Event      string    `json:"event"`
	Session    string    `json:"session"`
	ClientIP   string    `json:"client_ip"`
	ClientPort int       `json:"client_port"`
	Listener   string    `json:"listener"`
	Result     string    `json:"result,omitempty"`
	Reason     string    `json:"reason,omitempty"`
	User       string    `json:"user,omitempty"`
	UserHash   string    `json:"user_hash,omitempty"` // set by the Auditor in user_hash mode, instead of User
	Mechanism  string    `json:"mechanism,omitempty"`
	// Credential is the kind of credential imapgate judged itself
	// (app_password, oauth_token, client_cert: see auth.Credential); then
	// CredentialID and CredentialLabel name it. Empty for a password
	// passed through. Never a secret or a hash.
	Credential      string            `json:"credential,omitempty"`
	CredentialID    string            `json:"credential_id,omitempty"`
	CredentialLabel string            `json:"credential_label,omitempty"`
	ClientID        map[string]string `json:"client_id,omitempty"`
	Upstream        string            `json:"upstream,omitempty"`
	TLSVersion      string            `json:"tls_version,omitempty"`
	TLSCipher       string            `json:"tls_cipher,omitempty"`
	SNI             string            `json:"sni,omitempty"`
	DurationMS      *int64            `json:"duration_ms,omitempty"`
	BytesIn         *int64            `json:"bytes_in,omitempty"`
	BytesOut        *int64            `json:"bytes_out,omitempty"`

	// UpstreamName is the [[upstream]] name the login was routed to, and
	// Route the lookup that chose it ("static", "map_file", "ldap",
	// "auth_http", or "default" when none knew the user; empty without
	// lookups). UpstreamName is empty for a single unnamed [upstream]
	// (README "Routing").
	UpstreamName string `json:"upstream_name,omitempty"`
	Route        string `json:"route,omitempty"`
}

// Auditor writes audit events as JSON lines. The zero value discards events.
// It is safe for concurrent use.
type Auditor struct {
	mu      sync.Mutex
	w       io.Writer
	log     *slog.Logger // where write errors are reported; nil = slog.Default()
	enc     *json.Encoder
	userKey []byte       // non-nil: user names are written as user_hash
	observe func(*Event) // sees every event before it is written (metrics)
}

// NewAuditor returns an Auditor writing to w. Write errors are reported on
// log (the operational log) and never reach the session.
func NewAuditor(w io.Writer, log *slog.Logger) *Auditor {
	a := &Auditor{log: log}
	a.SetOutput(w)
	return a
}

// SetOutput switches the sink (for reopening a file on SIGHUP).
func (a *Auditor) SetOutput(w io.Writer) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.w = w
	if w != nil {
		a.enc = json.NewEncoder(w)
		a.enc.SetEscapeHTML(false)
	} else {
		a.enc = nil
	}
}

// SetUserKey turns user_hash mode on (a non-empty key) or off (nil): the
// user name is then written as user_hash, the hex HMAC-SHA256 of the name
// under key, so one user's events still correlate but the log holds no
// names. The event given to Log is not changed.
func (a *Auditor) SetUserKey(key []byte) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if len(key) == 0 {
		a.userKey = nil
		return
	}
	a.userKey = append([]byte(nil), key...)
}

// SetObserver installs f to see every event, with the real user name,
// before it is written; nil removes it. f runs on the session's goroutine
// and must be quick (metrics counters).
func (a *Auditor) SetObserver(f func(*Event)) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.observe = f
}

// HashUser returns the user_hash of user under key: hex HMAC-SHA256.
func HashUser(key []byte, user string) string {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(user))
	return hex.EncodeToString(m.Sum(nil))
}

// Log writes one event. A zero Time is set to now (UTC).
func (a *Auditor) Log(e *Event) {
	if a == nil {
		return
	}
	if e.Time.IsZero() {
		e.Time = time.Now().UTC()
	} else {
		e.Time = e.Time.UTC()
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.observe != nil {
		a.observe(e)
	}
	if a.enc == nil {
		return
	}
	if a.userKey != nil && e.User != "" {
		c := *e
		c.UserHash, c.User = HashUser(a.userKey, e.User), ""
		e = &c
	}
	if err := a.enc.Encode(e); err != nil {
		l := a.log
		if l == nil {
			l = slog.Default()
		}
		l.Error("audit: write failed", "event", e.Event, "err", err)
	}
}
