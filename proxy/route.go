package proxy

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/imapgate/imapgate/auth"
	"github.com/imapgate/imapgate/proxy/route"
)

// Reasons of an auth event about routing (README "Routing").
const (
	// ReasonRouteFailed (result error): a routing lookup failed (timeout,
	// directory down, a malformed answer) or named a server the config
	// does not know. The client gets NO [UNAVAILABLE]; nothing is
	// counted, nothing reaches any upstream.
	ReasonRouteFailed = "route_failed"
	// ReasonRouteRefused (result failure): an auth_http service answered
	// an Auth-Status other than OK. Answered and counted like a wrong
	// password; nothing reaches any upstream.
	ReasonRouteRefused = "route_refused"
)

// RouteDefault is the Event.Route of a login no lookup knew.
const RouteDefault = "default"

// ErrRouteFailed: no upstream could be chosen for a login (see
// ReasonRouteFailed).
var ErrRouteFailed = errors.New("routing failed")

// Router picks the upstream for each login, after the client
// authenticated and before the upstream login (README "Routing"). The
// zero value is not useful: Default is required.
type Router struct {
	// Upstreams are the named upstreams a lookup may answer with, by
	// name or by one of their addresses. Default should be one of them.
	Upstreams []*UpstreamGroup
	// Default gets every login no lookup knows. Required.
	Default *UpstreamGroup
	// Lookups are asked in order; the first that knows the user decides
	// (route.First). Empty: every login goes to Default.
	Lookups []route.Lookup
	// Timeout bounds the lookups of one login together. Zero means 10s.
	Timeout time.Duration
	// SendPassword puts the client's own password into the query (an
	// auth_http service configured with send_password). False: lookups
	// never see a password.
	SendPassword bool
}

// Route returns the upstream for q and the lookup that chose it
// (RouteDefault when none knew the user, "" when there are no lookups). The error wraps
// route.ErrRefused for a refusal (a *route.RefusedError), else
// ErrRouteFailed.
func (r *Router) Route(ctx context.Context, q route.Query) (*UpstreamGroup, string, error) {
	if len(r.Lookups) == 0 {
		return r.Default, "", nil
	}
	ctx, cancel := context.WithTimeout(ctx, orDefault(r.Timeout, 10*time.Second))
	defer cancel()
	a, err := route.First(ctx, r.Lookups, q)
	switch {
	case errors.Is(err, route.ErrNotFound):
		return r.Default, RouteDefault, nil
	case errors.Is(err, route.ErrRefused):
		return nil, a.Source, err
	case err != nil:
		return nil, a.Source, fmt.Errorf("%w: %w", ErrRouteFailed, err)
	}
	g := r.resolve(a.Server)
	if g == nil {
		return nil, a.Source, fmt.Errorf("%w: the %s lookup named %q, which is no upstream name or address in the config", ErrRouteFailed, a.Source, a.Server)
	}
	return g, a.Source, nil
}

// resolve turns a lookup's answer into an upstream: an upstream's name,
// else one of its addresses ("host:port", the host compared
// case-insensitively), else a host alone, matched against the addresses'
// hosts. An address alone gets no failover: the lookup named that
// server. Nil when nothing matches: a lookup never makes imapgate dial a
// server the config does not name.
func (r *Router) resolve(server string) *UpstreamGroup {
	for _, g := range r.Upstreams {
		if g.Name != "" && strings.EqualFold(g.Name, server) {
			return g
		}
	}
	host, port, err := net.SplitHostPort(server)
	if err != nil {
		host, port = strings.Trim(server, "[]"), ""
	}
	for _, g := range r.Upstreams {
		for i, m := range g.Members {
			h, p, _ := net.SplitHostPort(m.Address)
			if strings.EqualFold(h, host) && (port == "" || p == port) {
				if len(g.Members) == 1 {
					return g
				}
				return g.only(i)
			}
		}
	}
	return nil
}

// routeAttempt picks the upstream for the attempt of who (the mailbox of
// an app password, else the user named), after the password was judged
// and before an upstream login slot is taken. When no upstream can be
// chosen the attempt is answered here, and ok is false: a failed lookup
// is NO [UNAVAILABLE], given back (route_failed), never a login to
// another server; a refusal is answered like a wrong password
// (route_refused) after the service's Auth-Wait.
func (s *session) routeAttempt(at *loginAttempt, v verdict, who auth.Result) (g *UpstreamGroup, n next, ok bool) {
	ev := at.ev
	r := s.cfg.Router
	if r == nil {
		return Single("", s.cfg.Upstream), stay, true
	}
	q := route.Query{User: who.User, Method: "plain", Attempt: s.authFailures + 1, ClientIP: s.clientAddr.Addr(), Secure: s.isTLS}
	switch {
	case v.viaMaster:
		q.User, q.Method = v.user, "external" // proven to imapgate: no password to show
	case r.SendPassword:
		q.Password = who.Password.Reveal()
	}
	g, source, err := r.Route(s.ctx, q)
	ev.Route = source
	var refused *route.RefusedError
	switch {
	case errors.As(err, &refused):
		s.cfg.log().Info("routing lookup refused the login", "session", s.id, "route", source, "status", refused.Status)
		s.waitSince(at.start, refused.Wait)
		return nil, s.credentialRefused(at, ReasonRouteRefused), false
	case err != nil:
		s.giveBack(at)
		ev.Upstream = ""
		return nil, s.unavailable(at.tag, ev, ReasonRouteFailed, "routing lookup failed", err), false
	}
	ev.UpstreamName, ev.Upstream = g.Name, g.Label()
	return g, stay, true
}

// upstreamLoginVia logs in through g with login, noting in ev the address
// each try goes to, so the audit event names the one that answered.
func upstreamLoginVia(g *UpstreamGroup, ev *Event, login func(*Upstream) (*UpstreamConn, error)) (*UpstreamConn, error) {
	return g.login(func(u *Upstream) (*UpstreamConn, error) {
		ev.Upstream = u.Address
		return login(u)
	})
}
