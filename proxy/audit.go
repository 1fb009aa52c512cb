package proxy

import (
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
	mu  sync.Mutex
	w   io.Writer
	log *slog.Logger // where write errors are reported; nil = slog.Default()
	enc *json.Encoder
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
	if a.enc == nil {
		return
	}
	if err := a.enc.Encode(e); err != nil {
		l := a.log
		if l == nil {
			l = slog.Default()
		}
		l.Error("audit: write failed", "event", e.Event, "err", err)
	}
}
