package main

// The running form of the upstreams and the routing between them
// (README "Routing").

import (
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"

	"github.com/imapgate/imapgate/proxy"
	"github.com/imapgate/imapgate/proxy/route"
	"github.com/imapgate/imapgate/tlsconf"
)

// newRouter builds every upstream group and the lookups of cfg; the
// default group's first address is the proxy's Upstream.
func newRouter(cfg *Config, log *slog.Logger) (*proxy.Router, error) {
	r := &proxy.Router{Timeout: cfg.Routing.Timeout.Duration}
	for i := range cfg.Upstreams {
		u := &cfg.Upstreams[i]
		g := &proxy.UpstreamGroup{Name: u.Name, Balance: proxy.Balance(u.Balance), ProbeInterval: u.ProbeInterval.Duration}
		for _, addr := range u.AddressList() {
			m, err := newUpstreamAt(u, addr)
			if err != nil {
				return nil, err
			}
			g.Members = append(g.Members, m)
		}
		r.Upstreams = append(r.Upstreams, g)
		if u.Name == cfg.Upstream.Name && r.Default == nil {
			r.Default = g
		}
	}
	if len(cfg.Routes) > 0 {
		entries := make([]route.Entry, len(cfg.Routes))
		for i, rt := range cfg.Routes {
			entries[i] = route.Entry{Match: rt.Match, Upstream: rt.Upstream}
		}
		r.Lookups = append(r.Lookups, route.NewStatic(entries))
	}
	if f := cfg.Routing.MapFile; f != "" {
		m := &route.MapFile{Path: f, CheckEvery: cfg.Routing.MapCheckInterval.Duration, Log: log,
			Check: func(s *route.Static) error { return checkMapNames(cfg, s) }}
		if err := m.Reload(); err != nil {
			return nil, fmt.Errorf("routing.map_file: %w", err)
		}
		r.Lookups = append(r.Lookups, m)
	}
	if l := cfg.Routing.LDAP; l != nil {
		lookup, err := newLDAPLookup(l)
		if err != nil {
			return nil, err
		}
		r.Lookups = append(r.Lookups, route.Cached(lookup, l.CacheSize, l.CacheTTL.Duration))
	}
	if h := cfg.Routing.HTTP; h != nil {
		lookup, err := newHTTPLookup(h)
		if err != nil {
			return nil, err
		}
		r.SendPassword = h.SendPassword
		r.Lookups = append(r.Lookups, route.Cached(lookup, h.CacheSize, h.CacheTTL.Duration))
	}
	return r, nil
}

// checkMapNames refuses a map file naming an upstream cfg does not have.
func checkMapNames(cfg *Config, s *route.Static) error {
	for _, name := range s.Upstreams() {
		if upstreamNamed(cfg, name) < 0 {
			return fmt.Errorf("%q is not the name of an [[upstream]]", name)
		}
	}
	return nil
}

func newLDAPLookup(c *LDAPRouteConfig) (*route.LDAP, error) {
	l := &route.LDAP{URL: c.URL, StartTLS: c.StartTLS, BindDN: c.BindDN, BaseDN: c.BaseDN, Filter: c.Filter,
		Attribute: c.Attribute, Servers: c.Servers, Timeout: c.Timeout.Duration}
	if c.BindPasswordFile != "" {
		secret, err := readMasterSecret(c.BindPasswordFile)
		if err != nil {
			return nil, fmt.Errorf("routing.ldap.bind_password_file: %w", err)
		}
		l.BindPassword = secret.Reveal()
	}
	if strings.HasPrefix(c.URL, "ldaps://") || c.StartTLS || c.CAFile != "" {
		tc, err := tlsconf.UpstreamConfig(tlsconf.UpstreamOptions{ServerName: urlHost(c.URL), CAFile: c.CAFile})
		if err != nil {
			return nil, fmt.Errorf("routing.ldap: %w", err)
		}
		l.TLSConfig = tc
	}
	return l, nil
}

func newHTTPLookup(c *HTTPRouteConfig) (*route.HTTP, error) {
	h := &route.HTTP{URL: c.URL, SendPassword: c.SendPassword, Timeout: c.Timeout.Duration, Header: http.Header{}}
	for k, v := range c.Headers {
		h.Header.Set(k, v)
	}
	if c.CAFile != "" {
		tc, err := tlsconf.UpstreamConfig(tlsconf.UpstreamOptions{ServerName: urlHost(c.URL), CAFile: c.CAFile})
		if err != nil {
			return nil, fmt.Errorf("routing.http: %w", err)
		}
		h.Client = &http.Client{Timeout: h.Timeout, Transport: &http.Transport{TLSClientConfig: tc}}
	}
	return h, nil
}

func urlHost(rawURL string) string {
	_, rest, _ := strings.Cut(rawURL, "://")
	hostport, _, _ := strings.Cut(rest, "/")
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		return h
	}
	return hostport
}

// keepAnswerTimes carries what each old address learnt of its answer
// times over to the same address in next (Upstream.KeepAnswerTimes).
func keepAnswerTimes(next, old *proxy.Router) {
	for _, g := range next.Upstreams {
		for _, m := range g.Members {
			for _, og := range old.Upstreams {
				for _, om := range og.Members {
					m.KeepAnswerTimes(om)
				}
			}
		}
	}
}
