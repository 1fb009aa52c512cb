package proxy

import (
	"net/netip"
	"slices"
)

// ListenerAuth is how the clients of one listener may log in (README
// "[[listen]] mechanisms and passthrough"). Its zero value takes
// Config.Mechanisms and passes the user's own password through.
type ListenerAuth struct {
	// Mechanisms are the SASL mechanisms the listener offers after TLS,
	// those auth.Offered keeps. Empty: Config.Mechanisms.
	Mechanisms []string
	// RefusePassThrough is Config.RefusePassThrough for the listener's
	// clients: true turns the user's own password off there (reason
	// passthrough_disabled); only app passwords, tokens and certificates
	// work. False passes it through.
	RefusePassThrough bool
}

// PassThroughRule decides pass-through for the clients it matches
// ([[policy.rule]] passthrough): those whose address is in one of
// Networks (any address when empty) connecting to one of Listeners (any
// listener when empty).
type PassThroughRule struct {
	Networks  []netip.Prefix
	Listeners []string
	// PassThrough says whether the user's own password is passed through
	// for the clients the rule matches. Nil: the rule leaves it to the
	// listener (ListenerAuth, else Config.RefusePassThrough).
	PassThrough *bool
}

func (r *PassThroughRule) matches(addr netip.Addr, listener string) bool {
	if len(r.Listeners) > 0 && !slices.Contains(r.Listeners, listener) {
		return false
	}
	if len(r.Networks) == 0 {
		return true
	}
	return slices.ContainsFunc(r.Networks, func(p netip.Prefix) bool { return p.Contains(addr) })
}

// listenerAuth returns the settings of the session's listener: its entry
// in Config.Listeners, else Config's own.
func (s *session) listenerAuth() ListenerAuth {
	la, ok := s.cfg.Listeners[s.l.Name]
	if !ok {
		la.RefusePassThrough = s.cfg.RefusePassThrough
	}
	if len(la.Mechanisms) == 0 {
		la.Mechanisms = s.cfg.Mechanisms
	}
	return la
}

// mechanisms are the SASL mechanisms the session's listener offers.
func (s *session) mechanisms() []string { return s.listenerAuth().Mechanisms }

// passThrough reports whether the user's own password may reach the
// upstream from this client: the first PassThroughRule that matches the
// client decides, unless it leaves it to the listener; then the listener.
func (s *session) passThrough() bool {
	addr := s.clientAddr.Addr().Unmap()
	for i := range s.cfg.PassThroughRules {
		r := &s.cfg.PassThroughRules[i]
		if r.matches(addr, s.l.Name) {
			if r.PassThrough != nil {
				return *r.PassThrough
			}
			break
		}
	}
	return !s.listenerAuth().RefusePassThrough
}
