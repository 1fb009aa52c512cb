package tlsconf

import (
	"cmp"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/caddyserver/certmagic"
	"github.com/mholt/acmez/v3"
	"go.uber.org/zap"
)

// The ACME challenge types ACMEOptions.Challenge accepts.
const (
	ChallengeTLSALPN = "tls-alpn-01"
	ChallengeHTTP    = "http-01"
	ChallengeDNS     = "dns-01"
)

// ACMEProtocol is the ALPN protocol of TLS-ALPN-01 challenges (RFC 8737).
// ACME.ServerConfig offers it next to "imap", so a CA's validation that
// reaches a client-facing listener (port 443 forwarded to 993) is answered.
const ACMEProtocol = acmez.ACMETLS1Protocol

// LetsEncryptCA is the directory of Let's Encrypt's production CA, the
// default of ACMEOptions.CA.
const LetsEncryptCA = certmagic.LetsEncryptProductionCA

// ACMEOptions configure automatic certificates. Only Domains (or OnDemand)
// is required; every other field has a default.
type ACMEOptions struct {
	// Domains are the names to obtain certificates for, one certificate
	// each. A wildcard ("*.example.com") needs ChallengeDNS.
	Domains []string

	// Email is the account contact the CA writes to about expiry. Empty:
	// no contact.
	Email string

	// CA is the ACME directory URL. Empty: LetsEncryptCA. Creating the
	// account agrees to the CA's terms of service.
	CA string

	// CARoots are the roots trusted for the CA's own HTTPS (a private or
	// test CA). Nil: the system roots.
	CARoots *x509.CertPool

	// EABKeyID and EABMACKey (base64url) are the external account binding
	// for CAs that require one. Empty: none.
	EABKeyID, EABMACKey string

	// Storage keeps accounts, keys and certificates. Nil: FileStorage of
	// StorageDir.
	Storage ACMEStorage

	// StorageDir is the directory of the file storage when Storage is
	// nil. Empty with a nil Storage is an error.
	StorageDir string

	// Challenge is ChallengeTLSALPN, ChallengeHTTP or ChallengeDNS. Empty:
	// ChallengeTLSALPN.
	Challenge string

	// ChallengeListen is the "host:port" the TLS-ALPN-01 or HTTP-01
	// responder binds for as long as the ACME manager runs. A public CA
	// connects to port 443 (TLS-ALPN-01) or 80 (HTTP-01) only. Empty:
	// ":443" or ":80". Unused with ChallengeDNS. The responder serves at
	// most MaxChallengeConns connections at once, each for at most
	// ChallengeConnTimeout, and outlasts accept errors (see
	// challengeListener).
	ChallengeListen string

	// DNS publishes the DNS-01 TXT record: RFC2136 or ExecHook. Required
	// with ChallengeDNS.
	DNS certmagic.DNSProvider

	// DNSResolvers ("host:port") are asked whether the TXT record is
	// visible before the CA is told to look, and to find the zone; with
	// OnDemand (and no OnDemandPolicy.Resolver), whether a name under an
	// allowed suffix resolves. Empty: the system's resolvers, then (for
	// DNS-01) the zone's authoritative servers.
	DNSResolvers []string

	// DNSPropagationTimeout bounds the wait for the TXT record to be
	// visible. Zero: 2 minutes.
	DNSPropagationTimeout time.Duration

	// OnDemand, if non-nil, obtains certificates during the handshake for
	// names outside Domains that it allows.
	OnDemand *OnDemandPolicy

	// RenewCheckInterval is how often certificates are checked for
	// renewal (renewal starts when a third of the lifetime is left, or
	// when the CA's renewal information says so). Zero: 10 minutes.
	RenewCheckInterval time.Duration

	// Log receives issuance, renewal and failure events and certmagic's
	// own messages. Nil: slog.Default().
	Log *slog.Logger
}

// ACME obtains and renews certificates from an ACME CA, serves them by SNI
// and answers the CA's challenges. Build it with NewACME, which only checks
// the options; Start does the work. Its methods are safe for concurrent
// use.
type ACME struct {
	opts    ACMEOptions
	storage ACMEStorage
	log     *slog.Logger

	mu       sync.Mutex // guards what Start sets
	started  bool
	cache    *certmagic.Cache
	cfg      *certmagic.Config // the configured Domains
	demand   *certmagic.Config // on-demand names; nil without OnDemand
	issuer   *certmagic.ACMEIssuer
	answer   *challengeAnswer
	chalLn   *challengeListener
	chalAddr string // ChallengeListen with the port bound
	chalDone chan struct{}
	cancel   context.CancelFunc

	// Lines peers can make repeat, each at most once per logEvery.
	acceptFail *repeatLog           // accept errors on the challenge listener
	refused    map[error]*repeatLog // On-Demand refusals, by reason

	failMu   sync.Mutex
	failures map[string]error // latest failure per name, cleared on success

	// Set by tests before Start; zero values mean the documented defaults.
	listen       func(ctx context.Context, network, address string) (net.Listener, error)
	maxChalConns int           // MaxChallengeConns
	chalTimeout  time.Duration // ChallengeConnTimeout
	logEvery     time.Duration // RepeatedLogInterval
}

