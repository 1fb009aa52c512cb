package proxy

import (
	"net/netip"
	"slices"
	"strings"
	"time"
)

// SessionInfo is one logged-in session, as `imapgate sessions` lists it
// (README "Sessions and kick"). It never holds a secret.
type SessionInfo struct {
	// Session is the id shared by the session's audit events.
	Session string `json:"session"`
	User    string `json:"user"`
	// Mechanism is how the client logged in: a SASL mechanism, or LOGIN.
	Mechanism string `json:"mechanism"`
	// Credential, CredentialID and CredentialLabel name the credential
	// imapgate judged (app_password, oauth_token, client_cert), as in the
	// auth event; empty for a password passed through.
	Credential      string         `json:"credential,omitempty"`
	CredentialID    string         `json:"credential_id,omitempty"`
	CredentialLabel string         `json:"credential_label,omitempty"`
	Client          netip.AddrPort `json:"client"`
	Listener        string         `json:"listener"`
	Upstream        string         `json:"upstream"`
	// Since is when the session logged in.
	Since time.Time `json:"since"`
	// BytesIn and BytesOut are the bytes relayed so far, client to
	// upstream and back.
	BytesIn  int64 `json:"bytes_in"`
	BytesOut int64 `json:"bytes_out"`
}

// ListSessions returns the sessions logged in now, oldest first. Sessions
// that have not logged in yet are left out. It costs one pass over the
// open sessions.
func (s *Server) ListSessions() []SessionInfo {
	s.mu.Lock()
	out := make([]SessionInfo, 0, len(s.sessions))
	for sess := range s.sessions {
		if sess.loggedIn.IsZero() {
			continue
		}
		info := SessionInfo{
			Session:         sess.id,
			User:            sess.user,
			Mechanism:       sess.mechanism,
			Credential:      sess.credential.Kind,
			CredentialID:    sess.credential.ID,
			CredentialLabel: sess.credential.Label,
			Client:          sess.clientAddr,
			Listener:        sess.l.Name,
			Upstream:        sess.upstreamAddr,
			Since:           sess.loggedIn,
		}
		sess.mu.Lock()
		if r := sess.relay; r != nil {
			info.BytesIn, info.BytesOut = r.in.Load(), r.out.Load()
		}
		sess.mu.Unlock()
		out = append(out, info)
	}
	s.mu.Unlock()
	slices.SortFunc(out, func(a, b SessionInfo) int { return a.Since.Compare(b.Since) })
	return out
}

// Kick ends every logged-in session of user (compared without case;
// session_end reason kicked) and returns how many it ended. The user can
// log in again at once: to keep a device out, revoke its credential.
func (s *Server) Kick(user string) int {
	if user == "" {
		return 0
	}
	return s.endWhere(endKicked, func(sess *session) bool {
		return !sess.loggedIn.IsZero() && strings.EqualFold(sess.user, user)
	})
}

// KickCredential ends every logged-in session that logged in with the
// credential id, of any kind (session_end reason kicked), and returns how
// many it ended.
func (s *Server) KickCredential(id string) int {
	if id == "" {
		return 0
	}
	return s.endWhere(endKicked, func(sess *session) bool {
		return !sess.loggedIn.IsZero() && sess.credential.ID == id
	})
}

// endWhere ends the open sessions match picks (called under s.mu) with
// session_end reason why, and returns how many.
func (s *Server) endWhere(why string, match func(*session) bool) int {
	s.mu.Lock()
	var ending []*session
	for sess := range s.sessions {
		if match(sess) {
			ending = append(ending, sess)
		}
	}
	s.mu.Unlock()
	// Outside the lock, as in Shutdown: ending a parked session finishes
	// it right here, and finishing takes the lock.
	for _, sess := range ending {
		sess.abort(why)
	}
	return len(ending)
}
