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
)

// Audit event names (CONTRACT.md).
const (
	EventConnect    = "connect"
	EventTLS        = "tls"
	EventAuth       = "auth"
	EventSessionEnd = "session_end"
)

// Auth results (CONTRACT.md).
const (
	ResultSuccess     = "success"
	ResultFailure     = "failure"
	ResultRefused     = "refused"
	ResultRateLimited = "ratelimited"
	ResultLocked      = "locked"
	ResultError       = "error"
)

// Event is one audit record. Fields that do not apply to an event are left
// empty and omitted from the JSON. No field may ever hold a password, token or
// SASL payload.
type Event struct {
	Time       time.Time         `json:"time"`
	Event      string            `json:"event"`
	Session    string            `json:"session"`
	ClientIP   string            `json:"client_ip"`
	ClientPort int               `json:"client_port"`
	Listener   string            `json:"listener"`
	Result     string            `json:"result,omitempty"`
	Reason     string            `json:"reason,omitempty"`
	User       string            `json:"user,omitempty"`
	UserHash   string            `json:"user_hash,omitempty"` // set by the Auditor in user_hash mode, instead of User
	Mechanism  string            `json:"mechanism,omitempty"`
	ClientID   map[string]string `json:"client_id,omitempty"`
	Upstream   string            `json:"upstream,omitempty"`
	TLSVersion string            `json:"tls_version,omitempty"`
	TLSCipher  string            `json:"tls_cipher,omitempty"`
	SNI        string            `json:"sni,omitempty"`
	DurationMS *int64            `json:"duration_ms,omitempty"`
	BytesIn    *int64            `json:"bytes_in,omitempty"`
	BytesOut   *int64            `json:"bytes_out,omitempty"`
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