// NewACME checks the options and returns an ACME that has done nothing
// yet: no port is bound, no CA is contacted, no goroutine runs, and the
// storage directory is not created (check-config builds one too).
func NewACME(o ACMEOptions) (*ACME, error) {
	if o.CA == "" {
		o.CA = LetsEncryptCA
	}
	if o.Challenge == "" {
		o.Challenge = ChallengeTLSALPN
	}
	if len(o.Domains) == 0 && o.OnDemand == nil {
		return nil, errors.New("tlsconf: ACME needs at least one domain")
	}
	for _, d := range o.Domains {
		if strings.HasPrefix(d, "*.") && o.Challenge != ChallengeDNS {
			return nil, fmt.Errorf("tlsconf: ACME: %s is a wildcard, which only %s can prove", d, ChallengeDNS)
		}
	}
	switch o.Challenge {
	case ChallengeTLSALPN, ChallengeHTTP:
		if o.ChallengeListen == "" {
			o.ChallengeListen = ":443"
			if o.Challenge == ChallengeHTTP {
				o.ChallengeListen = ":80"
			}
		}
		if _, _, err := net.SplitHostPort(o.ChallengeListen); err != nil {
			return nil, fmt.Errorf("tlsconf: ACME challenge listener %q: %w", o.ChallengeListen, err)
		}
	case ChallengeDNS:
		if o.DNS == nil {
			return nil, errors.New("tlsconf: ACME challenge dns-01 needs a DNS provider")
		}
	default:
		return nil, fmt.Errorf("tlsconf: ACME challenge %q is not one of %s, %s, %s", o.Challenge, ChallengeTLSALPN, ChallengeHTTP, ChallengeDNS)
	}
	if (o.EABKeyID == "") != (o.EABMACKey == "") {
		return nil, errors.New("tlsconf: ACME external account binding needs both a key id and a MAC key")
	}
	if o.Storage == nil && o.StorageDir == "" {
		return nil, errors.New("tlsconf: ACME needs a storage directory")
	}
	if o.OnDemand != nil {
		if err := o.OnDemand.check(); err != nil {
			return nil, err
		}
	}
	log := o.Log
	if log == nil {
		log = slog.Default()
	}
	return &ACME{opts: o, log: log, failures: map[string]error{}}, nil
}

// Start opens the storage, binds the challenge listener (TLS-ALPN-01 and
// HTTP-01), and starts obtaining or renewing every certificate in the
// background: certificates already in storage are served at once. It
// returns an error only when the storage or the listener cannot be set up;
// the CA's answers arrive as log events (see Failure). ctx bounds the
// whole life of the manager; Close stops it too.
func (a *ACME) Start(ctx context.Context) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.started {
		return errors.New("tlsconf: ACME already started")
	}
	storage := a.opts.Storage
	if storage == nil {
		var err error
		if storage, err = FileStorage(a.opts.StorageDir); err != nil {
			return err
		}
	}
	a.storage = storage

	var chalLn net.Listener
	if a.opts.Challenge != ChallengeDNS {
		listen := a.listen
		if listen == nil {
			var lc net.ListenConfig
			listen = lc.Listen
		}
		ln, err := listen(ctx, "tcp", a.opts.ChallengeListen)
		if err != nil {
			return fmt.Errorf("tlsconf: ACME %s responder: cannot bind %s: %w", a.opts.Challenge, a.opts.ChallengeListen, err)
		}
		chalLn = ln
		// The configured host with the port actually bound (":0" in tests).
		host, _, _ := net.SplitHostPort(a.opts.ChallengeListen)
		_, port, _ := net.SplitHostPort(ln.Addr().String())
		a.chalAddr = net.JoinHostPort(host, port)
	}

	zl := zapToSlog(a.log.With("component", "certmagic"))
	a.cache = certmagic.NewCache(certmagic.CacheOptions{
		GetConfigForCert:   a.configForCert,
		RenewCheckInterval: a.opts.RenewCheckInterval,
		Logger:             zl,
	})
	tmpl := certmagic.Config{
		Storage: storage,
		Logger:  zl,
		OnEvent: a.onEvent,
	}
	a.cfg = certmagic.New(a.cache, tmpl)
	a.issuer = a.newIssuer(a.cfg, zl)
	a.cfg.Issuers = []certmagic.Issuer{a.issuer}
	// A Config that only answers challenge hellos (from this process's
	// challenges, or from the storage's for another node): certmagic would
	// log every hello for a name with no challenge pending as an error,
	// which anyone could repeat at will; GetCertificate logs it, limited.
	a.answer = &challengeAnswer{
		chal:    certmagic.New(a.cache, certmagic.Config{Storage: storage, Logger: zap.NewNop(), Issuers: a.cfg.Issuers}),
		refused: newRepeatLog(a.log, slog.LevelWarn, "TLS-ALPN-01 hello for a name with no challenge pending; refused", a.logEvery),
		log:     a.log,
	}
	a.acceptFail = newRepeatLog(a.log, slog.LevelWarn, "ACME challenge responder: accept failed; retrying", a.logEvery)
	refused := map[error]*repeatLog{}
	a.refused = refused
	if p := a.opts.OnDemand; p != nil {
		if p.Resolver == nil {
			p.Resolver = resolverOf(a.opts.DNSResolvers)
		}
		for _, reason := range onDemandReasons {
			refused[reason] = newRepeatLog(a.log, slog.LevelWarn, "on-demand certificate refused", a.logEvery)
		}
		// A second Config: with OnDemand set, Manage would only allow-list
		// the names and issue nothing.
		dt := tmpl
		dt.OnDemand = &certmagic.OnDemandConfig{DecisionFunc: func(ctx context.Context, name string) error {
			err := p.Decide(ctx, name)
			if err != nil {
				refusedLog(refused, err).Log("name", name, "reason", err.Error())
			}
			return err
		}}
		a.demand = certmagic.New(a.cache, dt)
		a.demand.Issuers = []certmagic.Issuer{a.newIssuer(a.demand, zl)}
	}

	runCtx, cancel := context.WithCancel(ctx)
	a.cancel = cancel
	if chalLn != nil {
		a.chalLn = newChallengeListener(chalLn, cmp.Or(a.maxChalConns, MaxChallengeConns), a.acceptFail)
		a.chalDone = make(chan struct{})
		go a.serveChallenges(runCtx, a.chalLn, a.answer, a.chalDone)
	}
	a.started = true
	if len(a.opts.Domains) > 0 {
		if err := a.cfg.ManageAsync(runCtx, a.opts.Domains); err != nil {
			a.closeLocked()
			return fmt.Errorf("tlsconf: ACME: %w", err)
		}
	}
	return nil
}

