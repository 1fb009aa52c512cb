package main

import (
	"context"
	"crypto/x509"
	"fmt"
	"log/slog"
	"os"
	"reflect"
	"strings"

	"github.com/imapgate/imapgate/tlsconf"
)

// newACME turns [tls.acme] into a certificate manager that has done
// nothing yet (no port, no CA, no goroutine), so check-config builds one
// too: the CA root and the TSIG secret are read and checked here.
func newACME(a *ACMEConfig) (*tlsconf.ACME, error) {
	o := tlsconf.ACMEOptions{
		Domains:            a.Domains,
		Email:              a.Email,
		CA:                 a.CA,
		EABKeyID:           a.EABKeyID,
		EABMACKey:          a.EABMACKey,
		StorageDir:         a.Storage,
		Challenge:          a.Challenge,
		ChallengeListen:    a.ChallengeListen,
		DNSResolvers:       a.DNSResolvers,
		RenewCheckInterval: a.RenewCheckInterval.Duration,
	}
	if a.CARoot != "" {
		pem, err := os.ReadFile(a.CARoot)
		if err != nil {
			return nil, fmt.Errorf("tls.acme.ca_root: %w", err)
		}
		o.CARoots = x509.NewCertPool()
		if !o.CARoots.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("tls.acme.ca_root: %s holds no PEM certificate", a.CARoot)
		}
	}
	if a.Challenge == tlsconf.ChallengeDNS {
		switch a.DNSProvider {
		case dnsProviderRFC2136:
			secret, err := os.ReadFile(a.TSIGSecretFile)
			if err != nil {
				return nil, fmt.Errorf("tls.acme.tsig_secret_file: %w", err)
			}
			r := &tlsconf.RFC2136{
				Server:    a.DNSServer,
				KeyName:   a.TSIGKeyName,
				Algorithm: a.TSIGAlgorithm,
				Secret:    tsigSecret(string(secret)),
			}
			if err := r.Check(); err != nil {
				return nil, fmt.Errorf("tls.acme.tsig_secret_file: %s: %w", a.TSIGSecretFile, err)
			}
			o.DNS = r
		case dnsProviderExec:
			o.DNS = &tlsconf.ExecHook{Program: a.DNSExec}
		}
	}
	if a.OnDemand {
		o.OnDemand = &tlsconf.OnDemandPolicy{Allow: a.OnDemandAllow, MaxPerHour: a.OnDemandPerHour}
	}
	m, err := tlsconf.NewACME(o)
	if err != nil {
		return nil, fmt.Errorf("tls.acme: %w", err)
	}
	return m, nil
}

// tsigSecret takes the secret from a file holding only the base64 secret,
// or a BIND key file as tsig-keygen writes it (secret "....";).
func tsigSecret(file string) string {
	if i := strings.Index(file, "secret"); i >= 0 && strings.Contains(file, "{") {
		rest := file[i+len("secret"):]
		if a := strings.IndexByte(rest, '"'); a >= 0 {
			if b := strings.IndexByte(rest[a+1:], '"'); b >= 0 {
				return rest[a+1 : a+1+b]
			}
		}
	}
	return strings.TrimSpace(file)
}

// startACME starts obtaining and renewing certificates; it fails only when
// the storage or the challenge listener cannot be set up.
func startACME(ctx context.Context, m *tlsconf.ACME, log *slog.Logger) error {
	m.SetLog(log)
	if err := m.Start(ctx); err != nil {
		return fmt.Errorf("tls.acme: %w", err)
	}
	return nil
}

// warnACMEReload says that [tls.acme] changes wait for a restart: the
// running manager keeps its names, CA and challenge listener.
func warnACMEReload(rc *runConfig, cfg *Config, log *slog.Logger) {
	if !reflect.DeepEqual(rc.cfg.TLS.ACME, cfg.TLS.ACME) {
		log.Warn("reload: [tls.acme] changed; the change takes effect at the next restart")
	}
}

// warnOldTLS says loudly, once per listener, that it accepts TLS 1.0 or
// 1.1 (RFC 8996 deprecated both).
func warnOldTLS(rc *runConfig, cfg *Config, log *slog.Logger) {
	for i, l := range cfg.Listen {
		if v := l.EffectiveMinVersion(cfg); isOldTLS(v) {
			log.Warn("INSECURE: listener accepts deprecated TLS "+v+" (RFC 8996); keep it for old clients only",
				"listener", rc.listeners[i].Name, "min_version", v)
		}
	}
}
