// Package tlsconf builds the TLS configurations of imapgate: the
// client-facing listeners (certificates from PEM files, chosen by SNI and
// reloaded when the files change) and the proxy's own connections to the
// legacy upstream server (system roots, a CA file, or a pinned public key).
//
// Typical use:
//
//	store, err := tlsconf.LoadCertStore(tlsconf.CertFiles{CertFile: "fullchain.pem", KeyFile: "key.pem"})
//	if err != nil { return err }
//	go store.Watch(ctx, 0, func(err error) { slog.Warn("certificate reload", "err", err) })
//	ln, err := tls.Listen("tcp", ":993", tlsconf.ServerConfig(store, tls.VersionTLS12))
//
//	up, err := tlsconf.UpstreamConfig(tlsconf.UpstreamOptions{ServerName: "exchange.corp.example", PinSHA256: pin})
//	conn, err := tls.Dial("tcp", "10.0.0.5:993", up)
//
// Nothing in this package keeps package-level mutable state; all of it
// lives in a CertStore or in the returned *tls.Config values.
package tlsconf
