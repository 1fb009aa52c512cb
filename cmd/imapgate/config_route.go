package main

// Several upstreams and the routing between them: [[upstream]] tables,
// [[route]] tables and the [routing] table (README "Routing").

import (
	"net/url"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/imapgate/imapgate/proxy/route"
)

// RouteConfig is one [[route]] table.
type RouteConfig struct {
	// Match is a user ("alice@example.org") or a domain ("@example.org").
	// A user's own route wins over its domain's. Compared
	// case-insensitively.
	// Default: none, required.
	Match string `toml:"match"`

	// Upstream is the name of the [[upstream]] the mailboxes are on.
	// Default: none, required.
	Upstream string `toml:"upstream"`
}

// RoutingConfig is the [routing] table.
type RoutingConfig struct {
	// MapFile is a file of "user-or-@domain upstream-name" lines, asked
	// after the [[route]] tables; re-read when its modification time or
	// size changes (checked at most every MapCheckInterval) and on SIGHUP.
	// A file that fails to load is refused at start; later, the last good
	// one stays in force and the error is logged.
	// Default: "" (none).
	MapFile string `toml:"map_file"`

	// MapCheckInterval is how often the map file is checked for changes.
	// Default: 30s.
	MapCheckInterval Duration `toml:"map_check_interval"`

	// Timeout bounds all lookups of one login together.
	// Default: 10s.
	Timeout Duration `toml:"timeout"`

	// LDAP is the [routing.ldap] table.
	// Default: nil (no LDAP lookup).
	LDAP *LDAPRouteConfig `toml:"ldap"`

	// HTTP is the [routing.http] table.
	// Default: nil (no auth_http lookup).
	HTTP *HTTPRouteConfig `toml:"http"`
}

// LDAPRouteConfig is the [routing.ldap] table (route.LDAP).
type LDAPRouteConfig struct {
	// URL is "ldap://host[:port]" or "ldaps://host[:port]". Required.
	URL string `toml:"url"`
	// StartTLS runs StartTLS on an ldap:// URL. Default: false.
	StartTLS bool `toml:"start_tls"`
	// CAFile verifies the directory's certificate. Default: system roots.
	CAFile string `toml:"ca_file"`
	// BindDN and BindPasswordFile are the lookup account; both or
	// neither (anonymous). The file holds the password (one final
	// newline ignored), never logged. Default: anonymous.
	BindDN           string `toml:"bind_dn"`
	BindPasswordFile string `toml:"bind_password_file"`
	// BaseDN is where the search starts. Required.
	BaseDN string `toml:"base_dn"`
	// Filter finds the user's entry; {user} stands for the user name,
	// escaped (RFC 4515). Required.
	Filter string `toml:"filter"`
	// Attribute names the server: msExchHomeServerName, mailHost, ...
	// Required.
	Attribute string `toml:"attribute"`
	// Servers maps attribute values to upstream names. Default: none
	// (the value itself, or the last cn= of a DN, is an upstream's name,
	// address or host).
	Servers map[string]string `toml:"servers"`
	// Timeout bounds one lookup. Default: 5s.
	Timeout Duration `toml:"timeout"`
	// CacheSize and CacheTTL bound the cache of answers. Default: 10000, 5m.
	CacheSize int      `toml:"cache_size"`
	CacheTTL  Duration `toml:"cache_ttl"`
}

// HTTPRouteConfig is the [routing.http] table: an nginx auth_http service
// (route.HTTP).
type HTTPRouteConfig struct {
	// URL is the service, "http://..." or "https://...". Required.
	URL string `toml:"url"`
	// SendPassword sends the client's password as Auth-Pass, as nginx
	// does. Default: false: Auth-Pass is never sent.
	SendPassword bool `toml:"send_password"`
	// Headers are sent with every request (nginx's auth_http_header),
	// e.g. a shared secret. Default: none.
	Headers map[string]string `toml:"headers"`
	// CAFile verifies an https:// service. Default: system roots.
	CAFile string `toml:"ca_file"`
	// Timeout bounds one request. Default: 5s.
	Timeout Duration `toml:"timeout"`
	// CacheSize and CacheTTL bound the cache of OK answers; nothing is
	// cached with SendPassword. Default: 10000, 1m.
	CacheSize int      `toml:"cache_size"`
	CacheTTL  Duration `toml:"cache_ttl"`
}

func defaultRouting() RoutingConfig {
	return RoutingConfig{MapCheckInterval: Duration{30 * time.Second}, Timeout: Duration{10 * time.Second}}
}

// upstreamNameRE is what an upstream's name may be.
var upstreamNameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)

