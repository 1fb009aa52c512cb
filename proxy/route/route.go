// Package route finds the upstream a user's mailbox lives on: a static
// map, a map file, an LDAP directory, or an HTTP service that speaks
// nginx's auth_http protocol (README "Routing").
//
//	lookups := []route.Lookup{
//		route.NewStatic([]route.Entry{{Match: "@example.org", Upstream: "exchange"}}),
//		route.Cached(&route.LDAP{URL: "ldaps://dc1.corp.example", ...}, 10000, 5*time.Minute),
//	}
//	a, err := route.First(ctx, lookups, route.Query{User: "alice@example.org"})
//
// A lookup answers with the name of an upstream or the address of a
// server (Answer.Server); the caller, proxy.Router, turns that into one
// of the upstreams the configuration names, and never dials anything
// else.
package route

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"time"
)

// Query is what a lookup is asked about one login.
type Query struct {
	// User is the user name as the client typed it.
	User string
	// Password is the client's password; empty unless a lookup is
	// configured to be sent it (HTTP.SendPassword). Never logged.
	Password string
	// Method is nginx's Auth-Method for the login: "plain" for
	// AUTHENTICATE PLAIN and the LOGIN command.
	Method string
	// Attempt counts the login attempts of this connection, from 1
	// (nginx's Auth-Login-Attempt).
	Attempt int
	// ClientIP is the client's address; invalid when unknown.
	ClientIP netip.Addr
	// Secure is set when the client connection is TLS.
	Secure bool
}

// Answer is a lookup's answer.
type Answer struct {
	// Server names where the mailbox is: an upstream name, a
	// "host:port", or a host.
	Server string
	// Source is the lookup that answered ("static", "map_file", "ldap",
	// "auth_http"), for audit events and logs.
	Source string
}

// ErrNotFound is a lookup's answer when it knows nothing of the user: the
// next lookup is asked, and after the last the default upstream is used.
var ErrNotFound = errors.New("route: no entry for the user")

// ErrRefused is matched by a *RefusedError.
var ErrRefused = errors.New("route: the lookup refused the login")

// RefusedError is a lookup's refusal of a login: an auth_http service
// answered an Auth-Status other than OK. The login is answered like a
// wrong password and reaches no upstream.
type RefusedError struct {
	// Status is the service's Auth-Status text; it is logged, never
	// shown to the client.
	Status string
	// Wait is the service's Auth-Wait: how long to wait before
	// answering. Zero when it sent none.
	Wait time.Duration
}

func (e *RefusedError) Error() string {
	return fmt.Sprintf("route: the lookup refused the login: %q", e.Status)
}

// Is makes errors.Is(err, ErrRefused) true.
func (e *RefusedError) Is(target error) bool { return target == ErrRefused }

// Lookup names the server of a user's mailbox. It returns ErrNotFound when
// it has no entry for the user, a *RefusedError when it refuses the
// login, and any other error when it could not tell (timeout, directory
// down, a malformed answer): the login then fails with NO [UNAVAILABLE],
// and never goes to some other server.
type Lookup interface {
	Lookup(ctx context.Context, q Query) (Answer, error)
}

// First asks each lookup in turn and returns the first answer or error
// that is not ErrNotFound; ErrNotFound when none knows the user.
func First(ctx context.Context, lookups []Lookup, q Query) (Answer, error) {
	for _, l := range lookups {
		a, err := l.Lookup(ctx, q)
		if errors.Is(err, ErrNotFound) {
			continue
		}
		return a, err
	}
	return Answer{}, ErrNotFound
}

// domainOf returns the domain of user ("example.org" for
// "alice@example.org"), or "" when it has none.
func domainOf(user string) string {
	if i := strings.LastIndexByte(user, '@'); i >= 0 {
		return user[i+1:]
	}
	return ""
}
