package route

import (
	"context"
	"fmt"
	"slices"
	"strings"
)

// Entry is one line of a static map: a user, or "@domain" for every user
// of that domain, and the upstream their mailboxes live on.
type Entry struct {
	Match    string // "alice@example.org" or "@example.org"
	Upstream string // an upstream's name
}

// Static is a fixed map from users and domains to upstreams ([[route]]
// tables). A user's own entry wins over its domain's; names are compared
// case-insensitively. The zero value knows no one.
type Static struct {
	users, domains map[string]string
	source         string
}

// NewStatic builds a Static from entries; a later entry for the same
// match replaces an earlier one (CheckEntry finds the duplicates).
func NewStatic(entries []Entry) *Static {
	return newStatic(entries, "static")
}

func newStatic(entries []Entry, source string) *Static {
	s := &Static{users: map[string]string{}, domains: map[string]string{}, source: source}
	for _, e := range entries {
		if d, ok := strings.CutPrefix(e.Match, "@"); ok {
			s.domains[strings.ToLower(d)] = e.Upstream
		} else {
			s.users[strings.ToLower(e.Match)] = e.Upstream
		}
	}
	return s
}

// Lookup answers with the user's entry, else its domain's, else
// ErrNotFound.
func (s *Static) Lookup(_ context.Context, q Query) (Answer, error) {
	if s == nil {
		return Answer{}, ErrNotFound
	}
	if up, ok := s.users[strings.ToLower(q.User)]; ok {
		return Answer{Server: up, Source: s.source}, nil
	}
	if d := domainOf(q.User); d != "" {
		if up, ok := s.domains[strings.ToLower(d)]; ok {
			return Answer{Server: up, Source: s.source}, nil
		}
	}
	return Answer{}, ErrNotFound
}

// Upstreams returns the upstream names the entries use, sorted.
func (s *Static) Upstreams() []string {
	if s == nil {
		return nil
	}
	var names []string
	for _, m := range []map[string]string{s.users, s.domains} {
		for _, up := range m {
			if !slices.Contains(names, up) {
				names = append(names, up)
			}
		}
	}
	slices.Sort(names)
	return names
}

// Len returns the number of entries.
func (s *Static) Len() int {
	if s == nil {
		return 0
	}
	return len(s.users) + len(s.domains)
}

// CheckMatch checks a user or "@domain" of an entry.
func CheckMatch(m string) error {
	switch d, isDomain := strings.CutPrefix(m, "@"); {
	case m == "":
		return fmt.Errorf("is empty: write a user (\"alice@example.org\") or a domain (\"@example.org\")")
	case strings.ContainsAny(m, " \t\r\n\x00"):
		return fmt.Errorf("%q has a space or control character", m)
	case isDomain && (d == "" || strings.Contains(d, "@")):
		return fmt.Errorf("%q is not \"@domain\" like \"@example.org\"", m)
	}
	return nil
}