// upstreams decodes the [upstream] table or the [[upstream]] tables into
// c.Upstreams, and c.Upstream = the default one: named "default", else
// the first. It returns the tables, parallel to c.Upstreams.
func (d *decoder) upstreams(t *table, c *Config) []*table {
	if _, isArray := t.m["upstream"].([]map[string]any); !isArray {
		st, _ := t.sub("upstream", "[upstream]")
		d.upstream(st, &c.Upstream)
		if !st.quiet && st.m != nil && c.Upstream.Name != "" && !upstreamNameRE.MatchString(c.Upstream.Name) {
			st.problem("name", "%q is not a name of letters, digits and \"._-\"", c.Upstream.Name)
		}
		c.Upstreams = []UpstreamConfig{c.Upstream}
		return []*table{st}
	}
	tables := t.tables("upstream", "[[upstream]]")
	byName := map[string]int{}
	def := 0
	for i, ut := range tables {
		u := DefaultConfig().Upstream
		d.upstream(ut, &u)
		switch j, dup := byName[strings.ToLower(u.Name)]; {
		case u.Name == "":
			ut.missing("name", "is required in [[upstream]] tables: [[route]] and lookups name upstreams by it")
		case !upstreamNameRE.MatchString(u.Name):
			ut.problem("name", "%q is not a name of letters, digits and \"._-\"", u.Name)
		case dup:
			ut.problem("name", "%q is already the name of upstream[%d]", u.Name, j)
		default:
			byName[strings.ToLower(u.Name)] = i
		}
		if u.Name == "default" {
			def = i
		}
		c.Upstreams = append(c.Upstreams, u)
	}
	c.Upstream = c.Upstreams[def]
	return tables
}

// routes decodes the [[route]] tables and checks that each names an
// upstream.
func (d *decoder) routes(t *table, c *Config, upstreamTables []*table) {
	tables, routes := decodeTables(t, "route", "[[route]]", func(rt *table) RouteConfig {
		var r RouteConfig
		rt.str("match", &r.Match)
		rt.str("upstream", &r.Upstream)
		rt.done()
		return r
	})
	c.Routes = routes
	seen := map[string]int{}
	for i, r := range routes {
		rt := tables[i]
		if r.Match == "" {
			rt.missing("match", "is required: a user (\"alice@example.org\") or a domain (\"@example.org\")")
		} else if err := route.CheckMatch(r.Match); err != nil {
			rt.problem("match", "%s", err)
		} else if j, dup := seen[strings.ToLower(r.Match)]; dup {
			rt.problem("match", "%q is already the match of route[%d]", r.Match, j)
		} else {
			seen[strings.ToLower(r.Match)] = i
		}
		checkUpstreamName(rt, "upstream", r.Upstream, c, true)
	}
}

// checkUpstreamName checks that name (the value of key in t) names an
// upstream of c.
func checkUpstreamName(t *table, key, name string, c *Config, required bool) {
	if name == "" {
		if required {
			t.missing(key, "is required: the name of an [[upstream]]")
		}
		return
	}
	if !t.ok(key) || upstreamNamed(c, name) >= 0 {
		return
	}
	var names []string
	for _, u := range c.Upstreams {
		if u.Name != "" {
			names = append(names, u.Name)
		}
	}
	if len(names) == 0 {
		t.problem(key, "%q names no upstream: name them in [[upstream]] tables (name = ...)", name)
		return
	}
	t.problem(key, "%q is not the name of an [[upstream]] (names: %s)", name, strings.Join(names, ", "))
}

// upstreamNamed returns the index in c.Upstreams of the upstream called
// name, or -1.
func upstreamNamed(c *Config, name string) int {
	return slices.IndexFunc(c.Upstreams, func(u UpstreamConfig) bool { return u.Name != "" && strings.EqualFold(u.Name, name) })
}

func (d *decoder) routing(t *table, c *Config) {
	r := &c.Routing
	t.str("map_file", &r.MapFile)
	t.duration("map_check_interval", &r.MapCheckInterval)
	t.duration("timeout", &r.Timeout)
	lt, hasLDAP := t.sub("ldap", "[routing.ldap]")
	if !hasLDAP {
		lt.quiet = true
	}
	d.routingLDAP(lt, c)
	ht, hasHTTP := t.sub("http", "[routing.http]")
	if !hasHTTP {
		ht.quiet = true
	}
	d.routingHTTP(ht, c)
	t.done()
	t.positive("map_check_interval", r.MapCheckInterval)
	t.positive("timeout", r.Timeout)
	if r.MapFile != "" && t.d.checkFiles {
		if _, err := route.LoadMapFile(r.MapFile); err != nil {
			t.problem("map_file", "%s", err)
		} else if m, _ := route.LoadMapFile(r.MapFile); m != nil {
			for _, name := range m.Upstreams() {
				if upstreamNamed(c, name) < 0 {
					t.problem("map_file", "%s names %q, which is not the name of an [[upstream]]", r.MapFile, name)
					break
				}
			}
		}
	}
}