// ChallengeAddr returns the address the challenge responder is bound to
// after Start ("" with ChallengeDNS or before Start).
func (a *ACME) ChallengeAddr() string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.chalAddr
}

// GetCertificate chooses the certificate for a handshake: a managed one by
// SNI (exact, then wildcard), the TLS-ALPN-01 challenge certificate when
// the CA asks, or, with OnDemand, one obtained now for an allowed name. It
// is meant for tls.Config.GetCertificate.
func (a *ACME) GetCertificate(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
	a.mu.Lock()
	cfg, demand, answer := a.cfg, a.demand, a.answer
	a.mu.Unlock()
	if cfg == nil {
		return nil, errors.New("tlsconf: ACME not started")
	}
	if isChallengeHello(hello) {
		return answer.certificate(hello)
	}
	if demand == nil || a.isConfigured(strings.TrimSuffix(hello.ServerName, ".")) {
		return cfg.GetCertificate(hello)
	}
	return demand.GetCertificate(hello)
}

// ServerConfig returns the tls.Config for client-facing listeners served
// from a: NextProtos "imap" and "acme-tls/1", minVersion (zero:
// tls.VersionTLS12), ServerCipherSuites(minVersion), and session tickets
// with Go's automatically rotated keys. OCSP responses are stapled to managed
// certificates whose CA gives them.
func (a *ACME) ServerConfig(minVersion uint16) *tls.Config {
	if minVersion == 0 {
		minVersion = tls.VersionTLS12
	}
	return &tls.Config{
		MinVersion:     minVersion,
		CipherSuites:   ServerCipherSuites(minVersion),
		GetCertificate: a.GetCertificate,
		NextProtos:     []string{ALPNProtocol, ACMEProtocol},
	}
}

// Leaves returns the leaf of every managed certificate in memory, for
// expiry metrics and tests.
func (a *ACME) Leaves() []*x509.Certificate {
	a.mu.Lock()
	cache := a.cache
	a.mu.Unlock()
	if cache == nil {
		return nil
	}
	var out []*x509.Certificate
	for _, d := range a.opts.Domains {
		for _, cert := range cache.AllMatchingCertificates(d) {
			if cert.Leaf != nil {
				out = append(out, cert.Leaf)
			}
		}
	}
	return out
}

// Close stops renewals, the challenge listener and the cache's goroutines.
func (a *ACME) Close() {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.closeLocked()
}

func (a *ACME) closeLocked() {
	if !a.started {
		return
	}
	a.started = false
	a.cancel()
	if a.chalLn != nil {
		a.chalLn.Close()
		<-a.chalDone
		a.chalLn = nil
	}
	a.cache.Stop()
	a.answer.refused.Close()
	a.acceptFail.Close()
	for _, l := range a.refused {
		l.Close()
	}
}

// SetLog replaces ACMEOptions.Log; call it before Start.
func (a *ACME) SetLog(l *slog.Logger) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if l != nil {
		a.log = l
	}
}
