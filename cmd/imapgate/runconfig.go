package main

// The running configuration: a Config built into the objects the proxy
// serves with (see runConfig).

import (
	"crypto/x509"
	"fmt"
	"net"
	"net/netip"

	"github.com/imapgate/imapgate/auth"
	"github.com/imapgate/imapgate/policy"
	"github.com/imapgate/imapgate/proxy"
	"github.com/imapgate/imapgate/tlsconf"
)

// runConfig is a Config turned into the objects the proxy runs with: one
// is built at start and one on each reload, and the gateway keeps the one
// in force. Nothing in it binds a port, so check-config builds one too.
type runConfig struct {
	cfg       *Config
	certs     *tlsconf.CertStore
	acme      *tlsconf.ACME    // nil without [tls.acme]; started by serve
	listeners []proxy.Listener // parallel to cfg.Listen
	proxy     *proxy.Config
	userKey   []byte // audit.user_hash_key_file's key; nil = user names in clear

	// tokens are the [auth.oauth] settings (nil: no tokens); the
	// gateway starts, or keeps, the Validator for them (gateway.useTokens).
	tokens *tokenSettings
	// clientCerts is what each listener asks of client certificates
	// (parallel to cfg.Listen), certMapper maps them to users for EXTERNAL;
	// nil when no listener asks (README "Client certificates").
	clientCerts []tlsconf.ClientCerts
	certMapper  *certMapper
}

// newRunConfig builds the proxy's objects from a validated config. audit may
// be nil (check-config).
func newRunConfig(cfg *Config, audit *proxy.Auditor) (*runConfig, error) {
	var pairs []tlsconf.CertFiles
	if cfg.TLS.CertFile != "" {
		pairs = append(pairs, tlsconf.CertFiles{CertFile: cfg.TLS.CertFile, KeyFile: cfg.TLS.KeyFile})
	}
	for _, p := range cfg.TLS.Certificates {
		pairs = append(pairs, tlsconf.CertFiles{CertFile: p.CertFile, KeyFile: p.KeyFile})
	}
	certs, err := tlsconf.LoadCertStore(pairs...)
	if err != nil {
		return nil, fmt.Errorf("tls: %w", err)
	}
	rc := &runConfig{cfg: cfg, certs: certs}
	if cfg.TLS.ACME != nil {
		if rc.acme, err = newACME(cfg.TLS.ACME); err != nil {
			return nil, err
		}
	}
	for _, l := range cfg.Listen {
		rc.listeners = append(rc.listeners, proxy.Listener{
			Name: l.Address,
			Mode: proxy.TLSMode(l.TLS),
		})
	}
	// Client certificates (EXTERNAL): what each listener asks for, and
	// the mapper; its store of registered keys is the one serve opens
	// (gateway.install). Before setServerTLS, which applies them.
	if rc.clientCerts, rc.certMapper, err = listenerClientCerts(cfg); err != nil {
		return nil, err
	}
	if err := rc.setServerTLS(); err != nil {
		return nil, err
	}
	router, err := newRouter(cfg, nil)
	if err != nil {
		return nil, err
	}
	if rc.userKey, err = readUserHashKey(cfg.Audit.UserHashKeyFile); err != nil {
		return nil, err
	}
	access, err := policy.NewAccess(cfg.Policy.Allow, cfg.Policy.Deny)
	if err != nil {
		return nil, fmt.Errorf("policy: %w", err)
	}
	rc.proxy = &proxy.Config{
		Upstream:          router.Default.Members[0],
		Router:            router,
		Mechanisms:        cfg.Auth.Mechanisms,
		AllowLoginOverTLS: cfg.Auth.LoginCommand == loginCommandAllowOverTLS,
		// AppPasswords is the store serve holds open (gateway.install).
		LoginAppPasswordsOnly: cfg.Auth.LoginCommand == loginCommandAppPasswords,
		RefusePassThrough:     !cfg.Auth.Passthrough,
		PreauthTimeout:        cfg.Policy.PreauthTimeout.Duration,
		IdleTimeout:           cfg.Policy.IdleTimeout.Duration,
		FailureDelay:          cfg.Policy.FailureDelay.Duration,
		Access:                access,
		Conns:                 policy.NewConnLimiter(cfg.Policy.MaxConnections, cfg.Policy.MaxConnectionsPerIP, cfg.Policy.MaxConnectionsPerNetwork),
		Audit:                 audit,
	}
	rc.proxy.Policy, rc.proxy.UpstreamLogins = newAuthPolicy(&cfg.Policy)
	// OAuth tokens ([auth.oauth]): the secret read and the settings
	// checked here; nothing is fetched until serve starts the Validator.
	if rc.tokens, err = newTokenSettings(cfg.Auth.OAuth); err != nil {
		return nil, err
	}
	// [[listen]] mechanisms and passthrough, and [[policy.rule]]
	// passthrough (README "[[listen]] mechanisms and passthrough").
	rc.proxy.Listeners, rc.proxy.PassThroughRules = listenerAuth(cfg)
	// Client certificates (EXTERNAL): the mapper, when a listener asks.
	if rc.certMapper != nil {
		if rc.proxy.Verifiers == nil {
			rc.proxy.Verifiers = &auth.Verifiers{}
		}
		rc.proxy.Verifiers.Certs = rc.certMapper
	}
	return rc, nil
}

