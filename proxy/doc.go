// Package proxy is an IMAP proxy that authenticates clients before any
// byte of theirs reaches the upstream server, then relays bytes.
//
// Typical usage:
//
//	up := &proxy.Upstream{Address: "10.0.0.5:143", TLSConfig: upstreamTLS} // STARTTLS
//	srv := proxy.NewServer(&proxy.Config{Upstream: up, Audit: proxy.NewAuditor(auditFile, nil)})
//	ln, _ := net.Listen("tcp", ":993")
//	log.Fatal(srv.Serve(ln, proxy.Listener{Mode: proxy.TLSImplicit, TLSConfig: serverTLS}))
//
// Each accepted connection is one session, and goes through these stages,
// one file each:
//
//  1. admit.go: the PROXY header of a trusted proxy (proxyheader.go), the
//     access rules and connection limits; the connect event.
//  2. tls.go: the TLS handshake, at once (port 993) or after STARTTLS
//     (starttls.go); the tls event. An ACME TLS-ALPN-01 probe ends here.
//  3. session.go: the greeting and the pre-auth command loop, which
//     answers CAPABILITY (capability.go), NOOP, LOGOUT, ID (id.go) and
//     STARTTLS itself, and refuses everything else (the parser is
//     parse.go).
//  4. authenticate.go, login.go: AUTHENTICATE carries a SASL exchange of
//     package auth; LOGIN, when allowed, passes the same checks.
//  5. attempt.go: one login attempt: the policy's budgets, an upstream
//     login slot, the upstream login (upstream.go), the tarpit and the
//     answer; the auth event.
//  6. relay.go: once logged in, bytes are copied both ways until either
//     side closes or the session idles out.
//
// Every admitted connection ends with one session_end event, whichever
// stage it ended in (session.go).
//
// Events and their result and reason words are in audit.go (README "Audit
// events"). Nothing of the client's but its credentials reaches the
// upstream before the upstream has accepted them.
package proxy
