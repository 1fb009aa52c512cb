package tlsconf

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"slices"
	"strings"

	"github.com/caddyserver/certmagic"
	"github.com/mholt/acmez/v3/acme"
)

// The CA side of ACME: the storage of accounts, keys and certificates,
// the issuer of each certmagic Config (account, challenge, CA roots), the
// Config that renews a cached certificate, and certmagic's events, which
// are logged and kept as the latest failure per name.

// ACMEStorage is where accounts, keys and certificates are kept. It is
// certmagic's Storage interface (Store, Load, Delete, Exists, List, Stat,
// Lock, Unlock); FileStorage is the single-node implementation, and a
// cluster gives a shared one (Redis) without changing any caller.
type ACMEStorage = certmagic.Storage

// FileStorage returns the file storage rooted at dir, creating dir with
// mode 0700 (it holds private keys) if it does not exist. An existing
// directory that its group or others can read is refused.
func FileStorage(dir string) (ACMEStorage, error) {
	if dir == "" {
		return nil, errors.New("tlsconf: ACME storage directory is empty")
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("tlsconf: ACME storage: %w", err)
	}
	fi, err := os.Stat(dir)
	if err != nil {
		return nil, fmt.Errorf("tlsconf: ACME storage: %w", err)
	}
	if !fi.IsDir() {
		return nil, fmt.Errorf("tlsconf: ACME storage %s is not a directory", dir)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("tlsconf: ACME storage %s has mode %v: it holds private keys, run chmod 700 %s", dir, fi.Mode().Perm(), dir)
	}
	return &certmagic.FileStorage{Path: dir}, nil
}

func (a *ACME) newIssuer(cfg *certmagic.Config, zl *zapLogger) *certmagic.ACMEIssuer {
	tmpl := certmagic.ACMEIssuer{
		CA:                      a.opts.CA,
		Email:                   a.opts.Email,
		Agreed:                  true, // stated in the README: configuring a CA agrees to its terms
		TrustedRoots:            a.opts.CARoots,
		DisableHTTPChallenge:    a.opts.Challenge != ChallengeHTTP,
		DisableTLSALPNChallenge: a.opts.Challenge != ChallengeTLSALPN,
		Logger:                  zl,
	}
	if a.opts.EABKeyID != "" {
		tmpl.ExternalAccount = &acme.EAB{KeyID: a.opts.EABKeyID, MACKey: a.opts.EABMACKey}
	}
	if a.opts.Challenge != ChallengeDNS {
		// The responder is our own listener on this address; certmagic
		// finds it taken and in use, and starts none of its own.
		host, port, _ := net.SplitHostPort(a.chalAddr)
		tmpl.ListenHost = host
		var n int
		fmt.Sscan(port, &n)
		if a.opts.Challenge == ChallengeHTTP {
			tmpl.AltHTTPPort = n
		} else {
			tmpl.AltTLSALPNPort = n
		}
	} else {
		tmpl.DNS01Solver = &certmagic.DNS01Solver{DNSManager: certmagic.DNSManager{
			DNSProvider:        a.opts.DNS,
			Resolvers:          a.opts.DNSResolvers,
			PropagationTimeout: a.opts.DNSPropagationTimeout,
			Logger:             zl,
		}}
	}
	return certmagic.NewACMEIssuer(cfg, tmpl)
}

// configForCert tells certmagic's maintenance which Config renews a
// cached certificate.
func (a *ACME) configForCert(c certmagic.Certificate) (*certmagic.Config, error) {
	if a.demand != nil && !slices.ContainsFunc(c.Names, a.isConfigured) {
		return a.demand, nil
	}
	return a.cfg, nil
}

func (a *ACME) isConfigured(name string) bool {
	return slices.ContainsFunc(a.opts.Domains, func(d string) bool { return strings.EqualFold(d, name) })
}

// onEvent turns certmagic's events into operational log lines.
func (a *ACME) onEvent(_ context.Context, event string, data map[string]any) error {
	name, _ := data["identifier"].(string)
	renewal, _ := data["renewal"].(bool)
	switch event {
	case "cert_obtaining":
		a.log.Info("certificate: asking the CA", "name", name, "renewal", renewal, "ca", a.opts.CA)
	case "cert_obtained":
		msg := "certificate issued"
		if renewal {
			msg = "certificate renewed"
		}
		a.failMu.Lock()
		delete(a.failures, name)
		a.failMu.Unlock()
		a.log.Info(msg, "name", name, "ca", a.opts.CA)
	case "cert_failed":
		err, _ := data["error"].(error)
		if err == nil {
			err = errors.New("unknown error")
		}
		a.failMu.Lock()
		a.failures[name] = err
		a.failMu.Unlock()
		a.log.Error("certificate not obtained; serving the current one while it is valid, retrying later", "name", name, "renewal", renewal, "ca", a.opts.CA, "reason", err.Error())
	}
	return nil
}

// Failure returns the latest error obtaining or renewing a certificate
// for name, or nil if there is none or the last attempt succeeded.
func (a *ACME) Failure(name string) error {
	a.failMu.Lock()
	defer a.failMu.Unlock()
	return a.failures[name]
}