// listenerAuth returns every listener's mechanisms and pass-through, by
// its name (the address), and the [[policy.rule]] pass-through rules: all
// of the rules when one sets passthrough, since the first rule that
// matches a client applies, also when it leaves passthrough to the
// listener; none otherwise.
func listenerAuth(cfg *Config) (map[string]proxy.ListenerAuth, []proxy.PassThroughRule) {
	byName := map[string]proxy.ListenerAuth{}
	for _, l := range cfg.Listen {
		byName[l.Address] = proxy.ListenerAuth{
			Mechanisms:        l.EffectiveMechanisms(cfg),
			RefusePassThrough: !l.EffectivePassthrough(cfg),
		}
	}
	var rules []proxy.PassThroughRule
	decides := false
	for _, r := range cfg.Policy.Rules {
		networks, _ := policy.ParsePrefixes(r.Networks) // validated with the config
		rules = append(rules, proxy.PassThroughRule{Networks: networks, Listeners: r.Listeners, PassThrough: r.Passthrough})
		decides = decides || r.Passthrough != nil
	}
	if !decides {
		rules = nil
	}
	return byName, rules
}

// setServerTLS gives every listener its TLS config: the ACME manager's
// certificates when there is one, else the certificate files.
func (rc *runConfig) setServerTLS() error {
	for i, l := range rc.cfg.Listen {
		v, err := tlsconf.ParseVersion(l.EffectiveMinVersion(rc.cfg))
		if err != nil {
			return fmt.Errorf("listen[%d].min_version: %w", i, err)
		}
		if rc.acme != nil {
			rc.listeners[i].TLSConfig = rc.acme.ServerConfig(v)
		} else {
			rc.listeners[i].TLSConfig = tlsconf.ServerConfig(rc.certs, v)
		}
		if i < len(rc.clientCerts) {
			rc.clientCerts[i].Apply(rc.listeners[i].TLSConfig)
		}
	}
	return nil
}

// leaves returns the certificates the listeners serve, for the expiry
// metric and /readyz.
func (rc *runConfig) leaves() []*x509.Certificate {
	if rc.acme != nil {
		return rc.acme.Leaves()
	}
	return rc.certs.Leaves()
}

// newUpstreamAt builds the upstream login settings of c for one of its
// addresses.
func newUpstreamAt(c *UpstreamConfig, address string) (*proxy.Upstream, error) {
	up := &proxy.Upstream{
		Address:        address,
		TLS:            proxy.UpstreamTLS(c.TLS),
		Method:         proxy.LoginMethod(c.Login),
		UserTemplate:   c.UserTemplate,
		Forward:        proxy.ForwardMode(c.ForwardClientIP),
		ConnectTimeout: c.ConnectTimeout.Duration,
		LoginTimeout:   c.LoginTimeout.Duration,
	}
	if up.TLS != proxy.UpstreamPlaintext {
		name := c.ServerName
		if name == "" {
			name, _, _ = net.SplitHostPort(address)
		}
		tc, err := tlsconf.UpstreamConfig(tlsconf.UpstreamOptions{ServerName: name, CAFile: c.CAFile, PinSHA256: c.PinSHA256})
		if err != nil {
			return nil, fmt.Errorf("upstream: %w", err)
		}
		up.TLSConfig = tc
	}
	if m := c.Master; m != nil {
		secret, err := readMasterSecret(m.SecretFile)
		if err != nil {
			return nil, fmt.Errorf("upstream.master.secret_file: %w", err)
		}
		up.Master = m.login(secret)
		if err := up.CheckMaster(); err != nil {
			return nil, fmt.Errorf("upstream.master: %w", err)
		}
	}
	for _, a := range c.SourceAddresses {
		ip, err := netip.ParseAddr(a)
		if err != nil {
			return nil, fmt.Errorf("upstream.source_addresses: %q is not an IP address", a)
		}
		up.SourceAddrs = append(up.SourceAddrs, ip)
	}
	return up, nil
}

// newUpstream builds the settings of c's first address.
func newUpstream(c *UpstreamConfig) (*proxy.Upstream, error) {
	return newUpstreamAt(c, c.AddressList()[0])
}
