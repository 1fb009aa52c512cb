// Package tlsconf builds the TLS configurations of imapgate: the
// client-facing listeners (certificates from PEM files, chosen by SNI and
// reloaded when the files change, or obtained and renewed from an ACME CA
// with certmagic) and the proxy's own connections to the legacy upstream
// server (system roots, a CA file, or a pinned public key).
//
// Typical use:
//
//	store, err := tlsconf.LoadCertStore(tlsconf.CertFiles{CertFile: "fullchain.pem", KeyFile: "key.pem"})
//	if err != nil { return err }
//	go store.Watch(ctx, 0, func(err error) { slog.Warn("certificate reload", "err", err) })
//	ln, err := tls.Listen("tcp", ":993", tlsconf.ServerConfig(store, tls.VersionTLS12))
//
//	// or certificates from an ACME CA (Let's Encrypt by default):
//	acme, err := tlsconf.NewACME(tlsconf.ACMEOptions{Domains: []string{"imap.example.com"}, StorageDir: "/var/lib/imapgate"})
//	if err := acme.Start(ctx); err != nil { return err } // binds :443 for TLS-ALPN-01
//	defer acme.Close()
//	ln, err = tls.Listen("tcp", ":993", acme.ServerConfig(tls.VersionTLS12))
//
//	up, err := tlsconf.UpstreamConfig(tlsconf.UpstreamOptions{ServerName: "exchange.corp.example", PinSHA256: pin})
//	conn, err := tls.Dial("tcp", "10.0.0.5:993", up)
//
// Nothing in this package keeps package-level mutable state; all of it
// lives in a CertStore, an ACME or the returned *tls.Config values.
// certmagic, under ACME, does keep some process-wide state by name
// (challenges in flight, the renewal back-off): run one ACME per process.
package tlsconf
