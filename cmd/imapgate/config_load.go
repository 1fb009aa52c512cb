package main

// Loading a configuration file: the entry points, and the walk of the
// document section by section with the checks that span sections.

import (
	"cmp"
	"errors"
	"os"
	"slices"
	"strings"

	"github.com/BurntSushi/toml"
	"github.com/imapgate/imapgate/tlsconf"
)

// LoadConfig reads, decodes and validates the file at path, including that
// every file it names exists. An unreadable file gives the os error; a bad
// one gives a *ConfigError listing every problem.
func LoadConfig(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return parseConfig(path, data, true)
}

// ParseConfig is LoadConfig on data already read; path is used only in
// messages. It checks that the files the configuration names exist.
func ParseConfig(path string, data []byte) (*Config, error) {
	return parseConfig(path, data, true)
}

// parseConfig is ParseConfig with the file checks optional, so tests can
// load a config naming files of another machine (the example's /etc/imapgate).
func parseConfig(path string, data []byte, checkFiles bool) (*Config, error) {
	var raw map[string]any
	if _, err := toml.Decode(string(data), &raw); err != nil {
		p := Problem{Key: "syntax", Msg: err.Error()}
		var pe toml.ParseError
		if errors.As(err, &pe) {
			p.Line, p.Msg = pe.Position.Line, pe.Message
		}
		if strings.Contains(p.Msg, "'upstream' was already created") {
			// [upstream] and [[upstream]] in one file (README "Routing").
			p.Key, p.Msg = "upstream", "write one [upstream] table, or [[upstream]] tables (each with a name) for several, not both"
		}
		return nil, &ConfigError{Path: path, Problems: []Problem{p}}
	}

	d := &decoder{
		lines:      findKeyLines(data),
		checkFiles: checkFiles,
		known:      map[string][]string{},
		failed:     map[string]bool{},
		missing:    map[string]int{},
		children:   map[string]string{},
	}
	c := DefaultConfig()
	c.path = path
	d.config(d.root(raw), c)
	d.reportUnknown()

	if len(d.problems) > 0 {
		sortProblems(d.problems)
		return nil, &ConfigError{Path: path, Problems: d.problems}
	}
	sortProblems(d.warnings)
	c.warnings = d.warnings
	return c, nil
}

func sortProblems(ps []Problem) {
	slices.SortStableFunc(ps, func(a, b Problem) int { return cmp.Compare(a.Line, b.Line) })
}

// The sections, in file order.

func (d *decoder) config(t *table, c *Config) {
	t.duration("shutdown_timeout", &c.ShutdownTimeout)

	var listens []*table
	listens, c.Listen = decodeTables(t, "listen", "[[listen]]", d.listen)
	if len(c.Listen) == 0 && t.ok("listen") {
		t.missing("listen", "at least one [[listen]] table is required, e.g. [[listen]] address = \"0.0.0.0:993\"")
	}
	section := func(name string) *table {
		st, _ := t.sub(name, "["+name+"]")
		return st
	}
	acmeTable := d.tls(section("tls"), &c.TLS)
	upstreamTables := d.upstreams(t, c)
	d.routes(t, c, upstreamTables)
	d.routing(section("routing"), c)
	authTable := section("auth")
	d.auth(authTable, &c.Auth)
	ruleTables := d.policy(section("policy"), &c.Policy)
	d.audit(section("audit"), &c.Audit)
	mt := section("metrics")
	d.metrics(mt, &c.Metrics)
	d.admin(section("admin"), &c.Admin)
	t.done()

	// Checks that span sections.
	var binds []bind
	for i, l := range c.Listen {
		binds = append(binds, bind{listens[i], "address", l.Address})
	}
	if a := c.TLS.ACME; a != nil && a.Challenge != tlsconf.ChallengeDNS {
		binds = append(binds, bind{acmeTable, "challenge_listen", a.ChallengeListen})
	}
	binds = append(binds, bind{mt, "listen", c.Metrics.Listen})
	checkBindsDistinct(binds)
	checkRuleListeners(ruleTables, c)
	checkAppPasswords(authTable, c)
	checkOAuth(authTable, c)
	checkListenAuth(listens, c)
	checkRulePassthrough(ruleTables, c)
	checkClientCerts(listens, authTable, c)
	checkMasters(upstreamTables, c)

	if len(c.Policy.TrustedProxies) == 0 {
		for i, l := range c.Listen {
			if l.ProxyProtocol {
				listens[i].warn("proxy_protocol", "is true but policy.trusted_proxies is empty, so no PROXY header will be accepted")
			}
		}
	}
}
