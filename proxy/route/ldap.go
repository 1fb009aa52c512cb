package route

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/go-ldap/ldap/v3"
)

// LDAP finds the server of a mailbox in a directory: it searches BaseDN
// for Filter with the user name put in (escaped, RFC 4515 section 3), and
// reads Attribute of the one entry found (Exchange's
// msExchHomeServerName, OpenLDAP's mailHost, ...). Each lookup opens its
// own connection, binds, searches and closes; put a Cache in front.
//
// No entry, or an entry without the attribute, is ErrNotFound. More than
// one entry is an error: the directory is ambiguous, and a guess could
// send the password to the wrong server.
type LDAP struct {
	// URL is "ldap://host[:port]" or "ldaps://host[:port]". Required.
	URL string
	// StartTLS upgrades an ldap:// connection before binding.
	StartTLS bool
	// TLSConfig verifies the directory (ldaps:// and StartTLS). Nil
	// means the system roots and the URL's host.
	TLSConfig *tls.Config
	// BindDN and BindPassword are the lookup account. Empty BindDN: an
	// anonymous search.
	BindDN       string
	BindPassword string
	// BaseDN is where the search starts. Required.
	BaseDN string
	// Filter has "{user}" where the escaped user name goes, e.g.
	// "(&(objectClass=user)(userPrincipalName={user}))". Required.
	Filter string
	// Attribute names the server. Required.
	Attribute string
	// Servers maps attribute values (compared case-insensitively; for a
	// DN-like value such as Exchange's "/o=Org/.../cn=EXCH01", its last
	// cn= too) to upstream names. A value not in it is answered as it
	// is, or, DN-like, as its last cn= ("EXCH01").
	Servers map[string]string
	// Timeout bounds one lookup: connect, bind and search. Zero means 5s.
	Timeout time.Duration
}

// Lookup searches the directory for q.User.
func (l *LDAP) Lookup(ctx context.Context, q Query) (Answer, error) {
	timeout := l.Timeout
	if timeout <= 0 {
		timeout = 5 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	deadline, _ := ctx.Deadline()
	opts := []ldap.DialOpt{ldap.DialWithDialer(&net.Dialer{Deadline: deadline})}
	if l.TLSConfig != nil {
		opts = append(opts, ldap.DialWithTLSConfig(l.TLSConfig))
	}
	conn, err := ldap.DialURL(l.URL, opts...)
	if err != nil {
		return Answer{}, fmt.Errorf("ldap: %w", err)
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	conn.SetTimeout(time.Until(deadline))
	if l.StartTLS {
		tc := l.TLSConfig
		if tc == nil {
			tc = &tls.Config{ServerName: hostOf(l.URL), MinVersion: tls.VersionTLS12}
		}
		if err := conn.StartTLS(tc); err != nil {
			return Answer{}, fmt.Errorf("ldap: StartTLS: %w", err)
		}
	}
	if l.BindDN != "" {
		if err := conn.Bind(l.BindDN, l.BindPassword); err != nil {
			return Answer{}, fmt.Errorf("ldap: bind as %s: %w", l.BindDN, err)
		}
	}
	filter := strings.ReplaceAll(l.Filter, "{user}", ldap.EscapeFilter(q.User))
	req := ldap.NewSearchRequest(l.BaseDN, ldap.ScopeWholeSubtree, ldap.NeverDerefAliases,
		2, max(1, int(time.Until(deadline).Seconds())), false, filter, []string{l.Attribute}, nil)
	res, err := conn.Search(req)
	switch {
	case ldap.IsErrorWithCode(err, ldap.LDAPResultSizeLimitExceeded):
		return Answer{}, fmt.Errorf("ldap: more than 2 entries match %s", filter)
	case err != nil:
		if ctx.Err() != nil {
			err = errors.Join(ctx.Err(), err)
		}
		return Answer{}, fmt.Errorf("ldap: search: %w", err)
	case len(res.Entries) == 0:
		return Answer{}, ErrNotFound
	case len(res.Entries) > 1:
		return Answer{}, fmt.Errorf("ldap: %d entries match %s", len(res.Entries), filter)
	}
	v := strings.TrimSpace(res.Entries[0].GetEqualFoldAttributeValue(l.Attribute))
	if v == "" {
		return Answer{}, ErrNotFound
	}
	return Answer{Server: l.server(v), Source: "ldap"}, nil
}

// server maps an attribute value to what Servers says, else the value,
// or the last cn= of a DN-like value.
func (l *LDAP) server(v string) string {
	cn := lastCN(v)
	for k, name := range l.Servers {
		if strings.EqualFold(k, v) || (cn != "" && strings.EqualFold(k, cn)) {
			return name
		}
	}
	if cn != "" {
		return cn
	}
	return v
}

// lastCN returns the last "cn=" part of an Exchange legacy DN
// ("/o=Org/ou=.../cn=Servers/cn=EXCH01") or of an RFC 4514 DN
// ("cn=EXCH01,cn=Servers,..." gives the first RDN, which is its most
// specific); "" when v is neither.
func lastCN(v string) string {
	if strings.HasPrefix(v, "/") {
		i := strings.LastIndex(strings.ToLower(v), "/cn=")
		if i < 0 {
			return ""
		}
		return v[i+len("/cn="):]
	}
	if dn, err := ldap.ParseDN(v); err == nil && len(dn.RDNs) > 1 {
		for _, a := range dn.RDNs[0].Attributes {
			if strings.EqualFold(a.Type, "cn") {
				return a.Value
			}
		}
	}
	return ""
}

func hostOf(rawURL string) string {
	_, rest, _ := strings.Cut(rawURL, "://")
	hostport, _, _ := strings.Cut(rest, "/")
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		return h
	}
	return hostport
}