func (d *decoder) routingLDAP(t *table, c *Config) {
	l := &LDAPRouteConfig{Timeout: Duration{5 * time.Second}, CacheSize: 10000, CacheTTL: Duration{5 * time.Minute}}
	t.str("url", &l.URL)
	t.boolean("start_tls", &l.StartTLS)
	t.str("ca_file", &l.CAFile)
	t.str("bind_dn", &l.BindDN)
	t.str("bind_password_file", &l.BindPasswordFile)
	t.str("base_dn", &l.BaseDN)
	t.str("filter", &l.Filter)
	t.str("attribute", &l.Attribute)
	l.Servers = stringTable(t, "servers", "[routing.ldap.servers]")
	t.duration("timeout", &l.Timeout)
	t.count("cache_size", &l.CacheSize)
	t.duration("cache_ttl", &l.CacheTTL)
	t.done()
	if t.quiet {
		return
	}
	c.Routing.LDAP = l
	if l.URL == "" {
		t.missing("url", "is required: the directory, \"ldaps://dc1.corp.example\" or \"ldap://127.0.0.1:389\"")
	} else if u, err := url.Parse(l.URL); err != nil || (u.Scheme != "ldap" && u.Scheme != "ldaps") || u.Host == "" {
		t.problem("url", "%q is not ldap://host[:port] or ldaps://host[:port]", l.URL)
	} else if l.StartTLS && u.Scheme == "ldaps" {
		t.problem("start_tls", "is true, but url is already ldaps://")
	}
	if (l.BindDN == "") != (l.BindPasswordFile == "") {
		t.problem("bind_password_file", "bind_dn and bind_password_file go together: set both, or neither for an anonymous search")
	}
	if l.BindPasswordFile != "" && t.d.checkFiles {
		if _, err := readMasterSecret(l.BindPasswordFile); err != nil {
			t.problem("bind_password_file", "%s", err)
		}
	}
	t.file("ca_file", l.CAFile)
	if l.BaseDN == "" {
		t.missing("base_dn", "is required: where the search starts, e.g. \"dc=corp,dc=example\"")
	}
	switch {
	case l.Filter == "":
		t.missing("filter", "is required, with {user} where the user name goes, e.g. \"(userPrincipalName={user})\"")
	case !strings.Contains(l.Filter, "{user}"):
		t.problem("filter", "%q has no {user}: every user would get the same answer", l.Filter)
	case !strings.HasPrefix(l.Filter, "(") || !strings.HasSuffix(l.Filter, ")"):
		t.problem("filter", "%q is not an LDAP filter in parentheses (RFC 4515)", l.Filter)
	}
	if l.Attribute == "" {
		t.missing("attribute", "is required: the attribute naming the server, e.g. \"msExchHomeServerName\" or \"mailHost\"")
	}
	for value, name := range l.Servers {
		st := &table{d: t.d, key: t.keyOf("servers"), section: "[routing.ldap.servers]", parent: t}
		checkUpstreamName(st, value, name, c, true)
	}
	t.positive("timeout", l.Timeout)
	t.positive("cache_ttl", l.CacheTTL)
}

func (d *decoder) routingHTTP(t *table, c *Config) {
	h := &HTTPRouteConfig{Timeout: Duration{5 * time.Second}, CacheSize: 10000, CacheTTL: Duration{time.Minute}}
	t.str("url", &h.URL)
	t.boolean("send_password", &h.SendPassword)
	h.Headers = stringTable(t, "headers", "[routing.http.headers]")
	t.str("ca_file", &h.CAFile)
	t.duration("timeout", &h.Timeout)
	t.count("cache_size", &h.CacheSize)
	t.duration("cache_ttl", &h.CacheTTL)
	t.done()
	if t.quiet {
		return
	}
	c.Routing.HTTP = h
	if h.URL == "" {
		t.missing("url", "is required: the auth_http service, e.g. \"http://127.0.0.1:9000/auth\"")
	} else if u, err := url.Parse(h.URL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		t.problem("url", "%q is not an http:// or https:// URL", h.URL)
	}
	for name := range h.Headers {
		if route.ReservedHeader(name) {
			t.problemKey(joinKey(t.keyOf("headers"), keyPart(name)), "%q is a header imapgate sends itself", name)
		}
	}
	t.file("ca_file", h.CAFile)
	t.positive("timeout", h.Timeout)
	t.positive("cache_ttl", h.CacheTTL)
}

// stringTable reads a table of strings (servers = { "EXCH01" = "exchange" }).
func stringTable(t *table, name, section string) map[string]string {
	st, ok := t.sub(name, section)
	if !ok {
		return nil
	}
	out := map[string]string{}
	for k, v := range st.m {
		s, isString := v.(string)
		if !isString {
			st.problem(k, "want a string, not %s", describe(v))
			continue
		}
		out[k] = s
	}
	return out
}

// checkMasters checks that, where some clients log in through a master
// user (app passwords, tokens, client certificates), every upstream a
// login may be routed to has [upstream.master]: without it such a login
// would fail there with master_login_failed. The default upstream's lack
// is reported by the [auth] checks already.
func checkMasters(upstreamTables []*table, c *Config) {
	viaMaster := c.Auth.AppPasswords != "" || c.Auth.OAuth != nil
	for _, l := range c.Listen {
		viaMaster = viaMaster || l.asksClientCerts()
	}
	if !viaMaster || len(c.Upstreams) < 2 {
		return
	}
	for i, u := range c.Upstreams {
		if u.Master == nil && u.Name != c.Upstream.Name && i < len(upstreamTables) {
			upstreamTables[i].missing("master", "[upstream.master] is required in upstream %q too: clients with app passwords, tokens or certificates are logged in through a master user, and a login may be routed to any upstream", u.Name)
		}
	}
}
